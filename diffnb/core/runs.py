"""Safe training checkpoints, shared by both trainers (``diffnb.b.train`` and ``diffnb.mini.model``).

* ``atomic_write(path, write)``: write into ``.<name>.tmp-<pid>`` in the same folder, fsync, ``os.replace``,
  then record the file's sha256 in the run folder's ``checksums.json`` (itself written atomically).
* ``verified(path)``: the path, after checking it against ``checksums.json``; a truncated, altered or
  unreadable file raises ``CheckpointError`` naming the file, what is wrong and the fix.  A file written
  before manifests existed (no entry, and no manifest at all) is read as before.
* ``RunLock(run_dir)``: one process per run folder (``fcntl.flock`` on ``.lock``, which holds JSON
  {pid, host, started} for the message); a second one is refused at once, naming the holder.
* ``clean_temporaries(run_dir)``: remove the ``.*.tmp-<pid>`` files of processes that are gone.
* ``read_safetensors(path, fix)``: verified tensors (or metadata) of a safetensors file.
* ``record_folder(folder)`` / ``verify_folder(folder, fix)``: the same for a model folder (the ``mini``
  model): ``checksums.json`` holds the sha256 of every file under it, by relative path.
* ``Run(run_dir)``: the harness both trainers run in: ``with Run(run_dir, fix) as run:`` holds the lock,
  has removed dead saves' temporaries, and offers ``run.load()`` (the verified state or None; any damage
  is one ``CheckpointError`` naming the file and the fix, never a raw torch traceback) and
  ``run.save(state)`` (written atomically).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Callable

MANIFEST = "checksums.json"
LOCK = ".lock"
_TMP = re.compile(r"\..+\.tmp-(?P<pid>[0-9]+)")


class CheckpointError(RuntimeError):
    """A damaged checkpoint; ``.path`` the file, ``.last_good`` the last good epoch (Part B) or None."""

    def __init__(self, message: str, path: Path, last_good: int | None = None):
        super().__init__(message)
        self.path, self.last_good = Path(path), last_good


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    return _sha256(Path(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replace_synced(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _read_manifest(run_dir: Path) -> dict | None:
    m = Path(run_dir) / MANIFEST
    if not m.is_file():
        return None
    try:
        d = json.loads(m.read_text())
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return d
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{m} is damaged ({err}); delete the run folder {run_dir} and train again", m) from err


def atomic_write(path: str | Path, write: Callable[[str], None], record: bool = True) -> None:
    """``write(tmp_path)`` then an fsync'd ``os.replace`` onto ``path``; with ``record``, its sha256 goes
    into ``checksums.json`` beside it (after the file, so a crash in between leaves an entry that
    does not match: the file is then refused, never read silently)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        digest = _sha256(tmp) if record else None
        _replace_synced(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if record:
        manifest = _read_manifest(path.parent) or {}
        manifest[path.name] = digest
        text = json.dumps(manifest, indent=1, sort_keys=True)
        atomic_write(path.parent / MANIFEST, lambda p: Path(p).write_text(text), record=False)


def verified(path: str | Path, fix: str | None = None, last_good: int | None = None) -> Path:
    """``path`` after checking its sha256 against the run folder's ``checksums.json``."""
    path = Path(path)
    run_dir = path.parent
    fix = fix or f"delete the run folder {run_dir} and train the run again"
    manifest = _read_manifest(run_dir)
    if manifest is None:
        return path                                  # written before manifests: read as before
    want = manifest.get(path.name)
    if want is None:
        raise CheckpointError(f"{path} has no checksum in {run_dir / MANIFEST} (it was not written by the "
                              f"trainer, or the save was interrupted); {fix}", path, last_good)
    try:
        got = _sha256(path)
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err}); {fix}", path, last_good) from err
    if got != want:
        size = path.stat().st_size
        raise CheckpointError(f"{path} is damaged: its sha256 does not match the one recorded when it was "
                              f"written ({size} bytes now; truncated or altered); {fix}", path, last_good)
    return path


def record_folder(folder: str | Path) -> dict:
    """Write ``checksums.json`` into a model folder: the sha256 of every file under it, keyed by its path
    relative to the folder (``unet/diffusion_pytorch_model.safetensors``), written atomically.  Returns it."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.name != MANIFEST)
    manifest = {p.relative_to(folder).as_posix(): _sha256(p) for p in files}
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(text), record=False)
    return manifest


def verify_folder(folder: str | Path, fix: str) -> bool:
    """Check a model folder against its ``checksums.json`` (``record_folder``): every file recorded is there
    with its sha256, and every weight or config file there (``.safetensors``, ``.json``) is recorded.  A
    difference raises ``CheckpointError`` naming the file, what is wrong and ``fix``.  Returns False for a
    folder with no ``checksums.json`` (written before folders recorded them: read as before), else True."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest is None:
        return False
    for rel, want in sorted(manifest.items()):
        path = folder / rel
        if not path.is_file():
            raise CheckpointError(f"the model file {path} is missing (it is recorded in {folder / MANIFEST}); {fix}",
                                  path)
        if _sha256(path) != want:
            raise CheckpointError(f"the model file {path} is damaged: its sha256 does not match the one recorded in "
                                  f"{folder / MANIFEST} ({path.stat().st_size} bytes now; altered or truncated); "
                                  f"{fix}", path)
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.suffix in (".safetensors", ".json") and p.name != MANIFEST and p.is_file())
    extra = [rel for rel in extra if rel not in manifest]
    if extra:
        raise CheckpointError(f"{folder} holds files its {MANIFEST} does not record ({', '.join(extra)}): not the "
                              f"folder that was written; {fix}", folder / extra[0])
    return True


def pid_alive(pid: int, own: bool = True) -> bool:
    """Whether process ``pid`` runs (``own``: what this process counts as); where it cannot be told, True."""
    if pid == os.getpid():
        return own
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove the ``.<name>.tmp-<pid>`` files of dead processes (or this one) in ``run_dir``; returns them."""
    removed = []
    for p in Path(run_dir).iterdir():
        m = _TMP.fullmatch(p.name)
        if m and p.is_file() and not pid_alive(int(m["pid"]), own=False):
            p.unlink()
            removed.append(p)
    return removed


class RunLock:
    """``with RunLock(run_dir):`` one training process per run folder; others are refused at once."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.fd: int | None = None
        self.flocked = False

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: dict):
        raise RuntimeError(f"{self.run_dir} is in use: another training holds its lock {self.path} "
                           f"(pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since "
                           f"{holder.get('started', '?')}); wait for it to finish or stop it, or pass another run_dir")

    def __enter__(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is not None:                        # posix: the kernel lock decides; the JSON is for messages
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._refuse(self._holder())
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(me).encode())
            self.fd, self.flocked = fd, True
            return self
        for _ in range(2):                           # elsewhere: O_EXCL, a dead holder's lock taken over
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                h = self._holder()
                if h.get("host") == me["host"] and isinstance(h.get("pid"), int) and not pid_alive(h["pid"]):
                    self.path.unlink(missing_ok=True)
                    continue
                self._refuse(h)
            os.write(fd, json.dumps(me).encode())
            self.fd = fd
            return self
        self._refuse(self._holder())

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                if self.flocked:
                    os.ftruncate(self.fd, 0)         # the file stays: unlinking it would race a waiting process
                else:
                    self.path.unlink(missing_ok=True)
            finally:
                os.close(self.fd)
                self.fd = None
        return False


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:200] if text else type(err).__name__)


def read_safetensors(path: str | Path, fix: str | None = None, last_good: int | None = None, device="cpu",
                     metadata: bool = False) -> dict:
    """The tensors of a safetensors file (``metadata=True``: its metadata), after ``verified``; a file that
    does not verify or does not load raises ``CheckpointError`` naming it and ``fix``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    verified(path, fix, last_good)
    fix = fix or f"delete the run folder {path.parent} and train the run again"
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        if metadata:
            with safe_open(str(path), framework="pt") as f:
                return f.metadata() or {}
        return load_file(str(path), device=str(device))
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_reason(err)}); it is damaged: {fix}",
                              path, last_good) from err


class Run:
    """``with Run(run_dir, fix) as run:`` one training's folder, the same for both trainers: the folder is
    made, its lock held (``RunLock``: a second process is refused at once, naming the holder), the
    temporaries of saves that were killed removed; ``run.load()`` is the verified checkpoint ``state.pt``
    (or None for a new run) and ``run.save(state)`` writes it atomically.  ``lock=False``: for readers
    (``load_history``, ``ema_models``) and the helper processes of a distributed run, which never write."""

    def __init__(self, run_dir: str | Path, fix: str | None = None, lock: bool = True, name: str = "state.pt"):
        self.dir, self.fix, self.path = Path(run_dir), fix, Path(run_dir) / name
        self._lock = RunLock(self.dir) if lock else None

    def __enter__(self) -> "Run":
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._lock is not None:
            self._lock.__enter__()
            clean_temporaries(self.dir)
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.__exit__(*exc)
        return False

    def load(self, keys=(), last_good: int | None = None, map_location="cpu") -> dict | None:
        """The dict ``torch.load`` reads from ``state.pt`` (``weights_only=True``) after ``verified``, or None
        if there is none; a file that does not verify, does not load or lacks one of ``keys`` raises
        ``CheckpointError`` naming it and the fix."""
        if not self.path.exists():
            return None
        verified(self.path, self.fix, last_good)
        try:
            import torch
            state = torch.load(self.path, map_location=map_location, weights_only=True)
            if not isinstance(state, dict) or not set(keys) <= set(state):
                raise ValueError("not a diffnb training state")
        except Exception as err:
            raise CheckpointError(f"{self.path} is damaged or not a diffnb training state ({_reason(err)}); "
                                  f"{self.fix or f'delete the run folder {self.dir} and train the run again'}",
                                  self.path, last_good) from err
        return state

    def save(self, state: dict) -> None:
        import torch
        atomic_write(self.path, lambda p: torch.save(state, p))
