"""Part B, section 1.2: a UNet trained as a denoiser.

Noise a clean digit, z = x + sigma eps with eps ~ N(0, I), and train the UNet to map z back to x
with an L2 loss; at sigma -> infinity (pure noise in, section 1.2.3) the best answer is the mean digit.
Images are float ``(N, C, H, W)`` in [0, 1]; every random draw uses the ``torch.Generator`` passed.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnb.core.checks import check_number


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = x + sigma * eps,  eps ~ N(0, I)   (section 1.2).  ``x: (N, C, H, W)``, ``sigma`` a finite
    number >= 0 (0 returns ``x``)."""
    check_number("sigma", sigma, low=0.0, fix="pass a noise level such as 0.5")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        what = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a float image tensor, got {what}; pass x.float() (uint8 pixels: x.float() / 255)")
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma * eps


def denoiser_loss(unet: nn.Module, x: torch.Tensor, sigma: float = 0.5,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between ``unet(x + sigma eps)`` and the clean ``x``  (section 1.2.1)."""
    check_number("sigma", sigma, low=0.0, fix="pass a noise level such as 0.5")
    check_images(x, "x")
    z = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return F.mse_loss(unet(z), x)


def pure_noise_loss(unet: nn.Module, x: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between ``unet(eps)`` and a clean digit: the input carries no information about the
    target, so the best the network can do is the mean of the data  (section 1.2.3)."""
    check_images(x, "x")
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return F.mse_loss(unet(eps), x)


def check_images(x: torch.Tensor, name: str) -> None:
    """Part B's image batches: float ``(N, C, H, W)``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an image batch (N, C, H, W); got {shape}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} has dtype {x.dtype} (raw pixel values 0-255?); the objectives take float "
                        f"images in [0, 1]: pass {name}.float() / 255")
