"""The exercise cells of the solutions edition as the tests of the checks use them: a notebook's exercise
cells in order, and an exercise's function as its cell defines it (after an edit: a plausible mistake)."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

from diffnb.exercises import catalog, edition

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOLUTION = re.compile(r"( *)### BEGIN SOLUTION\n.*?### END SOLUTION\n?", re.S)


def exercise_cells(notebook: str) -> list[tuple[str, str]]:
    """``(name, source)`` of the notebook's exercise cells, in order."""
    return edition.exercise_cells(nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4))


def stub(name: str) -> str:
    """The exercise cell ``name`` as the learner's edition shows it (nbgrader's stub in place of the solution)."""
    nb = nbformat.read(NOTEBOOKS / f"{catalog.get(name).notebook}.ipynb", as_version=4)
    return dict(edition.exercise_cells(edition.learner_notebook(nb)))[name]


def learner(name: str, edits=(), body: str | None = None, edit=None):
    """The function of exercise ``name`` as the notebook's cell defines it, after ``edits`` (``(old, new)``
    replacements, each must occur), ``edit(source)``, or with its solution region replaced by ``body``.  The
    notebook's earlier exercise cells run first, as written, in the same namespace (as the grader runs them)."""
    ex = catalog.get(name)
    ns: dict = {}
    for cell_name, source in exercise_cells(ex.notebook):
        if cell_name == name:
            for old, new in edits:
                assert old in source, f"{old!r} is not in the {name} cell"
                source = source.replace(old, new)
            if edit is not None:
                source = edit(source)
            if body is not None:
                source = SOLUTION.sub(lambda m: "".join(m.group(1) + line + "\n" for line in body.splitlines()),
                                      source)
            exec(compile(source, f"<{name}>", "exec"), ns)
            return ns[ex.function]
        exec(compile(source, f"<{cell_name}>", "exec"), ns)
    raise AssertionError(f"{ex.notebook} has no exercise cell tagged exercise:{name}")
