"""The float32 budgets of diffnb.core.numerics: their closed forms, that they still catch a broken formula,
and that the identities hold under a kernel choice other than this process's."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler

from diffnb.a.checks import check_embeds
from diffnb.a.denoise import cfg_combine, cfg_estimator, ddpm_step, denoise_loop, pure_noise, run_unet, sample_cfg, strided_timesteps
from diffnb.core.devices import make_generator
from diffnb.a.views import highpass, hybrid_estimator, lowpass, make_hybrids
from diffnb.core.numerics import EPS, UNET_ULPS, Agreement, agreement, formula_bound, rounding_bound, sampler_gain
from diffnb.part_a import estimators_agree, sample_budget

import numerics_drift

pytestmark = pytest.mark.usefixtures("one_thread")


def test_budgets_are_their_closed_forms():
    assert EPS == 2.0 ** -23
    assert rounding_bound(1.0, 2.0) == UNET_ULPS * EPS * 2.0
    assert rounding_bound(7.0, 2.0) == pytest.approx(UNET_ULPS * EPS * 13 * 2.0)        # |7| + |1 - 7|
    assert rounding_bound(-2.0, 1.0, gain=3.0) == pytest.approx(UNET_ULPS * EPS * 5 * 3.0)  # |-2| + |3|
    assert formula_bound(4.0, 3) == 3 * EPS * 4.0


def test_agreement_refuses_nan_and_reports_its_margin():
    a = torch.ones(3)
    assert agreement(a, a, 0.0) and agreement(a, a, 0.0).margin == math.inf and agreement(a, a, 0.0).ratio == 0
    nan = agreement(a, torch.tensor([1.0, float("nan"), 1.0]), 1e9)
    assert not nan and nan.difference == math.inf
    close = Agreement(1e-6, 1e-4)
    assert close and close.margin == pytest.approx(100) and "agree" in str(close)
    assert not Agreement(2e-4, 1e-4) and "DIFFER" in str(Agreement(2e-4, 1e-4))


def test_sampler_gain_is_how_far_an_eps_error_moves_the_sample(stage1):
    """Perturb eps by delta at one step: without thresholding the step moves by -c_t delta exactly, and
    the gain is the sum of the c_t over the strided list."""
    config = dict(stage1.scheduler.config, thresholding=False, clip_sample=False)
    bundle = SimpleNamespace(unet=stage1.unet, scheduler=DDPMScheduler.from_config(config))
    ts = strided_timesteps(bundle, 990, 330)                        # [990, 660, 330, 0]
    x = torch.randn(1, 3, 8, 8, generator=make_generator(1))
    eps, var = torch.randn(2, 1, 3, 8, 8, generator=make_generator(2))
    moved = []
    for t, prev in zip(ts[:-1], ts[1:]):
        a = ddpm_step(x, eps, var, t, prev, bundle, make_generator(3))
        b = ddpm_step(x, eps + 1e-2, var, t, prev, bundle, make_generator(3))
        moved.append(float((a - b).mean()) / 1e-2)
    assert sum(moved) == pytest.approx(sampler_gain(bundle, ts), rel=1e-3)
    assert sampler_gain(stage1, strided_timesteps(stage1)) == pytest.approx(10.97, abs=0.01)   # IF's 33 steps


# --------------------------------------------------------------------------- broken estimators are caught

def _broken(stage1, c, u, kind):
    """CFG written wrongly on purpose: arguments swapped, a term dropped, the high-pass left out."""
    def estimate(x, t):
        (eps_u, _), (eps_c, var_c) = run_unet(stage1, [x, x], [u, c], t)
        if kind == "swapped":
            return cfg_combine(eps_c, eps_u, 7.0), var_c             # eps_c + gamma (eps_u - eps_c)
        if kind == "dropped term":
            return eps_u + 7.0 * eps_c, var_c                        # the - gamma eps_u is missing
        if kind == "low-pass only":
            return lowpass(cfg_combine(eps_u, eps_c, 7.0)), var_c   # hybrid without its high-pass
        raise ValueError(kind)
    return estimate


@pytest.fixture(scope="module")
def prompts(stage1, emb):
    return tuple(check_embeds(emb.get(p), stage1, p) for p in ("a photo of a caveman", ""))


@pytest.mark.parametrize("kind", ["swapped", "dropped term", "low-pass only"])
def test_a_broken_estimator_leaves_the_budget(stage1, prompts, kind):
    c, u = prompts
    ts = strided_timesteps(stage1)
    x = pure_noise(stage1, make_generator(0), num_images=2)
    ref = cfg_estimator(stage1, c, u, 7.0)
    assert estimators_agree(hybrid_estimator(stage1, c, c, u, 7.0), ref, x, ts, scale=7.0)      # the right one passes
    broken = _broken(stage1, c, u, kind)
    step = estimators_agree(broken, ref, x, ts, scale=7.0)
    assert not step and step.ratio > 10                             # fails by far more than the budget
    x1 = pure_noise(stage1, make_generator(0))
    budget = sample_budget(stage1, ref, x1, ts, 7.0)
    plain = sample_cfg(stage1, c, u, ts, 7.0, make_generator(100))
    g = make_generator(100)
    whole = agreement(denoise_loop(pure_noise(stage1, g), ts, 0, stage1, broken, g), plain, budget)
    assert not whole
    assert agreement(make_hybrids(stage1, c, c, u, ts, 7.0, make_generator(100)), plain, budget)


def test_a_broken_split_leaves_the_formula_budget():
    x = torch.randn(1, 3, 40, 40, generator=make_generator(5))
    bound = formula_bound(max(x.abs().max(), lowpass(x).abs().max()), 4)
    assert agreement(lowpass(x) + highpass(x), x, bound)
    assert not agreement(lowpass(x) + highpass(x, sigma=3.0), x, bound)   # low and high of different blurs


# --------------------------------------------------------------------------- another kernel choice

def test_identities_hold_with_the_portable_kernels_and_two_threads():
    """The identities of the tiny model in a fresh process on torch's portable (non-SIMD) kernels and
    two threads; CI runs every kernel choice (python tests/numerics_drift.py --matrix)."""
    rows = numerics_drift.run("default", 2, ["tiny"])
    assert len(rows) >= 10 and {r["capability"] for r in rows} == {"DEFAULT"}
    outside = [(r["identity"], r["difference"], r["bound"]) for r in rows if not r["difference"] <= r["bound"]]
    assert not outside, f"identities outside their float32 budget: {outside}"


def test_a_kernel_choice_the_cpu_lacks_is_named_not_a_traceback(monkeypatch):
    """torch takes ATEN_CPU_CAPABILITY=avx512 on a CPU without AVX-512 and dies on SIGILL: the matrix says so."""
    import signal
    import subprocess

    def sigill(*a, **k):
        return subprocess.CompletedProcess(a, -signal.SIGILL, "", "")
    monkeypatch.setattr(subprocess, "run", sigill)
    with pytest.raises(numerics_drift.KernelsUnavailable, match="avx512: this CPU lacks the instructions"):
        numerics_drift.run("avx512", 1, ["tiny"])
