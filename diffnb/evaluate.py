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

The notebooks call them with a few samples (their checked cells print the rounded results);
``python -m diffnb.evaluate`` runs them with many. Images are ``(N, 3, H, W)`` in [-1, 1] as in
``diffnb.a.denoise``; every run takes an explicit seed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

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
              digits: Sequence[int] = range(10), styles: Sequence[int] = range(len(world.STYLES))) -> dict:
    """Sample every prompt ``world.prompt(d, s)`` ``per_prompt`` times (one batch, one generator) with
    CFG ``scale`` (1 = plain conditional sampling, as in 1.5) and read the samples.

    Returns the shares read with the right ``digit``, the right ``style`` and ``both``, and
    ``diversity``: the mean RMS distance between two samples of the same prompt (needs
    ``per_prompt >= 2``; ``nan`` otherwise), with ``samples`` (N, 3, H, W) and the prompts.
    """
    from diffnb.a import denoise as ddpm

    pairs = [(d, s) for d in digits for s in styles for _ in range(per_prompt)]
    prompts = [world.prompt(d, s) for d, s in pairs]
    cond = embed_all(embed, prompts)
    g = torch.Generator().manual_seed(seed)
    x = ddpm.sample_cfg(stage1, cond, embed(""), timesteps, scale, g, num_images=len(prompts))
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

def anagram_score(stage1, embed, judge, p1: str, p2: str, n: int, timesteps: Sequence[int], scale: float,
                  seed: int) -> dict:
    """``n`` flip illusions (one seeded batch): ``success`` = upright read as p1's digit AND rotated
    read as p2's. ``baseline``: the same reading of ``n`` plain CFG samples of p1, rotated."""
    from diffnb.a import denoise as ddpm, views as guidance

    (d1, _), (d2, _) = world.parse_prompt(p1), world.parse_prompt(p2)
    if d1 is None or d2 is None:
        raise ValueError(f"anagram prompts must name digits to be judged, got {p1!r} and {p2!r}")
    flip = guidance.FlipView()
    ill = guidance.make_flip_illusion(stage1, embed(p1), embed(p2), embed(""), timesteps, scale,
                                      torch.Generator().manual_seed(seed), num_images=n)
    base = ddpm.sample_cfg(stage1, embed(p1), embed(""), timesteps, scale,
                           torch.Generator().manual_seed(seed), num_images=n)

    def both(x):
        up = judge.predict(unit(x)).digit
        down = judge.predict(unit(flip.view(x))).digit
        return (up == d1) & (down == d2), (up == d1), (down == d2)

    ok, up_ok, down_ok = both(ill)
    base_ok, _, _ = both(base)
    return dict(success=float(ok.float().mean()), upright=float(up_ok.float().mean()),
                rotated=float(down_ok.float().mean()), baseline=float(base_ok.float().mean()),
                illusions=ill, ok=ok)


def score_hybrid(judge, images: torch.Tensor, d_low, d_high) -> dict:
    """Read hybrids: ``far`` = the share whose far view (``far_view``) reads as ``d_low``, ``near`` = the
    share whose full image reads as ``d_high``, ``success`` = both, with the per-image ``ok``."""
    far = judge.predict(unit(far_view(images))).digit
    near = judge.predict(unit(images)).digit
    ok = (far == d_low) & (near == d_high)
    return dict(success=float(ok.float().mean()), far=float((far == d_low).float().mean()),
                near=float((near == d_high).float().mean()), ok=ok)


def hybrid_score(stage1, embed, judge, p_low: str, p_high: str, n: int, timesteps: Sequence[int], scale: float,
                 seed: int, kernel_size: int = 33, sigma: float = 2.0) -> dict:
    """``n`` hybrids (one seeded batch) read by ``score_hybrid``: ``success`` = far view read as p_low's
    digit and full image as p_high's. ``baseline``: the same reading of ``n`` plain CFG samples of
    p_high (same seed), which pass only where a blurred p_high happens to read as p_low's digit."""
    from diffnb.a import denoise as ddpm, views as guidance

    (d_lo, _), (d_hi, _) = world.parse_prompt(p_low), world.parse_prompt(p_high)
    if d_lo is None or d_hi is None:
        raise ValueError(f"hybrid prompts must name digits to be judged, got {p_low!r} and {p_high!r}")
    hyb = guidance.make_hybrids(stage1, embed(p_low), embed(p_high), embed(""), timesteps, scale,
                                torch.Generator().manual_seed(seed), kernel_size=kernel_size, sigma=sigma, num_images=n)
    base = ddpm.sample_cfg(stage1, embed(p_high), embed(""), timesteps, scale,
                           torch.Generator().manual_seed(seed), num_images=n)
    return dict(score_hybrid(judge, hyb, d_lo, d_hi), baseline=score_hybrid(judge, base, d_lo, d_hi)["success"],
                hybrids=hyb)


# --------------------------------------------------------------------------- command line

def _fmt(x) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


#: the sections ``main`` computes (``--sections``), in the notebooks' order
SECTIONS = ("1.4", "1.5", "1.6", "1.7", "1.7.2", "1.7.3", "1.8", "1.9")


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
    args = parser.parse_args(argv)

    # the arguments are checked: now the heavy imports (diffusers)
    from diffnb.part_a import setup_part_a
    from diffnb.mini.judge import get_world_judge

    pa = setup_part_a("quick", "mini", args.device, 100)
    judge = get_world_judge(device="cpu")
    print(f"judge on clean held-out renders: digit {judge.digit_accuracy:.4f}, style {judge.style_accuracy:.4f}")
    ts, scale, n, seed = pa.timesteps(), pa.scale, args.n, args.seed
    sections = args.sections
    like = _model_like(pa.stage1)
    figures: dict = {}
    started = time.time()

    def report(name, value):
        figures[name] = value
        print(f"{name}: {json.dumps(value, default=_fmt)}", flush=True)

    if "1.4" in sections:
        x0, _, _ = world_images(n, seed=EVAL_SEED + seed, like=like)
        rows = reconstruction(pa.stage1, pa.embed, x0, [5, 10, 15, 20], ts, seed)
        report("1.4 reconstruction MSE", [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                                          for r in rows])
    for sec, gamma in (("1.5", 1.0), ("1.6", scale)):
        if sec in sections:
            per = max(2, n // 10)
            r = adherence(pa.stage1, pa.embed, judge, gamma, ts, seed, per_prompt=per)
            report(f"{sec} adherence (gamma={gamma:g}, {len(r['prompts'])} samples)",
                   {k: round(r[k], 3) for k in ("digit", "style", "both", "diversity")})
    if "1.7" in sections:
        x0, d, _ = world_images(n, seed=EVAL_SEED + seed + 1, like=like)
        rows = sdedit_curve(pa.stage1, pa.embed, judge, x0, d, pa.settings["i_starts"], ts, scale, seed)
        report("1.7 SDEdit per start index", [dict(i_start=r["i_start"], t=r["t"], distance=round(r["distance"], 3),
                                                  digit_kept=round(r["digit_kept"], 3)) for r in rows])
    if "1.7.2" in sections:
        x0, d, s = world_images(n, seed=EVAL_SEED + seed + 2, like=like)
        from diffnb.a.images import rectangle_mask
        size = x0.shape[-1]
        mask = rectangle_mask(size, 0, 0, size // 2, size).to(x0)
        r = inpaint_score(pa.stage1, pa.embed, judge, x0, d, s, mask, ts, scale, seed)
        report("1.7.2 inpainting (top half)", dict(unmasked_exact=r["unmasked_exact"], digit_kept=round(r["digit_kept"], 3)))
    if "1.7.3" in sections:     # from photos (the style is in the background) and from pencil sketches
        for k, source in enumerate(("photo", "pencil sketch")):
            x0, d, _ = world_images(n, seed=EVAL_SEED + seed + 3 + 10 * k, styles=source, like=like)
            rows = sdedit_curve(pa.stage1, pa.embed, judge, x0, d, pa.settings["i_starts"], ts, scale, seed,
                                pa.settings["prompts"]["crayon"])
            report(f"1.7.3 {source} -> crayon per start index",
                   [dict(i_start=r["i_start"], crayon=round(r["style"], 3), digit_kept=round(r["digit_kept"], 3),
                         both=round(r["both"], 3)) for r in rows])
    if "1.8" in sections:
        for p1, p2 in pa.settings["prompts"]["pairs"]:
            r = anagram_score(pa.stage1, pa.embed, judge, p1, p2, n, ts, scale, seed)
            report(f"1.8 anagram {p1!r} / {p2!r}", {k: round(r[k], 3) for k in ("success", "upright", "rotated", "baseline")})
    if "1.9" in sections:
        for lo, hi in pa.settings["prompts"]["hybrid_pairs"]:
            r = hybrid_score(pa.stage1, pa.embed, judge, lo, hi, n, ts, scale, seed,
                             sigma=pa.settings["hybrid_sigma"])
            report(f"1.9 hybrid {lo!r} / {hi!r}", {k: round(r[k], 3) for k in ("success", "far", "near", "baseline")})
    print(f"done in {time.time() - started:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1, default=_fmt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
