"""Digits drawn by diffnb: matplotlib's bundled fonts and a small hand-stroke alphabet, thickened,
warped and framed like MNIST, in batched torch.  Part B's offline digits (``diffnb.b.digits``) and the
mini model's digit world (``diffnb.mini.world``) are drawn with it.

Conventions: glyphs at the working resolution are float32 in [0, 1], ``(G, 64, 64)``; rendered
digits are uint8 ``(N, size, size)``, white on black.  MNIST framing: each digit is scaled (aspect
ratio kept) to fit a 20x20 box, then placed in the 28x28 frame so that its intensity-weighted centre
of mass sits at the frame centre, pixel coordinates ``(13.5, 13.5)`` with pixel ``i`` centred at
``i``.  Rendering is deterministic: all randomness comes from one ``torch.Generator``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from diffnb.core.checks import is_int

# Bump whenever the rendered bytes change: cached datasets with another version are re-rendered.
RENDERER_VERSION = "diffnb-digits-2"

# matplotlib's bundled TTF fonts whose digits 0-9 render as ordinary lining figures.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmb10.ttf", "cmti10.ttf", "cmtt10.ttf",
)

# Glyphs that look unlike handwriting and are left out: font file -> digits.
_SKIP_GLYPHS = {"DejaVuSansMono.ttf": (0,), "DejaVuSansMono-Bold.ttf": (0,),
                "DejaVuSansMono-Oblique.ttf": (0,)}      # dotted zeros

# Working resolution of the glyph bank: each base glyph is HEIGHT px tall in a WORK x WORK canvas,
# leaving room for slant, rotation, thickening and elastic warps without clipping.
_WORK = 64
_GLYPH_HEIGHT = 36
_HAND_WEIGHT = 0.45      # share of samples drawn from the hand-stroke alphabet (rest: fonts)
_CHUNK = 2048            # images rendered per batched torch pass
_STROKE_RANGE = (3.2, 7.6)  # stroke widths drawn, in working pixels (about 1.8 to 4.2 px at 28x28)
_N_WIDTHS = 12



# ----------------------------------------------------------------------------------------------
# Glyph bank: every base shape, rendered once per call at the working resolution
# ----------------------------------------------------------------------------------------------
def font_paths() -> list[Path]:
    """The bundled matplotlib fonts used for rendering (those of ``FONT_FILES`` that exist)."""
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in FONT_FILES if (folder / name).exists()]


def _arc(cx, cy, rx, ry, start, stop, n=48):
    """Points on an ellipse from angle ``start`` to ``stop`` (degrees; 0 = right, 90 = down)."""
    t = np.radians(np.linspace(start, stop, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def _hand_strokes() -> dict[int, list[list[list[tuple[float, float]]]]]:
    """A pen-stroke alphabet: digit -> variants -> strokes -> (x, y) points.

    Units: the digit spans y in [0, 1] (downwards) and x in about [0, 0.7].
    """
    return {
        0: [[_arc(0.35, 0.5, 0.33, 0.5, -90, 275)]],
        1: [[[(0.35, 0.0), (0.35, 1.0)]],
            [[(0.14, 0.2), (0.35, 0.0), (0.35, 1.0)]]],
        2: [[_arc(0.35, 0.28, 0.31, 0.28, 195, 390) + [(0.03, 1.0), (0.7, 1.0)]]],
        3: [[_arc(0.35, 0.25, 0.29, 0.25, 200, 450) + _arc(0.35, 0.73, 0.33, 0.27, -90, 160)]],
        4: [[[(0.5, 1.0), (0.5, 0.0), (0.0, 0.68), (0.7, 0.68)]],
            [[(0.12, 0.0), (0.04, 0.6), (0.7, 0.6)], [(0.54, 0.22), (0.54, 1.0)]]],
        5: [[[(0.64, 0.0), (0.12, 0.0), (0.1, 0.45)] + _arc(0.35, 0.69, 0.33, 0.31, -128, 150)]],
        6: [[[(0.6, 0.02), (0.38, 0.12), (0.18, 0.32), (0.06, 0.55)] + _arc(0.37, 0.7, 0.32, 0.3, 180, 540)]],
        7: [[[(0.0, 0.0), (0.7, 0.0), (0.24, 1.0)]],
            [[(0.0, 0.0), (0.7, 0.0), (0.24, 1.0)], [(0.22, 0.52), (0.66, 0.52)]]],
        8: [[_arc(0.35, 0.25, 0.26, 0.25, 90, 450), _arc(0.35, 0.73, 0.33, 0.27, -90, 270)]],
        9: [[_arc(0.36, 0.3, 0.32, 0.3, 0, 360) + [(0.66, 0.62), (0.56, 1.0)]]],
    }


def _draw_hand(strokes, scale: float = 120.0, width: int = 13) -> np.ndarray:
    """Rasterise one stroke variant at high resolution with round joints and caps. -> (H, W) uint8"""
    pad = width + 4
    img = Image.new("L", (int(0.75 * scale) + 2 * pad, int(scale) + 2 * pad), 0)
    draw = ImageDraw.Draw(img)
    for stroke in strokes:
        pts = [(pad + x * scale, pad + y * scale) for x, y in stroke]
        draw.line(pts, fill=255, width=width, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(img)


def _draw_font(path: Path, digit: int, px: int = 120) -> np.ndarray:
    """Rasterise one digit of a TTF font at high resolution. -> (H, W) uint8"""
    font = ImageFont.truetype(str(path), px)
    img = Image.new("L", (2 * px, 2 * px), 0)
    ImageDraw.Draw(img).text((px // 2, px // 4), str(digit), fill=255, font=font)
    return np.asarray(img)


def _normalise_glyph(img: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale to _GLYPH_HEIGHT px tall (aspect kept), centre in the working canvas.

    (H, W) uint8 at high resolution -> (_WORK, _WORK) float32 in [0, 1].
    """
    rows, cols = np.nonzero(img > 0)
    if rows.size == 0:
        raise ValueError("empty glyph")
    crop = Image.fromarray(img[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    scale = min(_GLYPH_HEIGHT / crop.height, (_WORK - 20) / crop.width)
    w, h = max(1, round(crop.width * scale)), max(1, round(crop.height * scale))
    small = crop.resize((w, h), Image.Resampling.LANCZOS)  # LANCZOS downsampling anti-aliases
    canvas = Image.new("L", (_WORK, _WORK), 0)
    canvas.paste(small, ((_WORK - w) // 2, (_WORK - h) // 2))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def glyph_bank() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All base glyphs and how often each is drawn.

    Returns ``glyphs`` (G, 1, 64, 64) float32 in [0, 1], ``digits`` (G,) int64, and ``probs``
    (10, G) float64: row d is the probability of each glyph given label d (zero for other digits).
    Hand strokes get ``_HAND_WEIGHT`` of each digit's mass, fonts share the rest equally.
    """
    glyphs, digits, is_hand = [], [], []
    for digit, variants in _hand_strokes().items():
        for strokes in variants:
            glyphs.append(_normalise_glyph(_draw_hand(strokes)))
            digits.append(digit)
            is_hand.append(True)
    fonts = font_paths()
    if len(fonts) < 4:
        raise RuntimeError(f"found only {len(fonts)} of matplotlib's bundled fonts {FONT_FILES}; "
                           "is matplotlib installed completely?")
    for path in fonts:
        for digit in range(10):
            if digit in _SKIP_GLYPHS.get(path.name, ()):
                continue
            glyphs.append(_normalise_glyph(_draw_font(path, digit)))
            digits.append(digit)
            is_hand.append(False)
    digits_t, hand_t = torch.tensor(digits), torch.tensor(is_hand)
    probs = torch.zeros(10, len(digits), dtype=torch.float64)
    for d in range(10):
        for mask, share in ((hand_t, _HAND_WEIGHT), (~hand_t, 1.0 - _HAND_WEIGHT)):
            sel = mask & (digits_t == d)
            probs[d, sel] = share / sel.sum()
    return torch.from_numpy(np.stack(glyphs))[:, None], digits_t, probs


def _stroke_width(x: torch.Tensor) -> torch.Tensor:
    """Mean stroke width in pixels of each image. (B, 1, H, W) -> (B,)

    A stroke of width w and length L has area w L and outline length about 2 L, and the total
    variation (sum of gradient magnitudes) of an anti-aliased image measures the outline length,
    so w = 2 * area / outline.
    """
    gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    outline = (gx.square() + gy.square()).sqrt().sum(dim=(1, 2, 3))
    return 2.0 * x.sum(dim=(1, 2, 3)) / outline.clamp_min(1e-6)


# ----------------------------------------------------------------------------------------------
# Batched rendering in torch
# ----------------------------------------------------------------------------------------------
def stroke_levels(glyphs: torch.Tensor) -> torch.Tensor:
    """Each glyph redrawn at _N_WIDTHS stroke widths evenly spaced in _STROKE_RANGE (working px).

    Done once per call on the small bank, so per-sample thickness costs one gather. A dilation
    or erosion step changes the width by 2 px, so a glyph of width w reaches width t after
    (t - w) / 2 steps; fractional steps interpolate linearly between whole ones:
    level(t) = sum_k hat((t - w) / 2 - k) * x_k with x_k the glyph after k steps (k < 0: erosions)
    and hat(u) = max(0, 1 - |u|), i.e. a lerp between the two nearest whole steps. Thinning
    never takes a stroke below 2.4 px.
    glyphs: (G, 1, W, W) -> (G, _N_WIDTHS, W, W)
    """
    width = _stroke_width(glyphs)[:, None]                                      # (G, 1)
    target = torch.linspace(*_STROKE_RANGE, _N_WIDTHS)[None, :]                 # (1, N)
    steps = torch.maximum((target - width) / 2, -(width - 2.4).clamp_min(0.0) / 2).clamp(max=3.5)
    lo = int(steps.min().floor())
    hi = max(int(steps.max().ceil()), lo + 1)
    chain = dict(_morph_chain(glyphs, lo, hi))
    chain = torch.cat([chain[k] for k in range(lo, hi + 1)], dim=1)           # (G, hi - lo + 1, W, W)
    # The hat weights are non-zero for the two whole steps around each fractional one.
    below = steps.floor().clamp(max=hi - 1)
    frac = (steps - below).view(*steps.shape, 1, 1)
    rows = torch.arange(glyphs.shape[0])[:, None]
    idx = (below - lo).long()
    return torch.lerp(chain[rows, idx], chain[rows, idx + 1], frac).clamp(0.0, 1.0)


def _morph_chain(x: torch.Tensor, lo: int, hi: int):
    """Yield (k, x after k one-pixel dilations) for k in lo..hi; negative k are erosions."""
    yield 0, x
    for grow, reach in ((True, hi), (False, -lo)):
        y = x
        for k in range(1, reach + 1):
            y = _morph_step(y, k, grow)
            yield (k if grow else -k), y


def _shift_extreme(x: torch.Tensor, dim: int, op) -> torch.Tensor:
    """op (torch.maximum or torch.minimum) of each pixel and its two neighbours along ``dim``."""
    out = x.clone()
    n = x.shape[dim]
    head, tail = out.narrow(dim, 1, n - 1), out.narrow(dim, 0, n - 1)
    op(head, x.narrow(dim, 0, n - 1), out=head)
    op(tail, x.narrow(dim, 1, n - 1), out=tail)
    return out


def _morph_step(x: torch.Tensor, step: int, grow: bool) -> torch.Tensor:
    """One dilation (grow) or erosion by one pixel. Alternating a 3x3 square and a 3-pixel cross
    approximates a disc, so repeated steps stay round. (B, C, H, W) -> same."""
    op = torch.maximum if grow else torch.minimum
    if step % 2 == 1:                                       # square: separable rows then columns
        return _shift_extreme(_shift_extreme(x, -1, op), -2, op)
    return op(_shift_extreme(x, -1, op), _shift_extreme(x, -2, op))  # cross


def _pixel_centres(n: int) -> torch.Tensor:
    """Normalised coordinates of n pixel centres in [-1, 1] (grid_sample, align_corners=False)."""
    return (2.0 * torch.arange(n, dtype=torch.float32) + 1.0) / n - 1.0


def _cubic_upsampler(n_in: int, n_out: int) -> torch.Tensor:
    """Matrix (n_out, n_in) that bicubically interpolates n_in control values to n_out points."""
    eye = torch.eye(n_in).view(n_in, 1, n_in, 1)
    return F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=True).view(n_in, n_out).T


def _warp_grid(inv: torch.Tensor, field: torch.Tensor, hgt: int, wid: int) -> torch.Tensor:
    """Sampling grid p_in = inv @ p_out + displacement(p_out), built with one batched matmul.

    inv: (B, 2, 2) linear map; field: (B, 2, K, K) displacement at K x K control points.
    With Uy = [bicubic(K) | y | 1] and Ux = [bicubic(K) | 1 | x], coordinate c of the grid is
    Uy @ C_c @ Ux^T where C_c = blockdiag(field_c, inv[c, 1], inv[c, 0]): the bicubic part gives
    the smooth field, the two extra entries give inv[c, 1] * y + inv[c, 0] * x. -> (B, H, W, 2)
    """
    b, _, k, _ = field.shape
    ys, xs = _pixel_centres(hgt), _pixel_centres(wid)
    uy = torch.cat([_cubic_upsampler(k, hgt), ys[:, None], torch.ones(hgt, 1)], 1)   # (H, K+2)
    ux = torch.cat([_cubic_upsampler(k, wid), torch.ones(wid, 1), xs[:, None]], 1)   # (W, K+2)
    coef = torch.zeros(b, 2, k + 2, k + 2)
    coef[:, :, :k, :k] = field
    coef[:, :, k, k] = inv[:, :, 1]
    coef[:, :, k + 1, k + 1] = inv[:, :, 0]
    right = (coef @ ux.T).permute(0, 2, 3, 1).reshape(b, k + 2, wid * 2)             # (B, K+2, W*2)
    return (uy @ right).view(b, hgt, wid, 2)


def warp(base: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random slant, rotation, width and elastic distortion, as one ``grid_sample``.

    base: (B, 1, W, W) -> (B, 1, W, W). The forward map is p -> R(angle) S(slant) diag(sx, 1) p in
    normalised coordinates (y down); grid_sample reads output pixel p at the inverse image of p,
    plus a smooth random displacement (normal draws on a 5x5 grid, interpolated bicubically:
    Simard-style elastic distortion).
    """
    b, _, hgt, wid = base.shape
    angle = torch.deg2rad((torch.randn(b, generator=gen) * 5.0).clamp(-12.0, 12.0))
    slant = torch.rand(b, generator=gen) * 0.45 - 0.12     # > 0 leans right, like most handwriting
    sx = 0.72 + torch.rand(b, generator=gen) * 0.43        # narrower or wider digits
    cos, sin = angle.cos(), angle.sin()
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear = torch.eye(2).repeat(b, 1, 1)
    shear[:, 0, 1] = -slant                                # x' = x - slant * y: the top moves right
    forward = rot @ shear @ torch.diag_embed(torch.stack([sx, torch.ones(b)], -1))
    # Elastic part: displacement std of about 1.4 working pixels, smooth over a quarter glyph.
    amp = (0.5 + torch.rand(b, 1, 1, 1, generator=gen)) * (2.0 * 1.4 / wid)
    field = torch.randn(b, 2, 5, 5, generator=gen) * amp
    grid = _warp_grid(torch.linalg.inv(forward), field, hgt, wid)
    return F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _hat_integral(t: torch.Tensor) -> torch.Tensor:
    """Integral from -inf to t of the bilinear hat max(0, 1 - |t|), computed in place on ``t``.

    It is 0 below -1, (1 + t)^2 / 2 on [-1, 0], 1 - (1 - t)^2 / 2 on [0, 1] and 1 above; both
    middle pieces equal 1/2 + t - t |t| / 2, so clamping t to [-1, 1] covers every case.
    """
    t = t.clamp_(-1.0, 1.0)
    return t.abs().mul_(t).mul_(-0.5).add_(t).add_(0.5)


def _resampler(centre: torch.Tensor, scale: torch.Tensor, n_in: int, size: int) -> torch.Tensor:
    """Per-image 1-D resampling matrices (B, size, n_in), anti-aliased by area averaging.

    Output pixel i covers the input interval centre + (i -+ 1/2 - (size - 1) / 2) / scale; its
    value is the mean over that interval of the bilinearly interpolated input, so the weight of
    input pixel m is (H(b - m) - H(a - m)) / (b - a) with H the integral of the hat function.
    Positions outside the input read zeros. centre, scale: (B,)
    """
    edges = torch.arange(size + 1) - 0.5 - (size - 1) / 2.0                   # output pixel edges
    pos = centre[:, None] + edges[None, :] / scale[:, None]                    # (B, size + 1)
    cum = _hat_integral(pos[:, :, None] - torch.arange(n_in))                  # (B, size + 1, n_in)
    return (cum[:, 1:] - cum[:, :-1]) * scale[:, None, None]


def _extent(profile: torch.Tensor) -> torch.Tensor:
    """Length of the ink span of each row of an ink profile: from the first to the last entry
    holding at least half a pixel's worth of ink. (B, L) -> (B,) int64"""
    ink = (profile > 0.5).int()
    return profile.shape[1] - ink.argmax(1) - ink.flip(1).argmax(1)


def fit_and_centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """MNIST framing: scale each digit to fit a 20x20 box (for size 28), centre of mass at the centre.

    Scaling and translating are separable, so each image is resampled as Ry @ x @ Rx^T, where
    output pixel u reads input position com + (u - centre) / s and s = box / max(bbox h, bbox w).
    x: (B, 1, H, W) float in [0, 1] -> (B, 1, size, size)
    """
    _, _, hgt, wid = x.shape
    row_mass, col_mass = x.sum(dim=3)[:, 0], x.sum(dim=2)[:, 0]              # (B, H), (B, W)
    mass = row_mass.sum(1).clamp_min(1e-6)
    com_y = (row_mass * torch.arange(hgt)).sum(1) / mass                       # input pixels
    com_x = (col_mass * torch.arange(wid)).sum(1) / mass
    box = size * 20.0 / 28.0
    scale = box / torch.maximum(_extent(row_mass), _extent(col_mass)).clamp_min(1)  # out px / in px
    ry = _resampler(com_y, scale, hgt, size)                                   # (B, size, H)
    rx = _resampler(com_x, scale, wid, size)                                   # (B, size, W)
    return (ry @ x[:, 0] @ rx.transpose(1, 2))[:, None]


def _render_chunk(levels, probs, labels, gen, size):
    """Render one batch of digits with the given labels. labels: (B,) -> (B, size, size) uint8"""
    b = labels.shape[0]
    choice = torch.multinomial(probs[labels], 1, generator=gen)[:, 0]
    width = torch.randint(0, levels.shape[1], (b,), generator=gen)
    warped = warp(levels[choice, width][:, None], gen)
    img = fit_and_centre(warped, size)[:, 0]
    return (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def render_digits(n: int, seed: int, size: int = 28, *, progress: bool | str = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` handwritten-style digits, deterministically from ``seed``.

    Returns ``images`` (n, size, size) uint8, white digit on black, and ``labels`` (n,) uint8 in
    0..9 (uniform random draws). ``progress``: show a tqdm bar over chunks (a string is its label).
    """
    for name, value in (("n", n), ("seed", seed), ("size", size)):
        if not is_int(value):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    gen = torch.Generator().manual_seed(int(seed))
    bank, _, probs = glyph_bank()
    levels = stroke_levels(bank)
    labels = torch.randint(0, 10, (n,), generator=gen)
    starts = range(0, n, _CHUNK)
    if progress:
        from diffnb.core.progress import progress as tqdm
        starts = tqdm(starts, desc=progress if isinstance(progress, str) else "rendering digits",
                      unit="chunk")
    images = torch.empty(n, size, size, dtype=torch.uint8)
    with torch.no_grad():
        for start in starts:
            sl = slice(start, min(start + _CHUNK, n))
            images[sl] = _render_chunk(levels, probs, labels[sl], gen, size)
    return images.numpy(), labels.to(torch.uint8).numpy()
