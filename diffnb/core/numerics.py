"""Float32 error budgets: how far apart two computations of the same formula may be on any machine.

An identity the pack checks (CFG at gamma = 1 is plain conditional sampling; a hybrid of one prompt with
itself is CFG; our DDPM step is ``DDPMScheduler.step``) holds exactly in real numbers.  In float32 the
two sides round differently, by an amount that depends on the CPU's kernels (AVX-512, AVX2 or plain
code), the thread count and the batch layout, so a tolerance copied from one machine's drift fails on
the next.  The bounds here scale with the quantities that set the rounding instead:

* float32's epsilon ``EPS`` (2^-23); a rounding is within ``EPS / 2`` of the value, relative.
* A formula of ``n`` elementwise operations on values up to ``m`` in size is off by at most about
  ``n * EPS * m`` (the first-order bound gamma_n = n u, Higham, *Accuracy and Stability of Numerical
  Algorithms*, sec. 3.1): ``formula_bound``.
* A UNet output computed in two batch layouts (a batch of 2 against one of 4, or another thread
  count) differs by the rounding of its long sums, blocked differently.  The rounding of a sum of
  ``n`` terms grows like ``sqrt(n) * EPS`` (Higham's probabilistic bound, sec. 3.3); a UNet chains
  a few dozen such layers of a few hundred terms each (24 = sqrt(576), 576 = 64 channels x 3 x 3), so
  its output carries up to about ``UNET_ULPS = 512`` epsilons of its own size.  Classifier-free guidance
  ``eps_u + gamma (eps_c - eps_u)`` multiplies the two outputs' errors by ``|1 - gamma|`` and
  ``|gamma|``: ``rounding_bound``.
* A whole sample adds the error of every step, each scaled by how much that step's estimate moves
  the image: the coefficient of eps in the DDPM posterior mean, ``beta_t / (sqrt(alpha_t) sqrt(1 -
  abar_t))`` (DDPM eq. 7 with eq. 15), summed over the schedule: ``sampler_gain``.  This assumes the
  UNet does not amplify an error in its input from one step to the next, which the measured drift of
  whole samples (``tests/numerics_drift.py``) stays far inside.

What the bounds must still catch: a wrong formula, a swapped argument or a dropped term changes the
estimate by a sizeable fraction of eps itself, hundreds to thousands of times these bounds
(``tests/test_numerics.py`` checks that with deliberately broken estimators).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

#: float32's machine epsilon, 2^-23 (the unit roundoff u is EPS / 2)
EPS = float(torch.finfo(torch.float32).eps)
#: rounding a UNet output may carry from its batch layout, in epsilons of the output's size (see above)
UNET_ULPS = 512


def formula_bound(magnitude: float, ops: int) -> float:
    """Largest difference between two evaluations of an elementwise formula of ``ops`` float32
    operations on values up to ``magnitude`` in size: ``ops * EPS * magnitude`` (gamma_n = n u, with a
    factor 2 to spare)."""
    return ops * EPS * float(magnitude)


def ddpm_step_bound(stage1_or_scheduler, x_t: torch.Tensor, eps: torch.Tensor, t: int) -> float:
    """Largest difference between two float32 evaluations of one DDPM step from the same ``x_t``, ``eps``
    and noise draw: x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) is 3 roundings on values up to
    (|x_t| + |eps|) / sqrt(abar_t); thresholding, the posterior mean and the added noise about 10 more on
    values no larger, so ``formula_bound`` of 13 operations at that size."""
    sched = getattr(stage1_or_scheduler, "scheduler", stage1_or_scheduler)
    abar = float(sched.alphas_cumprod[int(t)])
    return formula_bound((float(x_t.abs().max()) + float(eps.abs().max())) / abar ** 0.5, 13)


def rounding_bound(scale: float, magnitude: float, gain: float = 1.0) -> float:
    """Largest difference float32 rounding explains between two batch layouts of the same (guided) UNet
    estimate: ``UNET_ULPS * EPS * (|gamma| + |1 - gamma|) * magnitude * gain``.

    ``scale`` is the guidance scale gamma (1 for an unguided estimate), ``magnitude`` the size of the
    UNet outputs (their largest absolute value), ``gain`` how much the error can grow on its way to what
    is compared (1 for one step, ``sampler_gain`` for a whole sample).
    """
    return UNET_ULPS * EPS * (abs(scale) + abs(1.0 - scale)) * float(magnitude) * float(gain)


def sampler_gain(stage1_or_scheduler, timesteps: Sequence[int]) -> float:
    """Sum over the steps ``t -> t'`` of the strided list of the coefficient of eps in the DDPM posterior
    mean, ``beta / (sqrt(alpha) sqrt(1 - abar_t))`` with ``alpha = abar_t / abar_t'``: how far an error of
    1 in every step's noise estimate can move the final sample (about 11 for IF's 33-step list)."""
    sched = getattr(stage1_or_scheduler, "scheduler", stage1_or_scheduler)
    abar = sched.alphas_cumprod.double()
    ts = [int(t) for t in timesteps]
    gain = 0.0
    for t, prev in zip(ts[:-1], ts[1:]):
        alpha = abar[t] / abar[prev]
        gain += float((1 - alpha) / (alpha.sqrt() * (1 - abar[t]).sqrt()))
    return gain


class Agreement(NamedTuple):
    """The outcome of comparing two computations against a float32 budget.  True when
    ``difference <= bound``; ``margin`` is ``bound / difference`` (inf when they are equal)."""
    difference: float
    bound: float

    def __bool__(self) -> bool:
        return self.difference <= self.bound

    @property
    def margin(self) -> float:
        return float("inf") if self.difference == 0 else self.bound / self.difference

    @property
    def ratio(self) -> float:
        """``difference / bound``: below 1 when they agree (0 when equal)."""
        if self.difference == 0:
            return 0.0
        return float("inf") if self.bound == 0 else self.difference / self.bound

    def __str__(self) -> str:
        verdict = "agree" if self else "DIFFER"
        return f"largest difference {self.difference:.1e}, float32 budget {self.bound:.1e}: {verdict}"


def agreement(a: torch.Tensor, b: torch.Tensor, bound: float) -> Agreement:
    """``Agreement(max |a - b|, bound)``; a NaN anywhere counts as an infinite difference."""
    diff = (a.detach().float() - b.detach().float()).abs().max()
    diff = float("inf") if not torch.isfinite(diff) else float(diff)
    return Agreement(diff, float(bound))
