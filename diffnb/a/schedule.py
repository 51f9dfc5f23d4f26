"""The DDPM schedule of Part A (sections 1.1, 1.3 and 1.4 of the write-up), read from IF's scheduler.

``Schedule(scheduler)`` wraps a diffusers ``DDPMScheduler`` once and writes out, by hand, the few lines
of maths the course teaches: alpha-bar_t, the forward process q(x_t | x_0), x0_hat from a noise estimate,
clipping x0_hat as the scheduler config asks (IF: dynamic thresholding), the posterior mean of a
strided step t -> t' and IF's learned-range variance of that step.  It reads only the scheduler's
public state (``alphas_cumprod`` and ``config``) and never changes it: a strided step names its
previous timestep t' explicitly, nothing is set on the scheduler.

Conventions: timesteps are integers in [0, T), T = ``config.num_train_timesteps`` (1000 for IF),
999 = pure noise; a strided step goes from t to t' < t (the strided list runs 990, 960, ..., 0).
Images are ``(N, C, H, W)``.  The methods check nothing (the public functions of ``diffnb.a.denoise``
check their inputs once); they draw no noise either (the loop draws it, in ``IFPipeline``'s order).

Equations: DDPM = Ho et al. 2020; Improved DDPM = Nichol & Dhariwal 2021; Imagen = Saharia et al. 2022.
"""
from __future__ import annotations

import numbers

import torch

from diffnb.a.checks import check_t


def scheduler_of(stage1_or_scheduler):
    """The ``DDPMScheduler`` of a bundle, or the scheduler itself."""
    sched = getattr(stage1_or_scheduler, "scheduler", stage1_or_scheduler)
    if not hasattr(sched, "alphas_cumprod") or not hasattr(sched, "config"):
        got = "None" if stage1_or_scheduler is None else type(stage1_or_scheduler).__name__
        raise TypeError(f"stage1 must be a stage-1 bundle or a diffusers DDPMScheduler, got {got}; "
                        "load the bundle with diffnb.a.models.load_stage1(...)")
    return sched


class Schedule:
    """The DDPM schedule of a ``DDPMScheduler`` (its ``alphas_cumprod`` and ``config``), read-only.

    ``Schedule(stage1)`` takes a stage-1 bundle or the scheduler itself; it is cheap to make (it copies
    nothing), so the public functions make one per call.
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler_of(scheduler)
        self.config = self.scheduler.config
        self.alphas_cumprod = self.scheduler.alphas_cumprod   # (T,) float32: abar_t = prod_{s <= t} (1 - beta_s)
        self.T = int(self.config.num_train_timesteps)

    def __repr__(self) -> str:
        return f"Schedule(T={self.T}, variance_type={self.config.variance_type!r}, thresholding={self.config.thresholding})"

    # ----------------------------------------------------------------------- 1.1 the forward process

    def abar(self, t: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """alpha-bar_t as a 0-d float32 tensor (on ``like``'s device; it keeps ``like``'s dtype in products)."""
        a = self.alphas_cumprod[t]
        return a if like is None else a.to(like.device)

    def q_sample(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """x_t from q(x_t | x_0) for the given ``noise`` ~ N(0, I), ``x0``'s shape."""
        abar_t = self.abar(t, x0)
        return abar_t ** 0.5 * x0 + (1 - abar_t) ** 0.5 * noise     # x_t = sqrt(abar_t) x_0 + sqrt(1-abar_t) eps  (DDPM eq. 4)

    def strided_timesteps(self, start: int = 990, stride: int = 30) -> list[int]:
        """The descending list ``[start, start - stride, ..., 0]`` (0 appended if the stride misses it)."""
        start = check_t(start, self.scheduler, name="start")
        if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride <= 0:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        ts = list(range(start, -1, -int(stride)))
        if ts[-1] != 0:
            ts.append(0)
        if len(ts) < 2:
            raise ValueError(f"start={start} gives a single timestep; use start > 0")
        return ts

    # ----------------------------------------------------------------------- 1.3 x0 from a noise estimate

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        """x0_hat from a noise estimate; no clipping."""
        abar_t = self.abar(t, x_t)
        return (x_t - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5  # x0_hat = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t)  (DDPM eq. 15)

    def clip_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """Clip x0_hat as the config asks: dynamic thresholding (IF), else clamp to the clip range, else nothing."""
        cfg = self.config
        if cfg.thresholding:
            return self.dynamic_threshold(x0)
        if cfg.clip_sample:
            return x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        return x0

    def dynamic_threshold(self, x0: torch.Tensor) -> torch.Tensor:
        """Imagen's dynamic thresholding (Imagen sec. 2.3), per image: s = the ``dynamic_thresholding_ratio``
        quantile of |x0_hat|, kept in [1, ``sample_max_value``]; x0_hat <- clamp(x0_hat, -s, s) / s."""
        dtype = x0.dtype
        x = x0 if dtype in (torch.float32, torch.float64) else x0.float()    # quantile wants float32 or float64
        flat = x.flatten(1)                                                  # (N, C*H*W): one s per image
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)   # s = percentile of |x0_hat|
        s = torch.clamp(s, min=1, max=self.config.sample_max_value).unsqueeze(1)      # s >= 1: plain clipping when small
        flat = torch.clamp(flat, -s, s) / s                                  # threshold to [-s, s], divide by s
        return flat.reshape(x0.shape).to(dtype)

    # ----------------------------------------------------------------------- 1.4 one strided step t -> t'

    def posterior_mean(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: int, prev_t: int) -> torch.Tensor:
        """mu_tilde(x_t, x0_hat) of the strided step ``t -> prev_t`` (``x0_hat`` already clipped)."""
        abar_t, abar_prev = self.abar(t, x_t), self.abar(prev_t, x_t)
        alpha = abar_t / abar_prev                                # alpha_t of the strided step = abar_t / abar_t'
        beta = 1 - alpha                                          # beta_t = 1 - alpha_t
        coef_x0 = abar_prev ** 0.5 * beta / (1 - abar_t)          # sqrt(abar_t') beta_t / (1 - abar_t)          (DDPM eq. 7)
        coef_xt = alpha ** 0.5 * (1 - abar_prev) / (1 - abar_t)   # sqrt(alpha_t) (1 - abar_t') / (1 - abar_t)   (DDPM eq. 7)
        return coef_x0 * x0_hat + coef_xt * x_t                   # mu_tilde(x_t, x0_hat)                          (DDPM eq. 7)

    def log_variance(self, predicted_variance: torch.Tensor, t: int, prev_t: int) -> torch.Tensor:
        """log sigma^2 of the strided step ``t -> prev_t`` from the UNet's variance channels v (values near
        [-1, 1]): IF's learned range, log sigma^2 = f log beta_t + (1 - f) log beta_tilde_t, f = (v + 1) / 2.

        The scalars are computed where ``alphas_cumprod`` lives, in diffusers' order (bit-equal to
        ``DDPMScheduler.step`` with the strided list set on it)."""
        abar_t, abar_prev = self.alphas_cumprod[t], self.alphas_cumprod[prev_t]
        beta = 1 - abar_t / abar_prev                             # beta_t of the strided step
        beta_tilde = (1 - abar_prev) / (1 - abar_t) * beta        # beta_tilde_t = (1 - abar_t') / (1 - abar_t) beta_t  (DDPM eq. 7)
        beta_tilde = torch.clamp(beta_tilde, min=1e-20)           # its log is taken: keep it above 0
        min_log, max_log = torch.log(beta_tilde), torch.log(beta)
        frac = (predicted_variance + 1) / 2                       # v in [-1, 1] -> f in [0, 1]
        return frac * max_log + (1 - frac) * min_log              # log sigma^2 = f log beta + (1-f) log beta_tilde  (Improved DDPM eq. 15)

    # ----------------------------------------------------------------------- per-timestep tables (mini)

    def tables(self, device=None) -> dict[str, torch.Tensor]:
        """Per-timestep float32 tensors ``(T,)`` of the unstrided chain t -> t - 1, computed in float64 and
        cast: ``abar``, ``log_beta``, ``post_log_var`` (log beta_tilde, its t = 0 entry replaced by t = 1's,
        as Improved DDPM clips it), ``coef_x0`` and ``coef_xt`` (the posterior mean's, DDPM eq. 7)."""
        abar = self.alphas_cumprod.to(device=device, dtype=torch.float64)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])      # abar_{t-1}, abar_{-1} = 1
        beta = 1 - abar / abar_prev                               # beta_t = 1 - abar_t / abar_{t-1}
        post_var = beta * (1 - abar_prev) / (1 - abar)            # beta_tilde_t  (DDPM eq. 7)
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))     # clipped at t = 0 (Improved DDPM)
        out = dict(abar=abar, log_beta=torch.log(beta), post_log_var=post_log_var,
                   coef_x0=beta * abar_prev.sqrt() / (1 - abar),              # sqrt(abar_{t-1}) beta_t / (1 - abar_t)
                   coef_xt=(1 - abar_prev) * (1 - beta).sqrt() / (1 - abar))  # sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
        return {k: v.float() for k, v in out.items()}
