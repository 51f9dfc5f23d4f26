"""Images and masks for Part A: load, crop, scale, and check them.

Conventions (stated once):
  * Model images are tensors ``(N, C, H, W)`` with values in [-1, 1] (DeepFloyd IF's pixel space);
    ``to_display`` maps them to [0, 1] for figures.
  * ``size`` is the model's ``unet.config.sample_size`` (an int for a square, or ``(H, W)``); nothing
    here assumes 64.
  * Masks are float tensors ``(1, 1, H, W)`` of 0s and 1s where **1 = edit** (the region inpainting
    repaints) and 0 = keep. In a mask PNG, white is 1.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError

from diffnb.core.checks import is_int
from diffnb.core.paths import data_dir

Size = Union[int, tuple[int, int]]
ImageSource = Union[str, Path, Image.Image]


def _size_hw(size: Size) -> tuple[int, int]:
    """``size`` as ``(H, W)``: a positive int (a square) or a pair of positive ints."""
    if is_int(size):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(is_int(s) for s in size)):
        raise TypeError(f"size must be a positive int or a pair of ints (height, width), got {size!r} "
                        f"({type(size).__name__}); use the model's size, e.g. stage1.unet.config.sample_size (32)")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {(h, w)}; use the model's size, e.g. "
                         "stage1.unet.config.sample_size (32)")
    return h, w


#: What PIL raises for a truncated or damaged file (decoders: OSError, PNG chunks: SyntaxError ...).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def _damaged(what: str, where, err: BaseException) -> ValueError:
    detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
    return ValueError(f"the {what} file {where} is damaged or truncated (PIL: {detail}); re-download or re-save it "
                      "(check that it opens in an image viewer), or pass another file")


def _open(path_or_pil: ImageSource, what: str = "image") -> Image.Image:
    if isinstance(path_or_pil, Image.Image):
        try:
            path_or_pil.load()                              # a lazily opened file decodes here
        except _DECODE_ERRORS as err:
            raise _damaged(what, getattr(path_or_pil, "filename", "") or "(a PIL image)", err) from None
        return path_or_pil
    if not isinstance(path_or_pil, (str, Path)):
        raise TypeError(f"{what} must be a file path or a PIL image, got {type(path_or_pil).__name__}")
    path = Path(path_or_pil).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: {path}. Put the file under {data_dir()} (the project's data/ folder) "
            f"and pass its path to the notebook with papermill's -p parameter, "
            f"e.g. -p image_path data/images/campanile.jpg")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError as err:
        raise ValueError(f"{path} is not an image PIL can read (PNG, JPEG, WebP, BMP, GIF, TIFF ...); "
                         "pass an image file, or re-save this one as PNG or JPEG") from err
    except PermissionError:
        raise
    except _DECODE_ERRORS as err:                           # "image file is truncated", "broken data stream" ...
        raise _damaged(what, path, err) from None
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparent pixels become white (drawings on a transparent canvas)."""
    img = ImageOps.exif_transpose(img)                      # phone photos: honour the EXIF rotation
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):    # 16-bit / float greyscale: rescale to 8 bit
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")                               # L, P, CMYK, YCbCr, ... -> RGB


def _resize_crop(img: Image.Image, size: Size) -> Image.Image:
    """Resize the shorter side to fit, then centre-crop to ``size`` (IF was trained on BICUBIC crops)."""
    h, w = _size_hw(size)
    scale = max(h / img.height, w / img.width)
    new_h, new_w = max(h, round(img.height * scale)), max(w, round(img.width * scale))
    img = TF.resize(img, [new_h, new_w], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(img, [h, w])


def load_image(path_or_pil: ImageSource, size: Size) -> torch.Tensor:
    """Load any common image file (or PIL image) as a model input.

    Any mode (RGB, RGBA, L, P, CMYK, 16-bit ...) becomes RGB; the shorter side is resized and the
    centre cropped to ``size`` (use ``stage1.unet.config.sample_size``).

    ``size`` is a positive int or a pair of ints; a damaged or truncated file is one ``ValueError``
    naming it. Returns ``(1, 3, H, W)`` float32 in [-1, 1].
    """
    size = _size_hw(size)                                   # before the file is read
    img = _resize_crop(_to_rgb(_open(path_or_pil)), size)
    x = TF.to_tensor(img)                                   # (3, H, W) in [0, 1]
    return (x * 2 - 1).unsqueeze(0)                         # (1, 3, H, W) in [-1, 1]


def to_display(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model images -> [0, 1] float32 on the CPU, clamped, same shape (ready for plotting)."""
    if not torch.is_tensor(x):
        raise TypeError(f"to_display expects a tensor in [-1, 1], got {type(x).__name__}")
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)


def load_mask(path_or_pil: ImageSource, size: Size) -> torch.Tensor:
    """A mask image (PNG: white = 1 = edit, black = 0 = keep), resized and cropped like ``load_image``.

    Greys are thresholded at 50 %. Returns ``(1, 1, H, W)`` float32 of 0s and 1s.
    """
    size = _size_hw(size)                                   # before the file is read
    img = _to_rgb(_open(path_or_pil, what="mask")).convert("L")
    img = _resize_crop(img, size)
    m = TF.to_tensor(img)                                   # (1, H, W) in [0, 1]
    return (m >= 0.5).float().unsqueeze(0)                  # (1, 1, H, W)


def rectangle_mask(size: Size, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """1 inside rows ``top:top+height`` and columns ``left:left+width``. Returns ``(1, 1, H, W)``."""
    h, w = _size_hw(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"rectangle height and width must be positive, got {height} x {width}")
    if top >= h or left >= w or top + height <= 0 or left + width <= 0:
        raise ValueError(f"rectangle (top={top}, left={left}, {height} x {width}) lies outside the "
                         f"{h} x {w} image; nothing would be edited")
    m = torch.zeros(1, 1, h, w)
    m[..., max(top, 0):top + height, max(left, 0):left + width] = 1.0
    return m


def ellipse_mask(size: Size, cy: float, cx: float, ry: float, rx: float) -> torch.Tensor:
    """1 inside the ellipse centred at pixel ``(cy, cx)`` with radii ``ry`` (rows), ``rx`` (columns).

    Returns ``(1, 1, H, W)``.
    """
    h, w = _size_hw(size)
    if ry <= 0 or rx <= 0:
        raise ValueError(f"ellipse radii must be positive, got ry={ry}, rx={rx}")
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    if not inside.any():
        raise ValueError(f"ellipse (cy={cy}, cx={cx}, ry={ry}, rx={rx}) covers no pixel of the "
                         f"{h} x {w} image")
    return inside.float()[None, None]


def check_mask(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Validate a mask against ``image`` ``(N, C, H, W)`` and return it as ``(N or 1, 1, H, W)``.

    Accepted shapes: ``(H, W)``, ``(1, H, W)`` or ``(N, 1, H, W)`` (N = 1 or the image's N).
    Values must be 0 or 1 (bool is fine); 1 = edit. The result has the image's dtype and device.
    """
    if not torch.is_tensor(mask):
        raise TypeError(f"mask must be a tensor of 0s and 1s, got {type(mask).__name__}; "
                        "use load_mask, rectangle_mask or ellipse_mask")
    if image.dim() != 4:
        raise ValueError(f"image must be (N, C, H, W), got shape {tuple(image.shape)}")
    n, _, h, w = image.shape
    shape = tuple(mask.shape)
    expected = {2: (h, w), 3: (1, h, w), 4: (n, 1, h, w)}
    ok = (mask.dim() == 2 and shape == (h, w)) or (mask.dim() == 3 and shape == (1, h, w)) or \
         (mask.dim() == 4 and shape[1:] == (1, h, w) and shape[0] in (1, n))
    if not ok:
        want = expected.get(mask.dim(), (1, h, w))
        raise ValueError(f"mask has shape {shape}; expected {want} like the image {tuple(image.shape)} "
                         f"(accepted: (H, W), (1, H, W) or (N, 1, H, W)); build it with the image's size")
    m = mask.detach()
    if m.dtype == torch.bool:
        m = m.float()
    if not bool(((m == 0) | (m == 1)).all()):
        bad = m[(m != 0) & (m != 1)]
        raise ValueError(f"mask must hold only 0 (keep) and 1 (edit); found values such as "
                         f"{bad.flatten()[:3].tolist()}; threshold it, e.g. (mask > 0.5).float()")
    m = m.reshape(-1, 1, h, w)                              # (N or 1, 1, H, W)
    return m.to(device=image.device, dtype=image.dtype)
