"""Part B's explorers: one call per notebook cell, a control to move and the digits that answer.

Each function renders its whole grid of settings when the cell runs (``diffnb.core.explore``), so
moving a control in JupyterLab answers without running a network.  Noise is drawn from the same seed
at every setting, so what changes between two settings is the setting alone.  Images are
``(N, 1, 28, 28)`` in [0, 1]; ``config`` is a ``TrainConfig`` whose run has been trained (its
notebook's training cell, or ``python -m diffnb.part_b train RUN``).
"""
from __future__ import annotations

from typing import Sequence

import torch

from diffnb.b.denoiser import add_noise
from diffnb.b.flow import class_fm_sample, time_fm_sample
from diffnb.b.train import TrainConfig, load_model
from diffnb.core.explore import Explorer


@torch.no_grad()
def explore_sigma(model: torch.nn.Module, digits: torch.Tensor,
                  sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                  seed: int = 0) -> Explorer:
    """Section 1.2.2: the noise level sigma of z = x + sigma eps fed to a trained denoiser (the same eps
    at every sigma); rows: the noisy input, the denoiser's output."""
    dev = next(model.parameters()).device
    model.eval()
    eps = torch.randn(digits.shape, generator=torch.Generator().manual_seed(seed))

    def render(sigma):
        z = digits + sigma * eps                                          # = add_noise with this eps
        out = model(z.to(dev)).cpu()
        err = float(((out - digits) ** 2).mean())
        return (torch.cat([z.clamp(0, 1), out.clamp(0, 1)]),
                f"σ = {sigma:g}: noisy (top), denoised (bottom); MSE to the clean digits {err:.4f}")

    return Explorer(render, {"sigma": [float(s) for s in sigmas]}, nrow=2, title="the denoiser at other noise levels",
                    static=[{"sigma": s} for s in (0.2, 0.5, 0.8, 1.0) if s in sigmas] or None, desc="denoising")


def explore_time_fm(config: TrainConfig, epochs: Sequence[int], num_ts: Sequence[int] = (1, 2, 5, 10, 20, 50),
                    num_samples: int = 10, seed: int = 0, device="cpu") -> Explorer:
    """Section 2.3: the training epoch x the number of Euler steps, the same starting noise throughout.
    ``epochs`` may repeat an epoch (``[1, 5, cfg.epochs]`` with 5 epochs): each is shown once."""
    epochs = sorted(set(epochs))
    models = {e: load_model(config, e, device=device) for e in epochs}

    def render(epoch, steps):
        x = time_fm_sample(models[epoch], (28, 28), steps, seed, num_samples=num_samples, progress=False)
        return x, f"after epoch {epoch}, {steps} Euler step{'s' if steps > 1 else ''}"

    return Explorer(render, {"epoch": list(epochs), "steps": list(num_ts)}, title="time-conditioned flow: epoch × steps",
                    static=[{"epoch": epochs[-1], "steps": n} for n in num_ts if n in (1, 5, 50)] or None,
                    desc="sampling")


def explore_class_fm(config: TrainConfig, epochs: Sequence[int], gammas: Sequence[float] = (0.0, 1.0, 2.0, 5.0, 10.0),
                     num_ts: Sequence[int] = (5, 20, 50), per_digit: int = 6, seed: int = 0, device="cpu") -> Explorer:
    """Sections 2.3 and 2.6: the digit asked for, the guidance scale gamma, the epoch and the Euler steps.
    Each (epoch, gamma, steps) samples all ten digits in one batch (``class_fm_sample``); a repeated
    epoch is shown once."""
    epochs = sorted(set(epochs))
    models = {e: load_model(config, e, device=device) for e in epochs}
    c = torch.arange(10).repeat_interleave(per_digit)                     # per_digit samples of 0, then of 1, ...
    batches: dict[tuple, torch.Tensor] = {}

    def render(digit, gamma, epoch, steps):
        key = (gamma, epoch, steps)
        if key not in batches:
            batches[key] = class_fm_sample(models[epoch], c, (28, 28), steps, gamma, seed, progress=False).cpu()
        return batches[key][c == digit], f"digit {digit}, γ = {gamma:g}, after epoch {epoch}, {steps} Euler steps"

    controls = {"digit": list(range(10)), "gamma": [float(g) for g in gammas], "epoch": list(epochs),
                "steps": list(num_ts)}
    last = max(num_ts)
    static = [{"digit": d, "gamma": g, "epoch": epochs[-1], "steps": last} for d in (3, 8) for g in (1.0, 5.0)
              if g in controls["gamma"]]
    return Explorer(render, controls, title="class-conditioned flow with CFG", static=static or None, desc="sampling")
