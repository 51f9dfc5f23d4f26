"""The learner's edition: the pack's notebooks with every exercise's solution taken out.

One source, two editions: ``notebooks/`` is the solutions edition (what papermill, nbval and the pack's
pages run).  An exercise cell carries the tag ``exercise:<name>`` and nbgrader's solution metadata, and
its solution sits between nbgrader's markers ``### BEGIN SOLUTION`` / ``### END SOLUTION``.  The
edition is made by nbgrader's own preprocessors (``ClearSolutions`` puts a stub where each marked
region was, ``ClearHiddenTests`` drops hidden-test regions, ``ClearOutput`` the outputs), so the markers
mean what they mean to nbgrader and an instructor can also feed the notebooks to nbgrader itself.

A built edition is checked before it is written: no line of any solution may remain in it
(``leaked_lines``), and every exercise keeps its tag and its check cell.
"""
from __future__ import annotations

import datetime
import re
import shutil
from pathlib import Path

import nbformat

from diffnb.core.paths import build_dir, project_root

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_TAG = re.compile(r"^exercise:(?P<name>[A-Za-z0-9_]+)$")

NOTE = """> **Learner's edition.** Each cell under an *Exercise* heading is yours to write: replace
> `raise NotImplementedError()` with your code and run it, then run the check cell below it. The check compares
> your function with diffnb's on a few inputs and prints one line: passed, or what is wrong. Until your function
> passes, the rest of the notebook uses diffnb's, so every cell still runs; once it passes, the figures are drawn
> with yours."""


def default_out() -> Path:
    return build_dir() / "exercises"


def exercise_names(cell) -> list[str]:
    """The ``<name>`` of every ``exercise:<name>`` tag of a cell."""
    return [m["name"] for t in cell.get("metadata", {}).get("tags", []) if (m := _TAG.match(str(t)))]


def exercise_cells(nb) -> list[tuple[str, str]]:
    """``[(name, source)]`` of a notebook's exercise cells, in order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            out += [(name, cell.source) for name in exercise_names(cell)]
    return out


def solution_lines(nb) -> list[str]:
    """Every non-blank line between the solution markers of a notebook (stripped)."""
    lines, inside = [], False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            s = line.strip()
            if s.startswith(BEGIN):
                inside = True
            elif s.startswith(END):
                inside = False
            elif inside and s:
                lines.append(s)
    return lines


def leaked_lines(solutions_nb, learner_nb) -> list[str]:
    """The solution lines of ``solutions_nb`` that appear as a line of any cell of ``learner_nb``."""
    seen = {line.strip() for cell in learner_nb.cells for line in cell.source.splitlines()}
    return [line for line in solution_lines(solutions_nb) if line in seen]


def learner_notebook(nb):
    """The learner's version of one solutions notebook (a new object; ``nb`` is not changed)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    nb = nbformat.reads(nbformat.writes(nb), as_version=4)         # a deep copy
    nb, _ = ClearSolutions(code_stub={"python": STUB}, enforce_metadata=True).preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    nb, _ = ClearOutput().preprocess(nb, {})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
    if any(exercise_names(c) for c in nb.cells):
        title = next((k for k, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
        note = nbformat.v4.new_markdown_cell(NOTE)
        note.id = "learners-edition-note"                # fixed, so that a rebuild gives the same file
        nb.cells.insert(title + 1, note)
    return nb


def _differs(path: Path, text: str) -> bool:
    return path.read_text(encoding="utf-8") != text


def build(out: str | Path | None = None, source: str | Path | None = None, overwrite: bool = False) -> list[Path]:
    """Write the learner's edition of every notebook in ``source`` (default ``notebooks/``) into ``out``
    (default ``build/exercises/``).  Returns the written paths.

    A learner's notebook already in ``out`` that differs from what would be written (their work) is kept:
    the build stops and names it, unless ``overwrite`` is set, and then it is first copied to
    ``<name>.<time>.bak.ipynb`` beside it.  Nothing else in ``out`` is touched.
    """
    from diffnb.exercises import catalog

    src = Path(source) if source is not None else project_root() / "notebooks"
    out = Path(out) if out is not None else default_out()
    if not src.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {src}; pass the solutions edition's folder (notebooks/)")
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the solutions edition's own folder; pick another, e.g. build/exercises")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"{src} holds no notebooks")
    built, tagged = {}, set()
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        learner = learner_notebook(nb)
        leaked = leaked_lines(nb, learner)
        if leaked:
            raise RuntimeError(f"{path.name}: the learner's edition would still show solution lines, e.g. "
                               f"{leaked[0]!r}; put every solution line between '{BEGIN}' and '{END}'")
        for name, _ in exercise_cells(nb):
            ex = catalog.get(name)                       # an unknown tag is an error, with the list
            if ex.notebook != path.stem:
                raise RuntimeError(f"{path.name} tags exercise:{name}, which belongs to {ex.notebook}")
            if f'exercises.check("{name}"' not in "".join(c.source for c in learner.cells):
                raise RuntimeError(f"{path.name}: exercise {name} has no check cell "
                                   f'({ex.function} = exercises.check("{name}", {ex.function}))')
            tagged.add(name)
        built[path.name] = nbformat.writes(learner) + "\n"
    missing = [n for n in catalog.exercises() if n not in tagged]
    if missing:
        raise RuntimeError(f"exercises without a tagged cell in {src}: {', '.join(missing)}")
    keep = [name for name, text in built.items() if (out / name).exists() and _differs(out / name, text)]
    if keep and not overwrite:
        raise FileExistsError(
            f"{out} already holds a learner's notebook that differs from the edition ({', '.join(keep[:3])}"
            f"{' ...' if len(keep) > 3 else ''}): it may be someone's work, so it is left as it is. Build "
            "elsewhere with --out DIR, or pass --overwrite (each changed notebook is copied to "
            "<name>.<time>.bak.ipynb first)")
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    written = []
    for name, text in built.items():
        target = out / name
        if name in keep:
            shutil.copy2(target, target.with_name(f"{target.stem}.{stamp}.bak.ipynb"))
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written
