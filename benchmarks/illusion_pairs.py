"""Screen digit pairs for the illusions of sections 1.8 and 1.9 with the shipped ``mini`` model (run by hand).

    python benchmarks/illusion_pairs.py --kind anagram --styles photo --n 6      # every ordered pair of digits
    python benchmarks/illusion_pairs.py --kind anagram --styles "crayon drawing" --pairs 2/7,7/2 --n 12
    python benchmarks/illusion_pairs.py --kind hybrid --styles "photo,pencil sketch" --n 6
    python benchmarks/illusion_pairs.py --kind hybrid --styles "photo,pencil sketch" --pairs 1/7 --sigma 1.5

For each pair of digits (a, b) draws ``--n`` illusions (one seeded batch, CFG 7, the Part A schedule)
of "a <style 1> of the digit a" and "a <style 2> of the digit b" (``--styles``: one style for both
prompts, or two) and prints what the judge reads:

* ``anagram`` (1.8): a upright, b rotated by 180 degrees. ``success``: both views right; ``baseline``:
  the same test on plain CFG samples of the first prompt, rotated.
* ``hybrid`` (1.9): a from far away (low frequencies), b up close (high). ``success``: both views right;
  ``baseline``: the same test on plain CFG samples of the second prompt.

The last line ranks the pairs by success minus baseline. How the profile's pairs were
chosen: screened here on seeds that the reported figures do not use (the default ``--seed 1000``;
``python -m diffnb.evaluate`` uses seed 0, the notebooks seed 100), so the figures reported for a
chosen pair are not the ones it was picked on. Lines starting with ``{`` are JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffnb import evaluate  # noqa: E402
from diffnb.mini import world
from diffnb.part_a import setup_part_a  # noqa: E402
from diffnb.mini.judge import get_world_judge  # noqa: E402


def parse_pairs(text: str | None) -> list[tuple[int, int]]:
    if not text:
        return [(a, b) for a in range(10) for b in range(10) if a != b]
    pairs = []
    for item in text.split(","):
        a, sep, b = item.partition("/")
        if not (sep and a.isdigit() and b.isdigit() and len(a) == len(b) == 1):
            raise SystemExit(f"--pairs takes digit pairs like 4/7,3/5, got {item!r}")
        pairs.append((int(a), int(b)))
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="anagram", choices=["anagram", "hybrid"])
    ap.add_argument("--styles", default="photo", help=f"one or two (comma-separated) of {', '.join(world.STYLES)}")
    ap.add_argument("--pairs", default=None, help="e.g. 4/7,3/5 (first prompt's digit/second's); default every "
                    "ordered pair")
    ap.add_argument("--n", type=int, default=6, help="illusions per pair")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--sigma", type=float, default=None, help="hybrid blur std (default: the quick profile's "
                    "hybrid_sigma)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    styles = args.styles.split(",")
    if len(styles) not in (1, 2) or any(s not in world.STYLES for s in styles):
        ap.error(f"--styles takes one or two of {', '.join(world.STYLES)}, got {args.styles!r}")
    s1, s2 = styles[0], styles[-1]
    if args.sigma is not None and not args.sigma > 0:
        ap.error(f"--sigma must be positive, got {args.sigma}")

    pa = setup_part_a("quick", "mini", args.device, args.seed)
    judge = get_world_judge(device="cpu")
    ts = pa.timesteps()
    sigma = pa.settings["hybrid_sigma"] if args.sigma is None else args.sigma
    rows = []
    started = time.time()
    with torch.no_grad():
        for a, b in parse_pairs(args.pairs):
            p1, p2 = world.prompt(a, s1), world.prompt(b, s2)
            if args.kind == "anagram":
                r = evaluate.anagram_score(pa.stage1, pa.embed, judge, p1, p2, args.n, ts, pa.scale, args.seed)
                keys = ("success", "upright", "rotated", "baseline")
            else:
                r = evaluate.hybrid_score(pa.stage1, pa.embed, judge, p1, p2, args.n, ts, pa.scale, args.seed,
                                          sigma=sigma)
                keys = ("success", "far", "near", "baseline")
            extra = dict(sigma=sigma) if args.kind == "hybrid" else {}
            row = dict(kind=args.kind, pair=f"{a}/{b}", styles=[s1, s2], n=args.n, seed=args.seed, **extra,
                       **{k: round(r[k], 3) for k in keys})
            rows.append(row)
            print(json.dumps(row), flush=True)
    rows.sort(key=lambda r: r["success"] - r["baseline"], reverse=True)
    ranked = [f"{r['pair']} {r['success']:.2f} vs {r['baseline']:.2f}" for r in rows[:10]]
    print(json.dumps(dict(ranked=ranked, seconds=round(time.time() - started))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
