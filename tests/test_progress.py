"""Progress bars in a real kernel: a widget while the work runs, its final line as text after it.

A notebook saved in JupyterLab keeps no widget state by default, so a bar left as a widget reads
"Error displaying widget: model not found" when the notebook is opened again; ``diffnb.core.progress``
replaces each widget bar by its final line when it closes (``leave=True``) or by nothing (``leave=False``).
"""
import os

import nbformat
import pytest
from nbclient import NotebookClient

WIDGET = "application/vnd.jupyter.widget-view+json"

LOOP = """\
import time
from diffnb.core.progress import progress
for _ in progress(range(3), desc="{desc}", leave={leave}):
    time.sleep(1.0)                       # 3 s: longer than the bar's 2 s delay, so it is shown
print("done")
"""


def _run(source: str, mode: str | None = None):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    env = {k: v for k, v in os.environ.items() if k != "DIFFNB_PROGRESS"}       # auto: a widget in a kernel
    if mode is not None:
        env["DIFFNB_PROGRESS"] = mode
    client = NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False)
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb.cells[0].outputs


@pytest.mark.parametrize("leave", [True, False])
def test_a_widget_bar_leaves_text_not_a_widget(leave):
    outputs = _run(LOOP.format(desc="sampling", leave=leave))
    assert not any(WIDGET in o.get("data", {}) for o in outputs), f"a widget is left in the outputs: {outputs}"
    shown = [o for o in outputs if o["output_type"] in ("display_data", "update_display_data")]
    assert len(shown) == 1, f"the bar was not displayed once (with a display id): {outputs}"
    text = shown[0]["data"]["text/plain"]
    if leave:
        assert text.startswith("sampling: 100%") and "3/3" in text, text
    else:
        assert text == "", text
    assert outputs[-1]["output_type"] == "stream" and outputs[-1]["text"] == "done\n"
    assert not any(o["output_type"] == "stream" and o["name"] == "stderr" for o in outputs), outputs


def test_short_work_shows_no_bar():
    outputs = _run(LOOP.format(desc="quick", leave=True).replace("1.0", "0.1"))
    assert [o["output_type"] for o in outputs] == ["stream"], outputs


def test_a_text_bar_in_a_kernel_is_one_output_updated_in_place():
    """``DIFFNB_PROGRESS=text`` (the pack's stored runs): the bar is refreshed several times (every 0.2 s
    here) and the stored cell keeps one plain output, its final line; nothing goes to stderr."""
    source = LOOP.format(desc="sampling", leave=False).replace('leave=False', 'leave=False, mininterval=0.2')
    outputs = _run(source, mode="text")
    shown = [o for o in outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1, f"expected one display of the bar: {outputs}"
    text = shown[0]["data"]["text/plain"]
    assert text.startswith("sampling: 100%") and "3/3" in text, text      # text mode always leaves its line
    assert not any(o["output_type"] == "stream" and o["name"] == "stderr" for o in outputs), outputs
    assert outputs[-1]["output_type"] == "stream" and outputs[-1]["text"] == "done\n"
