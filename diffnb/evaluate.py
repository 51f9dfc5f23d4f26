"""Part A's claims as numbers: each section's experiment on the ``mini`` model, read by the world judge.

A picture can persuade; a number can be checked. Every function here runs one section's experiment
on images whose content is known (renders of the digit world, ``diffnb.mini.world``) or on prompts that
name a digit and a style, and lets the judge (``diffnb.mini.judge``) read the results:

  ``reconstruction``  1.4    error of iterative vs one-step vs blur denoising, per noise level
  ``adherence``       1.5-6  digit and style accuracy of samples, and their diversity, at a given CFG scale
  ``sdedit_curve``    1.7    how much of the input survives per start index (distance, digit kept)
  ``inpaint_score``   1.7.2  kept pixels exact; the masked part completed into the original digit
  ``sdedit_curve``    1.7.3  photos and pencil sketches towards "a high quality crayon drawing": read as
                             crayon, digit kept
  ``anagram_score``   1.8    both orientations read as their prompts, against sampling + flipping
  ``hybrid_score``    1.9    far view reads as prompt 1 and the full image as prompt 2, against sampling 2
  ``read_views``      1.8-9  any number of views (or near / far / blurred looks), each read as its prompt;
                             ``views_baseline`` the same test on plain samples

The notebooks call them with a few samples (their checked cells print the rounded results);
``python -m diffnb.evaluate`` runs them with many and writes the results page (``results.md`` and
``results.html`` in ``build/pack/``, or ``--page-dir``): each section's figures with their sample counts and
standard errors, and what they measure. Images are ``(N, 3, H, W)`` in [-1, 1] as in
``diffnb.a.denoise``; every run takes an explicit seed.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from diffnb.core.checks import is_int
from diffnb.mini import world          # ddpm and guidance (diffusers) are imported where they are used

#: held-out renders for the experiments: a seed stream apart from the mini model's training data
#: (seed 0, ...) and the judge's
EVAL_SEED = 5_000_001


from diffnb.a.images import to_display as unit   # noqa: E402  model images in [-1, 1] -> [0, 1] (what the judge reads)


def world_images(n: int, seed: int = EVAL_SEED, digits=None, styles=None, like: torch.Tensor | None = None,
                 size: int = world.SIZE):
    """``n`` held-out renders: ``(images in [-1, 1], digits, styles)`` on ``like``'s device and dtype."""
    w = world.render_world(n, seed, digits=digits, styles=styles, size=size)
    x = w.images * 2 - 1
    if like is not None:
        x = x.to(like.device, like.dtype)
    return x, w.digits, w.styles


def describe(judge, images: torch.Tensor, prompts: Sequence[str]) -> list[str]:
    """One line per image: the prompt, what the judge reads (digit, style) and whether it matches."""
    reading = judge.predict(unit(images))
    digit, style = reading.digit, reading.style
    lines = []
    for p, d, s in zip(prompts, digit.tolist(), style.tolist()):
        want_d, want_s = world.parse_prompt(p)
        read = f"{d if d < 10 else 'no digit'}, {world.STYLES[s]}"
        ok = (want_d is None or want_d == d) and (want_s is None or want_s == s)
        lines.append(f"{p!r} -> {read} ({'as asked' if ok else 'NOT as asked'})")
    return lines


def embed_all(embed, prompts: Sequence[str]) -> torch.Tensor:
    """``(N, L, D)``: one embedding per prompt (``embed`` maps a prompt to ``(1, L, D)``)."""
    return torch.cat([embed(p) for p in prompts])


def _model_like(stage1) -> torch.Tensor:
    p = next(stage1.unet.parameters())
    return torch.empty(0, device=p.device, dtype=p.dtype)


def far_view(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """The view from far away: ``factor`` x smaller, blown up again."""
    small = F.avg_pool2d(x, factor)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image RMS distance in [0, 1] units. (N, ...) -> (N,)"""
    return (unit(a) - unit(b)).square().flatten(1).mean(1).sqrt()


# --------------------------------------------------------------------------- 1.4

def reconstruction(stage1, embed, x0: torch.Tensor, i_starts: Sequence[int], timesteps: Sequence[int],
                   seed: int, prompt: str = "a high quality picture", blur_sigma: float = 2.0) -> list[dict]:
    """Per start index: MSE against the clean ``x0`` of the noisy image, the iterative result, the
    one-step estimate and the Gaussian blur (5x5). Lower is better."""
    from diffnb.a import denoise as ddpm

    e = embed(prompt)
    rows = []
    for i in i_starts:
        t = timesteps[i]
        g = torch.Generator().manual_seed(seed + i)
        noisy = ddpm.forward(x0, t, stage1, g)
        it = ddpm.iterative_denoise(noisy, i, stage1, e, timesteps, g)
        one = ddpm.one_step_denoise(stage1, noisy, t, e)
        blur = ddpm.blur_denoise(noisy, 5, blur_sigma)
        mse = {k: float(((v.float() - x0.float()) ** 2).mean()) for k, v in
               dict(noisy=noisy, iterative=it, one_step=one, blur=blur).items()}
        rows.append(dict(i_start=i, t=t, **mse))
    return rows


# --------------------------------------------------------------------------- 1.5 and 1.6

def adherence(stage1, embed, judge, scale: float, timesteps: Sequence[int], seed: int, per_prompt: int = 1,
              digits: Sequence[int] = range(10), styles: Sequence[int] = range(len(world.STYLES)),
              sampler: str = "ddpm") -> dict:
    """Sample every prompt ``world.prompt(d, s)`` ``per_prompt`` times (one batch, one generator) with
    CFG ``scale`` (1 = plain conditional sampling, as in 1.5) and read the samples.

    ``sampler`` is one of ``diffnb.a.samplers.SAMPLERS`` and ``timesteps`` its ``steps`` (a list, or for
    the fewer-steps samplers an int or one of IF's list names); the default is the course's DDPM.

    Returns the shares read with the right ``digit``, the right ``style`` and ``both``, and
    ``diversity``: the mean RMS distance between two samples of the same prompt (needs
    ``per_prompt >= 2``; ``nan`` otherwise), with ``samples`` (N, 3, H, W) and the prompts.
    """
    from diffnb.a import samplers

    pairs = [(d, s) for d in digits for s in styles for _ in range(per_prompt)]
    prompts = [world.prompt(d, s) for d, s in pairs]
    cond = embed_all(embed, prompts)
    g = torch.Generator().manual_seed(seed)
    x = samplers.sample(stage1, cond, embed(""), sampler, timesteps, scale, g, num_images=len(prompts))
    d = torch.tensor([p[0] for p in pairs])
    s = torch.tensor([p[1] for p in pairs])
    read = judge.read(unit(x), digit=d, style=s)
    diversity = float("nan")
    if per_prompt >= 2:
        groups = unit(x).view(-1, per_prompt, *x.shape[1:])
        dists = [(groups[:, a] - groups[:, b]).square().flatten(1).mean(1).sqrt()
                 for a in range(per_prompt) for b in range(a + 1, per_prompt)]
        diversity = float(torch.cat(dists).mean())
    return dict(digit=read["digit_accuracy"], style=read["style_accuracy"], both=read["both"],
                diversity=diversity, samples=x, prompts=prompts)


# --------------------------------------------------------------------------- 1.6a, fewer steps

#: 1.6a (A1.6a): the step counts, the grids (``diffnb.a.samplers.grid_timesteps``'s power) and IF's own
#: lists (run with DDPM, as IF runs them) of the fewer-steps table
FEWER_STEPS = (5, 10, 15, 20, 33, 50)
FEWER_GRIDS = {"even": 1.0, "power 0.5": 0.5}
FEWER_IF_LISTS = ("smart27", "smart50", "smart100")


def fewer_steps_row(stage1, embed, judge, scale: float, seed: int, per_prompt: int, sampler: str, steps,
                    power: float = 1.0) -> dict:
    """1.5's adherence experiment with ``sampler`` on ``steps`` (``diffnb.a.samplers.resolve_timesteps``):
    the NFE (counted on the UNet), the judge's shares, the diversity and the seconds (sampling and
    reading, this machine)."""
    from diffnb.a import samplers
    from diffnb.core.counting import counting_bundle

    counted, counter = counting_bundle(stage1)
    ts = samplers.resolve_timesteps(stage1, steps, power)
    begun = time.perf_counter()
    r = adherence(counted, embed, judge, scale, ts, seed, per_prompt=per_prompt, sampler=sampler)
    seconds = time.perf_counter() - begun
    return dict(nfe=counter.nfe, digit=r["digit"], style=r["style"], both=r["both"], diversity=r["diversity"],
                seconds=round(seconds, 1), samples=r["samples"])


def fewer_steps_table(stage1, embed, judge, scale: float, seed: int, per_prompt: int,
                      steps: Sequence[int] = FEWER_STEPS, grids: dict | None = None,
                      if_lists: Sequence[str] = FEWER_IF_LISTS, samplers_: Sequence[str] | None = None,
                      progress=None) -> list[dict]:
    """``fewer_steps_row`` for every sampler x grid x step count, then DDPM on each of IF's lists: rows
    labelled "sampler, grid" (``samples`` dropped), in that order."""
    from diffnb.a import samplers

    grids = FEWER_GRIDS if grids is None else grids
    runs = [(s, g, n) for s in (samplers.SAMPLERS if samplers_ is None else samplers_) for g in grids for n in steps]
    runs += [("ddpm", name, name) for name in if_lists]
    rows = []
    for sampler, grid, n in (runs if progress is None else progress(runs)):
        power = grids.get(grid, 1.0)
        r = fewer_steps_row(stage1, embed, judge, scale, seed, per_prompt, sampler, n, power)
        r.pop("samples")
        rows.append(dict(label=f"{sampler}, {grid}", **r))
    return rows


# --------------------------------------------------------------------------- 1.7, 1.7.2, 1.7.3

def score_sdedit(judge, edits: Sequence[torch.Tensor], x0: torch.Tensor, digits: torch.Tensor,
                 i_starts: Sequence[int], timesteps: Sequence[int], style: int | None = None) -> list[dict]:
    """Read SDEdit results (one batch per start index, as ``ddpm.sdedit`` returns them): per start index
    the mean RMS ``distance`` to the input (in [0, 1] units), the share still read as the input's
    digit (``digit_kept``) and, if ``style`` is given, the share read in that style and ``both``."""
    rows = []
    for i, e in zip(i_starts, edits):
        read = judge.read(unit(e), digit=digits, style=style)
        row = dict(i_start=i, t=timesteps[i], distance=float(_rms(e, x0).mean()), digit_kept=read["digit_accuracy"])
        if style is not None:
            row.update(style=read["style_accuracy"], both=read["both"])
        rows.append(row)
    return rows


def sdedit_curve(stage1, embed, judge, x0: torch.Tensor, digits: torch.Tensor, i_starts: Sequence[int],
                 timesteps: Sequence[int], scale: float, seed: int, prompt: str = "a high quality picture") -> list[dict]:
    """SDEdit of ``x0`` per start index towards ``prompt``, read by ``score_sdedit`` (with the style
    the prompt names, if any)."""
    from diffnb.a import denoise as ddpm

    edits = ddpm.sdedit(x0, i_starts, stage1, embed(prompt), embed(""), timesteps, scale,
                        torch.Generator().manual_seed(seed))
    return score_sdedit(judge, edits, x0, digits, i_starts, timesteps, world.parse_prompt(prompt)[1])


def score_inpaint(judge, result: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor, digits: torch.Tensor) -> dict:
    """``unmasked_exact``: every pixel outside the mask equals the input; ``digit_kept``: the share of
    results read as the input's digit; ``legible``: read as some digit."""
    keep = (mask.expand_as(x0) == 0)
    read = judge.read(unit(result), digit=digits)
    return dict(unmasked_exact=bool(torch.equal(result[keep], x0[keep])), digit_kept=read["digit_accuracy"],
                legible=read["legible"])


def inpaint_score(stage1, embed, judge, x0: torch.Tensor, digits: torch.Tensor, styles: torch.Tensor,
                  mask: torch.Tensor, timesteps: Sequence[int], scale: float, seed: int) -> dict:
    """Inpaint ``mask`` (1 = edit) of each image, prompted with its own digit and style; ``score_inpaint``."""
    from diffnb.a import denoise as ddpm

    prompts = [world.prompt(int(d), int(s)) for d, s in zip(digits, styles)]
    out = ddpm.inpaint(x0, mask, stage1, embed_all(embed, prompts), embed(""), timesteps, scale,
                       torch.Generator().manual_seed(seed))
    return dict(score_inpaint(judge, out, x0, mask, digits), result=out)


# --------------------------------------------------------------------------- 1.8 and 1.9

def read_anagram(judge, illusions: torch.Tensor, p1: str, p2: str) -> dict:
    """Read flip illusions of ``(p1, p2)``: ``success`` = upright read as p1's digit AND rotated (180°)
    read as p2's; ``upright`` and ``rotated`` each alone; ``ok`` per image."""
    from diffnb.a import views as guidance

    d1, d2 = _digits_of(p1, p2, "anagram")
    up = judge.predict(unit(illusions)).digit
    down = judge.predict(unit(guidance.FlipView().view(illusions))).digit
    ok = (up == d1) & (down == d2)
    return dict(success=float(ok.float().mean()), upright=float((up == d1).float().mean()),
                rotated=float((down == d2).float().mean()), ok=ok)


def anagram_baseline(stage1, embed, judge, p1: str, p2: str, n: int, timesteps: Sequence[int], scale: float,
                     seed: int) -> float:
    """The share of ``n`` plain CFG samples of p1 (seeded like the illusions) that pass ``read_anagram``:
    what an illusion must beat."""
    from diffnb.a import denoise as ddpm

    _digits_of(p1, p2, "anagram")
    base = ddpm.sample_cfg(stage1, embed(p1), embed(""), timesteps, scale, torch.Generator().manual_seed(seed),
                           num_images=n)
    return read_anagram(judge, base, p1, p2)["success"]


def anagram_score(stage1, embed, judge, p1: str, p2: str, n: int, timesteps: Sequence[int], scale: float,
                  seed: int) -> dict:
    """``n`` flip illusions (one seeded batch) read by ``read_anagram``, with ``baseline`` from
    ``anagram_baseline`` and the ``illusions`` themselves."""
    from diffnb.a import views as guidance

    _digits_of(p1, p2, "anagram")
    ill = guidance.make_flip_illusion(stage1, embed(p1), embed(p2), embed(""), timesteps, scale,
                                      torch.Generator().manual_seed(seed), num_images=n)
    return dict(read_anagram(judge, ill, p1, p2),
                baseline=anagram_baseline(stage1, embed, judge, p1, p2, n, timesteps, scale, seed), illusions=ill)


#: what ``read_views`` compares per view: the prompt's digit, its style, or both
READS = ("digit", "style", "both")


def _see(view, images: torch.Tensor) -> torch.Tensor:
    """``view.view(images)`` for a view object (``diffnb.a.views.View``), ``view(images)`` for a plain callable."""
    return view.view(images) if callable(getattr(view, "view", None)) else view(images)


def read_views(judge, images: torch.Tensor, views, prompts: Sequence[str], read="digit") -> dict:
    """Read images through views: image i passes when, for every k, ``views[k]`` of it reads as
    ``prompts[k]`` (an illusion of K views, or a hybrid seen near and far).

    ``views``: view objects (``view(x)``: ``diffnb.a.views``) or plain callables ``x -> image`` (e.g.
    ``far_view``). ``read``: what must match, ``"digit"`` (the prompt's digit, as ``read_anagram``),
    ``"style"`` or ``"both"``; one for every view or a list with one per view.  Returns ``success``
    (the share of images with every view right), ``per_view`` (the share right in each view alone), the
    per-image ``ok`` ``(N,)`` and ``read`` (digit and style per view, lists of ``(N,)``)."""
    views, prompts = list(views), list(prompts)
    if not views or len(views) != len(prompts):
        raise ValueError(f"give one prompt per view: {len(views)} views, {len(prompts)} prompts")
    reads = [read] * len(views) if isinstance(read, str) else list(read)
    if len(reads) != len(views) or any(r not in READS for r in reads):
        raise ValueError(f"read must be one of {list(READS)} or a list of them, one per view ({len(views)}), got {read!r}")
    wants = []
    for k, (p, r) in enumerate(zip(prompts, reads)):
        d, s = world.parse_prompt(p)
        if (r in ("digit", "both") and d is None) or (r in ("style", "both") and s is None):
            raise ValueError(f"prompts[{k}] = {p!r} names no {'digit' if d is None else 'style'} for read={r!r}; "
                             "the judge can only check what the prompt names")
        wants.append((d, s, r))
    ok = torch.ones(len(images), dtype=torch.bool)
    per_view, digits, styles = [], [], []
    for v, (d, s, r) in zip(views, wants):
        reading = judge.predict(unit(_see(v, images)))
        right = torch.ones(len(images), dtype=torch.bool)
        if r in ("digit", "both"):
            right &= reading.digit == d
        if r in ("style", "both"):
            right &= reading.style == s
        ok &= right
        per_view.append(float(right.float().mean()))
        digits.append(reading.digit)
        styles.append(reading.style)
    return dict(success=float(ok.float().mean()), per_view=per_view, ok=ok, read=dict(digit=digits, style=styles))


def views_baseline(stage1, embed, judge, views, prompts: Sequence[str], n: int, timesteps: Sequence[int],
                   scale: float, seed: int, read="digit", sample: int = 0, samples: torch.Tensor | None = None) -> float:
    """What an illusion (or hybrid) read by ``read_views`` must beat: the share of ``n`` plain CFG samples
    of ``prompts[sample]`` (seeded like the illusions) that pass the same test, seen through the same
    views.  ``sample`` = 0 for anagrams (the first prompt, as ``anagram_baseline``), the prompt read on the
    image itself for hybrids (as ``hybrid_baseline``).  ``samples``: those plain samples, already drawn
    (several tests with the same prompt and seed read one batch; ``n`` is then ``len(samples)``)."""
    prompts = list(prompts)
    if not is_int(sample) or not 0 <= sample < len(prompts):
        raise ValueError(f"sample must index prompts (0 .. {len(prompts) - 1}), got {sample!r}")
    if samples is None:
        from diffnb.a import denoise as ddpm
        samples = ddpm.sample_cfg(stage1, embed(prompts[sample]), embed(""), timesteps, scale,
                                  torch.Generator().manual_seed(seed), num_images=n)
    return read_views(judge, samples, views, prompts, read)["success"]


def _digits_of(p1: str, p2: str, kind: str) -> tuple[int, int]:
    (d1, _), (d2, _) = world.parse_prompt(p1), world.parse_prompt(p2)
    if d1 is None or d2 is None:
        raise ValueError(f"{kind} prompts must name digits to be judged, got {p1!r} and {p2!r}")
    return d1, d2


def score_hybrid(judge, images: torch.Tensor, d_low, d_high) -> dict:
    """Read hybrids: ``far`` = the share whose far view (``far_view``) reads as ``d_low``, ``near`` = the
    share whose full image reads as ``d_high``, ``success`` = both, with the per-image ``ok``."""
    far = judge.predict(unit(far_view(images))).digit
    near = judge.predict(unit(images)).digit
    ok = (far == d_low) & (near == d_high)
    return dict(success=float(ok.float().mean()), far=float((far == d_low).float().mean()),
                near=float((near == d_high).float().mean()), ok=ok)


def read_hybrid(judge, hybrids: torch.Tensor, p_low: str, p_high: str) -> dict:
    """``score_hybrid`` with the digits named by the prompts: far view read as p_low's digit, the image
    itself as p_high's."""
    return score_hybrid(judge, hybrids, *_digits_of(p_low, p_high, "hybrid"))


def hybrid_baseline(stage1, embed, judge, p_low: str, p_high: str, n: int, timesteps: Sequence[int], scale: float,
                    seed: int) -> float:
    """The share of ``n`` plain CFG samples of p_high (same seed) that pass ``read_hybrid``: they pass only
    where a blurred p_high happens to read as p_low's digit."""
    from diffnb.a import denoise as ddpm

    _digits_of(p_low, p_high, "hybrid")
    base = ddpm.sample_cfg(stage1, embed(p_high), embed(""), timesteps, scale, torch.Generator().manual_seed(seed),
                           num_images=n)
    return read_hybrid(judge, base, p_low, p_high)["success"]


def hybrid_score(stage1, embed, judge, p_low: str, p_high: str, n: int, timesteps: Sequence[int], scale: float,
                 seed: int, kernel_size: int = 33, sigma: float = 2.0) -> dict:
    """``n`` hybrids (one seeded batch) read by ``read_hybrid``, with ``baseline`` from ``hybrid_baseline``
    and the ``hybrids`` themselves."""
    from diffnb.a import views as guidance

    _digits_of(p_low, p_high, "hybrid")
    hyb = guidance.make_hybrids(stage1, embed(p_low), embed(p_high), embed(""), timesteps, scale,
                                torch.Generator().manual_seed(seed), kernel_size=kernel_size, sigma=sigma, num_images=n)
    return dict(read_hybrid(judge, hyb, p_low, p_high),
                baseline=hybrid_baseline(stage1, embed, judge, p_low, p_high, n, timesteps, scale, seed), hybrids=hyb)


# --------------------------------------------------------------------------- command line

def _fmt(x) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


#: the sections ``main`` computes (``--sections``), in the notebooks' order
SECTIONS = ("1.4", "1.5", "1.6", "1.6a", "1.7", "1.7.2", "1.7.3", "1.8", "1.9")


def _sections_argument(text: str) -> list[str]:
    """argparse ``type`` of ``--sections``: comma-separated names out of ``SECTIONS``."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        got = f"unknown section(s) {', '.join(unknown)}" if unknown else f"no section in {text!r}"
        raise argparse.ArgumentTypeError(f"{got}; the sections are {', '.join(SECTIONS)} "
                                         "(comma-separated, e.g. --sections 1.4,1.8)")
    return names


def _out_argument(text: str) -> Path:
    """argparse ``type`` of ``--out``: a JSON file to write, in a folder that exists (checked now, not
    after the experiments)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name, e.g. {path / 'figures.json'}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} ({path.parent}) does not exist; create it first "
                                         "or write the figures elsewhere")
    return path


def _page_dir_argument(text: str) -> Path:
    """argparse ``type`` of ``--page-dir``: a folder for the results page, made if missing; refused now (not
    after the experiments) if a file is in the way or the folder cannot be written."""
    path = Path(text)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under {str(p)!r}, which is a file"
                raise argparse.ArgumentTypeError(
                    f"{text!r} {where}; give a folder for results.md and results.html (made if missing), "
                    "or leave out --page-dir to write them into build/pack/")
            if not os.access(p, os.W_OK):
                raise argparse.ArgumentTypeError(f"cannot write into {str(p)!r}; give another folder or leave out "
                                                 "--page-dir to write into build/pack/")
            break
    return path


# --------------------------------------------------------------------------- the results page
#
# ``main`` keeps what it measures per section as rows: ``{"1.8": [{"label": ..., "n": 20, "success": 0.65,
# ...}, ...]}``, where ``label`` (optional) names what a row measured, ``n`` is the samples behind its
# figures and every other key is a figure. ``write_results_page`` turns them into results.md and
# results.html, with each section's explanation (moved here from the notebooks' Markdown, which no
# longer carries any measured figure) and a table; every number on the page comes from the rows and
# ``meta``.

#: the figures that are shares of the row's ``n`` samples: shown as percentages with a standard error
RATES = {"digit", "style", "both", "digit_kept", "legible", "crayon", "success", "upright", "rotated", "far",
         "near", "baseline"}

#: column headings of the figures (a key not here is shown under its own name)
HEADINGS = dict(i_start="start index", t="t", noisy="noisy input", iterative="iterative", one_step="one step",
                blur="blur", digit="digit right", style="style right", both="both right", diversity="diversity",
                distance="distance to input", digit_kept="digit kept", legible="read as a digit",
                unmasked_exact="every unmasked pixel exact", crayon="read as crayon", success="both views right",
                upright="upright right", rotated="rotated right", far="far view right", near="near view right",
                baseline="baseline", nfe="NFE (UNet calls)", seconds="seconds")

#: per section: title, notebook, what the row labels are, and the explanation (paragraphs; `code` in
#: backticks). No measured figure belongs here: the tables carry them.
SECTION_TEXT = {
    "1.4": ("Iterative denoising against one step and the blur", "A1.4_iterative.ipynb", None, [
        "Held-out renders of the digit world are noised with the forward process to four levels (start indices "
        "5, 10, 15 and 20 of the strided schedule) and cleaned from the same noisy input by three methods: "
        "iterative denoising down the strided list (A1.4), the one-step estimate of the clean image (A1.3) and "
        "a 5 × 5 Gaussian blur with σ = 2 (A1.2). Each figure is the mean squared error against the clean "
        "renders, in [-1, 1] units: lower is better. The noisy input is the baseline every method must beat, "
        "and the blur the one a learned denoiser must beat.",
        "Sharper is not closer. Where one step has a lower error than the iterative walk, that is no "
        "contradiction of the notebook's pictures: the one-step estimate is the mean of all clean images that "
        "could have produced the noisy one, which is exactly what squared error rewards, while the iterative "
        "walk adds fresh noise at every step and ends on one sharp, plausible image rather than the average."]),
    "1.5": ("Sampling without guidance: does the sample show the prompt?", "A1.5_sampling.ipynb", "guidance", [
        "Every prompt of the form “a {style} of the digit {d}” (10 digits × 3 styles), sampled n ÷ 10 times "
        "each (at least twice), all in one batch from one seeded generator, without guidance (γ = 1: one "
        "conditional UNet pass per step). The judge reads each sample's digit and style; the shares are of all "
        "samples. Diversity is the mean RMS distance between two samples of the same prompt (pixel values in "
        "[0, 1]): how different the model's answers to one prompt are.",
        "This row is the baseline of 1.6, which runs the same prompts from the same seed with guidance. What to "
        "look for: without guidance the model nearly always gets the style, but many samples show another "
        "digit than the prompt's."]),
    "1.6": ("Classifier-free guidance and prompt adherence", "A1.6_cfg.ipynb", "guidance", [
        "The experiment of 1.5 (the same prompts, the same number of samples, the same seed) with "
        "classifier-free guidance: at every step the UNet runs with the prompt and with the empty prompt, and "
        "the estimates are extrapolated, ε = ε_u + γ (ε_c − ε_u), with the profile's γ. The baseline is 1.5's "
        "row, the same experiment without guidance: the difference between the two rows is what guidance buys.",
        "What to look for: guidance should raise the share of samples that show the prompt's digit by a wide "
        "margin, while the diversity should hardly move on `mini`. "
        "The samples are few, so compare the difference with the standard errors before reading much into it."]),
    "1.6a": ("Sampling in fewer steps", "A1.6a_fewer_steps.ipynb", "sampler, grid", [
        "The experiment of 1.6 (the same prompts, number of samples, seed and γ) with three samplers at several "
        "numbers of UNet calls (NFE, counted on the UNet; with CFG one call is a batch of 2N): the course's DDPM "
        "step, DDIM (η = 0: x0_hat, then back to the next noise level along the same noise) and DPM-Solver++(2M) "
        "(diffusers' `DPMSolverMultistepScheduler`, second-order multistep in log-SNR time). Each runs on two "
        "grids of timesteps from 990 to 0: even (33 steps are the course's list) and t_i = 990 (1 − i/n)^0.5, "
        "which puts more steps at high noise and takes one long last step. The last rows are DDPM on IF's own "
        "tuned lists (`smart27`, `smart50`, `smart100`, from diffusers), which end at t = 0 where the course's "
        "loop stops, so `smart27` is 26 calls. Seconds are the sampling and reading on the machine named above.",
        "What to look for: on the even grid all three samplers lose the prompt's digit as the steps shrink. On "
        "the power grid DDIM and DPM-Solver++ keep far more of it at 5 and 10 calls, and DDPM at 10; at 5 calls "
        "DDPM's fresh noise is more than its few steps can take out again, on either grid. Where the steps sit "
        "matters as much on `mini` as how each step is taken. The power 0.5 was chosen on the notebooks' seed "
        "100; this page's seed is another, so its rows test that choice rather than repeat it. Seconds follow "
        "the NFE: the UNet is the whole cost of a step."]),
    "1.7": ("SDEdit: how much of the input survives?", "A1.7_image_to_image.ipynb", None, [
        "Held-out renders are noised to each of the notebook's start indices (the profile's `i_starts`) and "
        "denoised with CFG towards “a high quality picture”. Per start index: the RMS distance between edit "
        "and input (pixel values in [0, 1]) and the share of edits in which the judge still reads the input's "
        "digit.",
        "A small start index means a high t, much noise and free edits; a large one keeps the structure. So "
        "the higher the start index, the more of the input should survive: the distance falls and the share "
        "kept rises down the table. At the smallest indices an edit is a new image, and it keeps the digit "
        "about as often as a random digit matches (one in ten). The notebook judges only a few renders, to run "
        "in under a minute on two CPU cores, so its own shares jump about; these are the ones to read."]),
    "1.7.2": ("Inpainting", "A1.7_image_to_image.ipynb", "mask", [
        "Held-out renders with their top half repainted, each prompted with its own digit and style (RePaint as "
        "in the course: start from pure noise and, after every step, put the original, noised to that step, "
        "back outside the mask). Two questions: is every pixel outside the mask the original, to the bit (one "
        "answer for the whole batch: at the last step the kept pixels are the original itself), and does the "
        "completion make the same digit again (the share of results the judge reads as the input's digit)?"]),
    "1.7.3": ("Text-guided translation to a crayon drawing", "A1.7_image_to_image.ipynb", "input", [
        "SDEdit from each start index, now towards “a high quality crayon drawing”, on held-out photos and "
        "pencil sketches of known digits. A successful edit is read as a crayon drawing (read as crayon) of the "
        "input's digit (digit kept); both right is the share that is both.",
        "What SDEdit can change depends on where the change lives. The forward process adds white noise, the "
        "same amount at every spatial frequency, while an image's energy sits mostly in its low frequencies; "
        "so at a given t the coarse layout of the input survives and the fine detail is drawn anew. In this "
        "world a photo's style is its coloured background, the coarsest thing in the picture, and a crayon "
        "drawing sits on pale paper: to change one into the other the background must go, and with it the "
        "digit. A pencil sketch is already on pale paper; it differs from a crayon drawing in its strokes, "
        "which SDEdit redraws while keeping where they are.",
        "So expect the edit to fail on photos: the style changes only where the digit is lost (crayon at the "
        "small start indices, the photo nearly unchanged at the large ones), and both right stays near what "
        "chance gives, a new random digit matching the old one about once in ten. On pencil sketches it should "
        "work from the last start indices: crayon drawings of the sketched digit."]),
    "1.8": ("Visual anagrams (flip illusions)", "A1.8_visual_anagrams.ipynb", "upright prompt / rotated prompt", [
        "One image that shows the first prompt upright and the second when rotated by 180°: at every step the "
        "UNet sees the image both ways, each view with its own prompt and CFG, and the two noise estimates are "
        "averaged (the rotated one turned back). An illusion is a success when the judge reads the upright "
        "image as the first prompt's digit and the rotated one as the second's; upright right and rotated "
        "right count each view alone.",
        "The baseline is the same test on plain CFG samples of the first prompt, from the same seed, turned "
        "round: an illusion has to beat what a plain sample passes by chance. The pairs' digits are chosen so "
        "that a rotated digit is not the other one (a 6 turned is a 9: that pair would pass without any "
        "trick).",
        "How the pairs were chosen: `benchmarks/illusion_pairs.py` tries every ordered pair of digits in a "
        "style and ranks them by success minus baseline, on seeds these figures do not use (its default is "
        "`--seed 1000`; this page uses the `--seed` named above, the notebooks seed 100), so the figures here "
        "are not the ones a pair was picked on. Most pairs stay far below the few that were kept.",
        "The photo 3 / photo 5 pair fails, and stays so that you can see how: expect it to do no better than "
        "its baseline, and to fail on the upright view, where the 5's strokes win over the 3's. Where one view "
        "wins, the other fails."]),
    "1.9": ("Hybrid images (factorized diffusion)", "A1.9_hybrids.ipynb", "far prompt / near prompt", [
        "A hybrid looks like one prompt from far away and another up close: at every step the low frequencies "
        "(a Gaussian blur, σ from the profile) of the first prompt's CFG estimate are added to the high "
        "frequencies of the second's. The far view is the image 4× smaller, blown up again. A success is a far "
        "view read as the far (low-frequency) prompt's digit and the full image read as the near "
        "(high-frequency) prompt's; far view right and near view right count each alone.",
        "The baseline reads plain CFG samples of the near prompt, from the same seed, the same way. They pass "
        "only where a sketch seen from far happens to look like the far digit, so the baseline is not zero: "
        "a thin 4 blurred to a smudge can read as a 1.",
        "How the pairs were chosen: screened like the anagram pairs with `benchmarks/illusion_pairs.py` on "
        "other seeds. A 1 is the digit that works best far away, most likely because it is one vertical bar: "
        "its low frequencies are a soft vertical smear on which the strokes of another digit can sit. A 0 far "
        "away needs a ring that a 4 cannot hide: the crayon 0 / pencil 4 pair fails nearly always, and stays so "
        "that you can see a failure. At 32 × 32 pixels a blur of σ = 2 leaves little room between “low” and "
        "“high”; other blurs (σ from 1 to 3) did no better for 1 / 7."]),
}

INTRO = ("Part A's methods measured on the pack's small `mini` model (the `quick` profile), each result read by "
         "the world judge (`diffnb.mini.judge`), a classifier of the digit world's digits and styles. The "
         "notebooks run the same experiments on a few samples to show them; this page runs them on n samples "
         "each (the line above). Shares are of the samples in the n column, with ± one binomial standard error, "
         "√(p(1 − p) / n), in percentage points: another seed moves a share by about that much, sometimes twice "
         "as much. Where a share is none or all of the samples the formula gives zero, which says only that "
         "this run saw no exception. A larger `--n` shrinks the error with √n. The page is written by "
         "`python -m diffnb.evaluate` on every run; no figure on it is typed by hand.")


def standard_error(p: float, n: int) -> float:
    """The binomial standard error of a share ``p`` of ``n`` samples, in percentage points."""
    return 100 * math.sqrt(p * (1 - p) / n)


def _cell(key: str, value, n: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in RATES:
        return f"{value:.0%} ± {standard_error(value, n):.1f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def results_sections(figures: dict) -> list[dict]:
    """``figures`` (section -> rows, as ``main`` keeps them) as the page's sections, in ``SECTIONS`` order:
    ``id, title, notebook, text`` (paragraphs), ``columns`` (headings), ``rows`` (cells as text) and
    ``numeric`` (per column: right-aligned)."""
    out = []
    for sec in sorted(figures, key=lambda s: (SECTIONS.index(s) if s in SECTIONS else len(SECTIONS), s)):
        rows = figures[sec]
        title, notebook, label, text = SECTION_TEXT.get(sec, (sec, None, "measured", []))
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("label", "n")))
        labelled = any("label" in r for r in rows)
        columns = ([label or "measured"] if labelled else []) + [HEADINGS.get(k, k) for k in keys] + ["n"]
        cells = [([str(r.get("label", ""))] if labelled else []) + [_cell(k, r.get(k), r["n"]) for k in keys]
                 + [str(r["n"])] for r in rows]
        out.append(dict(id=sec, title=title, notebook=notebook, text=text, columns=columns, rows=cells,
                        numeric=[not labelled] + [True] * (len(columns) - 1)))
    return out


def _made(meta: dict) -> str:
    """The line saying how the page was made (Markdown inline code in backticks)."""
    model = (f" with the `mini` model whose weights hash to `{meta['model_sha256'][:16]}`"
             if meta.get("model_sha256") else "")
    return (f"Made by `{meta['command']}` on {meta.get('date') or time.strftime('%Y-%m-%d %H:%M')}{model}: "
            f"n = {meta['n']} samples per experiment, seed {meta['seed']}, device {meta['device']}, sections "
            f"{', '.join(meta['sections'])}; the judge reads clean held-out renders with digit accuracy "
            f"{meta['judge_digit']:.1%} and style accuracy {meta['judge_style']:.1%}; the run took "
            f"{meta['seconds']:.0f} s.")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _esc(text: str) -> str:
    """``text`` escaped for an HTML text node."""
    return html.escape(text, quote=False)


def _inline_html(text: str) -> str:
    """Escaped text with `backticks` as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


TITLE = "Part A, measured"

PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:62em;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} .lead{color:#444}
h2{font-size:1.2em;margin:1.6em 0 .2em;border-top:1px solid #ddd;padding-top:.8em}
.notebook{color:#555;margin:0 0 .6em;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;vertical-align:top} th{background:#f2f2f2;text-align:left}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
code{background:#f2f2f2;padding:0 .2em}
"""


def render_markdown(sections: list[dict], meta: dict) -> str:
    lines = [f"# {TITLE}", "", _made(meta), "", INTRO]
    for s in sections:
        lines += ["", f"## {s['id']} · {s['title']}", ""]
        if s["notebook"]:
            lines += [f"Notebook: `notebooks/{s['notebook']}`", ""]
        for paragraph in s["text"]:
            lines += [paragraph, ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in s["columns"]) + " |")
        lines.append("|" + "|".join("--:" if numeric else "---" for numeric in s["numeric"]) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s["rows"]]
    return "\n".join(lines) + "\n"


def _html_row(cells: list[str], numeric: list[bool]) -> str:
    return "<tr>" + "".join(f'<td class="num">{_esc(c)}</td>' if right else f"<td>{_esc(c)}</td>"
                            for c, right in zip(cells, numeric)) + "</tr>\n"


def render_html(sections: list[dict], meta: dict, folder: Path | None = None, shipped: bool = False) -> str:
    body = [f"<h1>{_esc(TITLE)}</h1>", f'<p class="lead">{_inline_html(_made(meta))}</p>']
    if shipped:
        body.append('<p class="lead">These are the figures shipped with the pack (<code>data/results/</code>); '
                    "<code>python -m diffnb.evaluate --n 20</code> measures them again on this machine and "
                    "writes this page with its own.</p>")
    body.append(f"<p>{_inline_html(INTRO)}</p>")
    for s in sections:
        body.append(f'<section id="s{html.escape(s["id"])}"><h2>{_esc(s["id"])} · {_esc(s["title"])}</h2>')
        if s["notebook"]:
            name = _esc(f"notebooks/{s['notebook']}")
            stem = Path(s["notebook"]).stem       # the pack's page of the notebook, where there is one
            linked = (f'<a href="html/{html.escape(stem)}.html"><code>{name}</code></a>'
                      if folder is not None and (folder / "html" / f"{stem}.html").exists() else f"<code>{name}</code>")
            body.append(f'<p class="notebook">Notebook: {linked}</p>')
        body += [f"<p>{_inline_html(p)}</p>" for p in s["text"]]
        head = "".join(f"<th>{_esc(c)}</th>" for c in s["columns"])
        rows = "".join(_html_row(row, s["numeric"]) for row in s["rows"])
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table></section>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(TITLE)}</title>{SHIPPED_MARK if shipped else ''}<style>{PAGE_STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_results_page(figures: dict, meta: dict, folder: Path | str | None = None) -> tuple[Path, Path]:
    """Write ``results.md``, ``results.html`` and ``results.json`` (the rows and ``meta``, from which the
    other two are made again) into ``folder`` (default: the pack's ``build/pack/``, where
    ``python -m diffnb.pack``'s front page links to it) and return the paths of the first two.

    ``figures``: section -> rows (dicts with an optional ``label``, the sample count ``n`` and the figures;
    those named in ``RATES`` are shares); ``meta``: ``command, n, seed, device, sections, judge_digit,
    judge_style, seconds`` and optionally ``date`` and ``model_sha256`` (``diffnb.mini.model.weights_sha256``)."""
    from diffnb.core.paths import build_dir

    folder = Path(folder) if folder is not None else build_dir() / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_JSON).write_text(json.dumps({"meta": meta, "figures": figures}, indent=1, default=_fmt)
                                       + "\n", encoding="utf-8")
    sections = results_sections(figures)
    md, page = folder / "results.md", folder / "results.html"
    md.write_text(render_markdown(sections, meta), encoding="utf-8")
    page.write_text(render_html(sections, meta, folder, shipped=False), encoding="utf-8")
    return md, page


#: the figures and meta of a results page, beside it
RESULTS_JSON = "results.json"
#: the marker of a page made from the shipped figures (the pack re-makes only such a page, never one a run wrote)
SHIPPED_MARK = '<meta name="diffnb-results" content="shipped">'


def shipped_results_dir() -> Path:
    """``data/results``: the results page's figures as the pack ships them (``results.json``, and
    ``results.md`` to read on a code host), made by ``python -m diffnb.evaluate --n 20 --ship``."""
    from diffnb.core.paths import data_dir
    return data_dir() / "results"


def read_results(folder: Path | str | None = None) -> dict:
    """``{"meta", "figures"}`` of a results page's ``results.json`` (default: the shipped one)."""
    path = Path(folder or shipped_results_dir()) / RESULTS_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["meta"], data["figures"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FileNotFoundError(f"no readable results figures at {path} ({type(err).__name__}: {err}); make them "
                                "with `python -m diffnb.evaluate --n 20 --ship` (or restore data/results from the "
                                "repository)") from err
    return data


def write_shipped_page(folder: Path | str) -> Path | None:
    """The pack's copy of the results page: ``results.html`` and ``results.md`` in ``folder`` made from the
    shipped figures (``data/results``), unless ``folder`` holds a page that ``python -m diffnb.evaluate``
    wrote there (that one, this machine's run, is kept).  Returns the page written, or None."""
    folder = Path(folder)
    page = folder / "results.html"
    if page.exists() and SHIPPED_MARK not in page.read_text(encoding="utf-8", errors="replace"):
        return None
    data = read_results()
    sections = results_sections(data["figures"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(render_markdown(sections, data["meta"]), encoding="utf-8")
    page.write_text(render_html(sections, data["meta"], folder, shipped=True), encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    from diffnb.mini.judge import device_argument, int_at_least

    parser = argparse.ArgumentParser(prog="python -m diffnb.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int_at_least(2, "samples per experiment"), default=20,
                        help="samples per experiment (illusions, hybrids, edits), at least 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=device_argument, default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--sections", type=_sections_argument, default=",".join(SECTIONS),
                        help=f"comma-separated, out of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--out", type=_out_argument, default=None, help="also write the figures as JSON here")
    parser.add_argument("--page-dir", type=_page_dir_argument, default=None,
                        help="folder for the results page, results.md and results.html (default: build/pack/)")
    parser.add_argument("--ship", action="store_true",
                        help="maintainers: also store the figures as the pack's shipped copy in data/results/ "
                             "(the whole page: every section, the shipped mini model)")
    args = parser.parse_args(argv)
    if args.ship and set(args.sections) != set(SECTIONS):
        parser.error("--ship stores the whole page: leave out --sections")
    command = shlex.join(["python", "-m", "diffnb.evaluate", *(sys.argv[1:] if argv is None else argv)])
    begun = time.time()

    # the arguments are checked: now the heavy imports (diffusers)
    from diffnb.part_a import setup_part_a
    from diffnb.mini.judge import get_world_judge

    pa = setup_part_a("quick", "mini", args.device, 100)
    judge = get_world_judge(device="cpu")
    print(f"judge on clean held-out renders: digit {judge.digit_accuracy:.4f}, style {judge.style_accuracy:.4f}")
    ts, scale, n, seed = pa.timesteps(), pa.scale, args.n, args.seed
    sections = args.sections
    like = _model_like(pa.stage1)
    figures: dict = {}          # name -> figures, as printed and written to --out
    page: dict = {}             # section -> rows, for the results page
    started = time.time()

    def report(name, value, section, samples, label=None):
        figures[name] = value
        print(f"{name}: {json.dumps(value, default=_fmt)}", flush=True)
        rows = value if isinstance(value, list) else [value]
        page.setdefault(section, []).extend(({} if label is None else {"label": label}) | {"n": samples} | r
                                            for r in rows)

    if "1.4" in sections:
        x0, _, _ = world_images(n, seed=EVAL_SEED + seed, like=like)
        rows = reconstruction(pa.stage1, pa.embed, x0, [5, 10, 15, 20], ts, seed)
        report("1.4 reconstruction MSE", [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                                          for r in rows], "1.4", n)
    for sec, gamma in (("1.5", 1.0), ("1.6", scale)):
        if sec in sections:
            per = max(2, n // 10)
            r = adherence(pa.stage1, pa.embed, judge, gamma, ts, seed, per_prompt=per)
            report(f"{sec} adherence (gamma={gamma:g}, {len(r['prompts'])} samples)",
                   {k: round(r[k], 3) for k in ("digit", "style", "both", "diversity")}, sec, len(r["prompts"]),
                   f"γ = {gamma:g}")
    if "1.6a" in sections:
        rows = fewer_steps_table(pa.stage1, pa.embed, judge, scale, seed, max(2, n // 10))
        per = len(world.STYLES) * 10 * max(2, n // 10)
        report("1.6a fewer steps", [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items() if k != "label"}
                                    | {"label": r["label"]} for r in rows], "1.6a", per)
    if "1.7" in sections:
        x0, d, _ = world_images(n, seed=EVAL_SEED + seed + 1, like=like)
        rows = sdedit_curve(pa.stage1, pa.embed, judge, x0, d, pa.settings["i_starts"], ts, scale, seed)
        report("1.7 SDEdit per start index", [dict(i_start=r["i_start"], t=r["t"], distance=round(r["distance"], 3),
                                                  digit_kept=round(r["digit_kept"], 3)) for r in rows], "1.7", n)
    if "1.7.2" in sections:
        x0, d, s = world_images(n, seed=EVAL_SEED + seed + 2, like=like)
        from diffnb.a.images import rectangle_mask
        size = x0.shape[-1]
        mask = rectangle_mask(size, 0, 0, size // 2, size).to(x0)
        r = inpaint_score(pa.stage1, pa.embed, judge, x0, d, s, mask, ts, scale, seed)
        report("1.7.2 inpainting (top half)", dict(unmasked_exact=r["unmasked_exact"], digit_kept=round(r["digit_kept"], 3)),
               "1.7.2", n, "top half")
    if "1.7.3" in sections:     # from photos (the style is in the background) and from pencil sketches
        for k, source in enumerate(("photo", "pencil sketch")):
            x0, d, _ = world_images(n, seed=EVAL_SEED + seed + 3 + 10 * k, styles=source, like=like)
            rows = sdedit_curve(pa.stage1, pa.embed, judge, x0, d, pa.settings["i_starts"], ts, scale, seed,
                                pa.settings["prompts"]["crayon"])
            report(f"1.7.3 {source} -> crayon per start index",
                   [dict(i_start=r["i_start"], crayon=round(r["style"], 3), digit_kept=round(r["digit_kept"], 3),
                         both=round(r["both"], 3)) for r in rows], "1.7.3", n, source)
    if "1.8" in sections:
        for p1, p2 in pa.settings["prompts"]["pairs"]:
            r = anagram_score(pa.stage1, pa.embed, judge, p1, p2, n, ts, scale, seed)
            report(f"1.8 anagram {p1!r} / {p2!r}", {k: round(r[k], 3) for k in ("success", "upright", "rotated", "baseline")},
                   "1.8", n, f"{p1} / {p2}")
    if "1.9" in sections:
        for lo, hi in pa.settings["prompts"]["hybrid_pairs"]:
            r = hybrid_score(pa.stage1, pa.embed, judge, lo, hi, n, ts, scale, seed,
                             sigma=pa.settings["hybrid_sigma"])
            report(f"1.9 hybrid {lo!r} / {hi!r}", {k: round(r[k], 3) for k in ("success", "far", "near", "baseline")},
                   "1.9", n, f"{lo} / {hi}")
    print(f"done in {time.time() - started:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1, default=_fmt)
    from diffnb.mini.model import weights_sha256
    meta = dict(command=command, n=n, seed=seed, device=str(pa.device), sections=[s for s in SECTIONS if s in sections],
                judge_digit=judge.digit_accuracy, judge_style=judge.style_accuracy, seconds=time.time() - begun,
                date=time.strftime("%Y-%m-%d %H:%M"), model_sha256=weights_sha256())
    md, html_page = write_results_page(page, meta, args.page_dir)
    print(f"results page: {md} and {html_page}", flush=True)
    if args.ship:
        folder = shipped_results_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULTS_JSON).write_text((Path(md).parent / RESULTS_JSON).read_text(encoding="utf-8"), encoding="utf-8")
        (folder / "results.md").write_text(md.read_text(encoding="utf-8"), encoding="utf-8")
        print(f"shipped copy: {folder / RESULTS_JSON} and {folder / 'results.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
