"""Part A's exercises (DeepFloyd IF sections 1.1-1.9), checked on the pack's offline `mini` model.

Each ``_run_<name>(fn, hidden)`` calls the learner's ``fn`` beside diffnb's reference on a few inputs
(edge timesteps, batch sizes, seeds; more when ``hidden``) and raises ``Mismatch`` with a diagnosis
at the first wrong one.  The references are the course's own functions in ``diffnb.a``.
"""
from __future__ import annotations

import math

import torch

from diffnb.exercises import fixtures
from diffnb.exercises.core import Exercise, Probe, expect_tensor, fit_weights, near




def noising_hints(x0: torch.Tensor, expected: torch.Tensor, abar: float, t: int, what: str = "x_t",
                  alpha: float | None = None):
    """Diagnose a wrong ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` from the coefficients it used."""
    sa, sn = abar ** 0.5, (1 - abar) ** 0.5
    eps = (expected - sa * x0) / sn                       # the reference's noise, recovered

    def hint(out):
        a, b, resid = fit_weights(out, x0, eps)
        if resid > 0.05:                                  # other noise: regress on x0 alone
            a = float(((out - out.mean()) * (x0 - x0.mean())).sum() / ((x0 - x0.mean()) ** 2).sum())
            b = float((out - a * x0).std())
            if near(a, sa) and near(b, sn, 0.08):
                return (f"your {what} has the right statistics (x_0 scaled by {a:.2f}, noise std {b:.2f}) but other "
                        "noise: draw ε with torch.randn(im.shape, generator=generator) so that the same generator "
                        "gives the same x_t")
        if near(a, sn, 0.05) and near(b, sa, 0.05) and not near(sa, sn, 0.05):
            return (f"at t = {t} your {what} scales x_0 by {a:.2f} and the noise by {b:.2f}; expected √ᾱ_t = {sa:.2f} "
                    f"for x_0 and √(1−ᾱ_t) = {sn:.2f} for the noise: the two weights are swapped")
        if alpha is not None and near(a, alpha ** 0.5, 0.01) and not near(a, sa, 0.01):
            return (f"your {what} scales x_0 by {a:.3f} at t = {t}; expected √ᾱ_t = {sa:.3f}: did you read "
                    "scheduler.alphas[t] (one step's α_t) instead of alphas_cumprod[t] (ᾱ_t)?")
        if not near(b, sn, 0.05):
            guess = ""
            if near(b, 1 - abar, 0.05):
                guess = ": did you leave out the square root?"
            elif near(b, 1.0, 0.05):
                guess = ": did you add ε without its weight √(1−ᾱ_t)?"
            elif near(b, (1 - sa), 0.05):
                guess = ": did you take 1 − √ᾱ_t instead of √(1−ᾱ_t)?"
            return (f"the noise in your {what} has std {b:.2f} at t = {t}; expected √(1−ᾱ_t) = {sn:.2f}{guess}")
        if not near(a, sa, 0.05):
            guess = ""
            if near(a, abar, 0.05):
                guess = ": did you leave out the square root?"
            elif near(a, 1.0, 0.05):
                guess = ": did you leave x_0 unscaled?"
            elif alpha is not None and near(a, alpha ** 0.5, 0.01):
                guess = ": did you read scheduler.alphas[t] (one step's α_t) instead of alphas_cumprod[t] (ᾱ_t)?"
            return f"your {what} scales x_0 by {a:.3f} at t = {t}; expected √ᾱ_t = {sa:.3f}{guess}"
        return (f"your {what} scales x_0 by {a:.4f} and the noise by {b:.4f} at t = {t}; expected {sa:.4f} and "
                f"{sn:.4f}: read ᾱ_t as scheduler.alphas_cumprod[t] (not alphas, not t ± 1)")
    return hint


# --------------------------------------------------------------------------- A1.1 forward

def _ref_forward():
    from diffnb.a.denoise import forward
    return forward


def _run_forward(fn, hidden: bool) -> int:
    ref = _ref_forward()
    s = fixtures.stage1()
    cases = [(250, 1, 0), (500, 3, 7), (0, 1, 1), (999, 2, 2)]
    if hidden:
        cases += [(1, 1, 3), (690, 4, 11), (990, 1, 5), (750, 2, 100)]
    probe = Probe(fn, "forward", [ref])
    for t, n, seed in cases:
        where = f"t = {t}, a batch of {n}, generator seed {seed}"
        x0 = fixtures.clean_images(n, seed)
        expected = ref(x0, t, s, fixtures.generator(seed))
        out = probe.call(where, x0, t, s, fixtures.generator(seed))
        abar = float(s.scheduler.alphas_cumprod[t])
        alpha = float(s.scheduler.alphas[t])
        expect_tensor(out, expected, "x_t", where, inputs=[x0], atol=1e-5,
                      hints=[noising_hints(x0, expected, abar, t, alpha=alpha)])
    return len(cases)


# --------------------------------------------------------------------------- shared by A1.2-A1.4

def _same(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b.to(a.dtype), atol=tol, rtol=tol))


def _noisy(n: int, seed: int, t: int) -> torch.Tensor:
    """``n`` clean renders noised to ``t`` by diffnb's forward (generator ``seed``): ``(n, 3, 32, 32)``."""
    from diffnb.a.denoise import forward
    return forward(fixtures.clean_images(n, seed), t, fixtures.stage1(), fixtures.generator(seed))


# --------------------------------------------------------------------------- A1.2 blur_denoise

def _ref_blur_denoise():
    from diffnb.a.denoise import blur_denoise
    return blur_denoise


def _zero_padded_blur(im: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """torchvision's Gaussian blur, but with zero padding at the border (a hand-written conv2d's default)."""
    x = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()                                           # the 1-D kernel, weights summing to 1
    kernel = (g[:, None] * g[None, :]).expand(im.shape[1], 1, k, k)
    return torch.nn.functional.conv2d(im, kernel, padding=k // 2, groups=im.shape[1])


def _fit_sigma(im: torch.Tensor, out: torch.Tensor, k: int) -> float:
    """The σ whose k × k Gaussian blur of ``im`` is nearest ``out`` (a log-scale search)."""
    import torchvision.transforms.functional as TF

    def err(log_s):
        return float((TF.gaussian_blur(im, [k, k], [math.exp(log_s)] * 2) - out).abs().max())
    grid = [math.log(0.05) + j * (math.log(50) - math.log(0.05)) / 80 for j in range(81)]
    j = min(range(len(grid)), key=lambda j: err(grid[j]))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
    for _ in range(40):                                       # golden-section search in [lo, hi]
        m1, m2 = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, m2) if err(m1) < err(m2) else (m1, hi)
    return math.exp((lo + hi) / 2)


def blur_hints(im: torch.Tensor, expected: torch.Tensor, k: int, sigma: float):
    """Diagnose a wrong ``blur_denoise(im, k, sigma)`` by the blur it matches."""
    import torchvision.transforms.functional as TF

    def blur(kx, ky, s):
        return TF.gaussian_blur(im, [kx, ky], [s, s])

    def hint(out):
        if _same(out, blur(k, 1, sigma)):
            return (f"your blur smooths along the width only (a 1 × {k} kernel); blur both axes: kernel_size "
                    f"[{k}, {k}] and sigma [{sigma}, {sigma}]")
        if _same(out, blur(1, k, sigma)):
            return (f"your blur smooths along the height only (a {k} × 1 kernel); blur both axes: kernel_size "
                    f"[{k}, {k}] and sigma [{sigma}, {sigma}]")
        for k2 in range(1, 2 * min(im.shape[-2:]), 2):          # every odd kernel size that fits the image
            for s2 in dict.fromkeys((sigma, 2.0, 1.2)):         # the asked σ, the default, the notebook's
                if (k2, s2) != (k, sigma) and _same(out, blur(k2, k2, s2)):
                    fixed = k2 == 5 or s2 != sigma                # the default size, or a σ not asked for
                    return (f"your blur's kernel is {k2} × {k2} with σ = {s2}; expected kernel_size = {k}, "
                            f"sigma = {sigma}" + (": use the arguments kernel_size and sigma, not fixed numbers"
                                                  if fixed else ""))
        if _same(out, _zero_padded_blur(im, k, sigma)):
            return ("your blur is right inside the image but not at its border: you padded with zeros (the border "
                    "darkens); torchvision's gaussian_blur pads by reflection")
        c = float((out * expected).sum() / (expected * expected).sum())
        if _same(out, c * expected, 1e-3) and abs(c - 1) > 1e-3:
            return (f"your blurred image is the right blur times {c:.3g}: normalise the kernel so that its weights "
                    "sum to 1")
        s_fit = _fit_sigma(im, out, k)
        if _same(out, blur(k, k, s_fit), 1e-3):
            guess = ""
            if near(s_fit, sigma ** 2, 0.01):
                guess = ": did you pass the variance σ² instead of the standard deviation σ?"
            elif near(s_fit, sigma ** 0.5, 0.01):
                guess = ": did you take the square root of sigma? It is already the standard deviation"
            return f"your blur's σ is {s_fit:.3g}; expected sigma = {sigma}{guess}"
        return None
    return hint


def _run_blur_denoise(fn, hidden: bool) -> int:
    ref = _ref_blur_denoise()
    cases = [(5, 2.0, 1, 0), (3, 0.5, 2, 1), (9, 3.0, 1, 2), (7, 1.2, 3, 3)]   # (kernel_size, sigma, batch, seed)
    if hidden:
        cases += [(11, 1.5, 2, 4), (5, 0.8, 4, 5), (13, 4.0, 1, 6), (7, 2.5, 2, 7)]
    probe = Probe(fn, "blur_denoise", [ref])
    for k, sigma, n, seed in cases:
        where = f"kernel_size = {k}, sigma = {sigma}, a batch of {n}"
        im = _noisy(n, seed, 500)
        if seed == 7:
            im = im[..., 6:]                                  # a non-square image (32 × 26)
        expected = ref(im, k, sigma)
        out = probe.call(where, im, k, sigma)
        expect_tensor(out, expected, "blurred image", where, inputs=[im], atol=1e-5,
                      hints=[blur_hints(im, expected, k, sigma)])
    return len(cases)


# --------------------------------------------------------------------------- A1.3 one_step_denoise

def _ref_one_step_denoise():
    from diffnb.a.denoise import one_step_denoise
    return one_step_denoise


def _forbidden_one_step_denoise():
    from diffnb.a import denoise
    return [denoise.one_step_denoise, denoise.predict_x0]


def one_step_hints(x_t: torch.Tensor, eps: torch.Tensor, expected: torch.Tensor, t: int, stage1):
    """Diagnose a wrong x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar) from the weights it gives x_t and eps."""
    from diffnb.a.denoise import clip_x0
    abar, alpha = float(stage1.scheduler.alphas_cumprod[t]), float(stage1.scheduler.alphas[t])
    sa, sn = abar ** 0.5, (1 - abar) ** 0.5
    mistakes = [                                              # (weight of x_t, weight of eps, what was done)
        (1 / abar, -sn / abar, f"you divided by ᾱ_t = {abar:.3f}; divide by √ᾱ_t = {sa:.3f}: did you leave out the "
                               "square root?"),
        (1 / sa, sn / sa, "your x̂₀ adds the noise term √(1−ᾱ_t) ε̂; subtract it: x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t"),
        (1 / sn, -1.0, f"you divided by √(1−ᾱ_t) = {sn:.3f}; divide by √ᾱ_t = {sa:.3f}"),
        (1 / sn, -sa / sn, "your x̂₀ is (x_t − √ᾱ_t ε̂)/√(1−ᾱ_t): the two weights are swapped; x̂₀ = "
                           "(x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t"),
        (1 / sa, -(1 - abar) / sa, f"your noise term is (1−ᾱ_t) ε̂ = {1 - abar:.3f} ε̂; expected √(1−ᾱ_t) ε̂ = "
                                   f"{sn:.3f} ε̂: did you leave out the square root?"),
        (1 / sa, -1 / sa, "you subtracted ε̂ without its weight √(1−ᾱ_t)"),
        (1.0, -sn, f"you did not divide by √ᾱ_t = {sa:.3f}"),
        (0.0, 1.0, "your x̂₀ is the noise estimate ε̂ itself; return the clean image (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t"),
        (alpha ** -0.5, -((1 - alpha) / alpha) ** 0.5,
         f"your x̂₀ divides by {alpha ** 0.5:.3f}; expected √ᾱ_t = {sa:.3f}: did you read scheduler.alphas[t] (one "
         "step's α_t) instead of alphas_cumprod[t] (ᾱ_t)?"),
    ]

    def hint(out):
        if _same(out, expected.clamp(-1, 1)) or _same(out, clip_x0(expected, stage1)):
            return ("your x̂₀ is clipped; the one-step estimate is not (its values may leave [-1, 1]; the "
                    "clipping belongs to A1.4's step)")
        a, b, resid = fit_weights(out, x_t, eps)
        if resid > 1e-3:
            return (f"your x̂₀ at t = {t} is no combination of x_t and the UNet's noise estimate for these inputs: "
                    "take ε̂ from estimate_noise(stage1, im_noisy, t, prompt_embeds) with this t and these "
                    "prompt_embeds")
        for wa, wb, msg in mistakes:
            if near(a, wa, 0.01) and near(b, wb, 0.01):
                return msg
        return (f"your x̂₀ = {a:.4f} x_t {b:+.4f} ε̂ at t = {t}; expected {1 / sa:.4f} x_t {-sn / sa:+.4f} ε̂, "
                f"i.e. (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t with ᾱ_t = alphas_cumprod[t] = {abar:.4f}")
    return hint


def _run_one_step_denoise(fn, hidden: bool) -> int:
    from diffnb.a.denoise import estimate_noise
    ref = _ref_one_step_denoise()
    s = fixtures.stage1()
    picture, seven = "a high quality picture", "a photo of the digit 7"
    cases = [(250, 1, 0, picture), (500, 2, 1, picture), (750, 1, 2, ""), (30, 3, 3, picture)]
    if hidden:
        cases += [(1, 1, 4, picture), (990, 2, 5, picture), (600, 4, 6, seven), (900, 1, 7, "")]
    probe = Probe(fn, "one_step_denoise", _forbidden_one_step_denoise())
    for t, n, seed, prompt in cases:
        where = f"t = {t}, a batch of {n}, prompt {prompt!r}"
        x_t, e = _noisy(n, seed, t), fixtures.embed(prompt)
        expected = ref(s, x_t, t, e)
        out = probe.call(where, s, x_t, t, e)
        eps, _ = estimate_noise(s, x_t, t, e)
        expect_tensor(out, expected, "x̂₀", where, inputs=[x_t], rtol=1e-4,
                      atol=2e-5 / float(s.scheduler.alphas_cumprod[t]) ** 0.5,
                      hints=[one_step_hints(x_t, eps, expected, t, s)])
    return len(cases)


# --------------------------------------------------------------------------- A1.4 ddpm_step

def _ref_ddpm_step():
    from diffnb.a.denoise import ddpm_step
    return ddpm_step


def _forbidden_ddpm_step():
    from diffnb.a import denoise
    return [denoise.ddpm_step, denoise.denoise_loop, denoise.iterative_denoise, denoise.iterative_denoise_cfg,
            denoise.sample_cfg, denoise.sdedit, denoise.inpaint]


def _step_variant(x_t, eps, var, t, prev_t, stage1, seed, *, abar_prev_at=None, alpha_one=False, clip="threshold",
                  swap=False, noise=True, var_prev_t=None, default_variance=False):
    """One DDPM step written out with one mistake switched on (all off: diffnb's ``ddpm_step``)."""
    from diffnb.a.denoise import add_variance, clip_x0
    ac = stage1.scheduler.alphas_cumprod
    abar, abar_prev = ac[t], ac[prev_t if abar_prev_at is None else abar_prev_at]
    alpha = stage1.scheduler.alphas[t] if alpha_one else abar / abar_prev
    beta = 1 - alpha
    x0_hat = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    x0_hat = {"threshold": clip_x0(x0_hat, stage1), "clamp": x0_hat.clamp(-1, 1), "none": x0_hat}[clip]
    c_x0, c_xt = abar_prev.sqrt() * beta / (1 - abar), alpha.sqrt() * (1 - abar_prev) / (1 - abar)
    if swap:
        c_x0, c_xt = c_xt, c_x0
    mean = c_x0 * x0_hat + c_xt * x_t
    if not noise:
        return mean
    if default_variance:                                      # add_variance's default previous timestep, t - 30
        return add_variance(var, t, mean, stage1, fixtures.generator(seed))
    return add_variance(var, t, mean, stage1, fixtures.generator(seed),
                        prev_t=prev_t if var_prev_t is None else var_prev_t)


def ddpm_step_hints(probe, where, x_t, eps, var, t, prev_t, stage1, seed, expected):
    """Diagnose a wrong DDPM step: noise not from the generator, or the mistake whose output it matches, or
    else the weights of its posterior mean."""
    args = (x_t, eps, var, t, prev_t, stage1, seed)
    course = list(range(990, -1, -30))
    mistakes = [
        (dict(noise=False), "your x_{t'} is the posterior mean μ̃ alone: add the learned noise σ_t z with "
                            "denoise.add_variance(variance, t, mean, stage1, generator, prev_t=prev_t)"),
        (dict(alpha_one=True), f"your step takes α_t = scheduler.alphas[{t}] (one step of the 1000); this step "
                               f"jumps {t} → {prev_t}, so α_t = ᾱ_t / ᾱ_t' = alphas_cumprod[{t}] / "
                               f"alphas_cumprod[{prev_t}]"),
        (dict(swap=True), "your posterior mean has its two coefficients swapped: √ᾱ_t' β_t / (1−ᾱ_t) weighs x̂₀ "
                          "and √α_t (1−ᾱ_t') / (1−ᾱ_t) weighs x_t"),
        (dict(clip="none"), "your x̂₀ is not clipped: pass it through denoise.clip_x0(x0_hat, stage1) before the "
                            "posterior mean, as IF's scheduler asks"),
        (dict(clip="clamp"), "you clamped x̂₀ to [-1, 1]; IF's scheduler asks for dynamic thresholding: use "
                             "denoise.clip_x0(x0_hat, stage1)"),
        (dict(abar_prev_at=t - 1), f"you read ᾱ_t' at t − 1 = {t - 1}; this step goes to prev_t = {prev_t}: read "
                                   "alphas_cumprod[prev_t]"),
        (dict(abar_prev_at=t - 1, var_prev_t=t - 1), f"you read ᾱ_t' at t − 1 = {t - 1}; this step goes to prev_t = "
                                                     f"{prev_t}: use prev_t, in ᾱ_t' and in add_variance"),
    ]
    if t in course[:-1] and course[course.index(t) + 1] != prev_t:
        mistakes.append((dict(default_variance=True), f"your noise σ_t z is that of the step {t} → {t - 30} "
                                                "(add_variance's default): pass prev_t=prev_t to denoise.add_variance"))

    def hint(out):
        if not torch.equal(out, probe.call(where, x_t, eps, var, t, prev_t, stage1, fixtures.generator(seed))):
            return ("your step gives another x_{t'} each time it runs with the same generator seed: pass "
                    "generator to denoise.add_variance, so that it draws the noise z from it")
        for kw, msg in mistakes:
            if _same(out, _step_variant(*args, **kw)):
                return msg
        noise = expected - _step_variant(*args, noise=False)  # diffnb's σ_t z
        return _mean_fit_hint(out - noise, x_t, eps, t, prev_t, stage1)
    return hint


def _mean_fit_hint(mean, x_t, eps, t, prev_t, stage1):
    """Your posterior mean (your step less diffnb's σ_t z), fitted as a x̂₀ + b x_t, against DDPM eq. 7."""
    from diffnb.a.denoise import clip_x0
    ac = stage1.scheduler.alphas_cumprod
    abar, abar_prev = float(ac[t]), float(ac[prev_t])
    alpha = abar / abar_prev
    x0_hat = clip_x0((x_t - (1 - abar) ** 0.5 * eps) / abar ** 0.5, stage1)
    a, b, resid = fit_weights(mean, x0_hat, x_t)
    c_x0, c_xt = abar_prev ** 0.5 * (1 - alpha) / (1 - abar), alpha ** 0.5 * (1 - abar_prev) / (1 - abar)
    if resid > 1e-3:
        return None
    return (f"your posterior mean is {a:.4f} x̂₀ + {b:.4f} x_t; expected {c_x0:.4f} x̂₀ + "
            f"{c_xt:.4f} x_t (ᾱ_t = {abar:.4f}, ᾱ_t' = {abar_prev:.4f})")


def _run_ddpm_step(fn, hidden: bool) -> int:
    from diffnb.a.denoise import estimate_noise
    ref = _ref_ddpm_step()
    s = fixtures.stage1()
    picture, seven = "a high quality picture", "a photo of the digit 7"
    cases = [(690, 660, 1, 0, picture), (990, 960, 2, 1, picture), (540, 450, 1, 2, ""), (30, 0, 3, 3, picture)]
    if hidden:
        cases += [(960, 930, 4, 4, picture), (450, 300, 1, 5, seven), (90, 0, 2, 6, picture), (999, 990, 1, 7, ""),
                  (1, 0, 1, 8, picture), (840, 690, 2, 9, picture)]
    probe = Probe(fn, "ddpm_step", _forbidden_ddpm_step())
    for t, prev_t, n, seed, prompt in cases:
        where = f"t = {t} → prev_t = {prev_t}, a batch of {n}, generator seed {seed}"
        x_t = _noisy(n, seed, t)
        eps, var = estimate_noise(s, x_t, t, fixtures.embed(prompt))
        expected = ref(x_t, eps, var, t, prev_t, s, fixtures.generator(seed))
        out = probe.call(where, x_t, eps, var, t, prev_t, s, fixtures.generator(seed))
        expect_tensor(out, expected, "x_{t'}", where, inputs=[x_t, eps, var], atol=1e-4,
                      hints=[ddpm_step_hints(probe, where, x_t, eps, var, t, prev_t, s, seed, expected)])
    return len(cases)



# --------------------------------------------------------------------------- A1.4 iterative_denoise

def _ref_iterative_denoise():
    from diffnb.a.denoise import iterative_denoise
    return iterative_denoise


def _forbidden_iterative_denoise():
    from diffnb.a import denoise
    return [denoise.iterative_denoise, denoise.denoise_loop, denoise.iterative_denoise_cfg, denoise.sample_cfg,
            denoise.sdedit, denoise.inpaint]


def _loop_variant(x, steps, timesteps, stage1, embeds, seed, *, fixed_input=False):
    """The loop over the step indices ``steps`` (diffnb's steps), e.g. one too few or in the wrong order."""
    from diffnb.a.denoise import ddpm_step, estimate_noise
    generator, x_in = fixtures.generator(seed), x
    for i in steps:
        eps, var = estimate_noise(stage1, x_in if fixed_input else x, timesteps[i], embeds)
        x = ddpm_step(x, eps, var, timesteps[i], timesteps[i + 1], stage1, generator)
    return x


def loop_hints(probe, where, x, i_start, stage1, embeds, ts, seed):
    """Diagnose a wrong loop: noise not from the generator, one step too few or many, the wrong order."""
    last = len(ts) - 1
    mistakes = [
        (range(i_start, last - 1), {}, f"your loop stops one step early, at t = {ts[-2]} instead of {ts[-1]}: run "
                                       "i = i_start, ..., len(timesteps) − 2 (the last step goes "
                                       f"{ts[-2]} → {ts[-1]})"),
        (range(i_start + 1, last), {}, f"your loop starts at timesteps[i_start + 1] = {ts[min(i_start + 1, last)]}; "
                                       f"im_noisy is the image at timesteps[i_start] = {ts[i_start]}: start there"),
        (range(i_start - 1, last), {}, f"your loop starts at timesteps[i_start − 1] = {ts[max(i_start - 1, 0)]}; "
                                       f"im_noisy is the image at timesteps[i_start] = {ts[i_start]}: start there"),
        (range(last - 1, i_start - 1, -1), {}, f"your loop runs the steps in the wrong order (first {ts[-2]} → "
                                               f"{ts[-1]}); go down the list, from timesteps[i_start] = {ts[i_start]}"
                                               f" to {ts[-1]}"),
        (range(i_start, last), dict(fixed_input=True), "your loop estimates the noise of im_noisy at every step; "
                                                       "estimate it on the current x"),
    ]

    def hint(out):
        again = probe.call(where, x, i_start, stage1, embeds, ts, fixtures.generator(seed))
        if not torch.equal(out, again):
            return ("your result changes between two runs with the same generator seed: draw every step's noise "
                    "from generator (pass it to ddpm_step)")
        for steps, kw, msg in mistakes:
            if len(steps) and min(steps) >= 0 and _same(out, _loop_variant(x, steps, ts, stage1, embeds, seed, **kw),
                                                        2e-4):
                return msg
        return None
    return hint


def _run_iterative_denoise(fn, hidden: bool) -> int:
    ref = _ref_iterative_denoise()
    s = fixtures.stage1()
    picture, seven = "a high quality picture", "a photo of the digit 7"
    cases = [(150, 4, 1, 0, picture), (90, 8, 2, 1, picture), (150, 6, 1, 2, "")]   # (stride, i_start, batch, seed)
    if hidden:
        cases += [(30, 30, 3, 3, picture), (150, 0, 1, 4, ""), ([999, 700, 400, 100, 0], 1, 2, 5, seven),
                  (90, 5, 4, 6, picture)]
    probe = Probe(fn, "iterative_denoise", _forbidden_iterative_denoise())
    for stride, i_start, n, seed, prompt in cases:
        ts = stride if isinstance(stride, list) else fixtures.timesteps(stride)
        where = (f"timesteps {ts[i_start]}, {ts[i_start + 1]}, ..., {ts[-1]} (i_start = {i_start}), a batch of {n}, "
                 f"generator seed {seed}")
        x, e = _noisy(n, seed + 50, ts[i_start]), fixtures.embed(prompt)
        expected = ref(x, i_start, s, e, ts, fixtures.generator(seed))
        out = probe.call(where, x, i_start, s, e, ts, fixtures.generator(seed))
        expect_tensor(out, expected, "denoised image", where, inputs=[x], atol=2e-4, rtol=2e-4,
                      hints=[loop_hints(probe, where, x, i_start, s, e, ts, seed)])
    return len(cases)


EXERCISES = [
    Exercise("forward", "A1.1_forward", "forward", _ref_forward, _run_forward, lambda: [_ref_forward()],
             summary="x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε", points=1, seconds=30),
    Exercise("blur_denoise", "A1.2_gaussian_blur", "blur_denoise", _ref_blur_denoise, _run_blur_denoise,
             lambda: [_ref_blur_denoise()], summary="a k × k Gaussian blur of std σ (torchvision's gaussian_blur)",
             points=1, seconds=30),
    Exercise("one_step_denoise", "A1.3_one_step", "one_step_denoise", _ref_one_step_denoise, _run_one_step_denoise,
             _forbidden_one_step_denoise,
             summary="x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t from the UNet's ε̂", points=1, seconds=30),
    Exercise("ddpm_step", "A1.4_iterative", "ddpm_step", _ref_ddpm_step, _run_ddpm_step, _forbidden_ddpm_step,
             summary="one DDPM step: x̂₀ clipped, the posterior mean μ̃, + σ_t z", points=1, seconds=30),
    Exercise("iterative_denoise", "A1.4_iterative", "iterative_denoise", _ref_iterative_denoise,
             _run_iterative_denoise, _forbidden_iterative_denoise,
             summary="the loop timesteps[i_start] → ... → 0 with ddpm_step", points=1, seconds=60),
]
