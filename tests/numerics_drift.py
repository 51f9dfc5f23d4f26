"""Measure the float32 drift of every identity the pack checks, against its budget (diffnb.core.numerics).

    python tests/numerics_drift.py [--threads N]   # this process's kernels: one JSON line per identity
    python tests/numerics_drift.py --matrix        # every kernel choice x 1 and 2 threads, a table; exit 1 if any
                                                   # identity leaves its budget (CI runs this)

Run under each kernel choice torch offers (``ATEN_CPU_CAPABILITY=default|avx2|avx512``) and thread
count, this shows how far a check is from flipping on another machine; ``tests/test_numerics.py``
runs it that way and fails if any identity leaves its budget.  The identities are the ones the tests
and the notebooks' checked cells assert: on the ``tiny`` model (the tests) and the ``mini`` model (the
Part A notebooks).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json

import torch


def identities(model: str):
    """Yield ``(name, Agreement)`` for each identity on ``model``."""
    from diffnb.a.denoise import (cfg_estimator, ddpm_step, estimate_noise, forward, iterative_denoise,
                             iterative_denoise_cfg, plain_estimator, pure_noise, sample_cfg)
    from diffnb.core.devices import make_generator
    from diffnb.a.views import IdentityView, anagram_estimator, hybrid_estimator, lowpass, highpass, make_anagram, make_hybrids
    from diffnb.core.numerics import agreement, ddpm_step_bound, formula_bound
    from diffnb.part_a import estimators_agree, sample_budget, setup_part_a
    from diffusers import DDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    with contextlib.redirect_stdout(io.StringIO()):
        pa = setup_part_a("quick", model=model, device="cpu")
    s1, ts, u = pa.stage1, pa.timesteps(), pa.uncond
    c = pa.embed("a photo of the digit 1" if model == "mini" else "a photo of a caveman")
    x = pure_noise(s1, make_generator(0), num_images=2)
    cfg7 = cfg_estimator(s1, c, u, 7.0)

    yield "step: CFG at gamma 1 = plain", estimators_agree(cfg_estimator(s1, c, u, 1.0), plain_estimator(s1, c), x, ts, 1.0)
    yield "step: hybrid of one prompt = CFG", estimators_agree(hybrid_estimator(s1, c, c, u, 7.0), cfg7, x, ts, 7.0)
    yield "step: anagram of identity views = CFG", estimators_agree(
        anagram_estimator(s1, [IdentityView(), IdentityView()], [c, c], u, 7.0), cfg7, x, ts, 7.0)

    x1 = pure_noise(s1, make_generator(0))
    plain7 = sample_cfg(s1, c, u, ts, 7.0, make_generator(100))
    budget7 = sample_budget(s1, cfg7, x1, ts, 7.0)
    yield "sample: hybrid of one prompt = CFG", agreement(make_hybrids(s1, c, c, u, ts, 7.0, make_generator(100)), plain7, budget7)
    yield "sample: anagram of identity views = CFG", agreement(
        make_anagram(s1, [IdentityView(), IdentityView()], [c, c], u, ts, 7.0, make_generator(100)), plain7, budget7)
    g1, g2 = make_generator(100), make_generator(100)
    at_one = sample_cfg(s1, c, u, ts, 1.0, g1)
    plain = iterative_denoise(pure_noise(s1, g2), 0, s1, c, ts, g2)
    yield "sample: CFG at gamma 1 = plain", agreement(at_one, plain, sample_budget(s1, plain_estimator(s1, c), x1, ts, 1.0))

    # the loop against IFPipeline on the same UNet, embeddings, timesteps and seed (every step's image)
    seen = {}
    with contextlib.redirect_stderr(io.StringIO()):
        s1(prompt_embeds=c, negative_prompt_embeds=u, timesteps=ts, guidance_scale=7.0, generator=make_generator(100),
           output_type="pt", callback_steps=1, callback=lambda i, t, im: seen.__setitem__(int(t), im.clone()))
    g = make_generator(100)
    trace = []
    iterative_denoise_cfg(pure_noise(s1, g), 0, s1, c, u, ts, scale=7.0, generator=g, intermediates=trace, return_every=1)
    worst = max((agreement(st.image, seen[st.t], budget7) for st in trace), key=lambda a: a.ratio)
    yield "loop: iterative_denoise_cfg = IFPipeline", worst

    # closed forms against diffusers, elementwise
    image = lowpass(torch.rand(1, 3, s1.unet.config.sample_size, s1.unet.config.sample_size) * 2 - 1)
    for t in (250, 999):
        x_t = forward(image, t, s1, generator=make_generator(3))
        noise = randn_tensor(image.shape, generator=make_generator(3), dtype=image.dtype)
        ref = s1.scheduler.add_noise(image, noise, torch.tensor([t]))
        # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps: 3 roundings on values up to |x0| + |eps|
        yield f"forward(t={t}) = add_noise", agreement(x_t, ref, formula_bound(image.abs().max() + noise.abs().max(), 3))
    x_t = forward(image, 690, s1, generator=make_generator(4))
    eps, var = estimate_noise(s1, x_t, 690, c)
    reference = DDPMScheduler.from_config(s1.scheduler.config)      # diffusers' own, with the list set on it
    reference.set_timesteps(timesteps=ts)
    ref = reference.step(torch.cat([eps, var], 1), 690, x_t, generator=make_generator(5)).prev_sample
    yield "ddpm_step = DDPMScheduler.step", agreement(ddpm_step(x_t, eps, var, 690, 660, s1, make_generator(5)), ref,
                                                      ddpm_step_bound(s1, x_t, eps, 690))
    sample = plain7
    yield "lowpass + highpass = x", agreement(lowpass(sample) + highpass(sample), sample,
                                              formula_bound(max(sample.abs().max(), lowpass(sample).abs().max()), 4))


CAPABILITIES = ("default", "avx2", "avx512")


class KernelsUnavailable(RuntimeError):
    """This CPU cannot run the kernel choice asked for (torch's process stopped on an illegal instruction)."""


def run(capability: str | None, threads: int, models) -> list[dict]:
    """This script in a fresh process with ``ATEN_CPU_CAPABILITY=capability``; its JSON lines."""
    import os
    import signal
    import subprocess
    import sys
    env = dict(os.environ)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--models", *models],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode == -signal.SIGILL:
        # torch accepts ATEN_CPU_CAPABILITY=avx512 on a CPU without AVX-512 and dies at the first such kernel
        raise KernelsUnavailable(f"ATEN_CPU_CAPABILITY={capability}: this CPU lacks the instructions "
                                 f"(the process stopped on SIGILL)")
    if out.returncode != 0:
        raise RuntimeError(f"numerics_drift.py under ATEN_CPU_CAPABILITY={capability}, {threads} thread(s) "
                           f"failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def matrix(models) -> int:
    """Run every kernel choice and thread count; print each identity's largest drift; 0 if all agree."""
    from pathlib import Path
    rows, skipped = [], []
    for cap in CAPABILITIES:
        for threads in (1, 2):
            try:
                got = run(cap, threads, models)
            except KernelsUnavailable as e:
                if cap == "default":        # the portable kernels run everywhere: a crash there is a failure
                    raise
                print(f"{e}: skipped", flush=True)
                skipped.append(cap)
                break
            rows += [dict(r, asked=cap) for r in got]
            print(f"ATEN_CPU_CAPABILITY={cap} (torch used {got[0]['capability']}), {threads} thread(s): "
                  f"{len(got)} identities", flush=True)
    worst: dict[tuple, dict] = {}
    for r in rows:
        key = (r["model"], r["identity"])
        ratio = r["difference"] / r["bound"] if r["bound"] else float("inf") * bool(r["difference"])
        if key not in worst or ratio > worst[key]["ratio"]:
            worst[key] = dict(r, ratio=ratio)
    print(f"\n{'model':5s}  {'identity':44s} {'largest drift':>13s} {'budget':>9s}  {'drift/budget':>12s}  where")
    for (model, name), r in worst.items():
        print(f"{model:5s}  {name:44s} {r['difference']:13.2e} {r['bound']:9.2e}  {r['ratio']:12.4f}  "
              f"{r['asked']}, {r['threads']} thread(s)")
    report = Path(__file__).resolve().parents[1] / "build" / "numerics-drift.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps(rows, indent=1))
    bad = [k for k, r in worst.items() if not r["ratio"] <= 1]
    if skipped:
        print(f"kernel choices this CPU cannot run, not measured: {', '.join(skipped)}")
    print(f"\n{len(rows)} measurements written to {report}; " +
          (f"OUTSIDE THE BUDGET: {bad}" if bad else "every identity within its budget"))
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="+", default=["tiny", "mini"], choices=["tiny", "mini"])
    ap.add_argument("--matrix", action="store_true", help="run every kernel choice and thread count")
    args = ap.parse_args(argv)
    if args.matrix:
        return matrix(args.models)
    torch.set_num_threads(args.threads)
    for model in args.models:
        for name, a in identities(model):
            print(json.dumps(dict(model=model, identity=name, difference=a.difference, bound=a.bound,
                                  capability=torch.backends.cpu.get_cpu_capability(), threads=args.threads)),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
