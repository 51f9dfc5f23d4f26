"""How one ``pytest`` run is arranged across processes (pytest-xdist: ``-n auto`` in pyproject.toml, and the
scheduler below).

* Every process runs torch on one thread, and so do the kernels it starts (``DIFFNB_THREADS=1`` is
  inherited by nbval's kernels and by JupyterLab's): two processes on two cores then share the machine
  instead of spin-waiting on each other's OpenMP threads.
* A notebook runs top to bottom in one process, and the notebooks in order: nbval's cells of all
  notebooks form one work unit ("notebooks"), the browser test's items another ("browser"), so B2.6
  runs after B2.5 in either, as a learner runs them.  Every other test is a unit of its own.
* The two groups run the same notebooks beside each other, and a training notebook trains its run in
  ``build/`` when it is missing, holding the run's lock (a second trainer is refused: ``RunLock``).
  So each notebook is run by one group at a time: a process waits on ``build/test-locks/<notebook>.lock``
  (``fcntl.flock``) before it starts a notebook and releases it when that notebook is done; the second
  group then finds the run trained and loads it.

``pytest -n 0`` runs everything in this one process, as before.
"""
from __future__ import annotations

import contextlib
import os

import pytest


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("DIFFNB_THREADS", "1")
        import torch
        torch.set_num_threads(1)


def group_of(nodeid: str) -> str:
    """The work unit of a test: "notebooks" for nbval's cells, "browser" for the browser test, else itself."""
    path = nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        return "notebooks"
    if path.endswith("test_browser.py"):
        return "browser"
    return nodeid


def _is_nbval(item) -> bool:
    return group_of(item.nodeid) == "notebooks"


def pytest_xdist_make_scheduler(config, log):
    """xdist's ``loadscope`` with the two groups above as its scopes, handed out in collection order
    (tests/, the browser test among them, then notebooks/): one process takes the browser test (which
    trains Part B's runs on an empty build/) while the other runs the unit tests, and nbval's notebooks
    come last, when the runs they load are trained.  (xdist's ``loadgroup`` marks are not read under
    pytest 9, which derives node ids from ``Node._id``, not the ``_nodeid`` that xdist rewrites; and its
    default reordering, largest scope first, would start nbval and the browser test together, each
    waiting for the other's training.)"""
    from xdist.scheduler import LoadScopeScheduling

    class NotebookGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False
    return NotebookGroups(config, log)


@contextlib.contextmanager
def notebook_turn(name: str):
    """Hold ``build/test-locks/<name>.lock`` (blocking) while a notebook runs; see the module docstring."""
    import fcntl
    from diffnb.core.paths import build_dir
    locks = build_dir() / "test-locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                     # closing the descriptor releases the lock


@pytest.fixture(name="notebook_turn")
def notebook_turn_fixture():
    """The browser test's ``with notebook_turn(name):`` around each notebook it runs."""
    return notebook_turn


_held: dict = {}                         # notebook path -> its held turn (nbval)


@contextlib.contextmanager
def quiet_bars():
    """``DIFFNB_PROGRESS=off`` while nbval's kernel starts (it inherits this process's environment): a
    checked cell whose loop runs over 2 s on a slow machine would otherwise show a bar that nbval
    compares.  nbval checks readings; the browser test sees the bars a learner sees."""
    before = os.environ.get("DIFFNB_PROGRESS")
    os.environ["DIFFNB_PROGRESS"] = "off"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DIFFNB_PROGRESS", None)
        else:
            os.environ["DIFFNB_PROGRESS"] = before


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """nbval: take the notebook's turn at its first cell (before its kernel starts)."""
    if _is_nbval(item) and item.path not in _held:
        stack = contextlib.ExitStack()
        stack.enter_context(notebook_turn(item.path.name))
        stack.enter_context(quiet_bars())
        _held[item.path] = stack


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """nbval: give the turn back after the notebook's last cell."""
    if _is_nbval(item) and (nextitem is None or nextitem.path != item.path):
        stack = _held.pop(item.path, None)
        if stack is not None:
            stack.close()
