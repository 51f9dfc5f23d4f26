"""DDPM maths and the one denoising loop of Part A (sections 1.1-1.7 of the write-up).

Conventions (stated once):
  * Images are ``(N, C, H, W)`` tensors with values in [-1, 1].
  * Timesteps are integers t in [0, T), T = ``scheduler.config.num_train_timesteps`` (1000 for IF);
    t = 999 is pure noise, t = 0 is (almost) data. **Timesteps run 999..0, the strided list is
    descending**: ``strided_timesteps()`` gives [990, 960, ..., 30, 0], and step i goes from
    ``timesteps[i]`` to ``timesteps[i + 1]``.
  * ``abar_t`` is DDPM's cumulative product alpha-bar_t, read from ``scheduler.alphas_cumprod``.
  * Every function takes the stage-1 bundle ``stage1`` (``.unet`` + ``.scheduler``, see
    ``diffnb.a.models``), the prompt embeddings ``(1, L, D)`` and a ``torch.Generator`` explicitly; there
    are no globals.  Noise is drawn with diffusers' ``randn_tensor`` in the order ``IFPipeline`` draws
    it (initial noise, then one draw per step), so a seed gives the pipeline's images.
  * Sampling sets the strided list on ``stage1.scheduler`` (``set_timesteps(timesteps=...)``), as the
    course does: the scheduler's learned-range variance needs to know the previous timestep.
  * ``scale`` is the classifier-free guidance scale gamma: any finite number.  1 gives the plain
    conditional estimate, 0 the unconditional one, > 1 guides harder (the course uses 7); a negative
    gamma is legal and steers *away* from the prompt.  NaN, inf, None and strings are refused.
  * Inputs are checked once, at the public function, before any work (the loop's steps check
    nothing): every image must be finite, a *clean* image (``forward``, ``sdedit``, ``inpaint``) must be
    in [-1, 1], and height and width must be multiples of the UNet's downsampling factor.  Noisy
    images x_t (pure noise included) legitimately leave [-1, 1] and are not range-checked.

The one loop (``denoise_loop``) runs from index ``i_start`` to the end of the strided list.  What
changes between sections is a *noise estimator* ``estimator(x_t, t) -> (eps, variance)`` (plain,
classifier-free guidance, and in ``diffnb.a.views`` anagrams and hybrids), a start index (SDEdit) or a
per-step *projection* ``project(x_prev, prev_t) -> x_prev`` (inpainting).  All UNet passes of a step
(conditional, unconditional, every view) go through the UNet as one batch (``run_unet``).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Sequence

import torch
import torchvision.transforms.functional as TF
from diffusers.utils.torch_utils import randn_tensor

from diffnb.a.images import check_mask
from diffnb.a.models import check_bundle

#: ``estimator(x_t, t) -> (eps, variance)``, both ``(N, C, H, W)``.
Estimator = Callable[[torch.Tensor, int], "tuple[torch.Tensor, torch.Tensor]"]
#: ``project(x_prev, prev_t) -> x_prev``, applied after every step.
Projection = Callable[[torch.Tensor, int], torch.Tensor]


class TraceStep(NamedTuple):
    """One recorded step of the loop: step number (1-based), ``t -> prev_t``, the image ``x_prev``."""
    step: int
    t: int
    prev_t: int
    image: torch.Tensor


# --------------------------------------------------------------------------- checks at the edge

def scheduler_of(stage1_or_scheduler):
    """The ``DDPMScheduler`` of a bundle, or the scheduler itself."""
    sched = getattr(stage1_or_scheduler, "scheduler", stage1_or_scheduler)
    if not hasattr(sched, "alphas_cumprod") or not hasattr(sched, "config"):
        got = "None" if stage1_or_scheduler is None else type(stage1_or_scheduler).__name__
        raise TypeError(f"stage1 must be a stage-1 bundle or a diffusers DDPMScheduler, got {got}; "
                        "load the bundle with diffnb.a.models.load_stage1(...)")
    return sched


def _check_t(t, sched, name: str = "t") -> int:
    T = sched.config.num_train_timesteps
    if torch.is_tensor(t) and t.numel() == 1 and not t.is_floating_point():
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        raise TypeError(f"{name} must be an integer timestep in [0, {T}), got {t!r} ({type(t).__name__}); "
                        f"timesteps run {T - 1}..0")
    t = int(t)
    if not 0 <= t < T:
        raise ValueError(f"{name}={t} is out of range: timesteps are integers in [0, {T}) "
                         f"(they run {T - 1}..0, {T - 1} = pure noise)")
    return t


def _check_on_schedule(t: int, sched) -> None:
    """``t`` must be on the scheduler's timesteps once a strided list is set (it defines the previous t)."""
    if getattr(sched, "custom_timesteps", False) or getattr(sched, "num_inference_steps", None):
        ts = sched.timesteps.tolist()
        if t not in ts:
            shown = ts if len(ts) <= 8 else ts[:4] + ["..."] + ts[-2:]
            raise ValueError(f"t={t} is not on the scheduler's timesteps {shown}; use a t from the strided "
                             "list (strided_timesteps(stage1)) or set your list with "
                             "stage1.scheduler.set_timesteps(timesteps=...)")


def _check_timesteps(timesteps, sched) -> list[int]:
    if torch.is_tensor(timesteps):
        timesteps = timesteps.tolist()
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        raise TypeError(f"timesteps must be a list of integers such as strided_timesteps(stage1), got "
                        f"{timesteps!r} ({type(timesteps).__name__})")
    try:
        ts = [_check_t(t, sched, name="timestep") for t in timesteps]
    except TypeError as err:
        raise TypeError(f"timesteps must be a list of integers such as strided_timesteps(stage1): {err}") from None
    if len(ts) < 2:
        raise ValueError(f"timesteps needs at least two entries (one step goes timesteps[i] -> timesteps[i+1]), got {ts}")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly descending (they run 999..0), got {ts[:6]}...")
    return ts


def _check_i_start(i_start, ts: list[int]) -> int:
    if isinstance(i_start, bool) or not isinstance(i_start, numbers.Integral):
        raise TypeError(f"i_start must be an integer index into the timesteps, got {i_start!r}")
    if not 0 <= i_start <= len(ts) - 2:
        raise ValueError(f"i_start={i_start} leaves no step: the list has {len(ts)} timesteps, so i_start "
                         f"must be in [0, {len(ts) - 2}] (index 0 is t={ts[0]})")
    return int(i_start)


def _use_timesteps(sched, ts: list[int]) -> None:
    """Put the strided list on the scheduler (``_get_variance`` reads the previous timestep from it)."""
    if not (getattr(sched, "custom_timesteps", False) and sched.timesteps.tolist() == ts):
        sched.set_timesteps(timesteps=ts)


def _check_scale(scale, name: str = "scale") -> float:
    """The CFG guidance scale gamma as a float: any finite number (negative is legal, see the module doc)."""
    if torch.is_tensor(scale) and scale.numel() == 1:
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"{name} (the guidance scale) must be a number, got {scale!r} ({type(scale).__name__}); "
                        "pass a number such as 7.0 (1.0 turns guidance off)")
    value = float(scale)
    if not math.isfinite(value):
        raise ValueError(f"{name} (the guidance scale) must be a finite number, got {value}; "
                         "pass a number such as 7.0 (1.0 turns guidance off)")
    return value


def _check_count(n, name: str = "num_images") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {n!r} ({type(n).__name__}); pass e.g. {name}=4")
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}; pass e.g. {name}=4")
    return int(n)


def _check_generator(generator) -> None:
    ok = generator is None or isinstance(generator, torch.Generator) or (
        isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator))
    if not ok:
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r} "
                        f"({type(generator).__name__}); for a seed use torch.Generator().manual_seed(seed)")


def _check_blur(kernel_size, sigma) -> tuple[int, float]:
    """A Gaussian blur's ``kernel_size`` (positive odd int) and ``sigma`` (finite, positive)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}; e.g. 5 or 33")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma (the blur's std in pixels) must be a number, got {sigma!r} ({type(sigma).__name__}); "
                        "e.g. 2.0")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma (the blur's std in pixels) must be a finite positive number, got {sigma!r}; e.g. 2.0")
    return int(kernel_size), float(sigma)


#: A clean image may overshoot [-1, 1] a little (resampling); beyond this it is on another scale.
CLEAN_LIMIT = 1.5


def _check_pixels(x, name: str, clean: bool = False) -> torch.Tensor:
    """A float tensor whose values are finite, and for a ``clean`` image within [-1, 1] (one reduction)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a tensor (N, C, H, W) with values in [-1, 1], got {type(x).__name__}; "
                        "use diffnb.a.images.load_image")
    if not (x.is_floating_point()):
        raise TypeError(f"{name} has dtype {x.dtype}; expected a float tensor with values in [-1, 1] "
                        "(pixels in [0, 255]: x.float() / 127.5 - 1, or load files with diffnb.load_image)")
    if x.numel():
        m = float(x.detach().abs().amax())                    # NaN and inf propagate through amax
        if not math.isfinite(m):
            what = "NaN" if math.isnan(m) else "inf"
            raise ValueError(f"{name} contains {what} values; every pixel must be a finite number "
                             "(look at how the image was made: a division by zero, a log of 0, a NaN mask ...)")
        if clean and m > CLEAN_LIMIT:
            raise ValueError(f"{name} has values up to {m:.4g} in magnitude; a clean image must be in [-1, 1]. "
                             "Pixels in [0, 255]: map them with x / 127.5 - 1 (from [0, 1]: x * 2 - 1), "
                             "or load the file with diffnb.load_image(path, stage1.unet.config.sample_size)")
    return x


def _size_factor(unet) -> int:
    """How much the UNet shrinks an image at its coarsest level (2 ** number of downsamplings)."""
    n = getattr(unet, "num_upsamplers", None)
    if isinstance(n, int) and n >= 0:
        return 2 ** n
    levels = getattr(getattr(unet, "config", None), "block_out_channels", None)
    return 2 ** (len(levels) - 1) if levels else 1


def _sample_hw(stage1) -> tuple[int, int]:
    size = stage1.unet.config.sample_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _fits(stage1, n: int) -> bool:
    f = _size_factor(stage1.unet)
    return n >= f and n % f == 0


def _check_hw(stage1, h: int, w: int, what: str) -> None:
    """An image's height and width must be positive multiples of the UNet's downsampling factor."""
    if not (_fits(stage1, h) and _fits(stage1, w)):
        sh, sw = _sample_hw(stage1)
        f = _size_factor(stage1.unet)
        raise ValueError(f"{what} is {h} x {w}, but this UNet (sample_size {sh} x {sw}) shrinks images by a "
                         f"factor of {f}, so height and width must be positive multiples of {f}; resize it to "
                         f"{sh} x {sw} (diffnb.load_image(path, stage1.unet.config.sample_size) does)")


def _check_sample(stage1, num_images, height, width) -> tuple[int, int, int]:
    """``(N, H, W)`` of a batch of pure noise: ``num_images`` >= 1, ``height``/``width`` (None: the model's)."""
    n = _check_count(num_images, "num_images")
    sh, sw = _sample_hw(stage1)
    hw = []
    for name, v, default in (("height", height, sh), ("width", width, sw)):
        if v is None:
            v = default
        elif isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be a positive integer or None (the model's {default}), got {v!r} "
                            f"({type(v).__name__})")
        if not _fits(stage1, int(v)):
            f = _size_factor(stage1.unet)
            raise ValueError(f"{name}={v} does not fit this UNet (sample_size {sh} x {sw}): it shrinks images by a "
                             f"factor of {f}, so {name} must be a positive multiple of {f}; pass {name}=None "
                             f"for the model's {default}")
        hw.append(int(v))
    return n, hw[0], hw[1]


def _model_device_dtype(stage1) -> tuple[torch.device, torch.dtype]:
    unet = stage1.unet
    device = getattr(stage1, "_execution_device", None)    # IFPipeline, also under cpu offload
    if device is None:
        device = getattr(unet, "device", None) or next(unet.parameters()).device
    dtype = getattr(unet, "dtype", None) or next(unet.parameters()).dtype
    return torch.device(device), dtype


def _check_image(x, stage1, name: str = "image", clean: bool = False, where=None) -> torch.Tensor:
    """Validate ``(N, C, H, W)`` with the UNet's C, a size the UNet takes and finite values (``clean``: in
    [-1, 1] too), and move it to the model's device and dtype (``where``: ``_model_device_dtype``, if
    the caller has it already; finding the pipeline's execution device takes milliseconds)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a tensor (N, C, H, W) in [-1, 1], got {type(x).__name__}; "
                        "use diffnb.a.images.load_image")
    c = stage1.unet.config.in_channels
    if x.dim() != 4 or x.shape[1] != c:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (N, {c}, H, W) with values in [-1, 1]")
    _check_hw(stage1, x.shape[-2], x.shape[-1], name)
    _check_pixels(x, name, clean)
    device, dtype = where or _model_device_dtype(stage1)
    return x.to(device=device, dtype=dtype)


def _encoder_dim(unet) -> int | None:
    cfg = unet.config
    return getattr(cfg, "encoder_hid_dim", None) or getattr(cfg, "cross_attention_dim", None)


def _check_embeds(e, stage1, name: str, where=None) -> torch.Tensor:
    if not torch.is_tensor(e):
        raise TypeError(f"{name} must be an embedding tensor (1, L, D), got {type(e).__name__}; "
                        "use diffnb.a.prompts.load_embeddings().get(prompt)")
    if e.dim() == 2:
        e = e.unsqueeze(0)
    d = _encoder_dim(stage1.unet)
    if e.dim() != 3 or (d is not None and e.shape[-1] != d):
        want = f"(1, L, {d})" if d is not None else "(1, L, D)"
        raise ValueError(f"{name} has shape {tuple(e.shape)}; this UNet expects {want} prompt embeddings "
                         "(use the embeddings file made for this model)")
    if not e.is_floating_point() or (e.numel() and not math.isfinite(float(e.detach().abs().amax()))):
        raise ValueError(f"{name} holds non-finite (NaN or inf) or non-float values; prompt embeddings must be "
                         "finite floats (reload them: diffnb.a.prompts.load_embeddings().get(prompt))")
    device, dtype = where or _model_device_dtype(stage1)
    return e.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------- schedule maths

def forward(im: torch.Tensor, t: int, stage1_or_scheduler, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample q(x_t | x_0): noise a clean image ``im`` ``(N, C, H, W)`` (values in [-1, 1]) to timestep ``t``.

    Returns ``x_t`` with ``im``'s shape, device and dtype.
    """
    sched = scheduler_of(stage1_or_scheduler)
    t = _check_t(t, sched)
    _check_pixels(im, "im", clean=True)
    _check_generator(generator)
    return _forward(im, t, sched, generator)


def _forward(im: torch.Tensor, t: int, sched, generator) -> torch.Tensor:
    abar_t = sched.alphas_cumprod[t].to(im.device)
    eps = randn_tensor(im.shape, generator=generator, device=im.device, dtype=im.dtype)
    return abar_t ** 0.5 * im + (1 - abar_t) ** 0.5 * eps      # x_t = sqrt(abar_t) x_0 + sqrt(1-abar_t) eps  (DDPM eq. 4)


def strided_timesteps(stage1, start: int = 990, stride: int = 30) -> list[int]:
    """The descending list ``[start, start - stride, ..., 0]`` (0 appended if the stride misses it).

    Also sets it on ``stage1.scheduler`` (``set_timesteps(timesteps=...)``).
    """
    sched = scheduler_of(stage1)
    start = _check_t(start, sched, name="start")
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride <= 0:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    ts = list(range(start, -1, -int(stride)))
    if ts[-1] != 0:
        ts.append(0)
    if len(ts) < 2:
        raise ValueError(f"start={start} gives a single timestep; use start > 0")
    sched.set_timesteps(timesteps=ts)
    return ts


def _abar(sched, t: int, like: torch.Tensor) -> torch.Tensor:
    return sched.alphas_cumprod[t].to(like.device)           # 0-d float32; keeps like's dtype in products


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, t: int, stage1) -> torch.Tensor:
    """x0_hat from a noise estimate; no clipping. Shapes ``(N, C, H, W)``."""
    sched = scheduler_of(stage1)
    abar_t = _abar(sched, _check_t(t, sched), x_t)
    return (x_t - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5  # x0_hat = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t)  (DDPM eq. 15)


def clip_x0(x0: torch.Tensor, stage1) -> torch.Tensor:
    """Clip x0_hat as the scheduler config asks: dynamic thresholding, else clamp, else nothing."""
    sched = scheduler_of(stage1)
    cfg = sched.config
    if cfg.thresholding:
        return sched._threshold_sample(x0)                    # Imagen dynamic thresholding (Saharia et al. 2022, sec. 2.3)
    if cfg.clip_sample:
        return x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
    return x0


# --------------------------------------------------------------------------- the UNet, one batch

def run_unet(stage1, images: Sequence[torch.Tensor], embeds: Sequence[torch.Tensor] | "EmbeddingBatch",
             t: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Send every pair (``images[k]`` ``(N_k, C, H, W)``, ``embeds[k]`` ``(1 or N_k, L, D)``) through the
    UNet as ONE batch and split the result.  Returns ``[(eps_k, variance_k)]``, each ``(N_k, C, H, W)``.

    ``embeds`` may be an ``EmbeddingBatch``, which concatenates the embeddings once for all steps.
    """
    sizes = [x.shape[0] for x in images]
    batch = embeds if isinstance(embeds, EmbeddingBatch) else EmbeddingBatch(embeds)
    e = batch(sizes)                                          # (sum N_k, L, D)
    x = torch.cat(list(images))                               # (sum N_k, C, H, W)
    out = stage1.unet(x, t, encoder_hidden_states=e).sample   # (sum N_k, 2C, H, W): eps, variance
    eps, var = out.split(x.shape[1], dim=1)
    return list(zip(eps.split(sizes), var.split(sizes)))


class EmbeddingBatch:
    """The prompt embeddings of one UNet batch, concatenated once per batch layout and reused at every
    step (they do not change during sampling).  ``batch(sizes)`` -> ``(sum sizes, L, D)``."""

    def __init__(self, embeds: Sequence[torch.Tensor]):
        self.embeds = list(embeds)
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, sizes: Sequence[int]) -> torch.Tensor:
        key = tuple(int(n) for n in sizes)
        if key not in self._cache:
            if len(key) != len(self.embeds) or not key:
                raise ValueError(f"run_unet needs one embedding per image batch, got {len(key)} and {len(self.embeds)}")
            for k, (e, n) in enumerate(zip(self.embeds, key)):
                if e.shape[0] not in (1, n):
                    raise ValueError(f"embedding {k} has batch {e.shape[0]} but its images have batch {n}; "
                                     "pass (1, L, D) or (N, L, D)")
            self._cache[key] = torch.cat([e.expand(n, -1, -1) for e, n in zip(self.embeds, key)])
        return self._cache[key]


def plain_estimator(stage1, prompt_embeds: torch.Tensor) -> Estimator:
    """``(x_t, t) -> (eps, variance)`` from one conditional pass (no guidance)."""
    batch = EmbeddingBatch([prompt_embeds])

    def estimate(x, t):
        [(eps, var)] = run_unet(stage1, [x], batch, t)
        return eps, var
    return estimate


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps = eps_u + gamma (eps_c - eps_u)  (Ho & Salimans 2022, eq. 6).

    The per-step formula: it checks nothing (the estimators check ``scale`` once, when built)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def cfg_estimator(stage1, cond_embeds: torch.Tensor, uncond_embeds: torch.Tensor, scale: float) -> Estimator:
    """``(x_t, t) -> (eps, variance)`` with CFG: one UNet call on the batch [x (uncond); x (cond)].

    ``scale`` is gamma, any finite number (negative is legal: it steers away from the prompt); it is
    checked here, once, not at every step. The variance is the conditional branch's (as the course and
    ``IFPipeline`` do).
    """
    scale = _check_scale(scale)
    batch = EmbeddingBatch([uncond_embeds, cond_embeds])

    def estimate(x, t):
        (eps_u, _), (eps_c, var_c) = run_unet(stage1, [x, x], batch, t)
        return cfg_combine(eps_u, eps_c, scale), var_c
    return estimate


# --------------------------------------------------------------------------- one step

def _add_variance(predicted_variance, t, image, sched, generator):
    log_var = sched._get_variance(t, predicted_variance)      # learned range: log of a mix of beta_tilde and beta (Improved DDPM eq. 15)
    z = randn_tensor(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return image + torch.exp(0.5 * log_var) * z               # x_{t'} = mu + sigma z, sigma = exp(log_var / 2)  (DDPM alg. 2, line 4)


def add_variance(predicted_variance: torch.Tensor, t: int, image: torch.Tensor, stage1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Add the learned-range noise of the step from ``t`` (diffusers' ``DDPMScheduler._get_variance``).

    ``predicted_variance`` is the UNet's variance output ``(N, C, H, W)`` (values near [-1, 1]);
    ``image`` is the posterior mean.  ``t`` must be on the scheduler's (strided) timesteps.
    """
    sched = scheduler_of(stage1)
    t = _check_t(t, sched)
    _check_on_schedule(t, sched)
    return _add_variance(predicted_variance, t, image, sched, generator)


def _ddpm_step(x_t, eps, variance, t, prev_t, sched, stage1, generator):
    abar_t = _abar(sched, t, x_t)
    abar_prev = _abar(sched, prev_t, x_t)
    alpha = abar_t / abar_prev                                # alpha_t of the strided step = abar_t / abar_t'
    beta = 1 - alpha                                          # beta_t = 1 - alpha_t
    x0_hat = (x_t - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5   # DDPM eq. 15 solved for x_0
    x0_hat = clip_x0(x0_hat, stage1)                          # as the scheduler config asks (IF: dynamic thresholding)
    coef_x0 = abar_prev ** 0.5 * beta / (1 - abar_t)          # sqrt(abar_t') beta_t / (1 - abar_t)          (DDPM eq. 7)
    coef_xt = alpha ** 0.5 * (1 - abar_prev) / (1 - abar_t)   # sqrt(alpha_t) (1 - abar_t') / (1 - abar_t)   (DDPM eq. 7)
    mean = coef_x0 * x0_hat + coef_xt * x_t                   # mu_tilde(x_t, x0_hat)                          (DDPM eq. 7)
    return _add_variance(variance, t, mean, sched, generator)


def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, variance: torch.Tensor, t: int, prev_t: int, stage1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One strided DDPM step ``x_t -> x_{prev_t}`` from a noise estimate and the UNet's variance.

    All tensors ``(N, C, H, W)``; ``t`` and ``prev_t`` are consecutive entries of the scheduler's list.
    Equals ``DDPMScheduler.step`` with the same timesteps and generator.
    """
    sched = scheduler_of(stage1)
    t, prev_t = _check_t(t, sched), _check_t(prev_t, sched, name="prev_t")
    _check_on_schedule(t, sched)
    expected = int(sched.previous_timestep(t))
    if prev_t != expected:
        raise ValueError(f"prev_t={prev_t} does not follow t={t} on the scheduler's timesteps (next is "
                         f"{expected}); pass consecutive entries of the strided list")
    return _ddpm_step(x_t, eps, variance, t, prev_t, sched, stage1, generator)


# --------------------------------------------------------------------------- the one loop

@torch.no_grad()
def denoise_loop(x: torch.Tensor, timesteps: Sequence[int], i_start: int, stage1, estimator: Estimator,
                 generator: torch.Generator | None = None, project: Projection | None = None, *,
                 intermediates: list | None = None, return_every: int = 5, progress: bool = False,
                 desc: str = "denoising") -> torch.Tensor:
    """THE denoising loop: for i = i_start .. len(timesteps) - 2, step ``timesteps[i] -> timesteps[i+1]``.

    Per step: ``eps, variance = estimator(x, t)``; x0_hat, DDPM posterior mean and learned variance
    (``ddpm_step``); then ``x = project(x, prev_t)`` if a projection is given.

    Args:
        x: ``(N, C, H, W)``, the image at ``timesteps[i_start]``.
        intermediates: pass a list to collect ``TraceStep(step, t, prev_t, image)`` every
            ``return_every`` steps (steps 1, 1 + k, ...), e.g. for the figure of section 1.4.
        progress: show a tqdm bar.

    The inputs are checked once, here (``x`` finite, the timesteps, ``i_start``); the steps check nothing.
    Returns the image at ``timesteps[-1]`` (0 for the strided list), ``(N, C, H, W)``.
    """
    sched = scheduler_of(stage1)
    _check_pixels(x, "x")
    if not callable(estimator):
        raise TypeError(f"estimator must be a function (x_t, t) -> (eps, variance), got {type(estimator).__name__}; "
                        "build one with plain_estimator or cfg_estimator")
    if project is not None and not callable(project):
        raise TypeError(f"project must be a function (x_prev, prev_t) -> x_prev or None, got {type(project).__name__}")
    _check_generator(generator)
    return _denoise(x, timesteps, i_start, stage1, sched, estimator, generator, project, intermediates,
                    return_every, progress, desc)


@torch.no_grad()
def _denoise(x, timesteps, i_start, stage1, sched, estimator, generator, project, intermediates, return_every,
             progress, desc):
    """``denoise_loop`` without the checks of ``x``, ``estimator`` and ``project`` (the callers made them)."""
    ts = _check_timesteps(timesteps, sched)
    i_start = _check_i_start(i_start, ts)
    if intermediates is not None and (isinstance(return_every, bool) or not isinstance(return_every, numbers.Integral)
                                      or return_every < 1):
        raise ValueError(f"return_every must be a positive integer, got {return_every!r}")
    _use_timesteps(sched, ts)
    steps = range(i_start, len(ts) - 1)
    if progress:
        from diffnb.core.progress import progress as tqdm
        steps = tqdm(steps, desc=desc, leave=False)
    for k, i in enumerate(steps):
        t, prev_t = ts[i], ts[i + 1]
        eps, var = estimator(x, t)                            # (N, C, H, W) each
        x = _ddpm_step(x, eps, var, t, prev_t, sched, stage1, generator)
        if project is not None:
            x = project(x, prev_t)
        if intermediates is not None and k % return_every == 0:
            intermediates.append(TraceStep(k + 1, t, prev_t, x.detach().clone()))
    return x


def pure_noise(stage1, generator: torch.Generator | None = None, num_images: int = 1,
               height: int | None = None, width: int | None = None) -> torch.Tensor:
    """x_T ~ N(0, I) of shape ``(num_images, C, H, W)``, H and W from ``unet.config.sample_size``.

    ``num_images`` >= 1; ``height`` and ``width`` (None: the model's size) must be multiples of the
    UNet's downsampling factor.  Drawn as ``IFPipeline.prepare_intermediate_images`` draws it (times
    ``init_noise_sigma``).
    """
    check_bundle(stage1)
    n, height, width = _check_sample(stage1, num_images, height, width)
    _check_generator(generator)
    return _noise(stage1, generator, n, height, width)


def _noise(stage1, generator, n: int, height: int, width: int, where=None) -> torch.Tensor:
    device, dtype = where or _model_device_dtype(stage1)
    x = randn_tensor((n, stage1.unet.config.in_channels, height, width), generator=generator, device=device,
                     dtype=dtype)
    return x * scheduler_of(stage1).init_noise_sigma


# --------------------------------------------------------------------------- the course's functions

@torch.no_grad()
def estimate_noise(stage1, im_noisy: torch.Tensor, t: int, prompt_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's noise estimate and variance for ``im_noisy`` ``(N, C, H, W)`` at ``t``: ``(eps, variance)``."""
    x, t, e = _check_one_step(stage1, im_noisy, t, prompt_embeds)
    return plain_estimator(stage1, e)(x, t)


def _check_one_step(stage1, im_noisy, t, prompt_embeds):
    check_bundle(stage1)
    t = _check_t(t, scheduler_of(stage1))
    where = _model_device_dtype(stage1)
    x = _check_image(im_noisy, stage1, "im_noisy", where=where)
    return x, t, _check_embeds(prompt_embeds, stage1, "prompt_embeds", where)


@torch.no_grad()
def one_step_denoise(stage1, im_noisy: torch.Tensor, t: int, prompt_embeds: torch.Tensor) -> torch.Tensor:
    """Section 1.3: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), one UNet call, no clipping.

    Returns ``(N, C, H, W)`` (values may leave [-1, 1]; ``to_display`` clamps).
    """
    x_t, t, e = _check_one_step(stage1, im_noisy, t, prompt_embeds)
    eps, _ = plain_estimator(stage1, e)(x_t, t)
    return predict_x0(x_t, eps, t, stage1)


def iterative_denoise(im_noisy: torch.Tensor, i_start: int, stage1, prompt_embeds: torch.Tensor,
                      timesteps: Sequence[int], generator: torch.Generator | None = None, *,
                      intermediates: list | None = None, return_every: int = 5,
                      progress: bool = False) -> torch.Tensor:
    """Section 1.4: denoise ``im_noisy`` (at ``timesteps[i_start]``) to t = ``timesteps[-1]``, no guidance.

    Returns ``(N, C, H, W)``; see ``denoise_loop`` for ``intermediates`` / ``return_every``.
    """
    check_bundle(stage1)
    where = _model_device_dtype(stage1)
    x = _check_image(im_noisy, stage1, "im_noisy", where=where)
    e = _check_embeds(prompt_embeds, stage1, "prompt_embeds", where)
    _check_generator(generator)
    return _denoise(x, timesteps, i_start, stage1, scheduler_of(stage1), plain_estimator(stage1, e), generator,
                    None, intermediates, return_every, progress, "denoising")


def iterative_denoise_cfg(im_noisy: torch.Tensor, i_start: int, stage1, cond_embeds: torch.Tensor,
                          uncond_embeds: torch.Tensor, timesteps: Sequence[int], scale: float = 7.0,
                          generator: torch.Generator | None = None, *, intermediates: list | None = None,
                          return_every: int = 5, progress: bool = False) -> torch.Tensor:
    """Section 1.6: the loop with classifier-free guidance, eps = eps_u + scale (eps_c - eps_u).

    ``scale`` is gamma: any finite number (1 = no guidance; negative is legal, it steers away from the
    prompt). ``im_noisy`` is x_t, not range-checked (noise leaves [-1, 1]). The conditional and
    unconditional passes are one UNet batch of 2N per step. Returns ``(N, C, H, W)``.
    """
    check_bundle(stage1)
    where = _model_device_dtype(stage1)
    x = _check_image(im_noisy, stage1, "im_noisy", where=where)
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    _check_generator(generator)
    return _denoise(x, timesteps, i_start, stage1, scheduler_of(stage1), est, generator, None, intermediates,
                    return_every, progress, "CFG sampling")


def _cfg(stage1, cond_embeds, uncond_embeds, scale, where) -> Estimator:
    """The checked embeddings and scale as a CFG estimator (every check made here, once)."""
    c = _check_embeds(cond_embeds, stage1, "cond_embeds", where)
    u = _check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    return cfg_estimator(stage1, c, u, scale)


def sample_cfg(stage1, cond_embeds: torch.Tensor, uncond_embeds: torch.Tensor, timesteps: Sequence[int] | None = None,
               scale: float = 7.0, generator: torch.Generator | None = None, num_images: int = 1,
               height: int | None = None, width: int | None = None, progress: bool = False) -> torch.Tensor:
    """Sections 1.5-1.6: ``iterative_denoise_cfg`` from pure noise (``pure_noise``), i_start = 0.

    ``timesteps`` defaults to ``strided_timesteps(stage1)``; ``scale`` as in ``iterative_denoise_cfg``
    (negative is legal). ``num_images`` >= 1; ``height``/``width`` default to the model's size.
    Returns ``(num_images, C, H, W)``.
    """
    check_bundle(stage1)
    sched = scheduler_of(stage1)
    where = _model_device_dtype(stage1)
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    n, h, w = _check_sample(stage1, num_images, height, width)
    _check_generator(generator)
    ts = strided_timesteps(stage1) if timesteps is None else _check_timesteps(timesteps, sched)
    x = _noise(stage1, generator, n, h, w, where)
    return _denoise(x, ts, 0, stage1, sched, est, generator, None, None, 5, progress, "CFG sampling")


def sdedit(im: torch.Tensor, i_starts: Sequence[int], stage1, cond_embeds: torch.Tensor,
           uncond_embeds: torch.Tensor, timesteps: Sequence[int], scale: float = 7.0,
           generator: torch.Generator | None = None, progress: bool = False) -> list[torch.Tensor]:
    """Section 1.7 (SDEdit): for each start index, noise ``im`` to ``timesteps[i_start]`` with ``forward``
    and denoise it from there with CFG.

    ``im`` is a clean image ``(N, C, H, W)`` in [-1, 1] (``diffnb.load_image``); ``i_starts`` an index or
    a list of indices into ``timesteps``; ``scale`` as in ``iterative_denoise_cfg`` (negative is legal).
    Returns one ``(N, C, H, W)`` tensor per start index."""
    check_bundle(stage1)
    sched = scheduler_of(stage1)
    ts = _check_timesteps(timesteps, sched)
    where = _model_device_dtype(stage1)
    x0 = _check_image(im, stage1, "im", clean=True, where=where)
    if isinstance(i_starts, numbers.Integral) and not isinstance(i_starts, bool):
        i_starts = [i_starts]
    if isinstance(i_starts, (str, bytes)) or not hasattr(i_starts, "__iter__"):
        raise TypeError(f"i_starts must be a start index or a list of them, got {i_starts!r}; e.g. [1, 3, 5, 7, 10, 20]")
    starts = [_check_i_start(i, ts) for i in i_starts]
    if not starts:
        raise ValueError("i_starts is empty; pass one start index or more, e.g. [1, 3, 5, 7, 10, 20]")
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    _check_generator(generator)
    out = []
    for i_start in starts:
        x_t = _forward(x0, ts[i_start], sched, generator)
        out.append(_denoise(x_t, ts, i_start, stage1, sched, est, generator, None, None, 5, progress, "CFG sampling"))
    return out


def inpaint(original: torch.Tensor, mask: torch.Tensor, stage1, cond_embeds: torch.Tensor,
            uncond_embeds: torch.Tensor, timesteps: Sequence[int], scale: float = 7.0,
            generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Section 1.7.2 (RePaint as the course): start from pure noise; after every step keep the model's
    pixels where ``mask`` is 1 (edit) and put the original, noised to ``prev_t``, where it is 0.

    At the last step (``prev_t`` = ``timesteps[-1]`` = 0) the kept pixels are the original itself, so
    every unmasked pixel of the result equals ``original``.  ``original`` is a clean image in [-1, 1];
    ``scale`` as in ``iterative_denoise_cfg`` (negative is legal).  Returns ``(N, C, H, W)``.
    """
    check_bundle(stage1)
    where = _model_device_dtype(stage1)
    x0 = _check_image(original, stage1, "original", clean=True, where=where)
    m = check_mask(mask, x0)                                  # (N or 1, 1, H, W), 1 = edit
    sched = scheduler_of(stage1)
    ts = _check_timesteps(timesteps, sched)
    est = _cfg(stage1, cond_embeds, uncond_embeds, scale, where)
    _check_generator(generator)
    n, _, h, w = x0.shape

    def project(x_prev, prev_t):
        known = x0 if prev_t == ts[-1] == 0 else _forward(x0, prev_t, sched, generator)  # q(x_t' | x_0) outside the mask
        return m * x_prev + (1 - m) * known                   # x_t' <- m x_t' + (1 - m) forward(x_orig, t')

    x = _noise(stage1, generator, n, h, w, where)
    return _denoise(x, ts, 0, stage1, sched, est, generator, project, None, 5, progress, "inpainting")


def blur_denoise(im: torch.Tensor, kernel_size: int = 5, sigma: float = 2.0) -> torch.Tensor:
    """Section 1.2's classical baseline: a ``kernel_size`` x ``kernel_size`` Gaussian blur with std ``sigma``.

    ``im``: ``(N, C, H, W)`` (or ``(C, H, W)``); same shape back. Uses torchvision's ``gaussian_blur``
    (what ``transforms.GaussianBlur`` calls, without its random sigma draw).
    """
    kernel_size, sigma = _check_blur(kernel_size, sigma)
    _check_pixels(im, "im")
    return TF.gaussian_blur(im, [kernel_size] * 2, [sigma] * 2)
