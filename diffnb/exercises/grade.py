"""Grade a folder of submissions: ``python -m diffnb.exercises grade SUBMISSIONS_DIR --out DIR``.

``SUBMISSIONS_DIR`` holds one folder per learner with that learner's notebooks, named as in the learner's
edition.  For each submitted notebook the grader runs only what the exercises need: the notebook's
exercise cells (tag ``exercise:<name>``), in order, in one namespace, each followed by its check with
the hidden cases (``evaluate(..., hidden=True)``); after each, the exercise's name is bound to the
learner's object if it passed, else to diffnb's reference, as the check cell does in the notebook.

Isolation (it is not a container; for a class you do not trust, run the grader inside one):
  * every (submission, notebook) runs in its own process, forked from a parent that has already
    loaded torch and the models (so a process starts in milliseconds), on one torch thread;
  * with a memory limit (``RLIMIT_AS``: the parent's size plus ``--memory-gb``), a file-size limit,
    a time limit per exercise (an interval timer: a loop that never ends is stopped and the grader
    goes on) and one per notebook (the process is killed);
  * in a scratch folder under ``--out`` (its working directory, holding a copy of the notebook);
  * with its printed output counted: an exercise that prints over ``FLOOD`` characters fails.
  * Not isolated: the network, the file system outside the scratch folder (a submission can still read
    or write files the grader's user can), other processes.
A submission's files are only read.  Everything written goes under ``--out``: ``grades.csv``
(``submission, exercise, passed, points, max_points, message``), ``summary.html``, ``scratch/``.
"""
from __future__ import annotations

import csv
import html
import json
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import time
from pathlib import Path

import nbformat

from diffnb.exercises.edition import exercise_cells

FLOOD = 20_000                       # characters an exercise may print
COLUMNS = ["submission", "exercise", "passed", "points", "max_points", "message"]


class ExerciseTimeout(BaseException):
    """An exercise ran past its time limit (a BaseException, so a learner's ``except Exception`` cannot eat it)."""


class OutputFlood(BaseException):
    """An exercise printed more than ``FLOOD`` characters."""


class _CountingWriter:
    """``sys.stdout`` / ``sys.stderr`` in a grading process: keeps nothing, counts, stops a flood."""

    def __init__(self):
        self.count = 0

    def write(self, text):
        self.count += len(text)
        if self.count > FLOOD:
            raise OutputFlood()
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


# --------------------------------------------------------------------------- one notebook, in its own process

def _on_alarm(signum, frame):
    raise ExerciseTimeout()


def _limit_resources(memory_gb: float) -> None:
    with open("/proc/self/statm") as f:
        vm_now = int(f.read().split()[0]) * resource.getpagesize()
    cap = vm_now + int(memory_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 26, 2 ** 26))          # 64 MiB per file written
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)                          # a too-large write fails instead


def _grade_notebook(job: dict, results_path: str) -> None:
    """The body of a grading process: exec each exercise cell, check it, append one JSON line per exercise."""
    from diffnb.exercises import catalog
    from diffnb.exercises.core import evaluate

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)                                  # output written straight to the descriptors goes nowhere
    os.chdir(job["scratch"])
    _limit_resources(job["memory_gb"])
    signal.signal(signal.SIGALRM, _on_alarm)
    ns: dict = {"__name__": "__submission__", "get_ipython": _NoShell}
    with open(results_path, "a", encoding="utf-8") as results:
        for name, source in job["cells"]:
            ex = catalog.get(name)
            writer = _CountingWriter()
            sys.stdout = sys.stderr = writer
            limit = job["seconds"][name]
            signal.setitimer(signal.ITIMER_REAL, limit)
            fn = None
            try:
                try:
                    exec(compile(_python(source), f"<{job['notebook']} exercise:{name}>", "exec"), ns)
                except Exception as e:
                    row = (False, f"the exercise cell raised {type(e).__name__}: {_first_line(e)}")
                else:
                    fn = ns.get(ex.function)
                    result = evaluate(ex, fn, hidden=True)
                    row = (result.passed, result.message)
            except ExerciseTimeout:
                row = (False, f"took longer than {limit:g} s (the exercise's time limit): stopped")
            except OutputFlood:
                row = (False, f"printed more than {FLOOD:,} characters: stopped")
            except MemoryError:
                row = (False, f"ran out of memory (limit {job['memory_gb']:g} GiB above the grader's own)")
            except BaseException as e:                   # SystemExit, KeyboardInterrupt from learner code
                row = (False, f"stopped the process with {type(e).__name__}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            ns[ex.function] = fn if row[0] else ex.reference()
            results.write(json.dumps({"exercise": name, "passed": row[0], "message": row[1]}) + "\n")
            results.flush()


class _NoShell:
    """What ``get_ipython()`` gives a graded cell: its magics (``%time``, ``!ls``) are skipped, not run."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _python(source: str) -> str:
    """A cell's source as plain Python (IPython's magics and ``!`` lines turned into ``get_ipython()`` calls,
    which grading skips)."""
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(source)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


# --------------------------------------------------------------------------- the parent

def _warm() -> None:
    """Load what every check needs once, before forking (children then start at once)."""
    import torch
    torch.set_num_threads(1)
    from diffnb.exercises import catalog, fixtures
    catalog.exercises()
    fixtures.stage1()
    fixtures.embed("")


def _jobs_of(sub: Path, notebooks: dict[str, list], scratch_root: Path, memory_gb: float, seconds: float | None):
    """The grading jobs of one submission, and the rows of what cannot be run (missing or unreadable)."""
    from diffnb.exercises import catalog

    jobs, rows = [], []
    for stem, exs in notebooks.items():
        path = sub / f"{stem}.ipynb"
        if not path.is_file():
            rows += [(ex.name, False, f"not submitted ({stem}.ipynb is not in {sub.name}/)") for ex in exs]
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as e:                                        # not JSON, not a notebook
            rows += [(ex.name, False, f"{stem}.ipynb could not be read as a notebook: {_first_line(e)}")
                     for ex in exs]
            continue
        found = dict(exercise_cells(nb))
        cells = [(ex.name, found[ex.name]) for ex in exs if ex.name in found]
        rows += [(ex.name, False, f"no exercise cell tagged exercise:{ex.name} in {stem}.ipynb")
                 for ex in exs if ex.name not in found]
        if cells:
            scratch = scratch_root / sub.name / stem
            scratch.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, scratch / path.name)
            each = {n: seconds or catalog.get(n).seconds for n, _ in cells}
            jobs.append({"submission": sub.name, "notebook": stem, "cells": cells, "scratch": str(scratch),
                         "memory_gb": memory_gb, "seconds": each, "limit": sum(each.values()) + 30})
    return jobs, rows


def _run_jobs(jobs: list[dict], workers: int, progress) -> dict[tuple[str, str], dict]:
    """Run every job in its own forked process, ``workers`` at a time; returns {(submission, exercise): row}."""
    ctx = multiprocessing.get_context("fork")
    pending, running, found = list(jobs), [], {}
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            results = Path(job["scratch"]) / "results.jsonl"
            results.unlink(missing_ok=True)
            proc = ctx.Process(target=_grade_notebook, args=(job, str(results)), daemon=True)
            proc.start()
            running.append((job, proc, time.monotonic(), results))
        time.sleep(0.05)
        for item in list(running):
            job, proc, started, results = item
            over = time.monotonic() - started > job["limit"]
            if proc.is_alive() and not over:
                continue
            if proc.is_alive():
                proc.kill()
            proc.join()
            running.remove(item)
            done = {}
            if results.exists():
                for line in results.read_text(encoding="utf-8").splitlines():
                    with_row = json.loads(line)
                    done[with_row["exercise"]] = with_row
            for name, _ in job["cells"]:
                if name not in done:
                    why = (f"the notebook ran past its time limit ({job['limit']:g} s) and was stopped" if over else
                           f"the grading process ended (exit code {proc.exitcode}) before this exercise was checked")
                    done[name] = {"exercise": name, "passed": False, "message": why}
                found[(job["submission"], name)] = done[name]
            progress.update(1)
    return found


def grade(submissions: str | Path, out: str | Path, workers: int | None = None, memory_gb: float = 4.0,
          notebooks: list[str] | None = None, seconds: float | None = None) -> list[dict]:
    """Grade every submission folder in ``submissions``; write ``grades.csv`` and ``summary.html`` into
    ``out``; return the rows.  ``notebooks`` (stems) limits grading to those notebooks' exercises;
    ``seconds`` replaces every exercise's own time limit."""
    from diffnb.core.progress import progress as bar
    from diffnb.exercises import catalog

    subs_dir, out = Path(submissions), Path(out)
    if not subs_dir.is_dir():
        raise FileNotFoundError(f"no submissions folder at {subs_dir}; pass a folder holding one folder per learner")
    if out.resolve() == subs_dir.resolve() or out.resolve().is_relative_to(subs_dir.resolve()):
        raise ValueError(f"--out {out} lies inside the submissions folder {subs_dir}: grading must not write "
                         "there; pick a folder outside it, e.g. build/grades")
    subs = sorted(p for p in subs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise FileNotFoundError(f"{subs_dir} holds no submission folders (one folder per learner, holding that "
                                "learner's notebooks named as in the learner's edition)")
    table = catalog.exercises()
    by_notebook: dict[str, list] = {}
    for ex in table.values():
        if notebooks is None or ex.notebook in notebooks:
            by_notebook.setdefault(ex.notebook, []).append(ex)
    if notebooks is not None and set(notebooks) - set(by_notebook):
        raise ValueError(f"no exercises in {sorted(set(notebooks) - set(by_notebook))}; notebooks with exercises: "
                         f"{', '.join(sorted({e.notebook for e in table.values()}))}")
    if workers is None:
        workers = max(1, len(os.sched_getaffinity(0)))
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"the time limit per exercise must be a positive number of seconds, got {seconds}")
    if not memory_gb > 0:
        raise ValueError(f"memory_gb must be positive, got {memory_gb}")
    out.mkdir(parents=True, exist_ok=True)
    _warm()
    jobs, rows = [], {}
    for sub in subs:
        sub_jobs, sub_rows = _jobs_of(sub, by_notebook, out / "scratch", memory_gb, seconds)
        jobs += sub_jobs
        rows.update({(sub.name, name): {"exercise": name, "passed": ok, "message": msg} for name, ok, msg in sub_rows})
    with bar(total=len(jobs), desc="grading notebooks") as progress:
        rows.update(_run_jobs(jobs, workers, progress))
    graded = []
    for sub in subs:
        for exs in by_notebook.values():
            for ex in exs:
                r = rows[(sub.name, ex.name)]
                graded.append({"submission": sub.name, "exercise": ex.name, "passed": bool(r["passed"]),
                               "points": ex.points if r["passed"] else 0, "max_points": ex.points,
                               "message": r["message"]})
    _write_csv(out / "grades.csv", graded)
    _write_html(out / "summary.html", graded, [ex for exs in by_notebook.values() for ex in exs])
    return graded


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _write_html(path: Path, rows: list[dict], exercises: list) -> None:
    subs = list(dict.fromkeys(r["submission"] for r in rows))
    cell = {(r["submission"], r["exercise"]): r for r in rows}
    head = "".join(f'<th title="{html.escape(ex.notebook + ": " + ex.summary)}">{html.escape(ex.name)}</th>'
                   for ex in exercises)
    body = []
    for s in subs:
        tds = []
        for ex in exercises:
            r = cell[(s, ex.name)]
            mark, cls = ("✓", "ok") if r["passed"] else ("✗", "no")
            tds.append(f'<td class="{cls}" title="{html.escape(r["message"])}">{mark}</td>')
        got = sum(cell[(s, ex.name)]["points"] for ex in exercises)
        top = sum(ex.points for ex in exercises)
        body.append(f"<tr><th>{html.escape(s)}</th><td>{got} / {top}</td>{''.join(tds)}</tr>")
    details = "".join(f"<li><b>{html.escape(r['submission'])}</b> · {html.escape(r['exercise'])}: "
                      f"{html.escape(r['message'])}</li>" for r in rows if not r["passed"])
    path.write_text(f"""<!doctype html><meta charset="utf-8"><title>diffnb grades</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 6px;text-align:center}}.ok{{background:#d8f5d8}}.no{{background:#f8d8d8}}li{{margin:2px 0}}</style>
<h1>diffnb grades</h1><p>{len(subs)} submissions, {len(exercises)} exercises. Hover a cell for its message;
every failed check is listed below. The same rows are in <code>grades.csv</code>.</p>
<table><tr><th>submission</th><th>points</th>{head}</tr>{''.join(body)}</table>
<h2>What failed</h2><ul>{details or '<li>nothing</li>'}</ul>
""", encoding="utf-8")
