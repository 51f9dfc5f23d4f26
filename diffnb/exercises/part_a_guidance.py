"""Part A's guidance exercises (sections 1.6-1.9): classifier-free guidance, SDEdit, the inpainting projection,
the flip illusion's and the hybrid's noise estimates, checked on the pack's offline `mini` model.

Each ``_run_<name>(fn, hidden)`` calls the learner's ``fn`` beside diffnb's reference on a few inputs (short
timestep lists, batches of 1 to 4, several scales γ and seeds; more when ``hidden``) and raises ``Mismatch`` at
the first wrong one.  A hint recognises a common mistake by computing what that mistake gives on the same
inputs (the same generator seeds) and comparing; the mistakes are computed only for a wrong answer.
The references are the course's functions in ``diffnb.a.denoise`` and ``diffnb.a.views``; where an exercise
asks for one piece of them (a projection, one step's estimate), the reference below is that piece.
"""
from __future__ import annotations

import functools

import torch
import torchvision.transforms.functional as TF

from diffnb.exercises import fixtures
from diffnb.exercises.core import Exercise, Mismatch, Probe, expect_tensor
from diffnb.exercises.core import fit_weights, near
from diffnb.exercises.part_a import noising_hints

#: prompts of mini's world (diffnb.mini.world); the checks' cases draw on them
P7, P4, P0, P2 = ("a photo of the digit 7", "a pencil sketch of the digit 4", "a crayon drawing of the digit 0",
                  "a photo of the digit 2")
PAIRS = [("a pencil sketch of the digit 4", "a pencil sketch of the digit 7"),       # A1.8's anagram pairs
         ("a photo of the digit 7", "a photo of the digit 2"),
         ("a photo of the digit 3", "a photo of the digit 5")]
HYBRID_PAIRS = [("a photo of the digit 1", "a pencil sketch of the digit 4"),        # A1.9's (low, high) pairs
                ("a photo of the digit 1", "a pencil sketch of the digit 7"),
                ("a crayon drawing of the digit 0", "a pencil sketch of the digit 4")]
LOOP_TOL = 2e-3       # a mistake's result "matches" a loop's output within this (float32 over a few steps)
ESTIMATE_TOL = 1e-3   # ... one step's estimate


def _ddpm():
    from diffnb.a import denoise
    return denoise


def _views():
    from diffnb.a import views
    return views


def _like(out, alt: torch.Tensor, tol: float) -> bool:
    """``out`` is a tensor of ``alt``'s shape within ``tol`` of it everywhere."""
    return (isinstance(out, torch.Tensor) and tuple(out.shape) == tuple(alt.shape)
            and float((out.detach().to(alt.dtype) - alt).abs().max()) <= tol)


def _mistake(make, message: str, tol: float):
    """A hint: ``message`` when the learner's output is within ``tol`` of ``make()``, what a mistake gives
    (computed once, when first asked for)."""
    alt = functools.cache(make)

    def hint(out):
        return message if _like(out, alt(), tol) else None
    return hint


@torch.no_grad()
def _cfg(s, x: torch.Tensor, t: int, cond: torch.Tensor, uncond: torch.Tensor, scale: float):
    """One CFG estimate as diffnb computes it (one UNet batch): ``(eps, variance_c, variance_u)``, the variances of
    the conditional and the unconditional pass."""
    (eps_u, var_u), (eps_c, var_c) = _ddpm().run_unet(s, [x, x], [uncond, cond], t)
    return eps_u + scale * (eps_c - eps_u), var_c, var_u


def _flip(x: torch.Tensor, dims=(-2, -1)) -> torch.Tensor:
    return torch.flip(x, dims=dims)


def _expect_pair(out, where: str, what: str):
    """The learner's ``(eps, variance)``: a tuple of two, or a Mismatch saying what came back."""
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out
    got = (f"a tuple of {len(out)}" if isinstance(out, (tuple, list)) else
           "None" if out is None else f"a {type(out).__name__}")
    raise Mismatch(f"at {where}: your {what} returned {got}; return the pair (eps, variance), both (N, C, H, W)"
                   f"{' (did you forget the return statement?)' if out is None else ''}")


# --------------------------------------------------------------------------- A1.6 cfg_combine

def _ref_cfg_combine():
    return _ddpm().cfg_combine


def _combination(a: float, b: float) -> str:
    """``a·ε_u + b·ε_c`` written out, e.g. "-6·ε_u + 7·ε_c" (weights below 5e-4 read 0)."""
    a, b = (0.0 if abs(v) < 5e-4 else v for v in (a, b))
    return f"{a:.3g}·ε_u {'−' if b < 0 else '+'} {abs(b):.3g}·ε_c"


def cfg_hints(eps_u: torch.Tensor, eps_c: torch.Tensor, scale: float, what: str = "estimate"):
    """Diagnose a wrong ``eps_u + γ (eps_c − eps_u)`` from the weights ``a eps_u + b eps_c`` it used."""
    want_a, want_b = 1 - scale, scale

    def hint(out):
        a, b, resid = fit_weights(out.detach(), eps_u, eps_c)
        if resid > 1e-3:
            return None
        weights = (f"your {what} is {_combination(a, b)} at γ = {scale:g}; expected {_combination(want_a, want_b)}")
        if near(a, scale) and near(b, 1 - scale):
            return (f"{weights}: the two estimates are swapped (your {what} equals ε_c + γ(ε_u − ε_c)); "
                    "the guidance starts from the unconditional ε_u and goes towards ε_c")
        if near(a, 1) and near(b, scale):
            return (f"{weights}: you applied γ to ε_c alone (ε_u + γ·ε_c); γ multiplies the difference, "
                    "ε_u + γ(ε_c − ε_u)")
        if near(a, 1 + scale) and near(b, -scale):
            return (f"{weights}: the sign of the guidance is flipped (ε_u − γ(ε_c − ε_u)), which steers away from "
                    "the prompt; use ε_u + γ(ε_c − ε_u)")
        if near(a, scale - 1) and near(b, scale):
            return (f"{weights}: the weight of ε_u has the wrong sign: (γ − 1) instead of (1 − γ), since "
                    "ε_u + γ(ε_c − ε_u) = (1 − γ)·ε_u + γ·ε_c")
        if near(a, 0) and near(b, 1):
            return f"{weights}: your {what} is ε_c alone, without guidance; combine it with ε_u and γ"
        if near(a, 1) and near(b, 0):
            return f"{weights}: your {what} is ε_u alone, the unconditional estimate; guide it towards ε_c with γ"
        if scale != 7 and near(a, -6) and near(b, 7):
            return f"{weights}: you used γ = 7 whatever the scale; use the scale argument"
        return f"{weights} (ε_u + γ(ε_c − ε_u))"
    return hint


@torch.no_grad()
def _run_cfg_combine(fn, hidden: bool) -> int:
    ref = _ref_cfg_combine()
    cases = [(7.0, 1, 0), (3.0, 2, 1), (0.5, 1, 2)]                     # (γ, batch, seed)
    if hidden:
        cases += [(-2.0, 3, 3), (12.0, 4, 4), (1.0, 1, 5), (0.0, 2, 6), (7.5, 2, 7)]
    probe = Probe(fn, "cfg_combine", [ref])
    for scale, n, seed in cases:
        where = f"γ = {scale:g}, a batch of {n}"
        g = fixtures.generator(seed)
        eps_u = torch.randn(n, 3, 32, 32, generator=g)
        eps_c = eps_u + 0.3 * torch.randn(n, 3, 32, 32, generator=g)    # the two estimates are close, as the UNet's
        out = probe.call(where, eps_u, eps_c, scale)
        expect_tensor(out, ref(eps_u, eps_c, scale), "estimate", where, atol=1e-5, rtol=1e-5,   # the hints name
                      hints=[cfg_hints(eps_u, eps_c, scale)])                                 # an input returned
    return len(cases)


# --------------------------------------------------------------------------- A1.6 iterative_denoise_cfg

def _ref_iterative_denoise_cfg():
    return _ddpm().iterative_denoise_cfg


def _forbidden_loop():
    ddpm = _ddpm()
    return [ddpm.iterative_denoise_cfg, ddpm.sample_cfg, ddpm.denoise_loop, ddpm.cfg_estimator, ddpm.sdedit, ddpm.inpaint]


@torch.no_grad()
def cfg_loop(x, timesteps, steps, s, cond, uncond, scale, generator, *, uncond_variance=False, unet_at_prev=False,
             swapped=False):
    """The CFG loop over the step indices ``steps`` (``range(i_start, len(timesteps) - 1)`` is diffnb's), and its
    common mistakes: the unconditional variance, the UNet asked at t' instead of t, the two estimates swapped."""
    ddpm = _ddpm()
    for i in steps:
        t, prev_t = timesteps[i], timesteps[i + 1]
        (eps_u, var_u), (eps_c, var_c) = ddpm.run_unet(s, [x, x], [uncond, cond], prev_t if unet_at_prev else t)
        if swapped:
            eps_u, eps_c = eps_c, eps_u
        eps = eps_u + scale * (eps_c - eps_u)
        x = ddpm.ddpm_step(x, eps, var_u if uncond_variance else var_c, t, prev_t, s, generator)
    return x


def _loop_hints(x, i_start, s, cond, uncond, ts, scale, seed):
    """What the CFG loop's common mistakes give on one case (same generator seed)."""
    last = len(ts) - 1

    def run(steps=None, scale_=scale, **kw):
        return lambda: cfg_loop(x, ts, range(i_start, last) if steps is None else steps, s, cond, uncond, scale_,
                                fixtures.generator(seed), **kw)
    hints = [
        _mistake(run(uncond_variance=True),
                 "your loop adds the noise with the unconditional branch's variance; the variance is the "
                 "conditional one (the second output of estimate_noise with cond_embeds)", LOOP_TOL),
        _mistake(run(swapped=True),
                 "your loop's CFG has the two estimates swapped (ε_c + γ(ε_u − ε_c)): pass them to cfg_combine in "
                 "its order, cfg_combine(eps_u, eps_c, scale)", LOOP_TOL),
    ]
    if scale != 7:
        hints.append(_mistake(run(scale_=7.0), f"your loop ignores scale: called with γ = {scale:g}, it gives CFG "
                              "with γ = 7; pass scale on to cfg_combine", LOOP_TOL))
    if scale != 1:
        hints.append(_mistake(run(scale_=1.0), f"your loop gives the plain conditional estimate ε_c (CFG with γ = 1), "
                              f"not CFG with γ = {scale:g}: combine ε_u and ε_c with cfg_combine(eps_u, eps_c, scale)",
                              LOOP_TOL))
    hints += [
        _mistake(run(range(i_start, last - 1)),
                 f"your loop stops one step early: it returns the image at t = {ts[-2]}, not at timesteps[-1] = "
                 f"{ts[-1]}; step i goes timesteps[i] → timesteps[i + 1] for i = i_start .. len(timesteps) − 2, "
                 "i.e. range(i_start, len(timesteps) - 1)", LOOP_TOL),
        _mistake(run(range(i_start + 1, last)),
                 f"your loop skips the first step: im_noisy is the image at timesteps[i_start] = {ts[i_start]}, so the "
                 f"first step goes {ts[i_start]} → {ts[i_start + 1]}; loop over range(i_start, len(timesteps) - 1)",
                 LOOP_TOL),
        _mistake(run(unet_at_prev=True),
                 "your loop asks the UNet at t' = timesteps[i + 1] instead of t = timesteps[i]: the estimate is of "
                 "the noise in x at the step's start, t", LOOP_TOL),
    ]
    if i_start > 0:
        hints.append(_mistake(run(range(0, last)),
                              f"your loop starts at index 0 (t = {ts[0]}), not at i_start = {i_start} (t = "
                              f"{ts[i_start]}): loop over range(i_start, len(timesteps) - 1)", LOOP_TOL))
    return hints


@torch.no_grad()
def _run_iterative_denoise_cfg(fn, hidden: bool) -> int:
    ddpm = _ddpm()
    ref = _ref_iterative_denoise_cfg()
    s = fixtures.stage1()
    u = fixtures.embed("")
    cases = [([990, 660, 330, 0], 0, 1, 7.0, P7, 0),                    # (timesteps, i_start, batch, γ, prompt, seed)
             ([690, 490, 290, 90, 0], 1, 2, 3.0, P4, 1),
             ([990, 660, 330, 0], 2, 1, 7.0, P0, 2)]                    # one step, to t = 0
    if hidden:
        cases += [([990, 960, 930, 900], 0, 2, -2.0, P2, 3),
                  ([990, 690, 390, 90, 0], 2, 3, 1.0, P7, 4),
                  ([600, 300, 0], 0, 1, 12.0, P4, 5),
                  ([990, 660, 330, 0], 1, 2, 0.0, P0, 6)]
    probe = Probe(fn, "iterative_denoise_cfg", _forbidden_loop())
    for ts, i_start, n, scale, prompt, seed in cases:
        where = f"timesteps {ts}, i_start = {i_start}, a batch of {n}, γ = {scale:g}"
        c = fixtures.embed(prompt)
        x = ddpm.forward(fixtures.clean_images(n, seed), ts[i_start], s, fixtures.generator(seed))
        expected = ref(x, i_start, s, c, u, ts, scale, fixtures.generator(seed + 100))
        out = probe.call(where, x, i_start, s, c, u, ts, scale, fixtures.generator(seed + 100))
        expect_tensor(out, expected, "result", where, inputs=[x], atol=1e-3, rtol=1e-3,
                      hints=_loop_hints(x, i_start, s, c, u, ts, scale, seed + 100))
    return len(cases)


# --------------------------------------------------------------------------- A1.7 sdedit

def _ref_sdedit():
    return _ddpm().sdedit


@torch.no_grad()
def sdedit_variant(im, i_starts, s, cond, uncond, ts, scale, seed, *, noise_t=None, start=None, noised=True,
                   noise_first=False):
    """SDEdit as diffnb computes it (``forward`` then ``iterative_denoise_cfg`` per start index, one generator), or
    one of its mistakes: noised to ``noise_t(i)``, denoised from ``start(i)``, not noised, all noise drawn first."""
    ddpm = _ddpm()
    g = fixtures.generator(seed)
    noise_t = noise_t or (lambda i: ts[i])
    start = start or (lambda i: i)

    def noisy(i):
        return ddpm.forward(im, noise_t(i), s, g) if noised else im
    drawn = [noisy(i) for i in i_starts] if noise_first else None
    return [ddpm.iterative_denoise_cfg(drawn[k] if noise_first else noisy(i), start(i), s, cond, uncond, ts, scale, g)
            for k, i in enumerate(i_starts)]


def _sdedit_hints(im, i_starts, s, cond, uncond, ts, scale, seed, k):
    """Hints for the ``k``-th edit: what each mistake gives there (the whole list is computed once)."""
    def variant(**kw):
        whole = functools.cache(lambda: sdedit_variant(im, i_starts, s, cond, uncond, ts, scale, seed, **kw))
        return lambda: whole()[k]
    i = i_starts[k]
    hints = [
        _mistake(variant(start=lambda i: 0),
                 f"you denoised from index 0 (t = {ts[0]}) an image noised to timesteps[{i}] = {ts[i]}: pass the "
                 f"start index i_start = {i} to the loop, so that it begins at the t you noised to", LOOP_TOL),
        _mistake(variant(noised=False),
                 f"you forgot to noise the image: SDEdit first takes im to t = timesteps[{i}] = {ts[i]} with "
                 "forward(im, timesteps[i_start], stage1, generator), then denoises it from there", LOOP_TOL),
    ]
    if i != ts[i]:
        hints.append(_mistake(variant(noise_t=lambda i: i),
                              f"you noised the image to t = {i} (the index) instead of t = timesteps[{i}] = {ts[i]}; "
                              "i_start indexes the list, forward takes the timestep", LOOP_TOL))
    for d, word in ((1, "the next entry"), (-1, "the entry before")):
        if 0 <= i + d < len(ts):
            hints.append(_mistake(variant(noise_t=lambda i, d=d: ts[i + d]),
                                  f"you noised the image to t = timesteps[{i + d}] = {ts[i + d]} ({word}), not "
                                  f"timesteps[{i}] = {ts[i]}: noise to timesteps[i_start], the t the loop starts from",
                                  LOOP_TOL))
    if len(i_starts) > 1:
        hints.append(_mistake(variant(noise_first=True),
                              "you drew the noise for every start index first and denoised after: with one generator, "
                              "noise one start index and denoise it before the next, so the draws come in diffnb's "
                              "order", LOOP_TOL))
    if scale != 7:
        hints.append(_mistake(lambda: sdedit_variant(im, i_starts, s, cond, uncond, ts, 7.0, seed)[k],
                              f"your edits ran with γ = 7, not the scale {scale:g} they were given: pass scale on to "
                              "iterative_denoise_cfg", LOOP_TOL))
    return hints


@torch.no_grad()
def _run_sdedit(fn, hidden: bool) -> int:
    ref = _ref_sdedit()
    s = fixtures.stage1()
    u = fixtures.embed("")
    cases = [([990, 660, 330, 0], [1, 2], 1, 7.0, P7, 0),               # (timesteps, i_starts, batch, γ, prompt, seed)
             ([690, 490, 290, 90, 0], [2], 2, 3.0, P4, 1)]
    if hidden:
        cases += [([990, 660, 330, 0], [0, 2], 2, 7.0, P0, 2),
                  ([990, 960, 930, 900, 870], [3, 1], 1, -1.0, P2, 3),
                  ([600, 300, 0], [1], 3, 12.0, P7, 4)]
    probe = Probe(fn, "sdedit", [ref])
    for ts, i_starts, n, scale, prompt, seed in cases:
        where = f"timesteps {ts}, i_starts {i_starts}, a batch of {n}, γ = {scale:g}"
        c = fixtures.embed(prompt)
        im = fixtures.clean_images(n, seed)
        expected = ref(im, i_starts, s, c, u, ts, scale, fixtures.generator(seed + 100))
        out = probe.call(where, im, i_starts, s, c, u, ts, scale, fixtures.generator(seed + 100))
        if isinstance(out, torch.Tensor) or not isinstance(out, (list, tuple)):
            got = "None" if out is None else f"a {type(out).__name__}"
            raise Mismatch(f"at {where}: your sdedit returned {got}; return a list with one (N, C, H, W) edit per "
                           f"start index ({len(i_starts)} here)")
        if len(out) != len(i_starts):
            raise Mismatch(f"at {where}: your sdedit returned {len(out)} edits; expected one per start index, "
                           f"{len(i_starts)}")
        for k, (edit, want) in enumerate(zip(out, expected)):
            here = f"{where}, the edit from i_start = {i_starts[k]}"
            expect_tensor(edit, want, "edit", here, inputs=[im], atol=1e-3, rtol=1e-3,
                          hints=_sdedit_hints(im, i_starts, s, c, u, ts, scale, seed + 100, k))
    return len(cases)


# --------------------------------------------------------------------------- A1.7 inpaint_project

def reference_inpaint_project(x_prev, prev_t, original, mask, stage1, generator=None):
    """What ``diffnb.a.denoise.inpaint``'s inner ``project`` computes after a step to ``prev_t``, from the package's
    ``forward``: ``mask · x_prev + (1 − mask) · forward(original, prev_t)``, the original itself at ``prev_t`` = 0
    (``tests/test_exercises_part_a_guidance.py`` checks that ``inpaint`` equals the loop with this projection)."""
    known = original if prev_t == 0 else _ddpm().forward(original, prev_t, stage1, generator)  # q(x_t' | x_0)
    return mask * x_prev + (1 - mask) * known                 # x_t' <- m x_t' + (1 - m) forward(x_orig, t')


def _forbidden_project():
    return [reference_inpaint_project, _ddpm().inpaint]


def _masks(kind: str, n: int) -> torch.Tensor:
    """Masks (1 = edit) of 32 x 32 images: ``(1, 1, 32, 32)`` or, for "per image", ``(n, 1, 32, 32)``."""
    m = torch.zeros(1, 1, 32, 32)
    if kind == "top":
        m[..., :16, :] = 1
    elif kind == "left":
        m[..., :, :12] = 1
    elif kind == "centre":
        m[..., 10:22, 8:24] = 1
    else:                                                     # per image: a band that moves down
        m = torch.zeros(n, 1, 32, 32)
        for k in range(n):
            m[k, :, 6 * k:6 * k + 14, 4:28] = 1
    return m


def _project_hints(x_prev, prev_t, original, mask, s, seed, expected):
    ddpm = _ddpm()
    keep = (mask == 0).expand_as(original)
    edit = ~keep
    known = functools.cache(lambda: original if prev_t == 0 else ddpm.forward(original, prev_t, s,
                                                                              fixtures.generator(seed)))
    hints = [_mistake(lambda: (1 - mask) * x_prev + mask * known(),
                      "your mask is inverted: you kept the model's pixels where the mask is 0 and put the original "
                      "where it is 1; the mask is 1 where the model edits, so x ← m·x_prev + (1 − m)·forward(original, "
                      "t')", 1e-5)]
    if prev_t > 0:
        hints.append(_mistake(lambda: mask * x_prev + (1 - mask) * original,
                              f"outside the mask your result is the clean original at t' = {prev_t}; noise it to the "
                              "step's timestep first, forward(original, prev_t, stage1, generator) (only at t' = 0 is "
                              "it the original itself)", 1e-5))
    else:
        hints.append(_mistake(lambda: mask * x_prev + (1 - mask) * ddpm.forward(original, 0, s, fixtures.generator(seed)),
                              "at t' = 0 (the last step) the kept pixels must be the original itself, not "
                              "forward(original, 0), which still carries a little noise: return the original there",
                              1e-5))

    def masked(out):
        if not torch.allclose(out.detach()[edit], x_prev[edit], atol=1e-5):
            diff = (out.detach()[edit] - x_prev[edit]).abs()
            return (f"where the mask is 1 (edit) your result should be x_prev, the model's pixels, unchanged; it "
                    f"differs from x_prev there by up to {float(diff.max()):.3g}")
        return None
    hints.append(masked)
    if prev_t > 0:
        abars = s.scheduler.alphas_cumprod
        abar = float(abars[prev_t])
        eps = (expected - abar ** 0.5 * original) / (1 - abar) ** 0.5   # the reference's noise, recovered

        def wrong_t(out):
            a, b, resid = fit_weights(out.detach()[keep], original[keep], eps[keep])
            t_star = int((abars.sqrt() - a).abs().argmin())
            fits = resid < 1e-3 and abs(float(abars[t_star]) ** 0.5 - a) < 2e-3 and \
                near(b, (1 - float(abars[t_star])) ** 0.5, 0.01)
            if fits and t_star != prev_t:
                return (f"outside the mask your result is the original noised to t ≈ {t_star} (√ᾱ = {a:.3f}); expected "
                        f"t' = prev_t = {prev_t} (√ᾱ = {abar ** 0.5:.3f}): noise it to prev_t, the timestep the step "
                        "just reached")
            return None
        def other_noise(out):
            r = out.detach()[keep] - abar ** 0.5 * original[keep]           # the noise part, if x_0's weight is right
            corr = float(torch.corrcoef(torch.stack([r, eps[keep]]))[0, 1])
            if abs(float(r.std()) / (1 - abar) ** 0.5 - 1) < 0.1 and abs(float(r.mean())) < 0.1 and corr < 0.5:
                return (f"outside the mask your result has the right weights at t' = {prev_t} (x_0 by √ᾱ = "
                        f"{abar ** 0.5:.3f}, noise std {float(r.std()):.2f}) but other noise: pass the generator, "
                        "forward(original, prev_t, stage1, generator), so that the same generator gives the same draws")
            return None
        hints += [wrong_t, other_noise]
        unmasked = noising_hints(original[keep], expected[keep], abar, prev_t, what="result where the mask is 0")
        hints.append(lambda out: unmasked(out.detach()[keep]))
    return hints


@torch.no_grad()
def _run_inpaint_project(fn, hidden: bool) -> int:
    s = fixtures.stage1()
    cases = [(660, 1, "top", 0), (0, 2, "left", 1), (330, 2, "per image", 2)]   # (prev_t, batch, mask, seed)
    if hidden:
        cases += [(30, 1, "centre", 3), (1, 3, "per image", 4), (960, 2, "top", 5), (0, 1, "centre", 6),
                  (500, 4, "left", 7)]
    probe = Probe(fn, "inpaint_project", _forbidden_project())
    for prev_t, n, kind, seed in cases:
        where = f"t' = prev_t = {prev_t}, a batch of {n}, mask {kind!r}"
        original = fixtures.clean_images(n, seed)
        x_prev = 0.8 * torch.randn(original.shape, generator=fixtures.generator(seed + 50))
        mask = _masks(kind, n)
        expected = reference_inpaint_project(x_prev, prev_t, original, mask, s, fixtures.generator(seed + 100))
        out = probe.call(where, x_prev, prev_t, original, mask, s, fixtures.generator(seed + 100))
        expect_tensor(out, expected, "projected image", where, inputs=[x_prev, original], atol=1e-5, rtol=1e-5,
                      hints=_project_hints(x_prev, prev_t, original, mask, s, seed + 100, expected))
    return len(cases)


# --------------------------------------------------------------------------- A1.8 the flip illusion's estimate

def reference_anagram_estimate(stage1, x_t, t, prompt1, prompt2, uncond, scale):
    """diffnb's flip-illusion estimate at one step: ``anagram_estimator`` with (IdentityView, FlipView)."""
    views = _views()
    return views.anagram_estimator(stage1, [views.IdentityView(), views.FlipView()], [prompt1, prompt2], uncond,
                                   scale)(x_t, t)


def _forbidden_anagram():
    views = _views()
    return [views.anagram_estimator, views.make_anagram, views.make_flip_illusion, reference_anagram_estimate]


def _anagram_hints(s, x, t, p1, p2, u, scale):
    """Hints for the illusion's eps and variance: what each mistake gives on this x_t."""
    first = functools.cache(lambda: _cfg(s, x, t, p1, u, scale))                  # prompt 1 on x
    turned = functools.cache(lambda: _cfg(s, _flip(x), t, p2, u, scale))          # prompt 2 on flip(x), not turned back

    def other_flip(dims):
        return lambda: (first()[0] + _flip(_cfg(s, _flip(x, dims), t, p2, u, scale)[0], dims)) / 2
    eps_hints = [
        _mistake(lambda: (first()[0] + turned()[0]) / 2,
                 "the second estimate is not turned back: ε^cfg(flip(x_t), p2) describes the flipped image; flip it "
                 "back before averaging, (ε_1 + flip(ε_2)) / 2", ESTIMATE_TOL),
        _mistake(other_flip((-1,)),
                 "you flipped left-right (torch.flip over W only) instead of turning the image upside down: the "
                 "illusion's view is a 180° rotation, torch.flip(x, dims=(-2, -1))", ESTIMATE_TOL),
        _mistake(other_flip((-2,)),
                 "you flipped over H only (a mirror top to bottom) instead of a 180° rotation: flip both H and W, "
                 "torch.flip(x, dims=(-2, -1))", ESTIMATE_TOL),
        _mistake(lambda: first()[0] + _flip(turned()[0]),
                 "your estimate is the sum of the two views' estimates, twice too large: average them, "
                 "(ε_1 + flip(ε_2)) / 2", ESTIMATE_TOL),
        _mistake(lambda: (_cfg(s, x, t, p2, u, scale)[0] + _flip(_cfg(s, _flip(x), t, p1, u, scale)[0])) / 2,
                 "the prompts are swapped: prompt1 goes with the upright image x_t, prompt2 with flip(x_t)",
                 ESTIMATE_TOL),
        _mistake(lambda: first()[0],
                 "your estimate is the upright view's alone, ε^cfg(x_t, p1); average it with the turned view's",
                 ESTIMATE_TOL),
    ]
    if scale != 7:
        eps_hints.append(_mistake(lambda: (_cfg(s, x, t, p1, u, 7.0)[0]
                                           + _flip(_cfg(s, _flip(x), t, p2, u, 7.0)[0])) / 2,
                                  f"your estimate uses γ = 7, not the scale {scale:g} it was given", ESTIMATE_TOL))
    var_hints = [
        _mistake(lambda: first()[1],
                 "your variance is the upright view's alone; expected the mean of both views' conditional variances, "
                 "the turned one flipped back like its estimate", ESTIMATE_TOL),
        _mistake(lambda: (first()[1] + turned()[1]) / 2,
                 "your variance averages the turned view's variance without flipping it back; flip it like the "
                 "estimate", ESTIMATE_TOL),
        _mistake(lambda: (first()[2] + _flip(turned()[2])) / 2,
                 "your variance is the mean of the unconditional variances; use the conditional branches' (the "
                 "passes with prompt1 and prompt2)", ESTIMATE_TOL),
    ]
    return eps_hints, var_hints


@torch.no_grad()
def _run_make_flip_illusion(fn, hidden: bool) -> int:
    s = fixtures.stage1()
    u = fixtures.embed("")
    cases = [(990, 1, 0, 7.0, 0), (500, 2, 1, 3.0, 1), (30, 1, 2, 7.0, 2)]     # (t, batch, pair, γ, seed)
    if hidden:
        cases += [(690, 3, 0, 7.0, 3), (1, 2, 1, -2.0, 4), (250, 1, 2, 1.0, 5), (960, 2, 0, 12.0, 6)]
    probe = Probe(fn, "anagram_estimate", _forbidden_anagram())
    for t, n, pair, scale, seed in cases:
        p1, p2 = PAIRS[pair]
        where = f"t = {t}, a batch of {n}, prompts {p1!r} / {p2!r}, γ = {scale:g}"
        e1, e2 = fixtures.embed(p1), fixtures.embed(p2)
        x = _ddpm().forward(fixtures.clean_images(n, seed), t, s, fixtures.generator(seed))
        eps_ref, var_ref = reference_anagram_estimate(s, x, t, e1, e2, u, scale)
        eps, var = _expect_pair(probe.call(where, s, x, t, e1, e2, u, scale), where, "anagram_estimate")
        eps_hints, var_hints = _anagram_hints(s, x, t, e1, e2, u, scale)
        expect_tensor(eps, eps_ref, "eps", where, inputs=[x], atol=2e-4, rtol=1e-4, hints=eps_hints)
        expect_tensor(var, var_ref, "variance", where, inputs=[x], atol=2e-4, rtol=1e-4, hints=var_hints)
    return len(cases)


# --------------------------------------------------------------------------- A1.9 the hybrid's estimate

def reference_hybrid_estimate(stage1, x_t, t, prompt_low, prompt_high, uncond, scale, kernel_size=33, sigma=2.0):
    """diffnb's hybrid estimate at one step: ``hybrid_estimator``."""
    return _views().hybrid_estimator(stage1, prompt_low, prompt_high, uncond, scale, kernel_size, sigma)(x_t, t)


def _forbidden_hybrid():
    views = _views()
    from diffnb.a import decompositions
    return [views.hybrid_estimator, views.make_hybrids, decompositions.factorized_estimator,
            decompositions.make_factorized, reference_hybrid_estimate]


def _hybrid_hints(s, x, t, low, high, u, scale, kernel_size, sigma):
    lo = functools.cache(lambda: _cfg(s, x, t, low, u, scale))
    hi = functools.cache(lambda: _cfg(s, x, t, high, u, scale))

    def blur(e, k=kernel_size, sd=sigma):
        return TF.gaussian_blur(e, [k, k], [sd, sd])
    eps_hints = [
        _mistake(lambda: blur(hi()[0]) + lo()[0] - blur(lo()[0]),
                 "low and high are swapped: you took the low frequencies of prompt_high's estimate and the high ones "
                 "of prompt_low's; ε = f_low(ε_low) + f_high(ε_high), prompt_low is seen from far", ESTIMATE_TOL),
        _mistake(lambda: blur(lo()[0]) + hi()[0],
                 "you added prompt_high's estimate whole: its high frequencies are ε_high − blur(ε_high), "
                 "f_high(x) = x − f_low(x)", ESTIMATE_TOL),
        _mistake(lambda: blur(lo()[0]) + blur(hi()[0]),
                 "you blurred prompt_high's estimate too: the high-pass is x − blur(x), what the blur leaves out",
                 ESTIMATE_TOL),
        _mistake(lambda: blur(lo()[0]),
                 "your estimate is the low-pass piece only, f_low(ε_low); add the high-pass piece of prompt_high's, "
                 "ε_high − blur(ε_high)", ESTIMATE_TOL),
        _mistake(lambda: lo()[0],
                 "your estimate is prompt_low's CFG estimate alone (blur(ε_low) + (ε_low − blur(ε_low))): the "
                 "high-pass piece is of prompt_high's estimate", ESTIMATE_TOL),
    ]
    if (kernel_size, sigma) != (33, 2.0):
        eps_hints.append(_mistake(lambda: blur(lo()[0], 33, 2.0) + hi()[0] - blur(hi()[0], 33, 2.0),
                                  f"you blurred with the defaults (33 × 33, σ = 2), not kernel_size = {kernel_size}, "
                                  f"sigma = {sigma:g}: pass both to the blur", ESTIMATE_TOL))
    if scale != 7:
        eps_hints.append(_mistake(lambda: (lambda a, b: blur(a) + b - blur(b))(_cfg(s, x, t, low, u, 7.0)[0],
                                                                               _cfg(s, x, t, high, u, 7.0)[0]),
                                  f"your estimate uses γ = 7, not the scale {scale:g} it was given", ESTIMATE_TOL))
    var_hints = [
        _mistake(lambda: hi()[1], "your variance is prompt_high's; the hybrid uses prompt_low's conditional variance",
                 ESTIMATE_TOL),
        _mistake(lambda: (lo()[1] + hi()[1]) / 2,
                 "your variance is the mean of both prompts'; the hybrid uses prompt_low's conditional variance",
                 ESTIMATE_TOL),
        _mistake(lambda: lo()[2], "your variance is the unconditional pass's; the hybrid uses prompt_low's "
                 "conditional variance", ESTIMATE_TOL),
    ]
    return eps_hints, var_hints


@torch.no_grad()
def _run_make_hybrids(fn, hidden: bool) -> int:
    s = fixtures.stage1()
    u = fixtures.embed("")
    cases = [(990, 1, 0, 7.0, 33, 2.0, 0), (500, 2, 1, 3.0, 33, 2.0, 1), (60, 1, 2, 7.0, 9, 1.0, 2)]
    if hidden:                                                # (t, batch, pair, γ, kernel_size, σ, seed)
        cases += [(690, 3, 0, 7.0, 33, 3.0, 3), (1, 2, 1, -1.0, 15, 2.0, 4), (250, 4, 2, 1.0, 33, 2.0, 5),
                  (960, 1, 0, 12.0, 5, 0.5, 6)]
    probe = Probe(fn, "hybrid_estimate", _forbidden_hybrid())
    for t, n, pair, scale, k, sigma, seed in cases:
        p_low, p_high = HYBRID_PAIRS[pair]
        where = f"t = {t}, a batch of {n}, prompts {p_low!r} (low) / {p_high!r} (high), γ = {scale:g}, " \
                f"kernel_size = {k}, sigma = {sigma:g}"
        low, high = fixtures.embed(p_low), fixtures.embed(p_high)
        x = _ddpm().forward(fixtures.clean_images(n, seed), t, s, fixtures.generator(seed))
        eps_ref, var_ref = reference_hybrid_estimate(s, x, t, low, high, u, scale, k, sigma)
        eps, var = _expect_pair(probe.call(where, s, x, t, low, high, u, scale, k, sigma), where, "hybrid_estimate")
        eps_hints, var_hints = _hybrid_hints(s, x, t, low, high, u, scale, k, sigma)
        expect_tensor(eps, eps_ref, "eps", where, inputs=[x], atol=2e-4, rtol=1e-4, hints=eps_hints)
        expect_tensor(var, var_ref, "variance", where, inputs=[x], atol=2e-4, rtol=1e-4, hints=var_hints)
    return len(cases)


def _ref_anagram():
    return reference_anagram_estimate


def _ref_hybrid():
    return reference_hybrid_estimate


def _ref_project():
    return reference_inpaint_project


EXERCISES = [
    Exercise("cfg_combine", "A1.6_cfg", "cfg_combine", _ref_cfg_combine, _run_cfg_combine,
             lambda: [_ref_cfg_combine()], summary="ε = ε_u + γ(ε_c − ε_u)", points=1, seconds=30),
    Exercise("iterative_denoise_cfg", "A1.6_cfg", "iterative_denoise_cfg", _ref_iterative_denoise_cfg,
             _run_iterative_denoise_cfg,
             _forbidden_loop,
             summary="the CFG denoising loop over the strided timesteps", points=2, seconds=60),
    Exercise("sdedit", "A1.7_image_to_image", "sdedit", _ref_sdedit, _run_sdedit, lambda: [_ref_sdedit()],
             summary="SDEdit: noise to timesteps[i_start], denoise with CFG from there", points=1, seconds=60),
    Exercise("inpaint_project", "A1.7_image_to_image", "inpaint_project", _ref_project, _run_inpaint_project,
             _forbidden_project,
             summary="x ← m·x + (1 − m)·forward(x_orig, t')", points=1, seconds=30),
    Exercise("make_flip_illusion", "A1.8_visual_anagrams", "anagram_estimate", _ref_anagram, _run_make_flip_illusion,
             _forbidden_anagram,
             summary="ε = ½(ε_cfg(x_t, p1) + flip(ε_cfg(flip(x_t), p2)))", points=2, seconds=60),
    Exercise("make_hybrids", "A1.9_hybrids", "hybrid_estimate", _ref_hybrid, _run_make_hybrids,
             _forbidden_hybrid,
             summary="ε = lowpass(ε_cfg(x, p_low)) + highpass(ε_cfg(x, p_high))", points=2, seconds=60),
]
