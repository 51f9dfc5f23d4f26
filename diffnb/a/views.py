"""Views, visual anagrams and hybrid images (sections 1.8-1.9): new noise estimators for the one loop.

Conventions (stated once), as in ``diffnb.a.denoise``: images ``(N, C, H, W)`` in [-1, 1], timesteps
descending (990, 960, ..., 0), the bundle / embeddings / generator passed explicitly.

* A **view** is a small object with ``view(x)`` (how the model sees the image) and
  ``inverse_view(eps)`` (how to bring its noise estimate back).  Views that rearrange pixels apply
  the same map to the variance; a view that changes pixel values (``NegateView``) leaves the
  variance alone (``inverse_view_variance``).  Add a view by subclassing ``View``.
* An **anagram** averages, over views k, ``inverse_view_k(CFG eps of prompt_k on view_k(x))``; its
  variance is the mean of the inverse-viewed conditional variances.
* A **hybrid** sums ``lowpass(eps_1) + highpass(eps_2)``, lowpass = torchvision's Gaussian blur
  (33 x 33, sigma 2), highpass = x - lowpass(x); its variance is the first (low-frequency) prompt's.
* Every UNet pass of a step (each view, conditional and unconditional) is one batch.
* ``scale`` is the guidance scale gamma of every CFG estimate: any finite number (1 = no guidance; a
  negative gamma is legal and steers away from the prompt).  It and every other input are checked
  once, when the estimator is built or the public function called, never at a step.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchvision.transforms.functional as TF

from diffnb.a.checks import check_blur, check_embeds, check_sample, check_scale, check_timesteps, model_device_dtype
from diffnb.a.denoise import EmbeddingBatch, Estimator, cfg_combine, denoise_loop, pure_noise, run_unet, strided_timesteps
from diffnb.a.schedule import scheduler_of
from diffnb.a.models import check_bundle


# --------------------------------------------------------------------------- views

class View:
    """Base view: identity. ``view(x)`` and ``inverse_view(eps)`` take and return ``(N, C, H, W)``."""
    name = "identity"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse_view(self, eps: torch.Tensor) -> torch.Tensor:
        return eps

    def inverse_view_variance(self, variance: torch.Tensor) -> torch.Tensor:
        """The variance channels go back like the noise unless the view changes pixel values."""
        return self.inverse_view(variance)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IdentityView(View):
    """The image as it is."""
    name = "identity"


class FlipView(View):
    """Rotate by 180 degrees (flip both H and W); its own inverse, so applying it twice is the identity."""
    name = "flip"

    def view(self, x):
        return torch.flip(x, dims=(-2, -1))

    def inverse_view(self, eps):
        return torch.flip(eps, dims=(-2, -1))


class NegateView(View):
    """Negative image: view(x) = -x, noise back by negation; the variance is unchanged."""
    name = "negate"

    def view(self, x):
        return -x

    def inverse_view(self, eps):
        return -eps

    def inverse_view_variance(self, variance):
        return variance


def _check_views(views) -> list[View]:
    if isinstance(views, View) or not hasattr(views, "__iter__"):
        raise TypeError(f"views must be a list of views, got {views!r}; e.g. [IdentityView(), FlipView()]")
    views = list(views)
    if not views:
        raise ValueError("give at least one view, e.g. [IdentityView(), FlipView()]")
    for v in views:
        if not (callable(getattr(v, "view", None)) and callable(getattr(v, "inverse_view", None))):
            raise TypeError(f"{v!r} is not a view: it needs view(x) and inverse_view(eps) (subclass diffnb.a.views.View)")
    return views


# --------------------------------------------------------------------------- estimators

def anagram_estimator(stage1, views: Sequence[View], cond_embeds: Sequence[torch.Tensor],
                      uncond_embeds: torch.Tensor, scale: float) -> Estimator:
    """``(x_t, t) -> (eps, variance)``: mean over k of inverse_view_k(CFG eps of prompt k on view_k(x)).

    One UNet call per step on the batch [view_1(x) (uncond), view_1(x) (cond_1), view_2(x) ...].
    ``scale`` (gamma, negative legal) is checked here, once.
    """
    scale = check_scale(scale)
    batch = EmbeddingBatch([e for c in cond_embeds for e in (uncond_embeds, c)])

    def estimate(x, t):
        images = []
        for v in views:
            xv = v.view(x)
            images += [xv, xv]                                # (uncond, cond_k) on view_k(x)
        outs = run_unet(stage1, images, batch, t)
        eps_k, var_k = [], []
        for k, v in enumerate(views):
            (eps_u, _), (eps_c, var_c) = outs[2 * k], outs[2 * k + 1]
            eps_k.append(v.inverse_view(cfg_combine(eps_u, eps_c, scale)))
            var_k.append(v.inverse_view_variance(var_c))
        eps = torch.stack(eps_k).mean(0)                      # eps = (1/K) sum_k V_k^-1(eps_k)  (visual anagrams, Geng et al. 2024)
        return eps, torch.stack(var_k).mean(0)
    return estimate


def lowpass(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur ``(N, C, H, W)`` -> same shape (torchvision ``gaussian_blur``, reflect padding)."""
    return TF.gaussian_blur(x, [kernel_size, kernel_size], [sigma, sigma])


def highpass(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0) -> torch.Tensor:
    """x - lowpass(x)."""
    return x - lowpass(x, kernel_size, sigma)


def hybrid_estimator(stage1, cond_low: torch.Tensor, cond_high: torch.Tensor, uncond_embeds: torch.Tensor,
                     scale: float, kernel_size: int = 33, sigma: float = 2.0) -> Estimator:
    """``(x_t, t) -> (eps, variance)``: lowpass(CFG eps of ``cond_low``) + highpass(CFG eps of ``cond_high``).

    One UNet call per step on [x (uncond), x (cond_low), x (cond_high)] (the unconditional pass is shared).
    The variance is ``cond_low``'s conditional variance. ``scale`` (gamma, negative legal), ``kernel_size``
    and ``sigma`` are checked here, once.
    """
    scale = check_scale(scale)
    kernel_size, sigma = check_blur(kernel_size, sigma)
    batch = EmbeddingBatch([uncond_embeds, cond_low, cond_high])

    def estimate(x, t):
        (eps_u, _), (eps_1, var_1), (eps_2, _) = run_unet(stage1, [x, x, x], batch, t)
        eps_1 = cfg_combine(eps_u, eps_1, scale)
        eps_2 = cfg_combine(eps_u, eps_2, scale)
        eps = lowpass(eps_1, kernel_size, sigma) + highpass(eps_2, kernel_size, sigma)   # eps = f_low(eps_1) + f_high(eps_2)  (factorized diffusion, Geng et al. 2024)
        return eps, var_1
    return estimate


# --------------------------------------------------------------------------- the course's functions

def _start(stage1, timesteps, generator, num_images, height, width):
    """The strided list and the pure noise (``pure_noise`` checks the count, the size and the generator
    before it draws); the estimator is already checked."""
    ts = strided_timesteps(stage1) if timesteps is None else check_timesteps(timesteps, scheduler_of(stage1))
    return ts, pure_noise(stage1, generator, num_images, height, width)


def _loop(stage1, x, ts, est, generator, progress, desc):
    return denoise_loop(x, ts, 0, stage1, est, generator, progress=progress, desc=desc)


def make_anagram(stage1, views: Sequence[View], prompts: Sequence[torch.Tensor], uncond_embeds: torch.Tensor,
                 timesteps: Sequence[int] | None = None, scale: float = 7.0, generator: torch.Generator | None = None,
                 num_images: int = 1, height: int | None = None, width: int | None = None,
                 progress: bool | None = None) -> torch.Tensor:
    """A visual anagram from pure noise: prompt k shows when the image is seen through view k.

    ``prompts`` are embeddings ``(1, L, D)``, one per view. ``timesteps`` defaults to
    ``strided_timesteps(stage1)``. Returns the image ``(num_images, C, H, W)``; ``views[k].view(result)``
    is what prompt k should look like. ``scale`` is gamma (negative legal); ``num_images`` >= 1.
    """
    check_bundle(stage1)
    views = _check_views(views)
    prompts = list(prompts)
    if len(prompts) != len(views):
        raise ValueError(f"give one prompt embedding per view: {len(views)} views, {len(prompts)} prompts")
    where = model_device_dtype(stage1)
    conds = [check_embeds(p, stage1, f"prompts[{k}]", where) for k, p in enumerate(prompts)]
    u = check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    est = anagram_estimator(stage1, views, conds, u, scale)
    ts, x = _start(stage1, timesteps, generator, num_images, height, width)
    return _loop(stage1, x, ts, est, generator, progress, "anagram")


def make_flip_illusion(stage1, prompt1: torch.Tensor, prompt2: torch.Tensor, uncond_embeds: torch.Tensor,
                       timesteps: Sequence[int] | None = None, scale: float = 7.0,
                       generator: torch.Generator | None = None, num_images: int = 1, height: int | None = None,
                       width: int | None = None, progress: bool | None = None) -> torch.Tensor:
    """Section 1.8: ``prompt1`` upright, ``prompt2`` rotated 180 degrees.

    eps = (CFG eps of prompt 1 on x + flip(CFG eps of prompt 2 on flip(x))) / 2; ``scale`` is gamma
    (negative legal). Returns ``(num_images, C, H, W)``; ``FlipView().view(result)`` shows prompt 2.
    """
    return make_anagram(stage1, [IdentityView(), FlipView()], [prompt1, prompt2], uncond_embeds, timesteps, scale,
                        generator, num_images, height, width, progress)


def make_hybrids(stage1, prompt_low: torch.Tensor, prompt_high: torch.Tensor, uncond_embeds: torch.Tensor,
                 timesteps: Sequence[int] | None = None, scale: float = 7.0,
                 generator: torch.Generator | None = None, kernel_size: int = 33, sigma: float = 2.0,
                 num_images: int = 1, height: int | None = None, width: int | None = None,
                 progress: bool | None = None) -> torch.Tensor:
    """Section 1.9: a hybrid image, coarse shapes from ``prompt_low``, fine detail from ``prompt_high``.

    eps = lowpass(eps_low) + highpass(eps_high), lowpass a ``kernel_size`` Gaussian blur with std
    ``sigma``; the variance is ``prompt_low``'s.  ``scale`` is gamma (negative legal); ``num_images`` >= 1.
    Returns ``(num_images, C, H, W)``.
    """
    check_bundle(stage1)
    _, h, w = check_sample(stage1, num_images, height, width)
    kernel_size, sigma = check_blur(kernel_size, sigma, size=(h, w))   # odd, positive, and fits the image
    where = model_device_dtype(stage1)
    c_low = check_embeds(prompt_low, stage1, "prompt_low", where)
    c_high = check_embeds(prompt_high, stage1, "prompt_high", where)
    u = check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    est = hybrid_estimator(stage1, c_low, c_high, u, scale, kernel_size, sigma)
    ts, x = _start(stage1, timesteps, generator, num_images, height, width)
    return _loop(stage1, x, ts, est, generator, progress, "hybrid")
