"""The learner's edition and the grader: built from the solutions edition, no answer left in it, every
exercise tagged and checked; ``grade`` on made-up submissions gives the expected ``grades.csv`` and
touches nothing outside ``--out``."""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from diffnb.exercises import catalog, edition
from diffnb.exercises.grade import grade

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edition") / "exercises"
    edition.build(out)
    return out


def _cells(nb, name):
    return [c for c in nb.cells if f"exercise:{name}" in c.metadata.get("tags", [])]


def test_every_exercise_is_tagged_once_in_its_notebook_in_both_editions(built):
    for ex in catalog.exercises().values():
        for folder in (NOTEBOOKS, built):
            nb = nbformat.read(folder / f"{ex.notebook}.ipynb", as_version=4)
            cells = _cells(nb, ex.name)
            assert len(cells) == 1, f"{folder.name}/{ex.notebook}: {len(cells)} cells tagged exercise:{ex.name}"
            assert f"def {ex.function}(" in cells[0].source or f"class {ex.function}(" in cells[0].source, (
                f"{ex.notebook}: the cell tagged exercise:{ex.name} does not define {ex.function}")
            assert f'{ex.function} = exercises.check("{ex.name}", {ex.function})' in "".join(
                c.source for c in nb.cells), f"{ex.notebook}: no check cell for {ex.name}"


def test_the_learners_edition_holds_no_solution_line(built):
    total = 0
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        solutions = nbformat.read(path, as_version=4)
        learner = nbformat.read(built / path.name, as_version=4)
        lines = edition.solution_lines(solutions)
        total += len(lines)
        text = {line.strip() for c in learner.cells for line in c.source.splitlines()}
        assert [line for line in lines if line in text] == [], f"{path.name}: solution lines in the learner's edition"
        assert not any(c.get("outputs") for c in learner.cells if c.cell_type == "code"), f"{path.name}: outputs kept"
        if lines:
            assert "raise NotImplementedError()" in "".join(c.source for c in learner.cells)
    assert total >= 3 * len(catalog.exercises()), "fewer solution lines than expected: are the markers in place?"


def test_the_leak_check_can_fail():
    nb = nbformat.read(NOTEBOOKS / "A1.1_forward.ipynb", as_version=4)
    learner = edition.learner_notebook(nb)
    assert edition.leaked_lines(nb, learner) == []
    learner.cells.append(nbformat.v4.new_code_cell("x = 1\n" + edition.solution_lines(nb)[0]))
    assert edition.leaked_lines(nb, learner) == [edition.solution_lines(nb)[0]]


def test_build_keeps_a_learners_work_unless_told(built, tmp_path):
    out = tmp_path / "ed"
    edition.build(out)
    edition.build(out)                                              # unchanged: rebuilt quietly
    mine = out / "A1.1_forward.ipynb"
    mine.write_text(mine.read_text() + " ", encoding="utf-8")
    with pytest.raises(FileExistsError, match="A1.1_forward.ipynb"):
        edition.build(out)
    assert mine.read_text().endswith(" ")
    edition.build(out, overwrite=True)
    backups = list(out.glob("A1.1_forward.*.bak.ipynb"))
    assert len(backups) == 1 and backups[0].read_text().endswith(" ")
    assert mine.read_text() == (built / "A1.1_forward.ipynb").read_text()
    with pytest.raises(ValueError, match="solutions edition's own folder"):
        edition.build(NOTEBOOKS)


def test_a_check_says_not_written_and_returns_diffnbs(built, capsys):
    from diffnb import exercises
    nb = nbformat.read(built / "A1.1_forward.ipynb", as_version=4)
    ns: dict = {}
    exec(_cells(nb, "forward")[0].source, ns)
    used = exercises.check("forward", ns["forward"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "forward is not written yet" in out, out
    assert used is catalog.get("forward").reference()


def test_the_unfilled_learners_notebook_runs_headless(built, tmp_path):
    env = dict(os.environ, DIFFNB_PROGRESS="off")
    done = subprocess.run([sys.executable, "-m", "papermill", str(built / "A1.1_forward.ipynb"),
                           str(tmp_path / "out.ipynb"), "--cwd", str(built)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "forward is not written yet" in text and "cells below use diffnb's forward" in text


# --------------------------------------------------------------------------- grading

def _with_forward(src: Path, dst: Path, body: str, before: str = "") -> None:
    """The learner's A1.1 with ``body`` as forward's body (and ``before`` above the def)."""
    nb = nbformat.read(src, as_version=4)
    [cell] = _cells(nb, "forward")
    stub = "    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert stub in cell.source
    cell.source = before + cell.source.replace(stub, body)
    dst.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst / src.name)


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in folder.rglob("*") if p.is_file()}


def test_grading_nine_made_up_submissions(built, tmp_path):
    """All right, all stubs, a crashing cell, an endless loop, a flood of output, a call to diffnb's own
    forward, a process that exits, one that asks for 64 GiB, and a mixed one."""
    subs = tmp_path / "submissions"
    shutil.copytree(NOTEBOOKS, subs / "all_right")
    shutil.copytree(built, subs / "all_stubs")
    learner = built / "A1.1_forward.ipynb"
    right = ("    abar = stage1.scheduler.alphas_cumprod[t]\n    eps = torch.randn(im.shape, generator=generator)\n"
             "    return abar.sqrt() * im + (1 - abar).sqrt() * eps")
    _with_forward(learner, subs / "crashing_cell", right, before="raise RuntimeError('my cell is broken')\n")
    _with_forward(learner, subs / "loops_forever", "    while True:\n        pass")
    _with_forward(learner, subs / "floods", "    while True:\n        print('noise' * 100)")
    _with_forward(learner, subs / "calls_diffnb", "    from diffnb.a import denoise\n"
                  "    return denoise.forward(im, t, stage1, generator)")
    _with_forward(learner, subs / "exits", "    import os\n    os._exit(3)")
    _with_forward(learner, subs / "hogs_memory", "    hog = bytearray(64 * 2 ** 30)\n    return im")
    _with_forward(learner, subs / "mixed", right.replace("(1 - abar).sqrt()", "(1 - abar)"),
                  before="%time x = 1\n!echo a shell line\n")                # magics are skipped, not fatal
    part_b = next(ex.notebook for ex in catalog.exercises().values() if ex.notebook.startswith("B"))
    shutil.copy2(NOTEBOOKS / f"{part_b}.ipynb", subs / "mixed" / f"{part_b}.ipynb")
    before = _tree(subs)

    out = tmp_path / "grades"
    rows = grade(subs, out, workers=1, seconds=20)

    assert _tree(subs) == before, "grading changed a submission's files"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades", "submissions"]
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["submission", "exercise", "passed", "points", "max_points", "message"]
    names = list(catalog.exercises())
    assert len(table) == 9 * len(names)
    got = {(r["submission"], r["exercise"]): r for r in table}
    expect = {}
    for name in names:
        ex = catalog.get(name)
        expect[("all_right", name)] = (True, "matches diffnb's")
        expect[("all_stubs", name)] = (False, "not written yet")
        other = "not submitted"
        for sub in ("crashing_cell", "loops_forever", "floods", "calls_diffnb", "exits", "hogs_memory"):
            expect[(sub, name)] = (False, other)
        expect[("mixed", name)] = (True, "matches") if ex.notebook == part_b else (False, other)
    expect[("crashing_cell", "forward")] = (False, "the exercise cell raised RuntimeError: my cell is broken")
    expect[("loops_forever", "forward")] = (False, "took longer than 20 s")
    expect[("floods", "forward")] = (False, "printed more than 20,000 characters")
    expect[("calls_diffnb", "forward")] = (False, "uses diffnb's own diffnb.a.denoise.forward")
    expect[("exits", "forward")] = (False, "the grading process ended (exit code 3)")
    expect[("hogs_memory", "forward")] = (False, "raised MemoryError")
    expect[("mixed", "forward")] = (False, "did you leave out the square root")
    for key, (passed, words) in expect.items():
        row = got[key]
        assert row["passed"] == str(passed), (key, row["message"])
        assert words in row["message"], (key, row["message"])
        assert int(row["points"]) == (int(row["max_points"]) if passed else 0)
    assert {r["submission"] for r in rows} == {p.name for p in subs.iterdir()}
    html = (out / "summary.html").read_text(encoding="utf-8")
    assert "all_right" in html and "did you leave out the square root" in html


def test_grade_refuses_to_write_into_the_submissions(tmp_path):
    (tmp_path / "subs" / "ann").mkdir(parents=True)
    with pytest.raises(ValueError, match="inside the submissions folder"):
        grade(tmp_path / "subs", tmp_path / "subs" / "grades")
    with pytest.raises(FileNotFoundError, match="no submissions folder"):
        grade(tmp_path / "nothing", tmp_path / "out")


def test_the_front_page_links_the_learners_edition(tmp_path, monkeypatch):
    from diffnb import pack
    (tmp_path / "pack").mkdir()
    page = tmp_path / "pack" / "index.html"
    pack.write_index([], page, {})
    assert "python -m diffnb.exercises build</code> writes it" in page.read_text(encoding="utf-8")
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "A1.1_forward.ipynb").write_text("{}")
    pack.write_index([], page, {})
    text = page.read_text(encoding="utf-8")
    assert f"asks for {len(catalog.exercises())} of the course's functions" in text
    assert '<a href="../exercises/">' in text


# --------------------------------------------------------------------------- every check, the same promises

def _first_tensor(args):
    import torch
    return next(a for a in args if isinstance(a, torch.Tensor))


def _impostors():
    """Answers that must never pass a check: the input handed back, zeros, and each as a module."""
    import torch
    import torch.nn as nn

    class Same(nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x, *args, **kwargs):
            return x

    class Zeros(Same):
        def forward(self, x, *args, **kwargs):
            return torch.zeros_like(x)

    return {"the input unchanged": (lambda *a, **k: _first_tensor(a), Same),
            "zeros": (lambda *a, **k: torch.zeros_like(_first_tensor(a)), Zeros)}


@pytest.mark.parametrize("name", list(catalog.exercises()))
def test_no_check_passes_the_input_unchanged_or_zeros(name):
    from diffnb.exercises import evaluate
    ex = catalog.get(name)
    is_class = isinstance(ex.reference(), type)
    for what, (fn, module) in _impostors().items():
        result = evaluate(ex, module if is_class else fn, hidden=True)
        assert result.status == "wrong", f"{name}: {what} gave {result.status}: {result.message}"


@pytest.mark.parametrize("name", list(catalog.exercises()))
def test_each_solution_passes_its_hidden_cases_and_each_stub_is_not_written(name):
    """The solutions edition's answer, as its notebook writes it (the earlier exercise cells run first, as
    the grader runs them), passes with the hidden cases; the learner's edition's stub is "not written"."""
    from exercise_cells import learner, stub
    from diffnb.exercises import evaluate
    ex = catalog.get(name)
    result = evaluate(ex, learner(name), hidden=True)
    assert result.status == "passed" and result.cases >= 4, result.message
    result = evaluate(ex, learner(name, edit=lambda source: stub(name)))
    assert result.status == "not written" and "not written yet" in result.message, result.message
