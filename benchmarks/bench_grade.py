"""How fast the grader is: submissions per minute on this machine, against running the same notebooks whole.

    .venv/bin/python benchmarks/bench_grade.py [--copies 2] [--workers N] [--baseline A1.1_forward B1.2_denoiser]

Makes ``--copies`` submissions, each the solutions edition's full set of notebooks (every exercise right, so
every check and hidden case runs to the end), grades them with ``python -m diffnb.exercises grade``'s
function, and reports seconds per submission and submissions per minute.  The baseline, measured in the
same run: the ``--baseline`` notebooks of one submission executed whole with papermill (what a grader that
runs every cell, such as nbgrader's autograde or otter's run, has to do), against the grader on those
same notebooks.  Time it alone: a second job on a 2-core machine slows both.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--baseline", nargs="*", default=["A1.1_forward", "B1.2_denoiser"])
    args = ap.parse_args()
    from diffnb.exercises import catalog
    from diffnb.exercises.grade import grade

    books = sorted({ex.notebook for ex in catalog.exercises().values()})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k in range(args.copies):
            (tmp / "subs" / f"learner{k}").mkdir(parents=True)
            for b in books:
                shutil.copy2(ROOT / "notebooks" / f"{b}.ipynb", tmp / "subs" / f"learner{k}")
        t0 = time.perf_counter()
        rows = grade(tmp / "subs", tmp / "out", workers=args.workers)
        full = time.perf_counter() - t0
        failed = [r for r in rows if not r["passed"]]
        print(f"grader, full set ({len(books)} notebooks, {len(rows) // args.copies} exercises) x {args.copies} "
              f"submissions, {args.workers or len(os.sched_getaffinity(0))} workers: {full:.1f} s, "
              f"{full / args.copies:.1f} s per submission, {60 * args.copies / full:.2f} submissions per minute"
              f"{f'; {len(failed)} checks FAILED' if failed else '; every check passed'}")

        (tmp / "one" / "learner").mkdir(parents=True)
        for b in args.baseline:
            shutil.copy2(ROOT / "notebooks" / f"{b}.ipynb", tmp / "one" / "learner")
        t0 = time.perf_counter()
        grade(tmp / "one", tmp / "out1", workers=1, notebooks=args.baseline)
        ours = time.perf_counter() - t0
        env = dict(os.environ, DIFFNB_PROGRESS="off", DIFFNB_THREADS="1")
        t0 = time.perf_counter()
        for b in args.baseline:
            subprocess.run([sys.executable, "-m", "papermill", str(tmp / "one" / "learner" / f"{b}.ipynb"),
                            str(tmp / f"{b}.out.ipynb")], check=True, env=env, capture_output=True)
        whole = time.perf_counter() - t0
        print(f"{' + '.join(args.baseline)}, one thread: the grader {ours:.1f} s, the notebooks run whole "
              f"(papermill) {whole:.1f} s: {whole / ours:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
