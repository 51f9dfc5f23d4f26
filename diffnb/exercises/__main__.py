"""``python -m diffnb.exercises build [--out DIR] [--overwrite]`` writes the learner's edition;
``python -m diffnb.exercises grade SUBMISSIONS_DIR --out DIR`` grades a folder of submissions;
``python -m diffnb.exercises list`` lists the exercises."""
from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffnb.exercises", description=__doc__.split(";")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the learner's edition (default build/exercises/)")
    b.add_argument("--out", default=None, help="folder to write into (default: build/exercises)")
    b.add_argument("--source", default=None, help="the solutions edition's folder (default: notebooks/)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace learner's notebooks that were changed (each is copied to <name>.<time>.bak.ipynb first)")
    g = sub.add_parser("grade", help="grade a folder holding one folder of notebooks per learner")
    g.add_argument("submissions", help="folder with one folder per learner")
    g.add_argument("--out", required=True, help="folder for grades.csv, summary.html and the scratch copies")
    g.add_argument("--workers", type=int, default=None, help="processes at a time (default: the CPU cores)")
    g.add_argument("--memory-gb", type=float, default=4.0, help="memory each grading process may add (GiB)")
    g.add_argument("--seconds", type=float, default=None,
                   help="time limit per exercise (default: each exercise's own, 30-60 s)")
    g.add_argument("--only", nargs="*", default=None, metavar="NOTEBOOK",
                   help="grade only these notebooks' exercises (stems, e.g. A1.1_forward)")
    sub.add_parser("list", help="list the exercises, by notebook")
    args = ap.parse_args(argv)
    try:
        if args.command == "build":
            from diffnb.exercises.edition import build
            paths = build(args.out, args.source, overwrite=args.overwrite)
            print(f"wrote the learner's edition: {len(paths)} notebooks in {paths[0].parent}")
        elif args.command == "grade":
            from diffnb.exercises.grade import grade
            start = time.perf_counter()
            rows = grade(args.submissions, args.out, workers=args.workers, memory_gb=args.memory_gb,
                         notebooks=args.only, seconds=args.seconds)
            subs = sorted({r["submission"] for r in rows})
            took = time.perf_counter() - start
            for s in subs:
                mine = [r for r in rows if r["submission"] == s]
                print(f"{s}: {sum(r['points'] for r in mine)} / {sum(r['max_points'] for r in mine)} points")
            print(f"graded {len(subs)} submissions in {took:.0f} s; grades.csv and summary.html in {args.out}")
        else:
            from diffnb.exercises import catalog
            for ex in catalog.exercises().values():
                print(f"{ex.notebook:32s} {ex.name:24s} {ex.points} pt  {ex.summary}")
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
