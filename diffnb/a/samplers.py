"""Part A's samplers in fewer steps: the course's DDPM beside DDIM and DPM-Solver++, on IF's cosine schedule.

Conventions (those of ``diffnb.a.denoise``): images ``(N, C, H, W)``; integer timesteps in [0, T), T = 1000,
999 = pure noise; every sampler starts from ``pure_noise``'s draw and makes **one UNet call per step** (the
conditional and unconditional passes of CFG are one batch of 2N), so its number of network evaluations
(NFE) is its number of steps.  The NFE is counted by wrapping the UNet (``diffnb.core.counting``), not
worked out.

The samplers, by the names the field gives them:

=============== ======================================================= ===================================
name            one step t -> t'                                         where it comes from
=============== ======================================================= ===================================
``ddpm``        x0_hat, the posterior mean mu_tilde(x_t, x0_hat), plus   the course's ``denoise._ddpm_step``
                learned-range noise (DDPM alg. 2 on a strided list)
``ddim``        x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps,     written here (Song et al. 2021,
                eps the noise the clipped x0_hat implies (eta = 0: no    eq. 12), = ``DDIMScheduler.step``
                noise added)                                             with ``use_clipped_model_output``
``dpmsolver++`` DPM-Solver++(2M): x0_hat of this step and the last,      diffusers' ``DPMSolverMultistep-
                extrapolated in log-SNR time lambda = log(alpha/sigma)   Scheduler``, driven by this loop
=============== ======================================================= ===================================

Timestep lists.  Every sampler runs on a descending list ending at 0: the UNet is called at every entry
but the last, and step i goes ``ts[i] -> ts[i + 1]`` (DPM-Solver++ takes its last step to sigma = 0, x0_hat
itself, as diffusers' scheduler does).  ``grid_timesteps(steps, power)`` gives t_i = 990 (1 - i/steps)^power:
``power`` = 1 is even (33 steps give the course's list 990, 960, ..., 0 exactly), ``power`` < 1 puts more
steps at high noise.  IF's own tuned lists (``IF_LISTS``: ``smart27``, ``smart50``, ``smart100``,
``fast27``, ``super27``, from ``diffusers.pipelines.deepfloyd_if.timesteps``) are taken by name.  Those
end at t = 0, where the course's loop stops, so ``smart27`` is 26 steps here (IF's pipeline adds a last
step from t = 0, where only sigma_0 = 0.006 of noise is left).

IF's UNet predicts the noise *and* a variance (6 channels: eps, v).  DDIM and DPM-Solver++ are
deterministic and have no use for the variance: it is split off, as ``DPMSolverMultistepScheduler`` does
for ``variance_type="learned_range"``.  Every sampler clips x0_hat as IF's scheduler config asks (dynamic
thresholding), so the three differ only in how they step.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler
from diffusers.pipelines.deepfloyd_if import timesteps as if_timesteps

from diffnb.a.checks import check_embeds, check_timesteps, model_device_dtype
from diffnb.a.denoise import cfg_estimator, ddpm_step, denoise_loop, pure_noise
from diffnb.a.models import check_bundle
from diffnb.a.schedule import Schedule, scheduler_of
from diffnb.core.checks import check_number, is_int
from diffnb.core.progress import loops_shown, progress as tqdm

#: the samplers ``sample`` offers
SAMPLERS = ("ddpm", "ddim", "dpmsolver++")
#: IF's tuned timestep lists, by the names diffusers gives them (``<name>_timesteps``)
IF_LISTS = ("fast27", "smart27", "smart50", "smart100", "super27")
#: DPM-Solver++'s settings on IF's schedule: second order, multistep (2M), x0 prediction clipped as IF's
#: config asks (from the bundle's config).  ``lambda_min_clipped`` keeps the scheduler's own spacing off the
#: cosine schedule's end, where lambda -> -inf (diffusers: "critical for cosine (squaredcos_cap_v2)"): with
#: it ``set_timesteps(10)`` starts at t = 995 (lambda = -5.1) instead of 999 (lambda = -9.9).  The pack
#: passes its own lists, which start at 990 (lambda = -4.3), so the clip is a guard for other uses.
DPM_SOLVER_CONFIG = dict(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                         lower_order_final=True, final_sigmas_type="zero", lambda_min_clipped=-5.1,
                         variance_type="learned_range", timestep_spacing="linspace")


def grid_timesteps(steps: int, power: float = 1.0, start: int = 990) -> list[int]:
    """``steps`` steps from ``start`` down to 0 on the grid t_i = start (1 - i/steps)^power, rounded.

    ``power`` = 1 spaces them evenly (``grid_timesteps(33)`` is the course's list [990, 960, ..., 30, 0]);
    ``power`` < 1 puts more of them at high noise, where the cosine schedule decides what the picture
    shows, and takes one long last step; ``power`` > 1 puts more near the image (DDIM's "quadratic" grid
    is 2).  Two steps that round to the same timestep are refused."""
    if not is_int(steps) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}; pass e.g. steps=10")
    power = check_number("power", power, low=0.0, fix="pass e.g. 1.0 (even) or 0.7 (denser at high noise)")
    if power == 0:
        raise ValueError("power must be above 0 (0 puts every step at the start); pass e.g. 1.0 or 0.7")
    if not is_int(start) or not int(steps) <= start <= 999:
        raise ValueError(f"start must be an int timestep in [{steps}, 999] (one timestep per step), got {start!r}")
    i = np.arange(int(steps) + 1)
    ts = [int(t) for t in np.round(int(start) * (1 - i / int(steps)) ** power)]
    if len(set(ts)) < len(ts):
        raise ValueError(f"{steps} steps at power {power:g} put two steps on one timestep ({ts[:4]} ... {ts[-4:]}); "
                         "use fewer steps or a power nearer 1")
    return ts


def if_list(name: str) -> list[int]:
    """IF's tuned list ``name`` (one of ``IF_LISTS``) from diffusers, descending to 0."""
    if name not in IF_LISTS:
        raise ValueError(f"unknown IF timestep list {name!r}; choose one of {', '.join(IF_LISTS)}")
    return list(getattr(if_timesteps, f"{name}_timesteps"))


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, prev_t: int, schedule: Schedule) -> torch.Tensor:
    """One DDIM step (eta = 0) ``x_t -> x_{prev_t}``: jump to x0_hat, then back to noise level ``prev_t`` along
    the same noise: x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps  (Song et al. 2021, eq. 12).

    x0_hat is clipped as the config asks (IF: dynamic thresholding) and the noise is the one that clipped
    x0_hat implies, eps = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), as ``DDIMScheduler.step`` with
    ``use_clipped_model_output=True`` (and DDIM's own code) takes it: with CFG 7 and the UNet's eps as it
    came, mini's samples lost their style (the judge read it right in 43% of 60 samples at 5 even steps,
    against 90% with the clipped x0_hat's noise, seed 100).  Checks nothing
    (``sample`` checked its inputs)."""
    x0_hat = schedule.clip_x0(schedule.predict_x0(x_t, eps, t))
    abar_t, abar_prev = schedule.abar(t, x_t), schedule.abar(prev_t, x_t)
    eps = (x_t - abar_t ** 0.5 * x0_hat) / (1 - abar_t) ** 0.5    # the noise that x0_hat, clipped, implies
    return abar_prev ** 0.5 * x0_hat + (1 - abar_prev) ** 0.5 * eps


class _Stepper:
    """A sampler's timesteps (where the UNet is called, one call each) and its step; made fresh per sample."""
    name = ""

    def __init__(self, stage1, timesteps: list[int]):
        self.schedule = Schedule(stage1)
        self.ts = timesteps                                   # descending, ends at 0
        self.eval_ts = timesteps[:-1]                         # the UNet runs at every entry but the last

    def step(self, x, eps, variance, i, generator):
        raise NotImplementedError


class _DDPM(_Stepper):
    name = "ddpm"

    def step(self, x, eps, variance, i, generator):
        return ddpm_step(x, eps, variance, self.ts[i], self.ts[i + 1], self.schedule.scheduler, generator)


class _DDIM(_Stepper):
    name = "ddim"

    def step(self, x, eps, variance, i, generator):
        return ddim_step(x, eps, self.ts[i], self.ts[i + 1], self.schedule)


class _DPMSolverPP(_Stepper):
    """diffusers' ``DPMSolverMultistepScheduler`` (``DPM_SOLVER_CONFIG``, on the bundle's config), stepped
    by this loop on the same list: it calls the UNet at every entry but the last 0 and steps from the last
    one to sigma = 0.  It keeps the last x0_hat itself, so one is made per sample."""
    name = "dpmsolver++"

    def __init__(self, stage1, timesteps: list[int]):
        super().__init__(stage1, timesteps)
        self.scheduler = DPMSolverMultistepScheduler.from_config(scheduler_of(stage1).config, **DPM_SOLVER_CONFIG)
        self.scheduler.set_timesteps(timesteps=self.eval_ts)
        self.scheduler.set_begin_index(0)

    def step(self, x, eps, variance, i, generator):
        out = torch.cat([eps, variance], dim=1)               # 2C channels, as IF's UNet; the scheduler splits off v
        return self.scheduler.step(out, self.eval_ts[i], x, generator=generator).prev_sample


_STEPPERS = {"ddpm": _DDPM, "ddim": _DDIM, "dpmsolver++": _DPMSolverPP}


def resolve_timesteps(stage1, steps, power: float = 1.0) -> list[int]:
    """The list a sampler runs on: ``grid_timesteps(steps, power)`` for an int, IF's list for a name of
    ``IF_LISTS``, or a descending list of timesteps ending at 0, checked."""
    if isinstance(steps, str):
        return if_list(steps)
    if is_int(steps) or isinstance(steps, bool):
        return grid_timesteps(steps, power)
    ts = check_timesteps(steps, scheduler_of(stage1))
    if ts[-1] != 0:
        raise ValueError(f"the timesteps must end at 0 (the image), got ... {ts[-3:]}; append 0")
    return ts


def check_sampler(stage1, sampler, steps, power: float = 1.0) -> _Stepper:
    """A fresh stepper for ``sampler`` (one of ``SAMPLERS``) on ``resolve_timesteps(stage1, steps, power)``."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    return _STEPPERS[sampler](stage1, resolve_timesteps(stage1, steps, power))


def sampler_timesteps(stage1, sampler: str, steps, power: float = 1.0) -> list[int]:
    """The timesteps at which ``sampler`` calls the UNet (one call each; see the module doc)."""
    check_bundle(stage1)
    return list(check_sampler(stage1, sampler, steps, power).eval_ts)


@torch.no_grad()
def sample(stage1, cond_embeds: torch.Tensor, uncond_embeds: torch.Tensor, sampler: str = "ddpm", steps=33,
           scale: float = 7.0, generator: torch.Generator | None = None, num_images: int = 1,
           height: int | None = None, width: int | None = None, progress: bool | None = None, *,
           power: float = 1.0) -> torch.Tensor:
    """CFG sampling from pure noise with ``sampler`` (``SAMPLERS``) in ``steps`` UNet calls.

    ``steps``: an int (``grid_timesteps(steps, power)``), the name of one of IF's lists (``IF_LISTS``) or a
    descending list of timesteps ending at 0; every sampler runs on that list.
    ``sample(stage1, c, u, "ddpm", 33, ...)`` is ``denoise.sample_cfg`` with the course's list, bit for bit.
    The noise is drawn as ``IFPipeline`` draws it (initial noise, then one draw per DDPM step; DDIM and
    DPM-Solver++ draw none after the first).  Returns ``(num_images, C, H, W)``.
    """
    check_bundle(stage1)
    where = model_device_dtype(stage1)
    c = check_embeds(cond_embeds, stage1, "cond_embeds", where)
    u = check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    est = cfg_estimator(stage1, c, u, scale)                  # checks the scale
    stepper = check_sampler(stage1, sampler, steps, power)
    x = pure_noise(stage1, generator, num_images, height, width)      # checks the count, the size, the generator
    desc = f"{stepper.name}, {len(stepper.eval_ts)} steps"
    if stepper.name == "ddpm":                                # the course's loop itself
        return denoise_loop(x, stepper.ts, 0, stage1, est, generator, progress=progress, desc=desc)
    indices = range(len(stepper.eval_ts))
    if progress is None:
        progress = loops_shown()
    if progress:
        indices = tqdm(indices, desc=desc, leave=False)
    for i in indices:
        eps, var = est(x, stepper.eval_ts[i])
        x = stepper.step(x, eps, var, i, generator)
    return x

