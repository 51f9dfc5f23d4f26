"""Progress bars for long work: widgets in JupyterLab, plain text in headless runs.

``DIFFNB_PROGRESS`` picks the kind: ``auto`` (default: a widget in a notebook, text elsewhere),
``text`` (plain text updated at most every 10 s: what ``python -m diffnb.pack`` uses, so stored
notebooks show the finished bar instead of a widget that no longer exists) or ``off``.  A text bar
appears only for work that lasts over 2 s and always leaves its final line (``leave=True``), so a
stored notebook shows "100%" and the time taken, never a 0% bar or an empty line; a widget bar also
waits 2 s, so short work never flashes one.  In a kernel a text bar is one plain output updated in
place (a display id), so a stored notebook holds its final line once, as ordinary output, not every
refresh in a stderr box; outside a kernel it writes to stderr as tqdm does.

A widget bar does not outlive its work: when it closes, its output is replaced (the display's id) by
its final line as plain text (``leave=True``) or by nothing (``leave=False``).  A notebook saved in
JupyterLab and opened again then shows "100% ... 50/50 [00:03]", not "Error displaying widget: model
not found" (JupyterLab does not save widget state by default).

``show_loops()`` turns on the bars of Part A's denoising loops for the rest of the process (the
notebooks' setup calls it; tests and library use stay quiet unless they ask per call).
"""
from __future__ import annotations

import functools
import os


_LOOPS = {"shown": False}


def show_loops(on: bool = True) -> None:
    """Let loops whose ``progress`` argument is ``None`` show a bar (``on``) or not."""
    _LOOPS["shown"] = bool(on)


def loops_shown() -> bool:
    """Whether loops with ``progress=None`` show a bar (``show_loops``)."""
    return _LOOPS["shown"]


@functools.cache
def _notebook_bar():
    """tqdm's widget bar, displayed with a display id and replaced by text on close (module docstring)."""
    from IPython.display import display
    from tqdm.notebook import tqdm as widget_bar

    class NotebookBar(widget_bar):
        handle = None

        def display(self, *args, **kwargs):
            if kwargs.get("check_delay", True) and self.delay > 0 and not self.displayed and self.handle is None:
                self.handle = display(self.container, display_id=True)
                self.displayed = True                   # tqdm's own display() would show it a second time
            return super().display(*args, **kwargs)

        def close(self):
            if self.disable:
                return
            super().close()
            if self.handle is not None:
                line = self.format_meter(**self.format_dict) if self.leave else ""
                self.handle.update({"text/plain": line}, raw=True)
                self.handle = None
                self.container.close()

    return NotebookBar


@functools.cache
def _kernel_text_bar():
    """tqdm's text bar drawn as one display (a display id) instead of ``\\r`` lines on stderr."""
    import io

    from IPython.display import display
    from tqdm.std import tqdm as text_bar

    class KernelTextBar(text_bar):
        handle = None

        def __init__(self, *args, **kwargs):
            kwargs["file"] = io.StringIO()              # tqdm's own writes ('\\r', '\\n') go nowhere
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            line = self.__str__() if msg is None else msg
            if self.handle is None:
                if not line:
                    return True
                self.handle = display({"text/plain": line}, raw=True, display_id=True)
            else:
                self.handle.update({"text/plain": line}, raw=True)
            return True

    return KernelTextBar


def _in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (JupyterLab, papermill, nbval), not a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def _in_notebook() -> bool:
    from tqdm.auto import tqdm as auto_bar              # tqdm's own choice: a widget bar in a kernel with ipywidgets
    from tqdm.notebook import tqdm as widget_bar
    return issubclass(auto_bar, widget_bar)


def progress(iterable=None, **kwargs):
    mode = os.environ.get("DIFFNB_PROGRESS", "auto")
    if mode == "off":
        kwargs["disable"] = True
    if mode == "text":
        from tqdm.std import tqdm
        if _in_kernel():
            tqdm = _kernel_text_bar()
        kwargs.setdefault("mininterval", 10.0)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("delay", 2.0)
        kwargs["leave"] = True
    elif _in_notebook():
        tqdm = _notebook_bar()
        kwargs.setdefault("delay", 2.0)
        kwargs.setdefault("display", False)             # shown after ``delay`` (2 s), with a display id
    else:
        from tqdm.auto import tqdm
        kwargs.setdefault("delay", 2.0)
    return tqdm(iterable, **kwargs)
