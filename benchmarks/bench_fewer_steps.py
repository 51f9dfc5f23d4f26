"""Sampling in fewer steps, both parts: the wall time each sampler needs to reach the course's sampler's
quality, against the course's sampler's own time, measured in one run (by hand; prints tables; not a test).

    DIFFNB_THREADS=1 python benchmarks/bench_fewer_steps.py              # both parts, one core
    python benchmarks/bench_fewer_steps.py --part a --threads 2           # Part A alone, two cores
    python benchmarks/bench_fewer_steps.py --part b --samples 100         # Part B, more samples

Part A (``--part a``; A1.6a is the lesson), on the shipped ``mini`` with CFG 7: the reference quality is
the judge's "both right" share of the course's 33-step DDPM on the 30 prompts of the digit world, each
``--per-prompt`` times (1.6's experiment, seed ``--seed``).  For each sampler of ``diffnb.a.samplers`` on
the even grid and on ``t_i = 990 (1 - i/n)^p`` (``--timestep-power``): the smallest of ``--steps`` whose
share is within one standard error of the difference of the reference's, searched upwards; then the
sampling alone (the judge's reading is left out) of that run and of the reference, timed best of
``--repeats``, interleaved after a warm-up, and their ratio.  The NFE is counted on the UNet.

Part B (``--part b``), all in one run on the shipped ``class_fm`` model (epoch 10, CFG at the profile's
gamma; B2.6a is the lesson):

* the converged solve: RK4 with ``--reference-steps`` uniform steps; the reference quality is the 50-step
  Euler's (``class_fm_sample``'s) RMS pixel error to it, from the same noise;
* for each fixed-grid solver (``diffnb.b.solvers``: euler, midpoint, heun, rk4) on the uniform grid and on
  ``t_i = 1 - (1 - i/N)^p`` (``--power``, denser near t = 1): the smallest NFE of ``--nfes`` whose error is
  at most the reference's, searched upwards (a solver stops at its first hit);
* for dopri5: the loosest of ``--tolerances`` (rtol = atol) that reaches it, and the NFE it chose;
* the wall time of that solve (best of ``--repeats``, runs interleaved with the 50-step Euler's after a
  warm-up, so load from other processes hits both alike) and its ratio to the 50-step Euler's time.

The NFE is counted (``CallCounter``, ``Solution.nfe``); each NFE is one UNet call on a batch of 2N.  A
ratio below 1 is a sampler that reaches the course's quality faster than the course's sampler.
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

from diffnb.b import solvers  # noqa: E402
from diffnb.b.train import load_model  # noqa: E402
from diffnb.part_b import setup  # noqa: E402
from diffnb.profiles import part_b_config, part_b_sampling  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="both", choices=["a", "b", "both"])
    ap.add_argument("--profile", default="quick", choices=["quick", "seed"], help="Part B's profile")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: DIFFNB_THREADS, else torch's)")
    ap.add_argument("--per-prompt", type=int, default=2, help="Part A: samples per prompt of the 30 (60 in all)")
    ap.add_argument("--seed", type=int, default=0, help="Part A: the seed of the samples")
    ap.add_argument("--steps", default="5,8,10,12,15,20,33", help="Part A: step counts searched, comma-separated")
    ap.add_argument("--timestep-power", type=float, default=0.5, help="Part A: p of the grid t_i = 990 (1 - i/n)^p")
    ap.add_argument("--samples", type=int, default=40, help="Part B: samples per solve, the digits 0-9 in turn")
    ap.add_argument("--nfes", default="8,12,16,20,24,32,40,48,64", help="Part B: NFE budgets searched, comma-separated")
    ap.add_argument("--power", type=float, default=2.0, help="Part B: p of the grid t_i = 1 - (1 - i/N)^p")
    ap.add_argument("--tolerances", default="1e-2,3e-3,1e-3,3e-4", help="Part B: dopri5's rtol = atol, loosest first")
    ap.add_argument("--reference-steps", type=int, default=25, help="Part B: RK4 steps of the converged solve")
    ap.add_argument("--fid-samples", type=int, default=0, help="Part B: also a FID on the judge's features of this many "
                                                              "samples per sampler found (0: none; e.g. 500)")
    args = ap.parse_args(argv)
    threads = args.threads or (int(os.environ["DIFFNB_THREADS"]) if os.environ.get("DIFFNB_THREADS") else None)
    if args.part in ("a", "both"):
        part_a(args, threads)
    if args.part in ("b", "both"):
        part_b(args, threads)
    return 0


def part_a(args, threads) -> None:
    from diffnb import evaluate
    from diffnb.a import samplers
    from diffnb.mini import world
    from diffnb.part_a import setup_part_a, world_judge

    pa = setup_part_a("quick", "mini", args.device, 100)
    if threads:
        torch.set_num_threads(threads)                        # after setup, which sets the profile's
    judge = world_judge(pa)
    steps = sorted(int(n) for n in args.steps.split(","))

    def read(sampler, n, power):
        return evaluate.fewer_steps_row(pa.stage1, pa.embed, judge, pa.scale, args.seed, args.per_prompt, sampler, n,
                                        power)

    ref = read("ddpm", 33, 1.0)
    size = len(ref["samples"])
    se = lambda p: evaluate.standard_error(p, size) / 100     # noqa: E731  a share's standard error
    print(f"\nPart A: mini, CFG {pa.scale:g}, {size} samples (30 prompts x {args.per_prompt}, seed {args.seed}), "
          f"{torch.get_num_threads()} thread(s), device {pa.device}")
    print(f"reference: ddpm, even grid, {ref['nfe']} NFE, both right {ref['both']:.0%} ± {100 * se(ref['both']):.1f}")
    found = {}                                                # label -> (nfe, share, sampler, steps, power)
    grids = {"even": 1.0, f"power {args.timestep_power:g}": args.timestep_power}
    for grid, power in grids.items():
        for sampler in samplers.SAMPLERS:
            if sampler == "ddpm" and grid == "even":
                continue                                      # the reference itself
            best = 0.0
            for n in steps:
                r = read(sampler, n, power)
                best = max(best, r["both"])
                if ref["both"] - r["both"] <= (se(ref["both"]) ** 2 + se(r["both"]) ** 2) ** 0.5:
                    found[f"{sampler}, {grid}"] = (r["nfe"], r["both"], sampler, n, power)
                    break
            else:
                found[f"{sampler}, {grid}"] = (None, best, sampler, None, power)

    prompts = [world.prompt(d, s) for d in range(10) for s in range(len(world.STYLES)) for _ in range(args.per_prompt)]
    cond, uncond = evaluate.embed_all(pa.embed, prompts), pa.embed("")

    def sampling(sampler, n, power):
        return lambda: samplers.sample(pa.stage1, cond, uncond, sampler, n, pa.scale,
                                       torch.Generator().manual_seed(args.seed), len(prompts), power=power,
                                       progress=False)

    fns = {"ddpm, even (ref)": sampling("ddpm", 33, 1.0)}
    fns.update({label: sampling(s, n, p) for label, (nfe, _, s, n, p) in found.items() if nfe is not None})
    seconds = timed(fns, args.repeats)
    base = seconds["ddpm, even (ref)"]
    print(f"the smallest step count (of {steps}) within one standard error of the reference; sampling seconds, "
          f"best of {args.repeats}")
    print(f"{'sampler':>24s} {'NFE':>5s} {'both':>6s} {'seconds':>8s} {'ratio':>6s}")
    print(f"{'ddpm, even (ref)':>24s} {ref['nfe']:5d} {ref['both']:6.0%} {base:8.2f} {1.0:6.2f}")
    for label, (nfe, share, *_rest) in found.items():
        if nfe is None:
            print(f"{label:>24s} {'—':>5s} {share:6.0%} {'not reached':>15s}")
        else:
            print(f"{label:>24s} {nfe:5d} {share:6.0%} {seconds[label]:8.2f} {seconds[label] / base:6.2f}")


def part_b(args, threads) -> None:
    nfes = sorted(int(n) for n in args.nfes.split(","))
    tolerances = [float(t) for t in args.tolerances.split(",")]
    dev, source = setup(args.profile, args.device, "auto", 0)
    if threads:
        torch.set_num_threads(threads)                        # after setup, which sets the profile's
    cfg = part_b_config("class_fm", args.profile)
    sampling = part_b_sampling(args.profile)
    unet = load_model(cfg, cfg.epochs, device=dev)
    c = torch.arange(10).repeat((args.samples + 9) // 10)[:args.samples]

    def run(solver, steps=None, grid=None, labels=c, **tol):
        return solvers.sample_class_fm(unet, labels, solver, steps, grid, guidance_scale=sampling.guidance_scale,
                                       seed=sampling.seed, **tol)

    reference = run("rk4", steps=args.reference_steps)
    euler = run("euler", steps=sampling.num_ts)
    target = solvers.rms_error(euler.x, reference.x)
    print(f"\nPart B: class_fm epoch {cfg.epochs}, γ = {sampling.guidance_scale}, {len(c)} samples, {torch.get_num_threads()} "
          f"thread(s), device {dev}; converged solve: RK4, {reference.nfe} NFE")
    print(f"reference: Euler, {euler.nfe} NFE, RMS error {target:.4f} to the converged solve")

    found = {}                       # label -> (nfe, error, the call that reproduces the solve)
    grids = {"uniform": lambda k: solvers.time_grid(k), f"power {args.power:g}":
             lambda k: solvers.time_grid(k, "power", args.power)}
    for grid_name, make_grid in grids.items():
        for solver in ("euler", "midpoint", "heun", "rk4"):
            if solver == "euler" and grid_name == "uniform":
                continue                                              # the reference itself
            per = solvers.EVALS_PER_STEP[solver]
            errors = {}
            for nfe in (n for n in nfes if n % per == 0):
                call = (lambda labels=c, s=solver, g=make_grid(nfe // per): run(s, grid=g, labels=labels))
                sol = call()
                errors[sol.nfe] = solvers.rms_error(sol.x, reference.x)
                if solvers.smallest_nfe(errors, target) is not None:
                    found[f"{solver}, {grid_name}"] = (sol.nfe, errors[sol.nfe], call)
                    break
            else:
                found[f"{solver}, {grid_name}"] = (None, min(errors.values()) if errors else float("nan"), None)
    for tol in tolerances:
        sol = run("dopri5", rtol=tol, atol=tol)
        err = solvers.rms_error(sol.x, reference.x)
        if err <= target:
            found[f"dopri5, tol {tol:g}"] = (sol.nfe, err, lambda labels=c, t=tol: run("dopri5", rtol=t, atol=t,
                                                                                     labels=labels))
            break
    else:
        found[f"dopri5, tol {tolerances[-1]:g}"] = (None, err, None)

    fns = {"euler, uniform": lambda labels=c: run("euler", steps=sampling.num_ts, labels=labels)}
    fns.update({label: call for label, (_, _, call) in found.items() if call is not None})
    seconds = timed(fns, args.repeats)
    base = seconds["euler, uniform"]
    print(f"\nthe smallest NFE (of {nfes}) reaching error <= {target:.4f}; seconds: best of {args.repeats}")
    print(f"{'sampler':>22s} {'NFE':>5s} {'error':>8s} {'seconds':>8s} {'ratio':>6s}")
    print(f"{'euler, uniform (ref)':>22s} {euler.nfe:5d} {target:8.4f} {base:8.2f} {1.0:6.2f}")
    for label, (nfe, err, _) in found.items():
        if nfe is None:
            print(f"{label:>22s} {'—':>5s} {err:8.4f} {'not reached':>15s}")
        else:
            print(f"{label:>22s} {nfe:5d} {err:8.4f} {seconds[label]:8.2f} {seconds[label] / base:6.2f}")
    if args.fid_samples:
        from diffnb.b.digits import load_digits
        from diffnb.b.judge import fid, get_judge

        judge = get_judge(source, device=dev)
        held_out = load_digits(source, train=False).images
        train = load_digits(source, train=True).images
        labels = torch.arange(10).repeat((args.fid_samples + 9) // 10)[:args.fid_samples]
        print(f"\nFID on the judge's features against the {len(held_out)} held-out digits, {len(labels)} samples each "
              f"(floor: {len(labels)} training digits score {fid(judge, train[:len(labels)], held_out):.1f}), "
              f"and the judge's accuracy: overall and its lowest class")
        for label, fn in fns.items():
            sol = fn(labels)
            x = sol.x.clamp(0, 1)
            per_class = judge.accuracy_per_class(x, labels)
            worst = min(per_class, key=per_class.get)
            print(f"{label:>22s} {sol.nfe:5d} NFE  FID {fid(judge, x, held_out):7.1f}  accuracy "
                  f"{judge.accuracy(x, labels):6.1%}  lowest: digit {worst} {per_class[worst]:6.1%}", flush=True)




if __name__ == "__main__":
    sys.exit(main())
