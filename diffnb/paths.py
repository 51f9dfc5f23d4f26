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

_PACKAGE_DIR = Path(__file__).resolve().parent


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
