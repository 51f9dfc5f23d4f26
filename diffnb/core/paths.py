"""Where the pack reads its inputs and writes what it builds.

Conventions (stated once):
  * ``data_dir()`` holds inputs that ship with the project (``data/`` in the repository).
  * ``build_dir()`` holds everything the pack computes: rendered datasets, checkpoints,
    executed notebooks and HTML.  It is ignored by git and safe to delete.
  * ``DIFFNB_BUILD`` in the environment moves the build folder elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]          # diffnb/, above core/


def project_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml`` above this package).

    diffnb is installed in editable mode from the repository, so the package folder sits
    directly under the root.  If it was installed elsewhere, the current directory is used.
    """
    root = _PACKAGE_DIR.parent
    if (root / "pyproject.toml").exists():
        return root
    return Path.cwd()


def data_dir() -> Path:
    return project_root() / "data"


def build_dir() -> Path:
    env = os.environ.get("DIFFNB_BUILD")
    path = Path(env) if env else project_root() / "build"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_folder(path, name: str, default: str) -> Path:
    """``path`` as a Path to a folder that exists or can be made (no file in the way), else a clear error
    naming the argument ``name``; ``default`` says what passing None gives (for the message)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a folder path (str or Path) or None, got {path!r}")
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under {p}, which is a file"
                raise ValueError(f"{name} must be a folder, but {path} {where}; pass another {name} "
                                 f"(or None for {default})")
            break
    return path
