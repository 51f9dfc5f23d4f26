"""DDPM maths and the one denoising loop of Part A (sections 1.1-1.7 of the write-up).

Conventions (stated once):
  * Images are ``(N, C, H, W)`` tensors with values in [-1, 1].
  * x_0 is the clean image and x_t its noised version (DDPM's convention); Part B's flow matching
    (``diffnb.b.flow``) names the ends the other way round, x_0 noise and x_1 data.
  * Timesteps are integers t in [0, T), T = ``scheduler.config.num_train_timesteps`` (1000 for IF);
    t = 999 is pure noise, t = 0 is (almost) data. **Timesteps run 999..0, the strided list is
    descending**: ``strided_timesteps()`` gives [990, 960, ..., 30, 0], and step i goes from
    ``timesteps[i]`` to ``timesteps[i + 1]``.
  * ``abar_t`` is DDPM's cumulative product alpha-bar_t, read from ``scheduler.alphas_cumprod``.  The
    schedule's maths (abar_t, q(x_t | x_0), x0_hat, thresholding, the posterior mean and the learned
    variance of a strided step) is ``diffnb.a.schedule.Schedule``, written out from IF's scheduler.
  * Every function takes the stage-1 bundle ``stage1`` (``.unet`` + ``.scheduler``, see
    ``diffnb.a.models``), the prompt embeddings ``(1, L, D)`` and a ``torch.Generator`` explicitly; there
    are no globals.  Noise is drawn with diffusers' ``randn_tensor`` in the order ``IFPipeline`` draws
    it (initial noise, then one draw per step), so a seed gives the pipeline's images.
  * Nothing is set on ``stage1.scheduler``: every step names its previous timestep explicitly (the next
    entry of the strided list), so the learned-range variance needs no scheduler state.
  * ``scale`` is the classifier-free guidance scale gamma: any finite number.  1 gives the plain
    conditional estimate, 0 the unconditional one, > 1 guides harder (the course uses 7); a negative
    gamma is legal and steers *away* from the prompt.  NaN, inf, None and strings are refused.
  * Inputs are checked once, at the public function, before any work (the loop's steps check
    nothing): every image must be finite, a *clean* image (``forward``, ``sdedit``, ``inpaint``) must be
    in [-1, 1], and height and width must be multiples of the UNet's downsampling factor.  Noisy
    images x_t (pure noise included) legitimately leave [-1, 1] and are not range-checked.

The one loop (``denoise_loop``) runs from index ``i_start`` to the end of the strided list.  What
changes between sections is a *noise estimator* ``estimator(x_t, t) -> (eps, variance)`` (plain,
classifier-free guidance, and in ``diffnb.a.views`` anagrams and hybrids), a start index (SDEdit) or a
per-step *projection* ``project(x_prev, prev_t) -> x_prev`` (inpainting).  All UNet passes of a step
(conditional, unconditional, every view) go through the UNet as one batch (``run_unet``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torchvision.transforms.functional as TF
from diffusers.utils.torch_utils import randn_tensor

from diffnb.a.checks import (check_blur, check_embeds, check_generator, check_i_start, check_image, check_pixels,
                             check_sample, check_scale, check_t, check_timesteps, model_device_dtype)
from diffnb.a.images import check_mask
from diffnb.a.models import check_bundle
from diffnb.a.schedule import Schedule, scheduler_of
from diffnb.core.checks import is_int
from diffnb.core.progress import loops_shown, progress as tqdm

#: ``estimator(x_t, t) -> (eps, variance)``, both ``(N, C, H, W)``.
Estimator = Callable[[torch.Tensor, int], "tuple[torch.Tensor, torch.Tensor]"]
#: ``project(x_prev, prev_t) -> x_prev``, applied after every step.
Projection = Callable[[torch.Tensor, int], torch.Tensor]


class TraceStep(NamedTuple):
    """One recorded step of the loop: step number (1-based), ``t -> prev_t``, the image ``x_prev``."""
    step: int
    t: int
    prev_t: int
    image: torch.Tensor


# --------------------------------------------------------------------------- schedule maths (diffnb.a.schedule)

def forward(im: torch.Tensor, t: int, stage1_or_scheduler, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample q(x_t | x_0): noise a clean image ``im`` ``(N, C, H, W)`` (values in [-1, 1]) to timestep ``t``.

    Returns ``x_t`` with ``im``'s shape, device and dtype.
    """
    sched = scheduler_of(stage1_or_scheduler)
    t = check_t(t, sched)
    check_pixels(im, "im", clean=True)
    check_generator(generator)
    return _forward(im, t, Schedule(sched), generator)


def _forward(im: torch.Tensor, t: int, schedule: Schedule, generator) -> torch.Tensor:
    eps = randn_tensor(im.shape, generator=generator, device=im.device, dtype=im.dtype)
    return schedule.q_sample(im, t, eps)                      # x_t = sqrt(abar_t) x_0 + sqrt(1-abar_t) eps  (DDPM eq. 4)


def strided_timesteps(stage1, start: int = 990, stride: int = 30) -> list[int]:
    """The descending list ``[start, start - stride, ..., 0]`` (0 appended if the stride misses it).

    Sets nothing on ``stage1.scheduler``: the loop takes the list, and step i goes ``ts[i] -> ts[i + 1]``.
    """
    return Schedule(stage1).strided_timesteps(start, stride)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, t: int, stage1) -> torch.Tensor:
    """x0_hat from a noise estimate; no clipping. Shapes ``(N, C, H, W)``."""
    schedule = Schedule(stage1)
    return schedule.predict_x0(x_t, eps, check_t(t, schedule.scheduler))   # (DDPM eq. 15)


def clip_x0(x0: torch.Tensor, stage1) -> torch.Tensor:
    """Clip x0_hat as the scheduler config asks: dynamic thresholding, else clamp, else nothing."""
    return Schedule(stage1).clip_x0(x0)                       # IF: Imagen dynamic thresholding (Saharia et al. 2022, sec. 2.3)


# --------------------------------------------------------------------------- the UNet, one batch

def run_unet(stage1, images: Sequence[torch.Tensor], embeds: Sequence[torch.Tensor] | "EmbeddingBatch",
             t: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Send every pair (``images[k]`` ``(N_k, C, H, W)``, ``embeds[k]`` ``(1 or N_k, L, D)``) through the
    UNet as ONE batch and split the result.  Returns ``[(eps_k, variance_k)]``, each ``(N_k, C, H, W)``.

    ``embeds`` may be an ``EmbeddingBatch``, which concatenates the embeddings once for all steps.
    """
    sizes = [x.shape[0] for x in images]
    batch = embeds if isinstance(embeds, EmbeddingBatch) else EmbeddingBatch(embeds)
    e = batch(sizes)                                          # (sum N_k, L, D)
    x = torch.cat(list(images))                               # (sum N_k, C, H, W)
    out = stage1.unet(x, t, encoder_hidden_states=e).sample   # (sum N_k, 2C, H, W): eps, variance
    eps, var = out.split(x.shape[1], dim=1)
    return list(zip(eps.split(sizes), var.split(sizes)))


class EmbeddingBatch:
    """The prompt embeddings of one UNet batch, concatenated once per batch layout and reused at every
    step (they do not change during sampling).  ``batch(sizes)`` -> ``(sum sizes, L, D)``."""

    def __init__(self, embeds: Sequence[torch.Tensor]):
        self.embeds = list(embeds)
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, sizes: Sequence[int]) -> torch.Tensor:
        key = tuple(int(n) for n in sizes)
        if key not in self._cache:
            if len(key) != len(self.embeds) or not key:
                raise ValueError(f"run_unet needs one embedding per image batch, got {len(key)} and {len(self.embeds)}")
            for k, (e, n) in enumerate(zip(self.embeds, key)):
                if e.shape[0] not in (1, n):
                    raise ValueError(f"embedding {k} has batch {e.shape[0]} but its images have batch {n}; "
                                     "pass (1, L, D) or (N, L, D)")
            self._cache[key] = torch.cat([e.expand(n, -1, -1) for e, n in zip(self.embeds, key)])
        return self._cache[key]


def plain_estimator(stage1, prompt_embeds: torch.Tensor) -> Estimator:
    """``(x_t, t) -> (eps, variance)`` from one conditional pass (no guidance)."""
    batch = EmbeddingBatch([prompt_embeds])

    def estimate(x, t):
        [(eps, var)] = run_unet(stage1, [x], batch, t)
        return eps, var
    return estimate


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps = eps_u + gamma (eps_c - eps_u)  (Ho & Salimans 2022, eq. 6).

    The per-step formula: it checks nothing (the estimators check ``scale`` once, when built)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def cfg_estimator(stage1, cond_embeds: torch.Tensor, uncond_embeds: torch.Tensor, scale: float) -> Estimator:
    """``(x_t, t) -> (eps, variance)`` with CFG: one UNet call on the batch [x (uncond); x (cond)].

    ``scale`` is gamma, any finite number (negative is legal: it steers away from the prompt); it is
    checked here, once, not at every step. The variance is the conditional branch's (as the course and
    ``IFPipeline`` do).
    """
    scale = check_scale(scale)
    batch = EmbeddingBatch([uncond_embeds, cond_embeds])

    def estimate(x, t):
        (eps_u, _), (eps_c, var_c) = run_unet(stage1, [x, x], batch, t)
        return cfg_combine(eps_u, eps_c, scale), var_c
    return estimate


# --------------------------------------------------------------------------- one step

def _add_variance(predicted_variance, t, prev_t, image, schedule: Schedule, generator):
    log_var = schedule.log_variance(predicted_variance, t, prev_t)   # learned range: log of a mix of beta_tilde and beta (Improved DDPM eq. 15)
    z = randn_tensor(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return image + torch.exp(0.5 * log_var) * z               # x_{t'} = mu + sigma z, sigma = exp(log_var / 2)  (DDPM alg. 2, line 4)


def _check_step(t, prev_t, sched) -> tuple[int, int]:
    """``t`` and ``prev_t`` as integer timesteps with ``prev_t`` < ``t`` (one step runs down)."""
    t, prev_t = check_t(t, sched), check_t(prev_t, sched, name="prev_t")
    if not prev_t < t:
        raise ValueError(f"prev_t={prev_t} must be below t={t}: a step goes down the strided list (t -> prev_t, "
                         "the next entry, e.g. 690 -> 660); pass consecutive entries of the list")
    return t, prev_t


def add_variance(predicted_variance: torch.Tensor, t: int, image: torch.Tensor, stage1,
                 generator: torch.Generator | None = None, *, prev_t: int | None = None) -> torch.Tensor:
    """Add the learned-range noise of the step ``t -> prev_t`` to the posterior mean ``image``.

    ``predicted_variance`` is the UNet's variance output ``(N, C, H, W)`` (values near [-1, 1]).
    ``prev_t`` is the step's previous timestep; by default the next entry after ``t`` on the course's
    list ``strided_timesteps(stage1)`` (990, 960, ..., 0), i.e. ``t - 30``, and then ``t`` must be on
    that list.  Pass ``prev_t`` for another list.  Nothing is read from or set on the scheduler's
    timesteps.
    """
    sched = scheduler_of(stage1)
    t = check_t(t, sched)
    if prev_t is None:
        course = Schedule(sched).strided_timesteps()        # the course's list: 990, 960, ..., 30, 0
        if t not in course[:-1]:
            raise ValueError(f"t={t} is not on the course's strided list [990, 960, ..., 30] (stride 30), so it has no "
                             "default previous timestep; pass prev_t= (the next entry of your list) or a t from "
                             "strided_timesteps(stage1)")
        prev_t = course[course.index(t) + 1]
    t, prev_t = _check_step(t, prev_t, sched)
    return _add_variance(predicted_variance, t, prev_t, image, Schedule(sched), generator)


def _ddpm_step(x_t, eps, variance, t, prev_t, schedule: Schedule, generator):
    x0_hat = schedule.predict_x0(x_t, eps, t)                 # DDPM eq. 15 solved for x_0
    x0_hat = schedule.clip_x0(x0_hat)                         # as the scheduler config asks (IF: dynamic thresholding)
    mean = schedule.posterior_mean(x_t, x0_hat, t, prev_t)    # mu_tilde(x_t, x0_hat)  (DDPM eq. 7)
    return _add_variance(variance, t, prev_t, mean, schedule, generator)


def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, variance: torch.Tensor, t: int, prev_t: int, stage1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One strided DDPM step ``x_t -> x_{prev_t}`` from a noise estimate and the UNet's variance.

    All tensors ``(N, C, H, W)``; ``t`` and ``prev_t`` < ``t`` are consecutive entries of the strided list
    (nothing is read from the scheduler's timesteps).  Equals ``DDPMScheduler.step`` with the same list
    set on the scheduler and the same generator.
    """
    sched = scheduler_of(stage1)
    t, prev_t = _check_step(t, prev_t, sched)
    return _ddpm_step(x_t, eps, variance, t, prev_t, Schedule(sched), generator)


# --------------------------------------------------------------------------- the one loop

@torch.no_grad()
def denoise_loop(x: torch.Tensor, timesteps: Sequence[int], i_start: int, stage1, estimator: Estimator,
                 generator: torch.Generator | None = None, project: Projection | None = None, *,
                 intermediates: list | None = None, return_every: int = 5, progress: bool | None = None,
                 desc: str = "denoising") -> torch.Tensor:
    """THE denoising loop: for i = i_start .. len(timesteps) - 2, step ``timesteps[i] -> timesteps[i+1]``.

    Per step: ``eps, variance = estimator(x, t)``; x0_hat, DDPM posterior mean and learned variance
    (``ddpm_step``); then ``x = project(x, prev_t)`` if a projection is given.

    Args:
        x: ``(N, C, H, W)``, the image at ``timesteps[i_start]``.
        intermediates: pass a list to collect ``TraceStep(step, t, prev_t, image)`` every
            ``return_every`` steps (steps 1, 1 + k, ...), e.g. for the figure of section 1.4.
        progress: show a progress bar; ``None`` (the default of every loop in this module and in
            ``diffnb.a.views``): when a notebook's setup asked for one (``diffnb.core.progress.show_loops``,
            which ``setup_part_a`` calls), so a long cell shows its progress and tests stay quiet.

    The inputs are checked once, here (``x`` finite, the timesteps, ``i_start``); the steps check nothing.
    Returns the image at ``timesteps[-1]`` (0 for the strided list), ``(N, C, H, W)``.
    """
    sched = scheduler_of(stage1)
    check_pixels(x, "x")
    if not callable(estimator):
        raise TypeError(f"estimator must be a function (x_t, t) -> (eps, variance), got {type(estimator).__name__}; "
                        "build one with plain_estimator or cfg_estimator")
    if project is not None and not callable(project):
        raise TypeError(f"project must be a function (x_prev, prev_t) -> x_prev or None, got {type(project).__name__}")
    check_generator(generator)
    return _denoise(x, timesteps, i_start, stage1, sched, estimator, generator, project, intermediates,
                    return_every, progress, desc)


@torch.no_grad()
def _denoise(x, timesteps, i_start, stage1, sched, estimator, generator, project, intermediates, return_every,
             progress, desc):
    """``denoise_loop`` without the checks of ``x``, ``estimator`` and ``project`` (the callers made them)."""
    ts = check_timesteps(timesteps, sched)
    i_start = check_i_start(i_start, ts)
    if intermediates is not None and (not is_int(return_every)
                                      or return_every < 1):
        raise ValueError(f"return_every must be a positive integer, got {return_every!r}")
    schedule = Schedule(sched)                                # the maths of every step; the scheduler is not changed
    steps = range(i_start, len(ts) - 1)
    if progress is None:
        progress = loops_shown()
    if progress:
        steps = tqdm(steps, desc=desc, leave=False)     # text mode keeps its last line; a widget goes
    for k, i in enumerate(steps):
        t, prev_t = ts[i], ts[i + 1]
        eps, var = estimator(x, t)                            # (N, C, H, W) each
        x = _ddpm_step(x, eps, var, t, prev_t, schedule, generator)
        if project is not None:
            x = project(x, prev_t)
        if intermediates is not None and k % return_every == 0:
            intermediates.append(TraceStep(k + 1, t, prev_t, x.detach().clone()))
    return x


def pure_noise(stage1, generator: torch.Generator | None = None, num_images: int = 1,
               height: int | None = None, width: int | None = None) -> torch.Tensor:
    """x_T ~ N(0, I) of shape ``(num_images, C, H, W)``, H and W from ``unet.config.sample_size``.

    ``num_images`` >= 1; ``height`` and ``width`` (None: the model's size) must be multiples of the
    UNet's downsampling factor.  Drawn as ``IFPipeline.prepare_intermediate_images`` draws it (times
    ``init_noise_sigma``).
    """
    check_bundle(stage1)
    n, height, width = check_sample(stage1, num_images, height, width)
    check_generator(generator)
    return _noise(stage1, generator, n, height, width)


def _noise(stage1, generator, n: int, height: int, width: int, where=None) -> torch.Tensor:
    device, dtype = where or model_device_dtype(stage1)
    x = randn_tensor((n, stage1.unet.config.in_channels, height, width), generator=generator, device=device,
                     dtype=dtype)
    return x * scheduler_of(stage1).init_noise_sigma


# --------------------------------------------------------------------------- the course's functions

@torch.no_grad()
def estimate_noise(stage1, im_noisy: torch.Tensor, t: int, prompt_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's noise estimate and variance for ``im_noisy`` ``(N, C, H, W)`` at ``t``: ``(eps, variance)``."""
    x, t, e = _check_one_step(stage1, im_noisy, t, prompt_embeds)
    return plain_estimator(stage1, e)(x, t)


def _check_one_step(stage1, im_noisy, t, prompt_embeds):
    check_bundle(stage1)
    t = check_t(t, scheduler_of(stage1))
    where = model_device_dtype(stage1)
    x = check_image(im_noisy, stage1, "im_noisy", where=where)
    return x, t, check_embeds(prompt_embeds, stage1, "prompt_embeds", where)


@torch.no_grad()
def one_step_denoise(stage1, im_noisy: torch.Tensor, t: int, prompt_embeds: torch.Tensor) -> torch.Tensor:
    """Section 1.3: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), one UNet call, no clipping.

    Returns ``(N, C, H, W)`` (values may leave [-1, 1]; ``to_display`` clamps).
    """
    x_t, t, e = _check_one_step(stage1, im_noisy, t, prompt_embeds)
    eps, _ = plain_estimator(stage1, e)(x_t, t)
    return predict_x0(x_t, eps, t, stage1)


def iterative_denoise(im_noisy: torch.Tensor, i_start: int, stage1, prompt_embeds: torch.Tensor,
                      timesteps: Sequence[int], generator: torch.Generator | None = None, *,
                      intermediates: list | None = None, return_every: int = 5,
                      progress: bool | None = None) -> torch.Tensor:
    """Section 1.4: denoise ``im_noisy`` (at ``timesteps[i_start]``) to t = ``timesteps[-1]``, no guidance.

    Returns ``(N, C, H, W)``; see ``denoise_loop`` for ``intermediates`` / ``return_every``.
    """
    check_bundle(stage1)
    where = model_device_dtype(stage1)
    x = check_image(im_noisy, stage1, "im_noisy", where=where)
    e = check_embeds(prompt_embeds, stage1, "prompt_embeds", where)
    check_generator(generator)
    return _denoise(x, timesteps, i_start, stage1, scheduler_of(stage1), plain_estimator(stage1, e), generator,
                    None, intermediates, return_every, progress, "denoising")


def iterative_denoise_cfg(im_noisy: torch.Tensor, i_start: int, stage1, cond_embeds: torch.Tensor,
                          uncond_embeds: torch.Tensor, timesteps: Sequence[int], scale: float = 7.0,
                          generator: torch.Generator | None = None, *, intermediates: list | None = None,
                          return_every: int = 5, progress: bool | None = None) -> torch.Tensor:
    """Section 1.6: the loop with classifier-free guidance, eps = eps_u + scale (eps_c - eps_u).

    ``scale`` is gamma: any finite number (1 = no guidance; negative is legal, it steers away from the
    prompt). ``im_noisy`` is x_t, not range-checked (noise leaves [-1, 1]). The conditional and
    unconditional passes are one UNet batch of 2N per step. Returns ``(N, C, H, W)``.
    """
    check_bundle(stage1)
    where = model_device_dtype(stage1)
    x = check_image(im_noisy, stage1, "im_noisy", where=where)
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    check_generator(generator)
    return _denoise(x, timesteps, i_start, stage1, scheduler_of(stage1), est, generator, None, intermediates,
                    return_every, progress, "CFG sampling")


def _cfg(stage1, cond_embeds, uncond_embeds, scale, where) -> Estimator:
    """The checked embeddings and scale as a CFG estimator (every check made here, once)."""
    c = check_embeds(cond_embeds, stage1, "cond_embeds", where)
    u = check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    return cfg_estimator(stage1, c, u, scale)


def sample_cfg(stage1, cond_embeds: torch.Tensor, uncond_embeds: torch.Tensor, timesteps: Sequence[int] | None = None,
               scale: float = 7.0, generator: torch.Generator | None = None, num_images: int = 1,
               height: int | None = None, width: int | None = None, progress: bool | None = None) -> torch.Tensor:
    """Sections 1.5-1.6: ``iterative_denoise_cfg`` from pure noise (``pure_noise``), i_start = 0.

    ``timesteps`` defaults to ``strided_timesteps(stage1)``; ``scale`` as in ``iterative_denoise_cfg``
    (negative is legal). ``num_images`` >= 1; ``height``/``width`` default to the model's size.
    Returns ``(num_images, C, H, W)``.
    """
    check_bundle(stage1)
    sched = scheduler_of(stage1)
    where = model_device_dtype(stage1)
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    n, h, w = check_sample(stage1, num_images, height, width)
    check_generator(generator)
    ts = strided_timesteps(stage1) if timesteps is None else check_timesteps(timesteps, sched)
    x = _noise(stage1, generator, n, h, w, where)
    return _denoise(x, ts, 0, stage1, sched, est, generator, None, None, 5, progress, "CFG sampling")


def sdedit(im: torch.Tensor, i_starts: Sequence[int], stage1, cond_embeds: torch.Tensor,
           uncond_embeds: torch.Tensor, timesteps: Sequence[int], scale: float = 7.0,
           generator: torch.Generator | None = None, progress: bool | None = None) -> list[torch.Tensor]:
    """Section 1.7 (SDEdit): for each start index, noise ``im`` to ``timesteps[i_start]`` with ``forward``
    and denoise it from there with CFG.

    ``im`` is a clean image ``(N, C, H, W)`` in [-1, 1] (``diffnb.load_image``); ``i_starts`` an index or
    a list of indices into ``timesteps``; ``scale`` as in ``iterative_denoise_cfg`` (negative is legal).
    Returns one ``(N, C, H, W)`` tensor per start index."""
    check_bundle(stage1)
    sched = scheduler_of(stage1)
    ts = check_timesteps(timesteps, sched)
    where = model_device_dtype(stage1)
    x0 = check_image(im, stage1, "im", clean=True, where=where)
    if is_int(i_starts):
        i_starts = [i_starts]
    if isinstance(i_starts, (str, bytes)) or not hasattr(i_starts, "__iter__"):
        raise TypeError(f"i_starts must be a start index or a list of them, got {i_starts!r}; e.g. [1, 3, 5, 7, 10, 20]")
    starts = [check_i_start(i, ts) for i in i_starts]
    if not starts:
        raise ValueError("i_starts is empty; pass one start index or more, e.g. [1, 3, 5, 7, 10, 20]")
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    check_generator(generator)
    out = []
    schedule = Schedule(sched)
    for i_start in starts:
        x_t = _forward(x0, ts[i_start], schedule, generator)
        out.append(_denoise(x_t, ts, i_start, stage1, sched, est, generator, None, None, 5, progress, "CFG sampling"))
    return out


def inpaint(original: torch.Tensor, mask: torch.Tensor, stage1, cond_embeds: torch.Tensor,
            uncond_embeds: torch.Tensor, timesteps: Sequence[int], scale: float = 7.0,
            generator: torch.Generator | None = None, progress: bool | None = None) -> torch.Tensor:
    """Section 1.7.2 (RePaint as the course): start from pure noise; after every step keep the model's
    pixels where ``mask`` is 1 (edit) and put the original, noised to ``prev_t``, where it is 0.

    At the last step (``prev_t`` = ``timesteps[-1]`` = 0) the kept pixels are the original itself, so
    every unmasked pixel of the result equals ``original``.  ``original`` is a clean image in [-1, 1];
    ``scale`` as in ``iterative_denoise_cfg`` (negative is legal).  Returns ``(N, C, H, W)``.
    """
    check_bundle(stage1)
    where = model_device_dtype(stage1)
    x0 = check_image(original, stage1, "original", clean=True, where=where)
    m = check_mask(mask, x0)                                  # (N or 1, 1, H, W), 1 = edit
    sched = scheduler_of(stage1)
    ts = check_timesteps(timesteps, sched)
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    check_generator(generator)
    n, _, h, w = x0.shape

    schedule = Schedule(sched)

    def project(x_prev, prev_t):
        known = x0 if prev_t == ts[-1] == 0 else _forward(x0, prev_t, schedule, generator)  # q(x_t' | x_0) outside the mask
        return m * x_prev + (1 - m) * known                   # x_t' <- m x_t' + (1 - m) forward(x_orig, t')

    x = _noise(stage1, generator, n, h, w, where)
    return _denoise(x, ts, 0, stage1, sched, est, generator, project, None, 5, progress, "inpainting")


def blur_denoise(im: torch.Tensor, kernel_size: int = 5, sigma: float = 2.0) -> torch.Tensor:
    """Section 1.2's classical baseline: a ``kernel_size`` x ``kernel_size`` Gaussian blur with std ``sigma``.

    ``im``: ``(N, C, H, W)`` (or ``(C, H, W)``); same shape back. Uses torchvision's ``gaussian_blur``
    (what ``transforms.GaussianBlur`` calls, without its random sigma draw).
    """
    kernel_size, sigma = check_blur(kernel_size, sigma)
    check_pixels(im, "im")
    return TF.gaussian_blur(im, [kernel_size] * 2, [sigma] * 2)
