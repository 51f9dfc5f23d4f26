"""Progress bars for long work: widgets in JupyterLab, plain text in headless runs.

``DIFFNB_PROGRESS`` picks the kind: ``auto`` (default: a widget in a notebook, text elsewhere),
``text`` (plain text updated at most every 10 s: what ``python -m diffnb.pack`` uses, so stored
notebooks show the finished bar instead of a widget that no longer exists) or ``off``.  A text bar
appears only for work that lasts over 2 s and always leaves its final line (``leave=True``), so a
stored notebook shows "100%" and the time taken, never a 0% bar or an empty line; a widget bar also
waits 2 s, so short work never flashes one.

``show_loops()`` turns on the bars of Part A's denoising loops for the rest of the process (the
notebooks' setup calls it; tests and library use stay quiet unless they ask per call).
"""
from __future__ import annotations

import os


_LOOPS = {"shown": False}


def show_loops(on: bool = True) -> None:
    """Let loops whose ``progress`` argument is ``None`` show a bar (``on``) or not."""
    _LOOPS["shown"] = bool(on)


def loops_shown() -> bool:
    """Whether loops with ``progress=None`` show a bar (``show_loops``)."""
    return _LOOPS["shown"]


def progress(iterable=None, **kwargs):
    mode = os.environ.get("DIFFNB_PROGRESS", "auto")
    if mode == "off":
        kwargs["disable"] = True
    if mode == "text":
        from tqdm.std import tqdm
        kwargs.setdefault("mininterval", 10.0)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("delay", 2.0)
        kwargs["leave"] = True
    else:
        from tqdm.auto import tqdm
        kwargs.setdefault("delay", 2.0)
    return tqdm(iterable, **kwargs)
