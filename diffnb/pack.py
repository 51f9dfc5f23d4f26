"""Run the course pack headless: every notebook through papermill, an HTML page each, an index.

    python -m diffnb.pack                       # all notebooks, quick profile -> build/pack/
    python -m diffnb.pack -p profile seed       # the write-up's settings (GPU; DeepFloyd for Part A)
    python -m diffnb.pack --only B2             # notebooks whose name contains "B2"
    python -m diffnb.pack --commit              # maintainers: store the outputs in notebooks/
    python -m diffnb.pack --index-only          # the front page from the stored outputs, nothing run

Executed notebooks go to ``build/pack/notebooks``, HTML pages to ``build/pack/html`` and the
front page to ``build/pack/index.html``: per notebook its title, what it teaches, a thumbnail of its
first figure, its checked reading (the output of the cells marked ``# NBVAL_CHECK_OUTPUT``), its time
and status, all read from the executed notebook.  ``--index-only`` builds that page in a second from
the notebooks in ``notebooks/``, which are stored with the outputs of a quick run.  ``--commit``
writes the executed notebooks back into ``notebooks/`` with a hash of their sources, which the tests
use to spot stale outputs.

Parameters are checked before anything runs: a value of the wrong kind (``-p pairs 3``,
``-p guidance_scale seven``) stops the pack with the parameter's name (``diffnb.profiles``), and a
notebook given a parameter it does not have (``-p num_hidden 8``) is not run: its row fails, naming
the parameters it has, and the pack exits non-zero.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import html
import json
import os
import re
import sys
import time
from pathlib import Path

from diffnb.core.paths import build_dir, project_root

KERNEL = "python3"
#: the kernelspec as JupyterLab writes it for ipykernel's python3: stored so, an untouched notebook opens unmodified
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL}
#: the first line of a cell whose output nbval compares and the front page shows as the notebook's reading
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"


def notebook_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks(only: str | None = None) -> list[Path]:
    """The pack's notebooks in course order (their names sort in that order)."""
    books = sorted(p for p in notebook_dir().glob("*.ipynb") if not p.name.startswith("."))
    if only:
        books = [p for p in books if only in p.name]
    return books


def source_hash(nb: dict) -> str:
    """Hash of what a notebook says and runs (cell types and sources), not of its outputs."""
    h = hashlib.sha256()
    for cell in nb["cells"]:
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        h.update(cell["cell_type"].encode() + b"\0" + src.encode() + b"\0")
    return h.hexdigest()[:16]


def parameters_cell(nb: dict) -> dict:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a notebook needs exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def parameter_names(nb: dict) -> list[str]:
    """The names the parameters cell assigns, in order (what papermill may override)."""
    src = "".join(parameters_cell(nb)["source"])
    names = []
    for node in ast.parse(src).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameters_exist(nb: dict, params: dict, name: str = "this notebook",
                           elsewhere: dict[str, list[str]] | None = None) -> None:
    """Raise ``ValueError`` if ``params`` holds a name the notebook's parameters cell does not have,
    naming the parameters it has (papermill itself only warns, and runs with the defaults).
    ``elsewhere``: parameter -> other notebooks that have it, for the hint."""
    have = parameter_names(nb)
    unknown = [p for p in params if p not in have]
    if not unknown:
        return
    hints = []
    for p in unknown:
        others = (elsewhere or {}).get(p, [])
        hints.append(f"{p!r} is a parameter of {', '.join(others)} (select those with --only)" if others
                     else f"{p!r} is a parameter of no notebook here (a misspelling?)")
    raise ValueError(f"{name} has no parameter {', '.join(repr(p) for p in unknown)}; its parameters are "
                     f"{have}; {'; '.join(hints)}")


def _names_or_none(path: Path) -> list[str] | None:
    try:
        return parameter_names(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, SyntaxError):
        return None


def parameter_values(nb: dict) -> dict:
    """The literals assigned in the parameters cell (raises if anything else is in it)."""
    src = "".join(parameters_cell(nb)["source"])
    values = {}
    for node in ast.parse(src).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"the parameters cell may only assign plain literals, found: {ast.unparse(node)}")
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def _parse_params(pairs: list[list[str]]) -> dict:
    params = {}
    for name, raw in pairs:
        try:
            params[name] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[name] = raw                     # a bare word is a string: -p profile seed
    return params


def _clean_for_commit(nb: dict) -> dict:
    """Drop papermill's per-cell timings so committed notebooks diff cleanly; store the kernelspec as
    JupyterLab writes it; stamp the source hash."""
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    nb["metadata"].pop("papermill", None)
    nb["metadata"]["kernelspec"] = dict(KERNELSPEC)
    nb["metadata"]["diffnb"] = {"source_hash": source_hash(nb), "profile": "quick"}
    return nb


def kernel_manager_class():
    """The kernel manager papermill starts each notebook's kernel with: jupyter_client's, talking to
    the kernel over local (``ipc``) sockets where the system has them.  Over TCP, ipykernel warns on
    every start that the connection is not encrypted; a local socket in the user's runtime folder is
    reachable by this user only, so there is nothing to warn about (and nothing is filtered).  On
    Windows, which has no ipc transport, the default (TCP on 127.0.0.1) stays.  Nor is a finished
    notebook's kernel interrupted on its way out (see ``_async_interrupt_kernel`` below)."""
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    if os.name == "nt":
        return AsyncKernelManager

    class LocalKernelManager(AsyncKernelManager):
        @default("transport")
        def _local_transport(self):
            return "ipc"

        async def _async_interrupt_kernel(self):
            # jupyter_client interrupts (SIGINT) every kernel before it asks it to shut down; a kernel still
            # finishing its last message then logs "KeyboardInterrupt caught in kernel." on the pack's
            # stderr. The notebook has run to its end here, and the shutdown request (control channel),
            # then SIGTERM and SIGKILL, stop any kernel; a timeout's interrupt (not shutting down) still goes.
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return LocalKernelManager


def run_notebook(src: Path, out: Path, params: dict, timeout: int | None = None) -> float:
    import papermill as pm

    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=KERNEL, cwd=str(src.parent),
                        progress_bar=False, execution_timeout=timeout, kernel_manager_class=kernel_manager_class())
    return time.perf_counter() - t0


#: ``$$...$$`` or ``$...$`` in Markdown (a ``$`` escaped as ``\$`` is not math), and the code (fenced blocks,
#: backtick spans) that is never math
_MATH = re.compile(r"(?<!\\)\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$", re.S)
_CODE = re.compile(r"(^```.*?^```|`[^`\n]*`)", re.S | re.M)
#: characters of a formula's text that Markdown would read as markup, written as character references
_MARKUP = {c: f"&#{ord(c)};" for c in "*_\\`[]$~|"}


def markdown_with_mathml(text: str) -> str:
    """Markdown ``text`` with every formula (``$...$`` inline, ``$$...$$`` displayed) written as MathML by
    ``latex2mathml``, which a browser draws with no script and no network; code is left alone.  The
    MathML's text is escaped against Markdown (``_``, ``*`` ... as character references) so the page's
    Markdown renderer passes it through as it is.  A formula ``latex2mathml`` cannot read raises
    ``ValueError`` naming it (``tests/test_pack.py`` converts every notebook's formulas)."""
    from latex2mathml.converter import convert

    def mathml(m: re.Match) -> str:
        tex, display = (m.group(1), True) if m.group(1) is not None else (m.group(2), False)
        try:
            out = convert(tex.strip(), display="block" if display else "inline")
        except Exception as err:                       # noqa: BLE001 - the parser raises many kinds
            raise ValueError(f"latex2mathml cannot convert the formula ${tex}$ ({type(err).__name__}: {err}); "
                             "write it with commands latex2mathml knows") from err
        unknown = re.search(r">[^<]*(\\[A-Za-z]+)", out)        # a command it does not know comes out as text
        if unknown:
            raise ValueError(f"latex2mathml does not know {unknown.group(1)} in the formula ${tex}$; write it "
                             "with commands latex2mathml knows")
        out = re.sub(r">([^<]+)<", lambda t: ">" + "".join(_MARKUP.get(c, c) for c in t.group(1)) + "<", out)
        return out.replace("\n", "")

    pieces = _CODE.split(text)
    return "".join(p if i % 2 else _MATH.sub(mathml, p) for i, p in enumerate(pieces))


def to_html(nb_path: Path, html_path: Path) -> None:
    """The HTML page of an executed notebook, readable offline: its formulas as MathML
    (``markdown_with_mathml``) and nothing loaded from the network (``diffnb/templates/offline.html.j2``)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(nb_path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = markdown_with_mathml(cell.source)
    exporter = HTMLExporter(template_file=str(Path(__file__).parent / "templates" / "offline.html.j2"))
    body, _ = exporter.from_notebook_node(nb)
    html_path.write_text(body, encoding="utf-8")


def _title(nb_path: Path) -> str:
    return notebook_title(json.loads(nb_path.read_text(encoding="utf-8"))) or nb_path.stem


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def _title_cell(nb: dict) -> tuple[str, str]:
    """(title, the markdown after it) from the first markdown cell with a ``#`` heading."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            lines = _text(cell["source"]).splitlines()
            for i, line in enumerate(lines):
                if line.startswith("#"):
                    return line.lstrip("# ").strip(), "\n".join(lines[i + 1:])
    return "", ""


def notebook_title(nb: dict) -> str:
    """The notebook's first ``#`` heading ("" if it has none)."""
    return _title_cell(nb)[0]


def plain_markdown(text: str) -> str:
    """Markdown prose as plain text: links and images, emphasis and backticks dropped; ``$...$`` kept."""
    pieces = re.split(r"(\$[^$]+\$)", text)               # LaTeX stays as written
    for i in range(0, len(pieces), 2):
        t = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", pieces[i])
        t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
        t = re.sub(r"(\*\*|__)(.+?)\1", r"\2", t)
        t = re.sub(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])", r"\1", t)
        pieces[i] = t.replace("`", "")
    return re.sub(r"\s+", " ", "".join(pieces)).strip()


def shorten(text: str, limit: int = 200) -> str:
    """Whole sentences of ``text`` up to ``limit`` characters (a trailing "...:" lead-in dropped), else
    its first ``limit`` characters cut at a word outside ``$...$``, with "…"."""
    ends = [m.end() for m in re.finditer(r"[.!?:](?=\s|$)", text) if text[:m.end()].count("$") % 2 == 0]
    fits = [e for e in ends if e <= limit]
    if fits and fits[-1] == len(text) and not text.endswith(":"):
        return text
    whole = [e for e in fits if text[e - 1] != ":"]
    if whole:
        return text[:whole[-1]]
    if len(text) <= limit:
        return text if text[-1:] in ".!?)" else text.rstrip(":;, ") + " …"
    cut = text.rfind(" ", 0, limit)
    while cut > 0 and text[:cut].count("$") % 2:
        cut = text.rfind(" ", 0, cut)
    return text[:cut if cut > 0 else limit].rstrip(":;, ") + " …"


def teaching_line(nb: dict, limit: int = 200) -> str:
    """The first paragraph of prose after the title heading, as plain text of at most ~``limit`` chars."""
    for para in re.split(r"\n\s*\n", _title_cell(nb)[1]):
        para = para.strip()
        if para and not para.startswith(("#", ">", "|", "$$", "```", "![", "<")):
            return shorten(plain_markdown(para), limit)
    return ""


def prose_html(text: str) -> str:
    """``text`` (plain text with ``$...$`` math, as ``teaching_line`` gives it) as HTML: the prose escaped,
    each formula as MathML (``latex2mathml``), which a browser draws with no script and no network; a
    formula it cannot convert stays as its escaped LaTeX."""
    from latex2mathml.converter import convert

    out = []
    for i, piece in enumerate(re.split(r"(\$[^$]+\$)", text)):
        if i % 2:
            try:
                out.append(convert(piece[1:-1]))
            except Exception:                        # noqa: BLE001 - any parser failure: show the source
                out.append(html.escape(piece))
        else:
            out.append(html.escape(piece))
    return "".join(out)


def notebook_summary(nb: dict, max_reading_lines: int = 8) -> dict:
    """What the front page shows of an (executed) notebook: ``title``; ``teaches``, one line;
    ``thumbnail_png_b64``, its first PNG output (None without one); ``reading``, the text output of the
    cells whose source begins with the ``# NBVAL_CHECK_OUTPUT`` marker, at most ``max_reading_lines``
    lines (then "…"), leaving out the exercises' check cells (tag ``check:<name>``: they say whether the
    notebook's own code passed, not what the lesson found); ``error``, "Name: message" of its first error
    output ("" without one)."""
    png, reading, error = None, [], ""
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        exercise_check = any(str(t).startswith("check:") for t in cell.get("metadata", {}).get("tags", []))
        checked = _text(cell["source"]).lstrip().startswith(CHECK_MARKER) and not exercise_check
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if png is None and "image/png" in data:
                png = re.sub(r"\s", "", _text(data["image/png"]))
            if out["output_type"] == "error" and not error:
                error = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
            if checked and out["output_type"] == "stream" and out.get("name") == "stdout":
                reading += _text(out["text"]).splitlines()
            elif checked and out["output_type"] == "execute_result" and "text/plain" in data:
                reading += _text(data["text/plain"]).splitlines()
    if len(reading) > max_reading_lines:
        reading = reading[:max_reading_lines] + ["…"]
    return {"title": notebook_title(nb), "teaches": teaching_line(nb), "thumbnail_png_b64": png,
            "reading": reading, "error": error}


def settings_in_words(params: dict) -> str:
    """The run's settings as an HTML sentence ("the `quick` profile (...)", "profile `seed`, device `cuda`")."""
    def value(v):
        return str(v) if isinstance(v, (bool, int, float)) else f"<code>{html.escape(str(v))}</code>"

    if not params:
        return ("the <code>quick</code> profile (the stored default: two CPU cores, offline data and the "
                "pack's own small models)")
    words = ", ".join(f"{html.escape(name.replace('_', ' '))} {value(v)}" for name, v in params.items())
    return words if "profile" in params else f"the <code>quick</code> profile with {words}"


def _row_summary(row: dict) -> dict:
    """The summary of the row's executed notebook; without one, only what the source says (its
    stored outputs are not this run's)."""
    executed, source = row.get("executed"), row.get("source")
    if executed and Path(executed).exists():
        return notebook_summary(json.loads(Path(executed).read_text(encoding="utf-8")))
    if source and Path(source).exists():
        summary = notebook_summary(json.loads(Path(source).read_text(encoding="utf-8")))
        return dict(summary, thumbnail_png_b64=None, reading=[], error="")
    return {"title": "", "teaches": "", "thumbnail_png_b64": None, "reading": [], "error": ""}


def _card(row: dict) -> str:
    s = _row_summary(row)
    title = html.escape(row.get("title") or s["title"] or row["name"])
    page = row.get("page")
    heading = f'<a href="{html.escape(page)}">{title}</a>' if page else title
    thumb = (f'<img alt="first figure of {title}" src="data:image/png;base64,{html.escape(s["thumbnail_png_b64"])}">'
             if s["thumbnail_png_b64"] else "")
    teaches = f'<p class="teaches">{prose_html(s["teaches"])}</p>' if s["teaches"] else ""
    reading = (f'<pre class="reading">{html.escape(chr(10).join(s["reading"]))}</pre>' if s["reading"] else "")
    if row.get("seconds") is None:
        when = "stored run" + (" (sources changed since)" if row.get("stale") else "")
    elif not row["ok"] and not row.get("executed"):
        when = "not run"
    else:
        when = f"{row['seconds']:.0f} s"
    status = ('<span class="ok">ok</span>' if row["ok"]
              else f'<span class="failed">FAILED: {html.escape(row["error"])}</span>')
    return (f'<article class="nb" id="{html.escape(row["name"])}"><div class="thumb">{thumb}</div>'
            f'<div class="body"><h2>{heading}</h2>{teaches}{reading}</div>'
            f'<div class="meta"><span class="file">{html.escape(row["name"]).replace("_", "_<wbr>")}.ipynb</span>'
            f'<span class="time">{html.escape(when)}</span>{status}</div></article>')


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} .lead{color:#444}
article.nb{display:flex;gap:1.2em;align-items:flex-start;border-top:1px solid #ddd;padding:1em 0}
.thumb{flex:0 0 220px;text-align:center}
.thumb img{max-width:220px;max-height:160px;box-sizing:border-box;border:1px solid #ccc}
.body{flex:1;min-width:0} .body h2{font-size:1.1em;margin:0 0 .3em}
.teaches{margin:.2em 0 .5em}
pre.reading{background:#f6f6f6;border-left:3px solid #8a8;padding:.4em .6em;margin:0;font-size:.8em;
  white-space:pre-wrap;overflow-wrap:anywhere}
.meta{flex:0 0 11em;display:flex;flex-direction:column;gap:.2em;font-size:.85em;color:#555;
  text-align:right;overflow-wrap:anywhere}
.file{font-family:monospace}
.ok{color:#176117;font-weight:bold} .failed{color:#a00;font-weight:bold}
code{background:#f2f2f2;padding:0 .2em}
"""


def write_index(rows: list[dict], path: Path, params: dict, stored: bool = False) -> None:
    """The pack's front page: the settings in words, a link to Part A's results page (``results.html``
    next to it) if there is one, then a card per row (keys: name, title, seconds (None: a stored run), ok,
    error, and optionally executed/source notebook paths, page (link), stale)."""
    settings = settings_in_words(params)
    run = f"Settings: {settings}. "
    if stored:
        run += ("Nothing was run for this page: its figures and readings are the outputs stored with the "
                "notebooks in <code>notebooks/</code>; <code>python -m diffnb.pack</code> runs them again, "
                "with an HTML page each.")
    else:
        ran = [r for r in rows if r["seconds"] is not None]
        ok = sum(r["ok"] for r in ran)
        run += f"{ok} of {len(ran)} notebooks ran without an error."
        if len(ran) < len(rows):
            run += (f" The other {len(rows) - len(ran)} (not selected by <code>--only</code>) show the outputs "
                    "stored with the notebooks in <code>notebooks/</code>.")
    if (path.parent / "results.html").exists():
        results = 'Part A measured, method by method: <a href="results.html">the results page</a>.'
    else:
        results = ("Part A's results page (<code>results.html</code>) is not here: "
                   "<code>python -m diffnb.evaluate --n 20</code> writes it.")
    path.write_text(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>diffnb course pack</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>diffnb course pack</h1>\n"
        f"<p class=\"lead\">{run}</p>\n<p class=\"lead\">{results}</p>\n<p class=\"lead\">{_edition_line(path)}</p>\n"
        + "\n".join(_card(r) for r in rows) + "\n</body></html>\n", encoding="utf-8")


def _edition_line(path: Path) -> str:
    """The front page's line on the learner's edition (``build/exercises/`` beside ``build/pack/``)."""
    from diffnb.exercises import catalog
    table = catalog.exercises()
    books = len({ex.notebook for ex in table.values()})
    what = (f"The learner's edition asks for {len(table)} of the course's functions in {books} notebooks, each "
            "checked against diffnb's the moment it is written")
    folder = path.parent.parent / "exercises"
    if folder.is_dir() and any(folder.glob("*.ipynb")):
        return (f'{what}: <a href="../exercises/">build/exercises/</a> (open it with '
                "<code>jupyter lab build/exercises/</code>).")
    return f"{what}: <code>python -m diffnb.exercises build</code> writes it to <code>build/exercises/</code>."


def results_page(out: Path) -> None:
    """Part A's results page beside the front page: made from the figures shipped in ``data/results``
    (``diffnb.evaluate.write_shipped_page``), unless this machine's ``python -m diffnb.evaluate`` wrote
    one there; a missing or damaged shipped copy is said in one line, and the pack goes on."""
    from diffnb import evaluate
    try:
        evaluate.write_shipped_page(out)
    except FileNotFoundError as err:
        print(f"no results page: {err}", flush=True)


def _stored_row(src: Path) -> dict:
    nb = json.loads(src.read_text(encoding="utf-8"))
    error = notebook_summary(nb)["error"]
    stale = nb["metadata"].get("diffnb", {}).get("source_hash") != source_hash(nb)
    return {"name": src.stem, "title": _title(src), "seconds": None, "ok": not error, "error": error,
            "executed": src, "stale": stale}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffnb.pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a notebook parameter, e.g. -p profile seed -p device cuda")
    ap.add_argument("--only", help="run only notebooks whose file name contains this text")
    ap.add_argument("--out", type=Path, help="output folder (default build/pack)")
    ap.add_argument("--commit", action="store_true",
                    help="write the executed notebooks back into notebooks/ (quick profile only)")
    ap.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    ap.add_argument("--index-only", action="store_true",
                    help="run nothing: write the front page from the outputs stored in notebooks/")
    args = ap.parse_args(argv)
    if args.timeout is not None and args.timeout < 1:
        ap.error(f"--timeout must be a positive number of seconds per cell, got {args.timeout}")

    params = _parse_params(args.parameter)
    from diffnb.profiles import check_notebook_parameters
    try:
        check_notebook_parameters(params)             # the kind of each value, before anything runs
    except (TypeError, ValueError) as err:
        ap.error(f"-p {err}")
    os.environ.setdefault("DIFFNB_PROGRESS", "text")     # stored notebooks keep a readable bar
    if args.commit and params:
        ap.error("--commit stores the quick-profile outputs; run it without -p overrides")
    if args.index_only and (params or args.commit):
        ap.error("--index-only shows the stored quick-profile outputs; it takes no -p and no --commit")
    books = list_notebooks(args.only)
    if not books:
        ap.error(f"no notebooks found in {notebook_dir()}" + (f" matching {args.only!r}" if args.only else ""))
    out = args.out or build_dir() / "pack"
    if args.index_only:
        rows = [_stored_row(src) for src in books]
        out.mkdir(parents=True, exist_ok=True)
        results_page(out)
        write_index(rows, out / "index.html", {}, stored=True)
        print(f"front page of {len(rows)} stored notebooks: {out / 'index.html'}")
        return 0 if all(r["ok"] for r in rows) else 1
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "html").mkdir(parents=True, exist_ok=True)
    results_page(out)

    everything = list_notebooks()

    def page(rows: list[dict]) -> list[dict]:
        """This run's rows and, for the notebooks ``--only`` left out, their stored outputs: the front
        page always lists the whole pack, in order."""
        if len(books) == len(everything):
            return rows
        ran = {r["name"]: r for r in rows}
        return [ran.get(src.stem) or _stored_row(src) for src in everything
                if src.stem in ran or src not in books]

    names = {src.name: _names_or_none(src) for src in books} if params else {}
    elsewhere = {p: [b for b, have in names.items() if have and p in have] for p in params}
    rows, failed = [], 0
    for i, src in enumerate(books, 1):
        dest = out / "notebooks" / src.name
        print(f"[{i}/{len(books)}] {src.name} ...", flush=True)
        row = {"name": src.stem, "title": _title(src), "seconds": 0.0, "ok": True, "error": "",
               "executed": dest, "source": src}
        try:
            if params:
                check_parameters_exist(json.loads(src.read_text(encoding="utf-8")), params, src.name, elsewhere)
        except ValueError as err:                 # not run at all: papermill would only warn
            row.update(ok=False, error=f"ValueError: {err}", executed=None)   # an older run's is not this one
            failed += 1
            print(f"      FAILED before running ({err})", flush=True)
            rows.append(row)
            write_index(page(rows), out / "index.html", params)
            continue
        t0 = time.perf_counter()
        try:
            dest.unlink(missing_ok=True)          # a failure shows this run's partial outputs, never an older run's
            row["seconds"] = run_notebook(src, dest, params, args.timeout)
            to_html(dest, out / "html" / f"{src.stem}.html")
            row["page"] = f"html/{src.stem}.html"
            print(f"      done in {row['seconds']:.0f} s", flush=True)
        except Exception as err:                  # keep going: one failure should not hide the rest
            row.update(ok=False, error=f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}",
                       seconds=time.perf_counter() - t0)
            failed += 1
            print(f"      FAILED ({row['error']}); the partial notebook is in {dest}", flush=True)
        rows.append(row)
        write_index(page(rows), out / "index.html", params)
        if args.commit and row["ok"]:
            nb = json.loads(dest.read_text(encoding="utf-8"))
            src.write_text(json.dumps(_clean_for_commit(nb), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    results_page(out)                             # again: now it links the notebooks' pages written above
    print(f"\n{len(books) - failed} of {len(books)} notebooks ran; index: {out / 'index.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
