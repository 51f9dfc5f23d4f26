"""Part B, sections 2.1 to 2.6: flow matching with time and class conditioning, and its samplers.

Conventions (stated once):
  * Part B's x_0 is noise and x_1 is data (the write-up's flow matching); Part A's x_0 is the clean
    image (``diffnb.a.denoise``, DDPM's convention), so the same name means opposite ends in the two parts;
  * flow time t=0 is noise, t=1 is data: ``x_t = (1 - t) x_0 + t x_1`` with ``x_0 ~ N(0, I)``;
  * the network predicts the velocity ``u = x_1 - x_0`` (constant along each straight path);
  * samplers integrate ``dx/dt = u(x, t)`` with Euler from t=0 to t=1 in ``num_ts`` equal steps;
  * every random draw uses a ``torch.Generator`` on the model's device: pass one for
    training, or a ``seed`` for sampling.

Checks: the public functions check their settings (p_uncond, the guidance scale, seeds, step counts)
in Python, once per call, and name the argument; they read no tensor values, so the training step
(``diffnb.b.train``) calls them as they are, inside a CUDA graph too.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnb.b.denoiser import check_images
from diffnb.core.checks import check_number, is_int
from diffnb.core.progress import loops_shown, progress as tqdm


# ------------------------------------------------------------------------- flow matching (2.x)
def fm_interpolate(x_0: torch.Tensor, x_1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t x_1, with ``t: (N,)`` broadcast over the image dims."""
    t = t.reshape(-1, *([1] * (x_1.dim() - 1)))
    return (1 - t) * x_0 + t * x_1


def _fm_draws(x_1: torch.Tensor, generator: torch.Generator | None):
    x_0 = torch.randn(x_1.shape, generator=generator, device=x_1.device, dtype=x_1.dtype)  # noise
    t = torch.rand(x_1.shape[0], generator=generator, device=x_1.device, dtype=x_1.dtype)   # U[0, 1]
    return x_0, t


def time_fm_forward(unet: nn.Module, x_1: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Flow-matching loss of a time-conditioned UNet on clean images ``x_1: (N, C, H, W)``.

    x_0 ~ N(0, I), t ~ U[0, 1], x_t = (1 - t) x_0 + t x_1, target u = x_1 - x_0,
    loss = || u_theta(x_t, t) - (x_1 - x_0) ||^2   (section 2.2, Algorithm 1).
    """
    check_images(x_1, "x_1")
    x_0, t = _fm_draws(x_1, generator)
    x_t = fm_interpolate(x_0, x_1, t)
    return F.mse_loss(unet(x_t, t), x_1 - x_0)


def class_fm_forward(unet: nn.Module, x_1: torch.Tensor, c: torch.Tensor, p_uncond: float = 0.1,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Flow-matching loss with class conditioning and classifier-free dropout (section 2.5).

    As ``time_fm_forward``, and each sample's class vector is dropped (mask = 0) with
    probability ``p_uncond``, so one network learns both u(x, t | c) and u(x, t).
    """
    check_images(x_1, "x_1")
    check_number("p_uncond", p_uncond, low=0.0, high=1.0,
                 fix="it is the probability of dropping the class, e.g. 0.1")
    x_0, t = _fm_draws(x_1, generator)
    mask = (torch.rand(x_1.shape[0], generator=generator, device=x_1.device) >= p_uncond).to(x_1.dtype)
    x_t = fm_interpolate(x_0, x_1, t)
    return F.mse_loss(unet(x_t, c, t, mask), x_1 - x_0)


def euler_integrate(velocity, x_0: torch.Tensor, num_ts: int, progress: bool | None = None) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t=0 to t=1 with ``num_ts`` Euler steps.

    x_{i+1} = x_i + (1/T) * velocity(x_i, i/T)   (Algorithm 2).  ``velocity`` takes
    ``(x: (N, ...), t: (N,))``.  progress: a bar over the steps when they last over 2 s (``None``: once a
    notebook's setup has turned loop bars on, ``diffnb.core.progress.show_loops``).
    """
    _check_num_ts(num_ts)
    x = x_0
    dt = 1.0 / num_ts
    steps = range(num_ts)
    if loops_shown() if progress is None else progress:
        steps = tqdm(steps, desc="Euler steps", leave=False)
    for i in steps:
        t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=x.dtype)
        x = x + dt * velocity(x, t)
    return x


def cfg_velocity(u_uncond: torch.Tensor, u_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: u = u_uncond + gamma (u_cond - u_uncond); unconditional first, as
    Part A's ``diffnb.a.denoise.cfg_combine(eps_uncond, eps_cond, scale)``.

    gamma = 1 is conditional sampling, 0 unconditional, > 1 guided; a negative gamma is legal (it
    steers away from the class).  Unchecked: ``class_fm_sample`` checks gamma once per call."""
    return u_uncond + guidance_scale * (u_cond - u_uncond)


@torch.no_grad()
def time_fm_sample(unet: nn.Module, img_wh: tuple[int, int] = (28, 28), num_ts: int = 50,
                   seed: int = 0, num_samples: int = 40, channels: int | None = None,
                   progress: bool | None = None) -> torch.Tensor:
    """Sample ``num_samples`` images from a time-conditioned flow: (num_samples, C, H, W).
    progress: as ``euler_integrate``'s."""
    _check_num_ts(num_ts)
    x_0 = _initial_noise(unet, img_wh, num_samples, seed, channels)
    was_training = unet.training
    unet.eval()
    try:
        return euler_integrate(lambda x, t: unet(x, t), x_0, num_ts, progress)
    finally:
        unet.train(was_training)


@torch.no_grad()
def class_fm_sample(unet: nn.Module, c: torch.Tensor, img_wh: tuple[int, int] = (28, 28),
                    num_ts: int = 50, guidance_scale: float = 5.0, seed: int = 0,
                    channels: int | None = None, progress: bool | None = None) -> torch.Tensor:
    """Sample one image per label in ``c: (N,)`` with classifier-free guidance: (N, C, H, W).

    The conditional (mask = 1) and unconditional (mask = 0) velocities come from ONE batched
    forward pass of 2N images, then u = u_uncond + gamma (u_cond - u_uncond).

    ``guidance_scale`` (gamma) is any finite number: 1 is plain conditional sampling, 0 ignores the
    class, > 1 strengthens it (5 in the write-up).  A negative gamma is legal and unusual: it steers
    the samples away from the asked-for digit.  NaN, inf, ``None`` or a string are refused.
    progress: as ``euler_integrate``'s.
    """
    check_number("guidance_scale", guidance_scale,
                 fix="pass a number such as 5.0 (1.0 turns guidance off; negative values are allowed)")
    _check_num_ts(num_ts)
    device = _model_device(unet)
    if isinstance(c, str) or c is None:
        raise TypeError(f"c must be a tensor or list of integer class labels, one per sample, got {c!r}; "
                        "pass e.g. torch.arange(10)")
    c = torch.as_tensor(c, device=device).reshape(-1)
    if c.dtype.is_floating_point or c.dtype == torch.bool:
        raise TypeError(f"c (class labels) must be integers, got dtype {c.dtype}; pass c.long()")
    num_classes = getattr(unet, "num_classes", None)
    if num_classes is not None and c.numel() and (int(c.min()) < 0 or int(c.max()) >= num_classes):
        raise ValueError(f"class labels must lie in [0, {num_classes - 1}]; got {c.tolist()}")
    n = c.shape[0]
    x_0 = _initial_noise(unet, img_wh, n, seed, channels)
    c2 = torch.cat([c, c])
    mask = torch.cat([torch.ones(n, device=device), torch.zeros(n, device=device)])

    def velocity(x, t):
        u = unet(torch.cat([x, x]), c2, torch.cat([t, t]), mask)   # (2N, C, H, W): cond | uncond
        u_cond, u_uncond = u.chunk(2)
        return cfg_velocity(u_uncond, u_cond, guidance_scale)

    was_training = unet.training
    unet.eval()
    try:
        return euler_integrate(velocity, x_0, num_ts, progress)
    finally:
        unet.train(was_training)


# ------------------------------------------------------------------------------------ helpers
def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _initial_noise(unet, img_wh, n: int, seed: int, channels: int | None) -> torch.Tensor:
    if not (isinstance(img_wh, (tuple, list)) and len(img_wh) == 2
            and all(is_int(v) and v > 0 for v in img_wh)):
        raise ValueError(f"img_wh must be (width, height), e.g. (28, 28); got {img_wh!r}")
    if not is_int(n) or n < 1:
        raise ValueError(f"number of samples must be a positive integer, got {n!r}")
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}; pass e.g. seed=0")
    if channels is not None and (not is_int(channels) or channels < 1):
        raise ValueError(f"channels must be a positive integer or None (the model's), got {channels!r}")
    w, h = int(img_wh[0]), int(img_wh[1])
    channels = channels or getattr(unet, "in_channels", 1)
    device = _model_device(unet)
    g = torch.Generator(device=device).manual_seed(int(seed))
    return torch.randn((n, channels, h, w), generator=g, device=device)


def _check_num_ts(num_ts) -> None:
    if not is_int(num_ts) or num_ts < 1:
        raise ValueError(f"num_ts must be a positive integer number of Euler steps, got {num_ts!r}; "
                         "pass e.g. num_ts=50")
