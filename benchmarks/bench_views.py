"""Many-view anagrams and many-part factorized diffusion: the cost of a step against the two-view case
(run by hand; prints a table; not a test).

    DIFFNB_THREADS=1 python benchmarks/bench_views.py              # mini on the CPU, one image
    python benchmarks/bench_views.py --images 5 --threads 2         # a notebook's batch, two cores
    python benchmarks/bench_views.py --model tiny                   # the random test model (seconds)

What it measures, per denoising step (the loop over a strided list, divided by its steps; best of
``--repeats`` interleaved runs after a warm-up), with every step ONE UNet call:

* the anagram estimator (``diffnb.a.views.make_anagram``) with 2, 3 and 4 views: a batch of 2K x N
  (uncond and cond per view);
* the factorized estimator (``diffnb.a.decompositions.make_factorized``) with 2 parts (``LowHigh``) and
  3 parts (``ThreeBands``): a batch of (K + 1) x N, the unconditional pass shared;
* plain CFG (``sample_cfg``, a batch of 2N) for scale.

Ratios are to the two-view anagram measured in the same run.  The step's cost follows the number of
UNet passes it batches (2K for K views, K + 1 for K parts), about linearly for mini on a CPU; "per pass"
(the step's cost per pass, relative to the two-view anagram's) near 1 says the views and the splits
themselves (rotations, permutations, blurs) cost little beside the network, and below 1 that the
larger batch uses the CPU better.  Each row's batch is checked by counting the UNet calls of one sample.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import timed  # noqa: E402

from diffnb.a.decompositions import LowHigh, ThreeBands, make_factorized  # noqa: E402
from diffnb.a.denoise import sample_cfg, strided_timesteps  # noqa: E402
from diffnb.a.models import load_stage1  # noqa: E402
from diffnb.a.views import FlipView, IdentityView, Rotate90CCWView, Rotate90CWView, make_anagram  # noqa: E402
from diffnb.core.counting import counting_bundle  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", choices=["mini", "tiny"])
    ap.add_argument("--images", type=int, default=1, help="images per sample (N)")
    ap.add_argument("--stride", type=int, default=110, help="stride of the strided list (110: 9 steps)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: DIFFNB_THREADS, else torch's)")
    args = ap.parse_args(argv)
    threads = args.threads or (int(os.environ["DIFFNB_THREADS"]) if os.environ.get("DIFFNB_THREADS") else None)
    if threads:
        torch.set_num_threads(threads)

    stage1 = load_stage1(args.model, device="cpu")
    d = stage1.unet.config.encoder_hid_dim or stage1.unet.config.cross_attention_dim
    if args.model == "mini":
        from diffnb.mini.model import MAX_WORDS as length
    else:
        length = 77
    g = torch.Generator().manual_seed(0)
    u, *c = (torch.randn(1, length, d, generator=g) for _ in range(5))   # random embeddings: the cost does not depend on them
    ts = strided_timesteps(stage1, 990, args.stride)
    steps, n = len(ts) - 1, args.images
    views = [IdentityView(), Rotate90CWView(), FlipView(), Rotate90CCWView()]

    def anagram(k, bundle=stage1):
        return lambda: make_anagram(bundle, views[:k], c[:k], u, ts, 7.0, torch.Generator().manual_seed(1), n)

    def factorized(dec, bundle=stage1):
        return lambda: make_factorized(bundle, dec, c[:len(dec.names)], u, ts, 7.0, torch.Generator().manual_seed(1), n)

    rows = {"CFG (sample_cfg)": (lambda b=stage1: sample_cfg(b, c[0], u, ts, 7.0, torch.Generator().manual_seed(1), n),
                                 lambda b: sample_cfg(b, c[0], u, ts, 7.0, torch.Generator().manual_seed(1), n), 2),
            "anagram, 2 views": (anagram(2), lambda b: anagram(2, b)(), 4),
            "anagram, 3 views": (anagram(3), lambda b: anagram(3, b)(), 6),
            "anagram, 4 views": (anagram(4), lambda b: anagram(4, b)(), 8),
            "factorized, 2 parts (LowHigh)": (factorized(LowHigh()), lambda b: factorized(LowHigh(), b)(), 3),
            "factorized, 3 parts (ThreeBands)": (factorized(ThreeBands()), lambda b: factorized(ThreeBands(), b)(), 4)}
    for name, (_, run_counted, passes) in rows.items():              # one UNet call per step, of the expected batch
        bundle, counter = counting_bundle(stage1)
        calls = counter.calls
        run_counted(bundle)
        assert calls == [passes * n] * steps, (name, calls[:3])

    t = timed({name: fn for name, (fn, _, _) in rows.items()}, args.repeats)
    base = t["anagram, 2 views"] / steps
    params = sum(p.numel() for p in stage1.unet.parameters()) / 1e6
    size = stage1.unet.config.sample_size
    print(f"{args.model} ({params:.2f}M params, {size}x{size}), N={n} image(s), {steps} steps, torch {torch.__version__}, "
          f"CPU threads {torch.get_num_threads()}, best of {args.repeats} interleaved runs")
    print(f"{'':36s} {'UNet batch':>10s} {'ms/step':>9s} {'vs 2 views':>10s} {'per pass':>9s}")
    for name, (_, _, passes) in rows.items():
        ms = t[name] / steps
        print(f"{name:36s} {passes * n:10d} {ms * 1e3:9.1f} {ms / base:9.2f}x {(ms / passes) / (base / 4):8.2f}x")
    print("one UNet call per step in every row (counted); 'per pass' = the step's cost per UNet pass, relative to "
          "the 2-view anagram's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
