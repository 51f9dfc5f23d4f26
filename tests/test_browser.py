"""Every notebook in a real browser: JupyterLab driven by Chromium (playwright), as a learner runs it.

The notebooks are the learner's edition (``diffnb.exercises.edition.build`` into a temporary folder, so
the committed notebooks are never written), the one a learner opens: every exercise still a stub, so
each check says "not written yet" and the lesson runs on diffnb's functions.  For each notebook (sorted:
B2.3 reads B2.2's checkpoints, B2.6 reads B2.5's):

  * open it at ``/lab/tree/<name>``, wait for its kernel to be idle, clear the stored outputs (so every
    prompt reads ``[ ]``), then Run menu -> "Run All Cells", and wait until the kernel is idle, no prompt
    shows ``[*]`` and every code cell has an execution count (or a cell failed);
  * no cell has an error output.  JupyterLab 4 renders an error exactly as a stderr stream
    (``.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]``, no class of its own),
    so errors are read from the notebook's model in the page (``output_type == "error"``), through the
    application object that ``--LabApp.expose_app_in_browser`` exposes as ``window.jupyterapp``;
  * every explorer (``diffnb.core.explore``: an ipywidgets box with the CSS class ``diffnb-explorer``) is
    a live widget: there is one box per code cell that calls ``explore(...)`` / ``explore_<x>(...)``, and
    pressing ArrowRight on a slider's handle (``.noUi-handle``) changes the box's ``<img>`` src within
    5 s (the latency is measured in the page, from the keydown to the src change);
  * for a notebook with explorers: saved, closed with its kernel and opened again, every widget output
    was saved with its state, no output reads "Error displaying widget", and every explorer's picture
    still follows its slider (the sliders select the pictures in the browser; the new kernel has none
    of the widgets);
  * a screenshot of the whole notebook after the run (before any control is moved, and also when a
    check then fails) goes to ``build/browser/<notebook>.png``.

A separate test checks that opening a notebook does not mark it modified (``jp-mod-dirty`` on its tab),
and another one writes an exercise as a learner does: in A1.1 it runs the cells above the exercise, types
the solution (taken from the solutions edition) into the exercise cell, runs it and its check, and reads
"passed" in the check's output (screenshot: ``build/browser/learner_A1.1_forward.png``).

Needs Chromium at /usr/bin/chromium (``apt-get install chromium``) and the ``playwright`` package; without
either the tests skip with the reason.  ``pytest tests/test_browser.py -s`` prints one line per notebook.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
except ImportError:                                     # pragma: no cover - depends on the machine
    sync_playwright = PlaywrightTimeout = None

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
BUILD = ROOT / "build"
SHOTS = BUILD / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 120        # JupyterLab answering /api/status
OPEN_S = 120                # a notebook open, with its kernel started and idle
RUN_S = 600                 # Run All Cells of one notebook: a finished Part B run in build/ is loaded, but on a
                            # fresh build/ (as in CI) the training notebooks train first, minutes on 2 cores
MOVE_S = 5                  # a control move until the explorer's picture changes
EXPLORER = "diffnb-explorer"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
EXPLORE_CALL = re.compile(r"explore_\w+\(|explore\(")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LAB_SETTINGS = {
    # every cell attached to the page, whatever JupyterLab's default windowing becomes
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # (no news setting here: the pack's own defaults, jupyter-settings/overrides.d/diffnb.json, answer
    # JupyterLab's "get notified about Jupyter news?" question; a test checks the question is not asked)
}


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return (f"Chromium not found at {CHROMIUM}; install it with `apt-get install chromium` "
                "to run the browser test")
    if sync_playwright is None:
        return ("the Python package playwright is not installed; `pip install -r requirements.txt` "
                "installs it (the browser test uses Chromium from /usr/bin, no playwright download)")
    return None


SKIP = _skip_reason()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]


def expected_explorers(notebook: Path) -> int:
    """Code cells that call an explorer (one explorer per such cell)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum(1 for c in cells if c["cell_type"] == "code" and EXPLORE_CALL.search("".join(c["source"])))


# ---------------------------------------------------------------------------------------- JupyterLab
class Lab:
    """A JupyterLab server on a copy of the notebooks; ``url(path)`` logs in with its token."""

    def __init__(self, root: Path, work: Path):
        self.root, self.token = root, secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        settings = work / "settings"
        for file, values in LAB_SETTINGS.items():
            (settings / file).parent.mkdir(parents=True, exist_ok=True)
            (settings / file).write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if k != "DIFFNB_PROGRESS"}
        env.update(DIFFNB_BUILD=str(BUILD), JUPYTER_CONFIG_DIR=str(work / "config"),
                   JUPYTER_RUNTIME_DIR=str(work / "runtime"))
        self.log = work / "jupyterlab.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={work / 'workspaces'}",
             "--LabApp.expose_app_in_browser=True"],
            cwd=root, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def wait_until_up(self):
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("status")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")

    def shut_down_kernels(self, name: str):
        """End the sessions (and so the kernels) of one notebook."""
        for s in self.api("sessions"):
            if s.get("path") == name:
                self.api(f"sessions/{s['id']}", method="DELETE")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()               # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def lab(request, tmp_path_factory):
    work = tmp_path_factory.mktemp("browser")
    root = work / "notebooks"
    from diffnb.exercises.edition import build
    build(root, NOTEBOOK_DIR)                   # the learner's edition of notebooks/
    server = Lab(root, work)
    request.addfinalizer(server.stop)
    server.wait_until_up()
    return server


@pytest.fixture(scope="module")
def browser(request, tmp_path_factory):
    pw = sync_playwright().start()
    request.addfinalizer(pw.stop)
    context = pw.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
        args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
    request.addfinalizer(context.close)
    context.set_default_timeout(30_000)
    return context


# ---------------------------------------------------------------------------------------- in the page
# The notebook widget in the main area, its kernel and its model (window.jupyterapp: the application).
STATE_JS = """(name) => {
  const app = window.jupyterapp;
  const nb = app && app.shell.currentWidget;
  if (!nb || !nb.context || nb.context.path !== name || !nb.content || !nb.content.model) return null;
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const cells = nb.content.model.cells;
  let code = 0, counted = 0;
  const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    code += 1;
    if (cell.executionCount !== null) counted += 1;
    for (const out of cell.outputs.toJSON())
      if (out.output_type === 'error')
        errors.push({cell: i + 1, ename: out.ename, evalue: out.evalue, traceback: (out.traceback || []).join('\\n')});
  }
  const prompts = [...nb.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
  const dialog = document.querySelector('.jp-Dialog');
  return {kernel: kernel ? kernel.status : 'none', ready: nb.context.isReady, code, counted, errors,
          running: prompts.filter(p => p.includes('*')).length,
          dialog: dialog ? dialog.innerText : null};
}"""

# Watch one explorer box: time of the next keydown in it and of the first change of its picture's src.
WATCH_JS = """(box) => {
  const before = box.querySelector('img').src;
  box.__move = {keyAt: null, changedAt: null};
  box.addEventListener('keydown', () => { if (box.__move.keyAt === null) box.__move.keyAt = performance.now(); },
                      {capture: true, once: true});
  const observer = new MutationObserver(() => {
    const img = box.querySelector('img');
    if (img && img.src !== before && box.__move.changedAt === null) {
      box.__move.changedAt = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(box, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  return before;
}"""


def menu(page, top: str, item: str):
    """Click a main-menu entry, e.g. menu(page, "Run", "Run All Cells")."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(top)}$")).click()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()


def tab(page, name: str):
    label = page.locator(".lm-TabBar-tabLabel", has_text=re.compile(rf"^{re.escape(name)}$"))
    return page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has=label)


def wait_for(page, name: str, done, timeout_s: float, what: str) -> dict:
    """Poll the notebook's state until ``done(state)``; fail on a dialog or at the timeout."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS, name)
        if state and state["dialog"]:
            pytest.fail(f"{name}: JupyterLab shows a dialog while waiting for {what}:\n{state['dialog']}")
        if state and state["kernel"] == "dead":
            pytest.fail(f"{name}: the kernel died while waiting for {what}")
        if state and done(state):
            return state
        page.wait_for_timeout(500)
    pytest.fail(f"{name}: no {what} within {timeout_s:.0f} s (last state: {state})")


def open_notebook(lab: Lab, browser, name: str):
    """A new page with the notebook open (a fresh workspace) and its kernel idle."""
    page = browser.new_page()
    page.goto(lab.url(f"lab/tree/{name}?reset"), wait_until="domcontentloaded")
    wait_for(page, name, lambda s: s["ready"] and s["kernel"] == "idle", OPEN_S, "idle kernel after opening")
    return page


def close_notebook(lab: Lab, page, name: str):
    page.close()                                  # no beforeunload prompt; the copy is temporary anyway
    lab.shut_down_kernels(name)


def screenshot(page, path: Path):
    """The whole notebook: the viewport grown to the notebook's height (JupyterLab scrolls inside a panel)."""
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    extra = page.evaluate("""() => {
      const outer = window.jupyterapp.shell.currentWidget.node.querySelector('.jp-WindowedPanel-outer');
      return outer ? outer.scrollHeight - outer.clientHeight : 0;
    }""")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(size["height"] + max(extra, 0), 16000)})
    page.evaluate("""() => {
      const outer = window.jupyterapp.shell.currentWidget.node.querySelector('.jp-WindowedPanel-outer');
      if (outer) outer.scrollTop = 0;
    }""")
    page.wait_for_timeout(500)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


def move_explorer(box) -> float | None:
    """Press ArrowRight on the first slider that can move; the ms from keydown to a new picture
    (None: every control of this explorer offers a single value)."""
    handles = box.locator(".noUi-handle")
    for i in range(handles.count()):
        h = handles.nth(i)
        if float(h.get_attribute("aria-valuenow")) < float(h.get_attribute("aria-valuemax")):
            break
    else:
        return None
    box.scroll_into_view_if_needed()
    before = box.evaluate(WATCH_JS)
    h.focus()
    h.press("ArrowRight")
    try:
        box.page.wait_for_function("(box) => box.__move.changedAt !== null", arg=box.element_handle(),
                                   timeout=MOVE_S * 1000, polling=50)
        changed = True
    except PlaywrightTimeout:
        changed = False
    if not changed:
        readout = box.locator(".widget-readout").nth(i).inner_text()
        pytest.fail(f"the explorer's picture did not change within {MOVE_S} s of ArrowRight on slider {i + 1} "
                    f"(now at {readout!r}; <img> src still {before[:70]!r})")
    move = box.evaluate("(box) => box.__move")
    return move["changedAt"] - move["keyAt"]


# ---------------------------------------------------------------------------------------- tests
def test_opening_a_notebook_leaves_it_unmodified(lab, browser):
    name = NOTEBOOKS[0].name
    page = open_notebook(lab, browser, name)
    try:
        page.wait_for_timeout(3000)             # the kernel's info reply updates the metadata after idle
        dirty = "jp-mod-dirty" in (tab(page, name).get_attribute("class") or "")
        stored = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))["metadata"].get("language_info", {})
        here = ".".join(map(str, sys.version_info[:3]))
        toasts = page.locator(".Toastify__toast").all_inner_texts()
        assert not [t for t in toasts if "news" in t.lower()], (
            f"JupyterLab asks about Jupyter news ({toasts}): the pack's settings (jupyter-settings/overrides.d/"
            "diffnb.json, installed by requirements.txt) should answer it; reinstall them with "
            "`pip install ./jupyter-settings`")
        if dirty and stored.get("version") != here:
            pytest.skip(f"the stored notebooks were run on Python {stored.get('version')} and this kernel is Python "
                        f"{here}: JupyterLab writes the kernel's version into the metadata on opening, which marks "
                        "the notebook modified; that is expected on another Python, so nothing is left to check")
        assert not dirty, f"opening {name} marked it modified"
    finally:
        close_notebook(lab, page, name)


def test_an_html_page_of_the_pack_reads_offline(browser, tmp_path):
    """A notebook's HTML page as ``python -m diffnb.pack`` writes it, opened from disk with every network
    request refused: its formulas are drawn (MathML elements with a size), no ``$...$`` is left in its
    prose, and the page asked the network for nothing (screenshot: ``build/browser/html_A1.8.png``)."""
    from diffnb import pack
    html_page = tmp_path / "A1.8_visual_anagrams.html"
    pack.to_html(NOTEBOOK_DIR / "A1.8_visual_anagrams.ipynb", html_page)
    page = browser.new_page()
    asked = []

    def refuse(route):
        asked.append(route.request.url)
        route.abort()
    page.route(re.compile(r"^https?://"), refuse)
    try:
        page.goto(html_page.as_uri(), wait_until="load")
        page.wait_for_timeout(500)
        drawn = page.evaluate("""() => [...document.querySelectorAll('.jp-RenderedMarkdown math')].map(m => {
          const r = m.getBoundingClientRect(); return [r.width, r.height, m.getAttribute('display')]; })""")
        prose = page.evaluate("""() => [...document.querySelectorAll('.jp-RenderedMarkdown')].map(d => {
          const c = d.cloneNode(true); c.querySelectorAll('code, pre, math').forEach(e => e.remove());
          return c.innerText; }).join('\\n')""")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "html_A1.8.png"))
    finally:
        page.close()
    assert asked == [], f"the page asked the network for {asked}"
    assert len(drawn) >= 5 and any(d == "block" for _, _, d in drawn)
    assert all(w > 0 and h > 0 for w, h, _ in drawn), drawn
    assert not re.search(r"\$[^$\s][^$]*\$", prose), prose[:500]


def test_a_learner_writes_forward_and_its_check_passes(lab, browser):
    import nbformat
    name = "A1.1_forward.ipynb"
    solved = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    [answer] = [c.source for c in solved.cells if "exercise:forward" in c.metadata.get("tags", [])]
    page = open_notebook(lab, browser, name)
    try:
        k = page.evaluate("""() => {
          const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
          for (let i = 0; i < cells.length; i++)
            if ((cells.get(i).getMetadata('tags') || []).includes('exercise:forward')) return i;
          return -1;
        }""")
        assert k >= 0, f"{name}: no cell tagged exercise:forward in the learner's edition"
        page.evaluate(f"() => {{ window.jupyterapp.shell.currentWidget.content.activeCellIndex = {k}; }}")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-above')")
        wait_for(page, name, lambda s: s["kernel"] == "idle" and s["running"] == 0 and s["counted"] >= 2, RUN_S,
                 "the cells above the exercise")
        editor = page.locator(".jp-Notebook .jp-Cell").nth(k).locator(".cm-content")
        assert "raise NotImplementedError()" in editor.inner_text(), "the exercise cell is not the stub"
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(answer)                       # typed text, without the editor's auto-indent
        page.keyboard.press("Shift+Enter")                      # run the exercise, move to its check
        page.keyboard.press("Shift+Enter")                      # run the check
        check = page.locator(".jp-Notebook .jp-Cell").nth(k + 1).locator(".jp-OutputArea-output")
        check.first.wait_for(timeout=RUN_S * 1000)
        text = check.first.inner_text()
        screenshot(page, SHOTS / "learner_A1.1_forward.png")
        assert "✅ forward: passed" in text and "use your forward" in text, text
        print(f"\n[browser] learner's A1.1: typed forward, its check says: {text.strip()}", flush=True)
    finally:
        close_notebook(lab, page, name)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab(notebook, lab, browser, notebook_turn):
    with notebook_turn(notebook.name):          # nbval may be running the same notebook (conftest.py)
        run_in_jupyterlab(notebook, lab, browser)


def run_in_jupyterlab(notebook, lab, browser):
    name = notebook.name
    expected = expected_explorers(lab.root / name)
    t0 = time.monotonic()
    page = open_notebook(lab, browser, name)
    try:
        t_open = time.monotonic() - t0
        menu(page, "Edit", "Clear Outputs of All Cells")
        wait_for(page, name, lambda s: s["counted"] == 0, 30, "cleared prompts")

        t1 = time.monotonic()
        menu(page, "Run", "Run All Cells")
        state = wait_for(page, name, lambda s: s["kernel"] == "idle" and s["running"] == 0
                         and (s["counted"] == s["code"] or s["errors"]), RUN_S, "end of Run All Cells")
        t_run = time.monotonic() - t1
        t2 = time.monotonic()                   # saved before the checks, so a failure has its picture too
        screenshot(page, SHOTS / f"{notebook.stem}.png")
        t_shot = time.monotonic() - t2

        errors = [f"cell {e['cell']}: {e['ename']}: {e['evalue']}\n{ANSI.sub('', e['traceback'])}"
                  for e in state["errors"]]
        assert not errors, f"{name}: error output after Run All Cells:\n" + "\n\n".join(errors)
        assert state["counted"] == state["code"], f"{name}: {state['code'] - state['counted']} code cell(s) did not run"

        boxes = page.locator(f".{EXPLORER}")
        assert boxes.count() == expected, (
            f"{name}: {boxes.count()} live explorer(s) (.{EXPLORER}) in the page, expected {expected} "
            "(one per code cell that calls explore(...) / explore_<x>(...))")
        latencies = []
        for i in range(expected):
            box = boxes.nth(i)
            assert box.locator("img").count() == 1, f"{name}: explorer {i + 1} has no picture (<img>)"
            assert box.locator(".noUi-handle").count() >= 1, f"{name}: explorer {i + 1} has no slider"
            latencies.append(move_explorer(box))

        moves = ", ".join("fixed" if ms is None else f"{ms:.0f} ms" for ms in latencies) or "-"
        reopened = ""
        if expected:
            page = save_and_reopen(lab, browser, page, name, expected)
            reopened = "; saved and reopened: explorers shown from the saved state, and they move"
        print(f"\n[browser] {notebook.stem}: run all {t_run:.1f} s; {expected} explorer(s), moves: {moves}; "
              f"open {t_open:.1f} s, screenshot {t_shot:.1f} s{reopened}", flush=True)
    finally:
        close_notebook(lab, page, name)


def save_and_reopen(lab, browser, page, name: str, expected: int):
    """Save the run notebook, close it (and its kernel), open it again: every widget output of the saved
    file has its state saved with it (``jupyter-settings/``: saveState), the page shows each explorer
    from that state, with no "Error displaying widget: model not found", and each explorer's picture still
    follows its slider (linked in the browser; the fresh kernel has none of the widgets).  Returns the
    new page."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    deadline = time.monotonic() + 30
    while "jp-mod-dirty" in (tab(page, name).get_attribute("class") or ""):
        assert time.monotonic() < deadline, f"{name}: still modified 30 s after saving"
        page.wait_for_timeout(250)
    saved = json.loads((lab.root / name).read_text(encoding="utf-8"))
    state = saved["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    views = [o["data"][WIDGET_VIEW]["model_id"] for c in saved["cells"] if c["cell_type"] == "code"
             for o in c["outputs"] if WIDGET_VIEW in o.get("data", {})]
    unsaved = [m for m in views if m not in state]
    assert len(views) >= expected and not unsaved, (
        f"{name}: {len(unsaved)} of {len(views)} widget outputs were saved without their state; is "
        "jupyter-settings installed (pip install -r requirements.txt) and saveState not turned off?")
    close_notebook(lab, page, name)
    page = open_notebook(lab, browser, name)
    page.wait_for_timeout(2000)                    # the widget manager restores the saved models
    broken = page.get_by_text("Error displaying widget").count()
    assert broken == 0, f"{name}: {broken} output(s) read 'Error displaying widget' after save and reopen"
    shown = page.locator(f".{EXPLORER} img").count()
    assert shown == expected, f"{name}: {shown} of {expected} explorers show a picture after save and reopen"
    boxes = page.locator(f".{EXPLORER}")
    for i in range(boxes.count()):           # the new kernel knows none of these widgets: the browser answers
        move_explorer(boxes.nth(i))
    return page
