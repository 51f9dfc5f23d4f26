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


def explore_views(images: torch.Tensor, views: Sequence, prompts: Sequence[str] | None = None) -> Explorer:
    """Beyond section 1.8: turn an illusion through its K views; setting k shows ``views[k].view(images)``,
    what prompt k should read as (``prompts``, for the caption).  Nothing is sampled: the views only
    rearrange the finished pixels."""
    views = list(views)
    prompts = list(prompts) if prompts is not None else [None] * len(views)
    if not views or len(prompts) != len(views):
        raise ValueError(f"give one prompt per view (or none): {len(views)} views, {len(prompts)} prompts")
    labels = [f"{k + 1}: {getattr(v, 'name', type(v).__name__)}" for k, v in enumerate(views)]

    def render(view):
        k = labels.index(view)
        seen = views[k].view(images)
        return to_display(seen), f"view {view}" + (f" → should read: {prompts[k]}" if prompts[k] else "")

    return Explorer(render, {"view": labels}, title="an illusion through its views", desc="views",
                    static=[{"view": v} for v in labels])


def jigsaw_frame(images: torch.Tensor, jigsaw, f: float, background: float = 1.0) -> torch.Tensor:
    """The jigsaw ``jigsaw`` (a ``diffnb.a.views.JigsawView``) of ``images`` ``(N, C, H, W)`` put together
    a fraction ``f`` of the way: at ``f = 0`` exactly ``jigsaw.view(images)`` (scrambled), at ``f = 1``
    exactly ``images`` (solved).  In between, each piece slides in a straight line from its scrambled
    slot to its own and turns back by the same fraction of its quarter turns (bilinear between whole
    quarter turns); pieces pasted in the order of ``jigsaw.moves``, on a ``background`` of the given value
    (in the images' units)."""
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"f must be in [0, 1] (0: scrambled, 1: solved), got {f!r}")
    n_side = jigsaw.pieces
    s = images.shape[-1] // n_side
    canvas = torch.full_like(images, background)
    for (r0, c0), (r1, c1), k in jigsaw.moves:                 # piece from slot (r0, c0), turned k quarters clockwise, to (r1, c1)
        piece = images[..., r0 * s:(r0 + 1) * s, c0 * s:(c0 + 1) * s]
        turns = k * (1.0 - f)                                  # quarter turns clockwise still to undo
        if float(turns).is_integer():
            shown = torch.rot90(piece, -int(turns), dims=(-2, -1))
        else:
            shown = TF.rotate(piece, -90.0 * turns, interpolation=TF.InterpolationMode.BILINEAR, fill=background)
        top = round(s * (r1 + f * (r0 - r1)))
        left = round(s * (c1 + f * (c0 - c1)))
        canvas[..., top:top + s, left:left + s] = shown
    return canvas


def explore_jigsaw(images: torch.Tensor, jigsaw, steps: int = 8, prompts: Sequence[str] | None = None) -> Explorer:
    """Beyond section 1.8: put the jigsaw together; a slider from the scrambled arrangement
    (``jigsaw.view(images)``, what the second prompt should read as) to the solved one (the image, the first
    prompt), in ``steps`` moves of every piece at once (``jigsaw_frame``)."""
    fractions = [i / steps for i in range(steps + 1)]
    solved, scrambled = (list(prompts) + [None, None])[:2] if prompts is not None else (None, None)

    def render(step):
        f = fractions[step]
        x = jigsaw_frame(images, jigsaw, f)
        what = ("scrambled" + (f" → {scrambled}" if scrambled else "") if step == 0 else
                "solved" + (f" → {solved}" if solved else "") if step == steps else f"{f:.0%} of the way")
        return to_display(x), f"step {step} of {steps}: {what}"

    return Explorer(render, {"step": list(range(steps + 1))}, title="the jigsaw: put it together", desc="jigsaw",
                    static=[{"step": i} for i in sorted({0, steps // 2, steps})])


def explore_motion_blur(images: torch.Tensor, lengths: Sequence[int] = (1, 3, 5, 7, 9, 13, 17),
                        angle: float = -45.0) -> Explorer:
    """Beyond section 1.9: blur and unblur a motion hybrid; the images convolved with a line of ``length``
    pixels at ``angle`` degrees (``diffnb.a.decompositions.MotionBlur``'s motion part; length 1 = as made)."""
    from diffnb.a.decompositions import MotionBlur

    def render(length):
        seen = images if length == 1 else MotionBlur(length, angle).components(images)[0]
        return to_display(seen), "as made (sharp)" if length == 1 else f"motion blur over {length} pixels at {angle:g}°"

    return Explorer(render, {"length": list(lengths)}, title="a motion hybrid: blur it", desc="motion blur",
                    static=[{"length": v} for v in lengths if v in (1, 7, 17)] or None)
