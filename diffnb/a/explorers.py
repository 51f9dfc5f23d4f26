"""Part A's explorers: one call per notebook cell, a control to move and the pictures that answer.

Each function renders its whole grid of settings when the cell runs (``diffnb.core.explore``), so
moving a control in JupyterLab answers without running the model.  Noise is drawn from the same seed
at every setting, so what changes between two settings is the setting alone.

Conventions as in ``diffnb.a.denoise``: model images ``(N, C, H, W)`` in [-1, 1], timesteps
descending; ``pa`` is a notebook's ``part_a.PartA`` (bundle, embeddings, settings, seeds).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from diffnb.a import denoise as ddpm
from diffnb.a.images import to_display
from diffnb.a.schedule import Schedule
from diffnb.core.explore import Explorer


def explore_forward(pa, x0: torch.Tensor, timesteps: Sequence[int] = tuple(range(0, 1000, 50))) -> Explorer:
    """Section 1.1: a slider over t; the clean image and x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
    with the same eps at every t, and the two weights in the caption."""
    schedule = Schedule(pa.stage1)

    def render(t):
        x_t = ddpm.forward(x0, t, pa.stage1, pa.generator())          # the same eps at every t
        abar = float(schedule.abar(t))
        return (to_display(torch.cat([x0, x_t])),
                f"t = {t}: √ᾱ_t = {abar ** 0.5:.3f} (signal), √(1−ᾱ_t) = {(1 - abar) ** 0.5:.3f} (noise)")

    return Explorer(render, {"t": list(timesteps)}, title="the forward process: original | x_t", desc="noising")


def explore_trajectory(pa, noisy: torch.Tensor, i_start: int, prompt_embeds: torch.Tensor,
                       timesteps: Sequence[int]) -> Explorer:
    """Section 1.4: one denoising run from ``timesteps[i_start]``, step by step: the image x_t after each
    step and the clean image the model would predict from it in one step (x̂_0)."""
    trace = []
    ddpm.iterative_denoise(noisy, i_start, pa.stage1, prompt_embeds, timesteps, pa.generator(1),
                           intermediates=trace, return_every=1)
    by_step = {s.step: s for s in trace}

    def render(step):
        s = by_step[step]
        x0_hat = ddpm.one_step_denoise(pa.stage1, s.image, s.prev_t, prompt_embeds) if s.prev_t > 0 else s.image
        return to_display(torch.cat([s.image, x0_hat])), f"step {step}: t = {s.t} → {s.prev_t} | x_t, then x̂_0 from it"

    return Explorer(render, {"step": sorted(by_step)}, title="iterative denoising: x_t | one-step x̂_0",
                    desc="trajectory")


def explore_guidance(pa, prompt_embeds: torch.Tensor, scales: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0),
                     num_images: int = 4) -> Explorer:
    """Section 1.6: the guidance scale gamma; the same seed (the same starting noise) at every gamma."""
    def render(gamma):
        x = ddpm.sample_cfg(pa.stage1, prompt_embeds, pa.uncond, pa.timesteps(), gamma, pa.generator(),
                            num_images=num_images, progress=False)        # the explorer's own bar counts settings
        return to_display(x), f"γ = {gamma:g}" + (" (unconditional)" if gamma == 0 else
                                                  " (conditional, no guidance)" if gamma == 1 else "")

    return Explorer(render, {"gamma": [float(g) for g in scales]}, title="classifier-free guidance: γ",
                    static=[{"gamma": float(g)} for g in scales if g in (0, 1, 7) or g == pa.scale][:4] or None,
                    desc="CFG sampling")


def explore_sdedit(pa, image: torch.Tensor, prompt_embeds: torch.Tensor,
                   i_starts: Sequence[int] = (1, 3, 5, 7, 10, 20)) -> Explorer:
    """Section 1.7: the SDEdit start index: noise ``image`` to ``timesteps[i_start]``, denoise with CFG."""
    ts = pa.timesteps()

    def render(i_start):
        (edit,) = ddpm.sdedit(image, [i_start], pa.stage1, prompt_embeds, pa.uncond, ts, pa.scale, pa.generator(),
                              progress=False)
        return (to_display(torch.cat([image[:1], edit[:1]])),
                f"i_start = {i_start}: t = {ts[i_start]}, {len(ts) - 1 - i_start} steps back | original, edit")

    return Explorer(render, {"i_start": list(i_starts)}, title="SDEdit: the start index", desc="SDEdit")


def mask_regions(size: int) -> dict:
    """Named rectangular edit regions (1 = edit) at the model's size: the top and left halves, a centre
    square, a horizontal band."""
    from diffnb.a.images import rectangle_mask
    h = size
    return {
        "centre": rectangle_mask(size, h // 4, h // 4, h // 2, h // 2),
        "top half": rectangle_mask(size, 0, 0, h // 2, h),
        "left half": rectangle_mask(size, 0, 0, h, h // 2),
        "middle band": rectangle_mask(size, 3 * h // 8, 0, h // 4, h),
    }


def explore_inpaint(pa, image: torch.Tensor, prompt_embeds: torch.Tensor, regions: dict | None = None) -> Explorer:
    """Section 1.7.2: which region to repaint; the image with the region greyed out, then the result."""
    regions = regions or mask_regions(pa.size if isinstance(pa.size, int) else pa.size[0])
    ts = pa.timesteps()

    def render(region):
        mask = regions[region].to(image)
        out = ddpm.inpaint(image[:1], mask, pa.stage1, prompt_embeds, pa.uncond, ts, pa.scale, pa.generator(),
                           progress=False)
        shown = image[:1] * (1 - mask)                              # the region greyed out (0 is mid-grey)
        return to_display(torch.cat([shown, out])), f"region: {region} | what the model sees kept, the result"

    return Explorer(render, {"region": list(regions)}, title="inpainting: the region to repaint", desc="inpainting")


def explore_turn(images: torch.Tensor, angles: Sequence[int] = tuple(range(0, 181, 15))) -> Explorer:
    """Section 1.8: turn illusions from upright (0°) to upside down (180°)."""
    def render(angle):
        turned = TF.rotate(images, float(angle), interpolation=TF.InterpolationMode.BILINEAR, fill=1.0)
        return to_display(turned), f"turned by {angle}°"

    return Explorer(render, {"angle": list(angles)}, title="visual anagrams: turn them", desc="turning",
                    static=[{"angle": a} for a in (0, 90, 180) if a in angles])


def explore_distance(images: torch.Tensor, factors: Sequence[int] = (1, 2, 3, 4, 6, 8)) -> Explorer:
    """Section 1.9: look from near to far: the hybrids shrunk ``factor`` times (what the eye resolves from
    farther away) and blown up again, so only their low frequencies remain as the factor grows."""
    def render(distance):
        factor = distance
        if factor == 1:
            far = images
        else:
            small = F.interpolate(images.float(), scale_factor=1 / factor, mode="area")
            far = F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return to_display(far), "near (as made)" if factor == 1 else f"{factor}× farther away (1/{factor} of the detail)"

    return Explorer(render, {"distance": list(factors)}, title="hybrid images: near to far", desc="distance",
                    static=[{"distance": f} for f in factors if f in (1, 4, 8)] or None)
