"""Part A's argument checks, shared by ``denoise`` and ``views``: run once, at the public function,
before any work (the loop's steps check nothing).  Each error names the argument, what it got and the fix.

Images are ``(N, C, H, W)`` float tensors in [-1, 1]; timesteps are integers in [0, T), T =
``scheduler.config.num_train_timesteps``, and a strided list runs down (990, 960, ..., 0).
"""
from __future__ import annotations

import math
import numbers

import torch

from diffnb.core.checks import is_int


def check_t(t, sched, name: str = "t") -> int:
    T = sched.config.num_train_timesteps
    if torch.is_tensor(t) and t.numel() == 1 and not t.is_floating_point():
        t = t.item()
    if not is_int(t):
        raise TypeError(f"{name} must be an integer timestep in [0, {T}), got {t!r} ({type(t).__name__}); "
                        f"timesteps run {T - 1}..0")
    t = int(t)
    if not 0 <= t < T:
        raise ValueError(f"{name}={t} is out of range: timesteps are integers in [0, {T}) "
                         f"(they run {T - 1}..0, {T - 1} = pure noise)")
    return t


def check_timesteps(timesteps, sched) -> list[int]:
    if torch.is_tensor(timesteps):
        timesteps = timesteps.tolist()
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        raise TypeError(f"timesteps must be a list of integers such as strided_timesteps(stage1), got "
                        f"{timesteps!r} ({type(timesteps).__name__})")
    try:
        ts = [check_t(t, sched, name="timestep") for t in timesteps]
    except TypeError as err:
        raise TypeError(f"timesteps must be a list of integers such as strided_timesteps(stage1): {err}") from None
    if len(ts) < 2:
        raise ValueError(f"timesteps needs at least two entries (one step goes timesteps[i] -> timesteps[i+1]), got {ts}")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly descending (they run 999..0), got {ts[:6]}...")
    return ts


def check_i_start(i_start, ts: list[int]) -> int:
    if not is_int(i_start):
        raise TypeError(f"i_start must be an integer index into the timesteps, got {i_start!r}")
    if not 0 <= i_start <= len(ts) - 2:
        raise ValueError(f"i_start={i_start} leaves no step: the list has {len(ts)} timesteps, so i_start "
                         f"must be in [0, {len(ts) - 2}] (index 0 is t={ts[0]})")
    return int(i_start)

def check_scale(scale, name: str = "scale") -> float:
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


def check_count(n, name: str = "num_images") -> int:
    if not is_int(n):
        raise TypeError(f"{name} must be a positive integer, got {n!r} ({type(n).__name__}); pass e.g. {name}=4")
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}; pass e.g. {name}=4")
    return int(n)


def check_generator(generator) -> None:
    ok = generator is None or isinstance(generator, torch.Generator) or (
        isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator))
    if not ok:
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r} "
                        f"({type(generator).__name__}); for a seed use torch.Generator().manual_seed(seed)")


def check_blur(kernel_size, sigma, size: tuple[int, int] | None = None) -> tuple[int, float]:
    """A Gaussian blur's ``kernel_size`` (positive odd int) and ``sigma`` (finite, positive); with ``size``
    ``(H, W)``, the kernel must also fit the image (reflect padding needs ``kernel_size // 2 < min(H, W)``)."""
    if not is_int(kernel_size) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}; e.g. 5 or 33")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma (the blur's std in pixels) must be a number, got {sigma!r} ({type(sigma).__name__}); "
                        "e.g. 2.0")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma (the blur's std in pixels) must be a finite positive number, got {sigma!r}; e.g. 2.0")
    if size is not None and kernel_size // 2 >= min(size):
        h, w = size
        raise ValueError(f"kernel_size={kernel_size} is too large for a {h} x {w} image (reflect padding needs "
                         f"kernel_size // 2 < {min(h, w)}); use a smaller kernel_size")
    return int(kernel_size), float(sigma)


#: A clean image may overshoot [-1, 1] a little (resampling); beyond this it is on another scale.
CLEAN_LIMIT = 1.5


def check_pixels(x, name: str, clean: bool = False) -> torch.Tensor:
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


def check_hw(stage1, h: int, w: int, what: str) -> None:
    """An image's height and width must be positive multiples of the UNet's downsampling factor."""
    if not (_fits(stage1, h) and _fits(stage1, w)):
        sh, sw = _sample_hw(stage1)
        f = _size_factor(stage1.unet)
        raise ValueError(f"{what} is {h} x {w}, but this UNet (sample_size {sh} x {sw}) shrinks images by a "
                         f"factor of {f}, so height and width must be positive multiples of {f}; resize it to "
                         f"{sh} x {sw} (diffnb.load_image(path, stage1.unet.config.sample_size) does)")


def check_sample(stage1, num_images, height, width) -> tuple[int, int, int]:
    """``(N, H, W)`` of a batch of pure noise: ``num_images`` >= 1, ``height``/``width`` (None: the model's)."""
    n = check_count(num_images, "num_images")
    sh, sw = _sample_hw(stage1)
    hw = []
    for name, v, default in (("height", height, sh), ("width", width, sw)):
        if v is None:
            v = default
        elif not is_int(v):
            raise TypeError(f"{name} must be a positive integer or None (the model's {default}), got {v!r} "
                            f"({type(v).__name__})")
        if not _fits(stage1, int(v)):
            f = _size_factor(stage1.unet)
            raise ValueError(f"{name}={v} does not fit this UNet (sample_size {sh} x {sw}): it shrinks images by a "
                             f"factor of {f}, so {name} must be a positive multiple of {f}; pass {name}=None "
                             f"for the model's {default}")
        hw.append(int(v))
    return n, hw[0], hw[1]


def model_device_dtype(stage1) -> tuple[torch.device, torch.dtype]:
    unet = stage1.unet
    device = getattr(stage1, "_execution_device", None)    # IFPipeline, also under cpu offload
    if device is None:
        device = getattr(unet, "device", None) or next(unet.parameters()).device
    dtype = getattr(unet, "dtype", None) or next(unet.parameters()).dtype
    return torch.device(device), dtype


def check_image(x, stage1, name: str = "image", clean: bool = False, where=None) -> torch.Tensor:
    """Validate ``(N, C, H, W)`` with the UNet's C, a size the UNet takes and finite values (``clean``: in
    [-1, 1] too), and move it to the model's device and dtype (``where``: ``model_device_dtype``, if
    the caller has it already; finding the pipeline's execution device takes milliseconds)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a tensor (N, C, H, W) in [-1, 1], got {type(x).__name__}; "
                        "use diffnb.a.images.load_image")
    c = stage1.unet.config.in_channels
    if x.dim() != 4 or x.shape[1] != c:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (N, {c}, H, W) with values in [-1, 1]")
    check_hw(stage1, x.shape[-2], x.shape[-1], name)
    check_pixels(x, name, clean)
    device, dtype = where or model_device_dtype(stage1)
    return x.to(device=device, dtype=dtype)


def _encoder_dim(unet) -> int | None:
    cfg = unet.config
    return getattr(cfg, "encoder_hid_dim", None) or getattr(cfg, "cross_attention_dim", None)


def check_embeds(e, stage1, name: str, where=None) -> torch.Tensor:
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
    device, dtype = where or model_device_dtype(stage1)
    return e.to(device=device, dtype=dtype)
