"""Factorized diffusion (Geng, Park & Owens 2024): an image split into parts, one prompt per part.

Conventions (stated once), as in ``diffnb.a.denoise`` and ``diffnb.a.views``: images ``(N, C, H, W)``
in [-1, 1], timesteps descending (990, 960, ..., 0), the bundle / embeddings / generator passed
explicitly; inputs are checked once, at the public function, never at a step.

* A **decomposition** is a small object with ``components(x) -> [f_1(x), ..., f_K(x)]``, linear maps
  that sum to the image: sum_k f_k(x) = x.  ``names`` labels the parts; ``check_size(h, w)`` refuses
  an image size the parts do not fit.  ``check_decomposition`` tests the sum on a random image.
* The **factorized estimate** gives part k to prompt k:
  eps = sum_k f_k(CFG eps of prompt k on x)  (Factorized Diffusion, eq. 3), with the first prompt's
  conditional variance (as the course's hybrid); every pass of a step is ONE UNet batch
  [x (uncond), x (cond_1), ..., x (cond_K)], the unconditional pass shared.  With f = (lowpass,
  highpass) it is the hybrid of section 1.9 (``diffnb.a.views.hybrid_estimator`` / ``make_hybrids`` call it).
* **Inverse problems** (``fixed=(k, image)``): after every step, part k of x_{t'} is replaced by part k
  of the image noised to t' (the forward process, as inpainting's projection):
  x_{t'} <- x_{t'} - f_k(x_{t'}) + f_k(q_sample(image, t')), with the clean image at t' = 0.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from diffusers.utils.torch_utils import randn_tensor

from diffnb.a.checks import (check_blur, check_embeds, check_generator, check_image, check_sample, check_scale,
                             check_timesteps, model_device_dtype)
from diffnb.a.denoise import EmbeddingBatch, Estimator, cfg_combine, denoise_loop, pure_noise, run_unet, strided_timesteps
from diffnb.a.models import check_bundle
from diffnb.a.schedule import Schedule, scheduler_of
from diffnb.core.checks import check_number, is_int
from diffnb.core.numerics import formula_bound


# --------------------------------------------------------------------------- decompositions

def lowpass(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur ``(N, C, H, W)`` -> same shape (torchvision ``gaussian_blur``, reflect padding)."""
    return TF.gaussian_blur(x, [kernel_size, kernel_size], [sigma, sigma])


def highpass(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0) -> torch.Tensor:
    """x - lowpass(x)."""
    return x - lowpass(x, kernel_size, sigma)



class Decomposition:
    """Base: ``components(x)`` -> a list of ``(N, C, H, W)`` tensors summing to ``x``; here one part, x."""
    names: tuple[str, ...] = ("image",)

    def components(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]

    def check_size(self, h: int, w: int) -> None:
        """Refuse an image size ``h x w`` the parts do not fit (a ``ValueError`` naming the fix)."""

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LowHigh(Decomposition):
    """Section 1.9's split: low = Gaussian blur (``lowpass``: ``kernel_size``, ``sigma``), high = x - low."""
    names = ("low", "high")

    def __init__(self, kernel_size: int = 33, sigma: float = 2.0):
        self.kernel_size, self.sigma = check_blur(kernel_size, sigma)

    def components(self, x):
        low = lowpass(x, self.kernel_size, self.sigma)
        return [low, x - low]

    def check_size(self, h, w):
        check_blur(self.kernel_size, self.sigma, size=(h, w))

    def __repr__(self):
        return f"LowHigh(kernel_size={self.kernel_size}, sigma={self.sigma:g})"


class ThreeBands(Decomposition):
    """Three frequency bands (factorized diffusion's triple hybrids): b = blur_{sigma_1}(x),
    high = x - b, low = blur_{sigma_2}(b), mid = b - low; parts ``[low, mid, high]``.  Defaults as
    visual anagrams' (sigmas 1 and 2, kernel 25)."""
    names = ("low", "mid", "high")

    def __init__(self, sigmas: Sequence[float] = (1.0, 2.0), kernel_size: int = 25):
        sigmas = tuple(sigmas) if hasattr(sigmas, "__iter__") else (sigmas,)
        if len(sigmas) != 2:
            raise ValueError(f"sigmas must be two blur widths (sigma_1 splits off the high band, sigma_2 the low "
                             f"band), got {sigmas!r}; e.g. (1.0, 2.0)")
        self.kernel_size, s1 = check_blur(kernel_size, sigmas[0])
        _, s2 = check_blur(kernel_size, sigmas[1])
        self.sigmas = (s1, s2)

    def components(self, x):
        b = lowpass(x, self.kernel_size, self.sigmas[0])
        low = lowpass(b, self.kernel_size, self.sigmas[1])
        return [low, b - low, x - b]

    def check_size(self, h, w):
        check_blur(self.kernel_size, self.sigmas[0], size=(h, w))

    def __repr__(self):
        return f"ThreeBands(sigmas=({self.sigmas[0]:g}, {self.sigmas[1]:g}), kernel_size={self.kernel_size})"


class GrayColor(Decomposition):
    """Grayscale and colour (colour hybrids): gray = the channel mean, broadcast to every channel;
    colour = x - gray (zero channel mean).  Both are orthogonal projections, so holding one fixed
    (``fixed=``) keeps it exactly."""
    names = ("gray", "color")

    def components(self, x):
        gray = x.mean(dim=-3, keepdim=True).expand_as(x).contiguous()   # (N, 1, H, W) -> (N, C, H, W)
        return [gray, x - gray]


class MotionBlur(Decomposition):
    """Motion blur and its residual (motion hybrids): blur = x convolved, channel by channel (zero
    padding), with a line of ``length`` pixels through the centre at ``angle`` degrees
    (counter-clockwise from the horizontal, as seen on screen), weights 1 / length; residual = x - blur.

    The line takes one pixel per column (per row where it is steeper than 45 degrees), so
    ``MotionBlur(7, -45)`` is visual anagrams' kernel ``eye(7) / 7``.  ``kernel`` is ``(length, length)``.
    """
    names = ("motion", "residual")

    def __init__(self, length: int = 7, angle: float = -45.0):
        if not is_int(length) or length < 1 or length % 2 == 0:
            raise ValueError(f"length must be a positive odd number of pixels, got {length!r}; e.g. 7")
        self.length = int(length)
        self.angle = check_number("angle (degrees)", angle, fix="e.g. -45.0 (top left to bottom right) or 0.0")
        r = self.length // 2
        rad = torch.deg2rad(torch.tensor(self.angle, dtype=torch.float64))
        c, s = float(torch.cos(rad)), float(torch.sin(rad))
        k = torch.zeros(self.length, self.length)
        for u in range(-r, r + 1):
            if abs(c) >= abs(s):                              # one pixel per column; rows go down the screen
                row, col = -round(u * s / c), u
            else:
                row, col = -u, round(u * c / s)
            k[r + row, r + col] = 1.0
        self.kernel = k / k.sum()

    def components(self, x):
        ch = x.shape[-3]
        w = self.kernel.to(x.device, x.dtype).expand(ch, 1, self.length, self.length)
        flat = x.reshape(-1, ch, *x.shape[-2:])
        blur = F.conv2d(flat, w, padding=self.length // 2, groups=ch).reshape(x.shape)   # depthwise; the line is point-symmetric
        return [blur, x - blur]

    def check_size(self, h, w):
        if self.length > min(h, w):
            raise ValueError(f"MotionBlur length={self.length} is longer than a {h} x {w} image; use a length of at "
                             f"most {min(h, w)} (e.g. 7)")

    def __repr__(self):
        return f"MotionBlur(length={self.length}, angle={self.angle:g})"


def _check_decomposition_object(decomposition) -> None:
    if isinstance(decomposition, type) or not callable(getattr(decomposition, "components", None)):
        raise TypeError(f"{decomposition!r} is not a decomposition: it needs components(x) -> list of parts summing "
                        "to x (e.g. LowHigh(), GrayColor(); subclass diffnb.a.decompositions.Decomposition)")


@torch.no_grad()
def check_decomposition(decomposition, size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Refuse a decomposition whose parts do not sum to the image; return its number of parts K.

    Runs ``decomposition.check_size(H, W)``, then splits a random image in [-1, 1] of shape ``(1, C, H, W)``
    (its own generator, seed 0: the caller's random stream is untouched).  The parts must be K >= 1
    tensors of the image's shape whose sum is the image within float32 rounding,
    ``formula_bound(max(|x|, |parts|), 4K)`` (each part a few roundings away from exact; telescoping
    splits such as x - blur lose nothing else)."""
    _check_decomposition_object(decomposition)
    c, h, w = size
    if callable(getattr(decomposition, "check_size", None)):
        decomposition.check_size(h, w)
    x = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    parts = decomposition.components(x)
    if torch.is_tensor(parts) or not isinstance(parts, (list, tuple)) or not parts:
        raise TypeError(f"{decomposition!r}.components(x) must return a non-empty list of tensors (the parts), got "
                        f"{type(parts).__name__}")
    for k, p in enumerate(parts):
        if not torch.is_tensor(p) or p.shape != x.shape:
            got = tuple(p.shape) if torch.is_tensor(p) else type(p).__name__
            raise ValueError(f"{decomposition!r}: part {k} is {got}; every part must have the image's shape "
                             f"{tuple(x.shape)}")
    total = torch.stack(list(parts)).sum(0)
    size_ = max(float(x.abs().max()), max(float(p.abs().max()) for p in parts))
    bound = formula_bound(size_, 4 * len(parts))
    err = float((total - x).abs().max())
    if not err <= bound:
        raise ValueError(f"{decomposition!r}: its parts do not sum to the image: max |sum of parts - x| = {err:.3g} on "
                         f"a random {c} x {h} x {w} image (float32 rounding allows {bound:.1e}); a decomposition "
                         "must split x exactly, e.g. make the last part the residual x - (sum of the others)")
    return len(parts)


# --------------------------------------------------------------------------- the estimator

def factorized_estimator(stage1, decomposition, cond_embeds: Sequence[torch.Tensor], uncond_embeds: torch.Tensor,
                         scale: float) -> Estimator:
    """``(x_t, t) -> (eps, variance)``: eps = sum_k f_k(CFG eps of prompt k), f_k the decomposition's parts.

    One UNet call per step on [x (uncond), x (cond_1), ..., x (cond_K)] (K + 1 passes, the unconditional
    shared); the variance is prompt 1's conditional variance.  ``scale`` (gamma, negative legal) is
    checked here, once; the decomposition and the embeddings by ``make_factorized``.
    """
    scale = check_scale(scale)
    conds = list(cond_embeds)
    batch = EmbeddingBatch([uncond_embeds, *conds])

    def estimate(x, t):
        outs = run_unet(stage1, [x] * (len(conds) + 1), batch, t)
        eps_u = outs[0][0]
        eps = None
        for k, (eps_c, _) in enumerate(outs[1:]):
            part = decomposition.components(cfg_combine(eps_u, eps_c, scale))[k]
            eps = part if eps is None else eps + part         # eps = sum_k f_k(eps_k)  (Factorized Diffusion, eq. 3)
        return eps, outs[1][1]
    return estimate


# --------------------------------------------------------------------------- the course's function

def _check_fixed(fixed, names, stage1, n, h, w, where):
    """``fixed`` as ``(k, image (n, C, H, W))``: a part index (or name) and a clean image of the sample's size."""
    if not (isinstance(fixed, (tuple, list)) and len(fixed) == 2):
        raise TypeError(f"fixed must be (part, image): the index or name of the part to hold and a clean image, e.g. "
                        f"fixed=(0, load_image(path, stage1.unet.config.sample_size)); got {type(fixed).__name__}")
    k, image = fixed
    if isinstance(k, str):
        if k not in names:
            raise ValueError(f"fixed names part {k!r}, but the parts are {list(names)}; pass one of them or its index")
        k = list(names).index(k)
    if not is_int(k) or not 0 <= k < len(names):
        raise ValueError(f"fixed part must be an index in 0 .. {len(names) - 1} (or a name of {list(names)}), got {k!r}")
    im = check_image(image, stage1, "fixed image", clean=True, where=where)
    if tuple(im.shape[-2:]) != (h, w) or im.shape[0] not in (1, n):
        batch = "1" if n == 1 else f"1 or {n}"
        raise ValueError(f"fixed image has shape {tuple(im.shape)}; expected ({batch}, {im.shape[1]}, {h}, {w}) like the "
                         f"sample; load it at the sample's size: diffnb.load_image(path, {h})")
    return int(k), im.expand(n, -1, -1, -1).contiguous()


def _hold_part(decomposition, k: int, ref: torch.Tensor, schedule: Schedule, last: int, generator):
    """The projection ``(x_prev, prev_t) -> x_prev`` that puts part k of ``ref`` noised to ``prev_t`` into
    ``x_prev`` (the clean ``ref`` at t = 0), as inpainting puts back the known pixels."""
    def project(x_prev, prev_t):
        if prev_t == last == 0:
            known = ref                                       # the clean image at t = 0, as inpainting
        else:
            z = randn_tensor(ref.shape, generator=generator, device=ref.device, dtype=ref.dtype)
            known = schedule.q_sample(ref, prev_t, z)         # x_t' = sqrt(abar) x_ref + sqrt(1 - abar) z  (DDPM eq. 4)
        f = decomposition.components
        return x_prev - f(x_prev)[k] + f(known)[k]            # f_k(x_t') <- f_k(ref_t'), the other parts kept
    return project


def make_factorized(stage1, decomposition, prompts: Sequence[torch.Tensor], uncond_embeds: torch.Tensor,
                    timesteps: Sequence[int] | None = None, scale: float = 7.0,
                    generator: torch.Generator | None = None, num_images: int = 1, height: int | None = None,
                    width: int | None = None, fixed=None, progress: bool | None = None) -> torch.Tensor:
    """Factorized diffusion from pure noise: part k of the image (``decomposition.components``) from
    prompt k.  eps = sum_k f_k(CFG eps of prompt k); the variance is the first prompt's.

    ``prompts``: embeddings ``(1, L, D)``, one per part (e.g. ``LowHigh()``: low, high; ``GrayColor()``:
    gray, colour; ``ThreeBands()``: low, mid, high; ``MotionBlur()``: motion, residual).  ``fixed``:
    ``(k, image)`` holds part k (index or name) to a clean image ``(1 or N, C, H, W)`` in [-1, 1] at
    every step (an inverse problem: e.g. the low frequencies of your own picture); prompt k still
    steers that part's estimate, which the projection then overrides.  ``scale`` is gamma (negative
    legal); ``timesteps`` defaults to ``strided_timesteps(stage1)``.  Returns ``(num_images, C, H, W)``.
    """
    check_bundle(stage1)
    n, h, w = check_sample(stage1, num_images, height, width)
    c = stage1.unet.config.in_channels
    parts = check_decomposition(decomposition, (c, h, w))
    names = tuple(getattr(decomposition, "names", ()))
    if len(names) != parts:
        names = tuple(f"part {k}" for k in range(parts))
    if isinstance(prompts, torch.Tensor) or not hasattr(prompts, "__iter__"):
        raise TypeError(f"prompts must be a list of embeddings, one per part {list(names)}, got {type(prompts).__name__}")
    prompts = list(prompts)
    if len(prompts) != parts:
        raise ValueError(f"give one prompt embedding per part: {decomposition!r} has {parts} parts {list(names)}, got "
                         f"{len(prompts)} prompts; pass a list with prompt k for part k (the same embedding twice is fine)")
    where = model_device_dtype(stage1)
    conds = [check_embeds(p, stage1, f"prompts[{k}]", where) for k, p in enumerate(prompts)]
    u = check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    est = factorized_estimator(stage1, decomposition, conds, u, scale)
    sched = scheduler_of(stage1)
    ts = strided_timesteps(stage1) if timesteps is None else check_timesteps(timesteps, sched)
    check_generator(generator)
    project = None
    if fixed is not None:
        k, ref = _check_fixed(fixed, names, stage1, n, h, w, where)
        project = _hold_part(decomposition, k, ref, Schedule(sched), ts[-1], generator)
    x = pure_noise(stage1, generator, n, h, w)
    return denoise_loop(x, ts, 0, stage1, est, generator, project, progress=progress, desc="factorized")
