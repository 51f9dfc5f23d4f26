"""Each exercise's check, timed: the public check (what a learner's check cell runs) and the grader's check with
the hidden cases, on the solutions edition's answer, in one process after the models are loaded.

    .venv/bin/python benchmarks/bench_checks.py [--threads 2]

The baseline in the same run is the first check of the process, which pays for loading the `mini` model,
its prompt encoder and the digits (what a learner's first check cell pays once).  Time it alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffnb.exercises import catalog, edition, evaluate

    t0 = time.perf_counter()
    from diffnb.exercises import fixtures
    fixtures.stage1(), fixtures.embed("")
    first = time.perf_counter() - t0
    print(f"{args.threads} thread(s); loading the models for the first check: {first:.2f} s")
    print(f"{'notebook':30s} {'exercise':24s} {'public':>8s} {'hidden':>8s}  cases")
    total_pub = total_hid = 0.0
    for stem in dict.fromkeys(ex.notebook for ex in catalog.exercises().values()):
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        ns: dict = {}
        for name, source in edition.exercise_cells(nb):
            ex = catalog.get(name)
            exec(compile(source, f"<{name}>", "exec"), ns)
            pub = evaluate(ex, ns[ex.function])
            hid = evaluate(ex, ns[ex.function], hidden=True)
            assert pub.passed and hid.passed, (name, pub.message, hid.message)
            total_pub += pub.seconds
            total_hid += hid.seconds
            print(f"{stem:30s} {name:24s} {pub.seconds:7.2f}s {hid.seconds:7.2f}s  {pub.cases}/{hid.cases}")
    print(f"all {len(catalog.exercises())} checks: public {total_pub:.1f} s, hidden {total_hid:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
