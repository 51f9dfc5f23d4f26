"""Progress bars for long work: widgets in JupyterLab, plain text in headless runs.

``DIFFNB_PROGRESS`` picks the kind: ``auto`` (default: a widget in a notebook, text elsewhere),
``text`` (plain text updated at most every 10 s: what ``python -m diffnb.pack`` uses, so stored
notebooks show the finished bar instead of a widget that no longer exists) or ``off``.
"""
from __future__ import annotations

import os


def progress(iterable=None, **kwargs):
    mode = os.environ.get("DIFFNB_PROGRESS", "auto")
    if mode == "off":
        kwargs["disable"] = True
    if mode == "text":
        from tqdm.std import tqdm
        kwargs.setdefault("mininterval", 10.0)
        kwargs.setdefault("ascii", True)
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, **kwargs)
