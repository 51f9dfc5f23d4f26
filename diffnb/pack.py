"""Run the course pack headless: every notebook through papermill, an HTML page each, an index.

    python -m diffnb.pack                       # all notebooks, quick profile -> build/pack/
    python -m diffnb.pack -p profile seed       # the write-up's settings (GPU; DeepFloyd for Part A)
    python -m diffnb.pack --only B2             # notebooks whose name contains "B2"
    python -m diffnb.pack --commit              # maintainers: store the outputs in notebooks/

Executed notebooks go to ``build/pack/notebooks``, HTML pages to ``build/pack/html`` and the
index to ``build/pack/index.html``.  ``--commit`` writes the executed notebooks back into
``notebooks/`` with a hash of their sources, which the tests use to spot stale outputs.

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
import sys
import time
from pathlib import Path

from diffnb.core.paths import build_dir, project_root

KERNEL = "python3"
#: the kernelspec as JupyterLab writes it for ipykernel's python3: stored so, an untouched notebook opens unmodified
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL}


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


def run_notebook(src: Path, out: Path, params: dict, timeout: int | None = None) -> float:
    import papermill as pm

    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=KERNEL, cwd=str(src.parent),
                        progress_bar=False, execution_timeout=timeout)
    return time.perf_counter() - t0


def to_html(nb_path: Path, html_path: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(nb_path), as_version=4))
    html_path.write_text(body, encoding="utf-8")


def _title(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("# ").strip()
    return nb_path.stem


def write_index(rows: list[dict], path: Path, params: dict) -> None:
    items = []
    for r in rows:
        status = "ok" if r["ok"] else f"FAILED: {html.escape(r['error'])}"
        link = f'<a href="html/{html.escape(r["name"])}.html">{html.escape(r["title"])}</a>' if r["ok"] else html.escape(r["title"])
        items.append(f"<tr><td>{html.escape(r['name'])}</td><td>{link}</td><td>{r['seconds']:.0f} s</td><td>{status}</td></tr>")
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>diffnb course pack</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em 1em}</style>"
        f"<h1>diffnb course pack</h1><p>parameters: {html.escape(json.dumps(params) or '{}')}</p>"
        "<table><tr><th>notebook</th><th>title</th><th>time</th><th>status</th></tr>"
        + "".join(items) + "</table>", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffnb.pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a notebook parameter, e.g. -p profile seed -p device cuda")
    ap.add_argument("--only", help="run only notebooks whose file name contains this text")
    ap.add_argument("--out", type=Path, help="output folder (default build/pack)")
    ap.add_argument("--commit", action="store_true",
                    help="write the executed notebooks back into notebooks/ (quick profile only)")
    ap.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
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
    books = list_notebooks(args.only)
    if not books:
        ap.error(f"no notebooks found in {notebook_dir()}" + (f" matching {args.only!r}" if args.only else ""))
    out = args.out or build_dir() / "pack"
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "html").mkdir(parents=True, exist_ok=True)

    names = {src.name: _names_or_none(src) for src in books} if params else {}
    elsewhere = {p: [b for b, have in names.items() if have and p in have] for p in params}
    rows, failed = [], 0
    for i, src in enumerate(books, 1):
        dest = out / "notebooks" / src.name
        print(f"[{i}/{len(books)}] {src.name} ...", flush=True)
        row = {"name": src.stem, "title": _title(src), "seconds": 0.0, "ok": True, "error": ""}
        try:
            if params:
                check_parameters_exist(json.loads(src.read_text(encoding="utf-8")), params, src.name, elsewhere)
        except ValueError as err:                 # not run at all: papermill would only warn
            row.update(ok=False, error=f"ValueError: {err}")
            failed += 1
            print(f"      FAILED before running ({err})", flush=True)
            rows.append(row)
            write_index(rows, out / "index.html", params)
            continue
        try:
            row["seconds"] = run_notebook(src, dest, params, args.timeout)
            to_html(dest, out / "html" / f"{src.stem}.html")
            print(f"      done in {row['seconds']:.0f} s", flush=True)
        except Exception as err:                  # keep going: one failure should not hide the rest
            row.update(ok=False, error=f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}")
            failed += 1
            print(f"      FAILED ({row['error']}); the partial notebook is in {dest}", flush=True)
        rows.append(row)
        write_index(rows, out / "index.html", params)
        if args.commit and row["ok"]:
            nb = json.loads(dest.read_text(encoding="utf-8"))
            src.write_text(json.dumps(_clean_for_commit(nb), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    print(f"\n{len(books) - failed} of {len(books)} notebooks ran; index: {out / 'index.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
