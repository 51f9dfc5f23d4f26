"""Part A's exercises (DeepFloyd IF sections 1.1-1.9), checked on the pack's offline `mini` model.

Each ``_run_<name>(fn, hidden)`` calls the learner's ``fn`` beside diffnb's reference on a few inputs
(edge timesteps, batch sizes, seeds; more when ``hidden``) and raises ``Mismatch`` with a diagnosis
at the first wrong one.  The references are the course's own functions in ``diffnb.a``.
"""
from __future__ import annotations

import torch

from diffnb.exercises import fixtures
from diffnb.exercises.core import Exercise, Mismatch, Probe, expect_tensor


def _near(a: float, b: float, tol: float = 0.02) -> bool:
    """a within a relative ``tol`` of b (b below 0.05 counts as 0.05)."""
    return abs(a - b) <= tol * max(abs(b), 0.05)


def _fit(out: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor):
    """Least squares ``out ~ a x0 + b eps``: returns (a, b, relative residual)."""
    A = torch.stack([x0.flatten(), eps.flatten()], 1).double()
    y = out.flatten().double()
    sol = torch.linalg.lstsq(A, y[:, None]).solution.flatten()
    resid = (y - A @ sol).norm() / y.norm().clamp_min(1e-12)
    return float(sol[0]), float(sol[1]), float(resid)


def noising_hints(x0: torch.Tensor, expected: torch.Tensor, abar: float, t: int, what: str = "x_t",
                  alpha: float | None = None):
    """Diagnose a wrong ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` from the coefficients it used."""
    sa, sn = abar ** 0.5, (1 - abar) ** 0.5
    eps = (expected - sa * x0) / sn                       # the reference's noise, recovered

    def hint(out):
        a, b, resid = _fit(out, x0, eps)
        if resid > 0.05:                                  # other noise: regress on x0 alone
            a = float(((out - out.mean()) * (x0 - x0.mean())).sum() / ((x0 - x0.mean()) ** 2).sum())
            b = float((out - a * x0).std())
            if _near(a, sa) and _near(b, sn, 0.08):
                return (f"your {what} has the right statistics (x_0 scaled by {a:.2f}, noise std {b:.2f}) but other "
                        "noise: draw ε with torch.randn(im.shape, generator=generator) so that the same generator "
                        "gives the same x_t")
        if _near(a, sn, 0.05) and _near(b, sa, 0.05) and not _near(sa, sn, 0.05):
            return (f"at t = {t} your {what} scales x_0 by {a:.2f} and the noise by {b:.2f}; expected √ᾱ_t = {sa:.2f} "
                    f"for x_0 and √(1−ᾱ_t) = {sn:.2f} for the noise: the two weights are swapped")
        if alpha is not None and _near(a, alpha ** 0.5, 0.01) and not _near(a, sa, 0.01):
            return (f"your {what} scales x_0 by {a:.3f} at t = {t}; expected √ᾱ_t = {sa:.3f}: did you read "
                    "scheduler.alphas[t] (one step's α_t) instead of alphas_cumprod[t] (ᾱ_t)?")
        if not _near(b, sn, 0.05):
            guess = ""
            if _near(b, 1 - abar, 0.05):
                guess = ": did you leave out the square root?"
            elif _near(b, 1.0, 0.05):
                guess = ": did you add ε without its weight √(1−ᾱ_t)?"
            elif _near(b, (1 - sa), 0.05):
                guess = ": did you take 1 − √ᾱ_t instead of √(1−ᾱ_t)?"
            return (f"the noise in your {what} has std {b:.2f} at t = {t}; expected √(1−ᾱ_t) = {sn:.2f}{guess}")
        if not _near(a, sa, 0.05):
            guess = ""
            if _near(a, abar, 0.05):
                guess = ": did you leave out the square root?"
            elif _near(a, 1.0, 0.05):
                guess = ": did you leave x_0 unscaled?"
            elif alpha is not None and _near(a, alpha ** 0.5, 0.01):
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


EXERCISES = [
    Exercise("forward", "A1.1_forward", "forward", _ref_forward, _run_forward, lambda: [_ref_forward()],
             summary="x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε", points=1, seconds=30),
]
