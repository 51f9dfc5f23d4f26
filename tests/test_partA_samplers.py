"""Part A's samplers in fewer steps (``diffnb.a.samplers``), checked against diffusers and closed forms.

* DDIM's step against ``DDIMScheduler.step`` (eta = 0, the clipped x0_hat's noise), at float32 rounding;
* DPM-Solver++ driven by the pack's loop against ``IFPipeline`` with ``DPMSolverMultistepScheduler``, the
  same UNet, embeddings, timesteps and seed, step by step;
* DDPM on any list against the course's loop, bit for bit;
* on a point mass with its exact noise, DDIM and DPM-Solver++ land on the point in any number of steps;
* the NFE counted on the UNet, seeds, the grids and bad inputs.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from diffnb.a import denoise, samplers
from diffnb.a.models import IF_SCHEDULER_CONFIG
from diffnb.a.schedule import Schedule
from diffnb.core.counting import counting_bundle
from diffnb.core.devices import make_generator
from diffnb.core.numerics import formula_bound

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def ce(emb):
    return emb.get("a high quality picture"), emb.get("")


# --------------------------------------------------------------------------- grids and lists

def test_the_even_grid_of_33_steps_is_the_course_list(stage1):
    assert samplers.grid_timesteps(33) == denoise.strided_timesteps(stage1)
    assert samplers.sampler_timesteps(stage1, "ddpm", 33) == denoise.strided_timesteps(stage1)[:-1]


@pytest.mark.parametrize("steps, power", [(n, p) for n in (1, 5, 10, 50) for p in (0.5, 1.0)] + [(5, 2.0), (20, 2.0)])
def test_grids_run_from_990_to_0_and_lean_as_the_power_says(steps, power):
    ts = samplers.grid_timesteps(steps, power)
    assert len(ts) == steps + 1 and ts[0] == 990 and ts[-1] == 0
    assert all(b < a for a, b in zip(ts, ts[1:]))
    if steps >= 5 and power != 1.0:
        first, last = ts[0] - ts[1], ts[-2] - ts[-1]
        assert (first < last) if power < 1 else (first > last)      # p < 1: short steps at high noise


def test_if_lists_come_from_diffusers():
    from diffusers.pipelines.deepfloyd_if import timesteps as if_timesteps
    for name in samplers.IF_LISTS:
        assert samplers.if_list(name) == list(getattr(if_timesteps, f"{name}_timesteps"))
    with pytest.raises(ValueError, match="unknown IF timestep list 'smart28'.*smart27"):
        samplers.if_list("smart28")


@pytest.mark.parametrize("steps, match", [(0, "steps must be a positive int"), (-3, "steps must be a positive int"),
                                          (True, "steps must be a positive int"), (2.5, "timesteps must be a list")])
def test_bad_step_counts_are_refused(steps, match):
    with pytest.raises((ValueError, TypeError), match=match):
        samplers.resolve_timesteps(SimpleNamespace(scheduler=DDPMScheduler(**IF_SCHEDULER_CONFIG)), steps)


@pytest.mark.parametrize("power, err, match", [(float("nan"), ValueError, "power must be a finite number"),
                                               (0, ValueError, "power must be above 0"),
                                               (-1.0, ValueError, "power must be >= 0"),
                                               ("0.5", TypeError, "power must be a number")])
def test_bad_powers_are_refused(power, err, match):
    with pytest.raises(err, match=match):
        samplers.grid_timesteps(10, power)


def test_a_grid_that_puts_two_steps_on_one_timestep_is_refused():
    with pytest.raises(ValueError, match="put two steps on one timestep"):
        samplers.grid_timesteps(99, 4.0)


def test_a_list_must_end_at_0_and_a_sampler_be_known(stage1, ce):
    with pytest.raises(ValueError, match="must end at 0"):
        samplers.sample(stage1, *ce, "ddim", [990, 500, 100])
    with pytest.raises(ValueError, match="sampler must be one of ddpm, ddim, dpmsolver\\+\\+, got 'euler'"):
        samplers.sample(stage1, *ce, "euler", 10)
    with pytest.raises(ValueError, match="descending"):
        samplers.sample(stage1, *ce, "ddpm", [0, 500, 990])
    with pytest.raises(ValueError, match="guidance scale"):
        samplers.sample(stage1, *ce, "ddpm", 5, scale=float("nan"))
    with pytest.raises(ValueError, match="num_images must be at least 1"):
        samplers.sample(stage1, *ce, "ddpm", 5, num_images=0)


# --------------------------------------------------------------------------- DDIM against DDIMScheduler.step

def _ddim_bound(schedule, x, eps, t, prev_t):
    """x0_hat (3 roundings at (|x| + |eps|) / alpha_t), its noise again (3 at (|x| + 1) / sigma_t, x0_hat
    thresholded to [-1, 1]) and the combination (3): ``formula_bound`` of 13 operations, 4 to spare, at the
    largest of those sizes."""
    a, a_prev = float(schedule.abar(t)), float(schedule.abar(prev_t))
    size = max((float(x.abs().max()) + float(eps.abs().max())) / a ** 0.5, (float(x.abs().max()) + 1) / (1 - a) ** 0.5)
    return formula_bound(size * max(1.0, a_prev ** 0.5 + (1 - a_prev) ** 0.5), 13)


@pytest.mark.parametrize("n, t", [(10, 900), (10, 500), (10, 100), (33, 990), (33, 30)])
def test_ddim_step_equals_ddimscheduler_step(stage1, n, t):
    g = make_generator(n + t)
    x = torch.randn((2, 3, 8, 8), generator=g) * 1.5
    eps = torch.randn((2, 3, 8, 8), generator=g)
    ref_sched = DDIMScheduler.from_config(stage1.scheduler.config)
    ref_sched.set_timesteps(n)
    prev_t = t - ref_sched.config.num_train_timesteps // n          # DDIMScheduler's previous timestep
    ref = ref_sched.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    ours = samplers.ddim_step(x, eps, t, prev_t, Schedule(stage1))
    schedule = Schedule(stage1)
    torch.testing.assert_close(ours, ref, atol=_ddim_bound(schedule, x, eps, t, prev_t), rtol=0)
    # and the clipping matters: without it the step is another (so the check can fail)
    plain = DDIMScheduler.from_config(stage1.scheduler.config, thresholding=False, clip_sample=False)
    plain.set_timesteps(n)
    assert not torch.allclose(plain.step(eps, t, x, eta=0.0).prev_sample, ours, atol=1e-3)


# --------------------------------------------------------------------------- DPM-Solver++ against IFPipeline

@pytest.mark.parametrize("steps, power", [(5, 1.0), (8, 0.5)])
def test_dpmsolver_equals_ifpipeline_with_dpmsolvermultistepscheduler(stage1, ce, steps, power):
    """The pack's loop driving DPM-Solver++ = IFPipeline with the same scheduler, step by step."""
    c, u = ce
    eval_ts = samplers.sampler_timesteps(stage1, "dpmsolver++", steps, power)
    scheduler = DPMSolverMultistepScheduler.from_config(stage1.scheduler.config, **samplers.DPM_SOLVER_CONFIG)
    pipe = type(stage1)(**{**stage1.components, "scheduler": scheduler})
    seen = []
    pipe(prompt_embeds=c, negative_prompt_embeds=u, timesteps=eval_ts, guidance_scale=7.0,
         generator=make_generator(100), output_type="pt", callback_steps=1,
         callback=lambda i, t, x: seen.append((int(t), x.clone())))
    assert [t for t, _ in seen] == eval_ts

    counted, counter = counting_bundle(stage1)
    ours = samplers.sample(counted, c, u, "dpmsolver++", steps, 7.0, make_generator(100), power=power)
    assert counter.nfe == steps and counter.calls == [2] * steps
    # The same UNet batches and scheduler: 1e-5 as the DDPM loop's check against IFPipeline
    # (tests/test_partA_ddpm.py) leaves room for float32 evaluated in another order, not for another step.
    torch.testing.assert_close(ours, seen[-1][1], atol=1e-5, rtol=1e-5)


def test_dpmsolver_first_step_is_ddim(stage1, ce):
    """DPM-Solver++'s first-order step, x' = (sigma'/sigma) x - alpha' (e^-h - 1) x0_hat, is DDIM's."""
    x = denoise.pure_noise(stage1, make_generator(0), num_images=2)
    ts = samplers.grid_timesteps(6, 0.5)
    c, u = (e.to(x.dtype) for e in ce)
    with torch.no_grad():
        eps, var = denoise.cfg_estimator(stage1, c, u, 7.0)(x, ts[0])
    dpm = samplers.check_sampler(stage1, "dpmsolver++", ts).step(x, eps, var, 0, None)
    ddim = samplers.ddim_step(x, eps, ts[0], ts[1], Schedule(stage1))
    torch.testing.assert_close(dpm, ddim, atol=_ddim_bound(Schedule(stage1), x, eps, ts[0], ts[1]) * 4, rtol=0)


# --------------------------------------------------------------------------- DDPM = the course's loop

@pytest.mark.parametrize("steps", [33, "smart27"])
def test_ddpm_is_the_course_loop_bit_for_bit(stage1, ce, steps):
    ts = samplers.resolve_timesteps(stage1, steps)
    a = samplers.sample(stage1, *ce, "ddpm", steps, 7.0, make_generator(5), num_images=2)
    b = denoise.sample_cfg(stage1, *ce, ts, 7.0, make_generator(5), num_images=2)
    assert torch.equal(a, b)
    c = samplers.sample(stage1, *ce, "ddpm", samplers.grid_timesteps(7, 0.5), 7.0, make_generator(5), num_images=2)
    d = denoise.sample_cfg(stage1, *ce, samplers.grid_timesteps(7, 0.5), 7.0, make_generator(5), num_images=2)
    assert torch.equal(c, d)


# --------------------------------------------------------------------------- closed form: a point mass

class _PointMassUNet(torch.nn.Module):
    """The exact noise of data that is one image ``x0``: eps(x_t, t) = (x_t - alpha_t x0) / sigma_t, and a
    zero variance channel (IF's layout: 2C channels out)."""

    def __init__(self, x0, abar):
        super().__init__()
        self.x0, self.abar = x0, abar
        self.config = SimpleNamespace(in_channels=3, out_channels=6, sample_size=8)
        self.dtype, self.device = torch.float64, torch.device("cpu")

    def forward(self, x, t, encoder_hidden_states=None):
        a = self.abar[int(t)]
        eps = (x - a.sqrt() * self.x0) / (1 - a).sqrt()
        return SimpleNamespace(sample=torch.cat([eps, torch.zeros_like(eps)], dim=1))


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
@pytest.mark.parametrize("steps", [1, 2, 5, 17])
def test_on_a_point_mass_ddim_and_dpmsolver_land_on_the_point(sampler, steps):
    config = dict(IF_SCHEDULER_CONFIG, thresholding=False, clip_sample=False)
    scheduler = DDPMScheduler(**config)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    x0 = torch.rand((1, 3, 8, 8), generator=make_generator(1), dtype=torch.float64) * 2 - 1
    bundle = SimpleNamespace(unet=_PointMassUNet(x0, scheduler.alphas_cumprod), scheduler=scheduler)
    stepper = samplers.check_sampler(bundle, sampler, steps)
    x = x_T = torch.randn((1, 3, 8, 8), generator=make_generator(2), dtype=torch.float64)
    eps_T = bundle.unet(x_T, stepper.eval_ts[0]).sample[:, :3]
    for i, t in enumerate(stepper.eval_ts):
        out = bundle.unet(x, t).sample
        x = stepper.step(x, out[:, :3], out[:, 3:], i, None)
    # every step stays on the path x_t = alpha_t x0 + sigma_t z, and the last lands on x0 (DDIM at t = 0,
    # where sigma_0 is 0.006 of the noise; DPM-Solver++ at sigma = 0 itself)
    if sampler == "ddim":
        sigma_0 = float((1 - scheduler.alphas_cumprod[0]).sqrt())
        assert float((x - x0).abs().max()) <= sigma_0 * 5              # |z| < 5 here
    else:
        # diffusers keeps the scheduler's alphas and sigmas in float32, so x0_hat = (x - sigma eps) / alpha
        # carries float32 rounding of values up to (|x| + |eps|) / alpha at the first timestep (alpha_990 =
        # 0.014): formula_bound of 13 operations at that size; a wrong step misses by a share of x0 (~1)
        a = float(scheduler.alphas_cumprod[stepper.eval_ts[0]]) ** 0.5
        torch.testing.assert_close(x, x0, atol=formula_bound((float(x_T.abs().max()) + float(eps_T.abs().max())) / a, 13),
                                   rtol=0)


# --------------------------------------------------------------------------- NFE and seeds

@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
@pytest.mark.parametrize("steps, nfe", [(1, 1), (4, 4), ("smart27", 26)])
def test_one_batched_unet_call_per_step(stage1, ce, sampler, steps, nfe):
    counted, counter = counting_bundle(stage1)
    samplers.sample(counted, *ce, sampler, steps, 7.0, make_generator(0), num_images=3)
    assert counter.nfe == nfe and counter.calls == [6] * nfe


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_same_seed_same_samples_another_seed_others(stage1, ce, sampler):
    a = samplers.sample(stage1, *ce, sampler, 4, 7.0, make_generator(9), num_images=2, power=0.5)
    b = samplers.sample(stage1, *ce, sampler, 4, 7.0, make_generator(9), num_images=2, power=0.5)
    c = samplers.sample(stage1, *ce, sampler, 4, 7.0, make_generator(10), num_images=2, power=0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


# --------------------------------------------------------------------------- closed form: the order of each sampler

class _GaussianUNet(_PointMassUNet):
    """The exact noise of data ~ N(0, s^2 I): eps(x_t, t) = sigma_t x_t / (alpha_t^2 s^2 + sigma_t^2)."""

    def __init__(self, s, abar):
        super().__init__(None, abar)
        self.s = s

    def forward(self, x, t, encoder_hidden_states=None):
        a = self.abar[int(t)]
        eps = (1 - a).sqrt() * x / (a * self.s ** 2 + 1 - a)
        return SimpleNamespace(sample=torch.cat([eps, torch.zeros_like(eps)], dim=1))


def _gaussian_error(sampler, steps, s=0.5):
    """|x_end - exact| after ``steps`` steps of the probability-flow ODE on Gaussian data, whose exact flow
    scales x_T by s / sqrt(abar_T s^2 + 1 - abar_T) (for DDIM to t = 0, sqrt(abar_0 s^2 + 1 - abar_0) there)."""
    scheduler = DDPMScheduler(**dict(IF_SCHEDULER_CONFIG, thresholding=False, clip_sample=False))
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    abar = scheduler.alphas_cumprod
    bundle = SimpleNamespace(unet=_GaussianUNet(s, abar), scheduler=scheduler)
    stepper = samplers.check_sampler(bundle, sampler, steps)
    x = x_T = torch.randn((1, 3, 8, 8), generator=make_generator(3), dtype=torch.float64)
    for i, t in enumerate(stepper.eval_ts):
        out = bundle.unet(x, t).sample
        x = stepper.step(x, out[:, :3], out[:, 3:], i, None)
    t0, t_end = stepper.eval_ts[0], 0
    end_scale = s if sampler == "dpmsolver++" else float((abar[t_end] * s ** 2 + 1 - abar[t_end]).sqrt())
    exact = x_T * end_scale / (abar[t0] * s ** 2 + 1 - abar[t0]).sqrt()
    return float((x - exact).abs().max())


@pytest.mark.parametrize("sampler, order", [("ddim", 1), ("dpmsolver++", 2)])
def test_each_sampler_has_its_order_on_gaussian_data(sampler, order):
    """DDIM is first order and DPM-Solver++(2M) second: doubling the steps from 20 to 40 (even grid; under
    15 steps diffusers takes DPM-Solver++'s last step at first order) divides the error by about 2 and 4
    (measured 1.96 and 3.65; a DPM-Solver++ set to first order fails the second)."""
    ratio = _gaussian_error(sampler, 20) / _gaussian_error(sampler, 40)
    assert (1.6 < ratio < 2.8) if order == 1 else ratio > 3.2, f"{sampler}: error ratio {ratio:.2f}"
