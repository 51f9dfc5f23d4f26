"""The digit world of the ``mini`` model: RGB pictures of the digits 0-9 in three styles, and prompts.

Part A's experiments (SDEdit, inpainting, anagrams, hybrids) need a text-to-image model. DeepFloyd IF
is too big for a laptop CPU, so the pack draws a small world of its own, trains a small IF-compatible
model on it (``diffnb.mini.model``) and a judge that reads digit and style back (``diffnb.mini.judge``).

Conventions (stated once):
  * Images are ``(N, 3, S, S)`` float in [0, 1] (``render_world``); the model sees them as [-1, 1].
  * Styles are named as prompts name them: ``STYLES = ("photo", "crayon drawing", "pencil sketch")``;
    a style index is a position in ``STYLES``.
  * The glyphs are Part B's handwritten-style digits (``diffnb.b.digits``: fonts and hand strokes, slant,
    elastic distortion), placed at a random size, position and tilt, then painted in a style:

      photo           a shaded, coloured digit with a soft shadow on a coloured, graded background
      crayon drawing  thick waxy strokes with gaps in a bright crayon colour on cream paper
      pencil sketch   thin grainy graphite lines on white

  * Everything is seeded: the same ``seed`` gives the same pixels.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STYLES: tuple[str, ...] = ("photo", "crayon drawing", "pencil sketch")
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE = 32

_CRAYON_COLOURS = torch.tensor([
    [0.86, 0.12, 0.14], [0.95, 0.45, 0.08], [0.20, 0.60, 0.18], [0.12, 0.35, 0.85],
    [0.55, 0.20, 0.70], [0.92, 0.30, 0.60], [0.50, 0.30, 0.12], [0.05, 0.55, 0.60]])


@dataclass
class WorldImages:
    """Rendered pictures with what is in them: ``images`` (N, 3, S, S) in [0, 1], ``digits`` and
    ``styles`` (N,) int64 (style = index into ``STYLES``)."""
    images: torch.Tensor
    digits: torch.Tensor
    styles: torch.Tensor

    def __len__(self) -> int:
        return len(self.digits)


def _check_labels(values, name: str, high: int, n: int, gen: torch.Generator) -> torch.Tensor:
    if values is None:
        return torch.randint(0, high, (n,), generator=gen)
    try:
        t = torch.as_tensor(values).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be an int 0..{high - 1} or n of them, got {values!r}") from err
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be ints 0..{high - 1}, got {t.dtype} values")
    if t.is_floating_point():
        if not (t.isfinite() & (t == t.round())).all():
            raise ValueError(f"{name} must be whole numbers 0..{high - 1}, got {t.tolist()[:8]}")
    t = t.to(torch.int64)
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} entries for n={n} images; give one value or n values")
    if (t < 0).any() or (t >= high).any():
        raise ValueError(f"{name} must lie in 0..{high - 1}, got {t.unique().tolist()}")
    return t


def _glyphs(digits: torch.Tensor, styles: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
    """Digit masks (N, 1, size, size) in [0, 1]: Part B's glyphs, framed like MNIST at 28/32 of the
    canvas, then moved, scaled and tilted at random. Pencil strokes are drawn thin, crayon thick."""
    from diffnb.b.glyphs import fit_and_centre, glyph_bank, stroke_levels, warp

    bank, _, probs = glyph_bank()
    levels = stroke_levels(bank)                                   # (G, W, 64, 64)
    n_w = levels.shape[1]
    n = len(digits)
    choice = torch.multinomial(probs[digits], 1, generator=gen)[:, 0]
    lo = torch.tensor([0, n_w // 2, 0])[styles]                     # photo: any, crayon: thick, pencil: thin
    hi = torch.tensor([n_w, n_w, max(2, n_w // 4)])[styles]
    width = lo + (torch.rand(n, generator=gen) * (hi - lo)).long()
    warped = warp(levels[choice, width][:, None], gen)
    framed = fit_and_centre(warped, size)                          # 20/28 of the canvas, centred
    # random scale, tilt and shift: the digit is anywhere from about 0.55 to 0.8 of the canvas
    scale = 0.85 + 0.3 * torch.rand(n, generator=gen)
    angle = torch.deg2rad(torch.randn(n, generator=gen).clamp(-2, 2) * 6.0)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.12
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1)
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    return F.grid_sample(framed, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def _smooth_noise(n: int, channels: int, size: int, cells: int, gen: torch.Generator) -> torch.Tensor:
    """Low-frequency noise (n, channels, size, size), about unit scale."""
    coarse = torch.randn(n, channels, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, *([1] * (rgb.dim() - 2)))).sum(1, keepdim=True)


def _paint_photo(m: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, s, _ = m.shape
    c1, c2 = torch.rand(n, 3, 1, 1, generator=gen), torch.rand(n, 3, 1, 1, generator=gen)
    direction = torch.rand(n, 1, 1, 1, generator=gen) * 2 * torch.pi
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    ramp = ((direction.cos() * xx + direction.sin() * yy) * 0.5 + 0.5).clamp(0, 1)
    bg = (c1 * (1 - ramp) + c2 * ramp + 0.06 * _smooth_noise(n, 3, s, 4, gen)).clamp(0, 1)
    ink = torch.rand(n, 3, 1, 1, generator=gen)
    # keep the digit readable: its brightness at least 0.35 away from the background's
    lb, li = _luma(bg).mean((2, 3), keepdim=True), _luma(ink)
    too_close = (lb - li).abs() < 0.35
    ink = torch.where(too_close, torch.where(lb > 0.5, ink * 0.25, 0.6 + 0.4 * ink), ink)
    shade = 1.15 - 0.3 * (yy + 1) / 2                               # lit from above
    digit = (ink * shade).clamp(0, 1)
    shadow = F.avg_pool2d(torch.roll(m, shifts=(1, 1), dims=(2, 3)), 3, 1, 1)
    bg = bg * (1 - 0.55 * shadow)
    return bg * (1 - m) + digit * m


def _paint_crayon(m: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, s, _ = m.shape
    paper = torch.tensor([0.97, 0.94, 0.86]).view(1, 3, 1, 1) + 0.03 * torch.randn(n, 1, s, s, generator=gen)
    colour = _CRAYON_COLOURS[torch.randint(0, len(_CRAYON_COLOURS), (n,), generator=gen)].view(n, 3, 1, 1)
    colour = (colour + 0.08 * torch.randn(n, 3, 1, 1, generator=gen)).clamp(0, 1)
    thick = F.max_pool2d(m, 3, 1, 1) * 0.6 + m * 0.4                # waxy, slightly blobby strokes
    # wax texture: streaks along a random direction plus pixel grain leave gaps of paper
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    angle = torch.rand(n, 1, 1, 1, generator=gen) * torch.pi
    streak = torch.sin((angle.cos() * xx + angle.sin() * yy) * 2.2 + torch.rand(n, 1, 1, 1, generator=gen) * 6.3)
    grain = torch.rand(n, 1, s, s, generator=gen)
    cover = (thick * (0.62 + 0.2 * streak + 0.35 * grain)).clamp(0, 1)
    return (paper * (1 - cover) + colour * cover).clamp(0, 1)


def _paint_pencil(m: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, s, _ = m.shape
    white = 0.95 + 0.05 * torch.rand(n, 1, 1, 1, generator=gen) + 0.015 * torch.randn(n, 1, s, s, generator=gen)
    lead = 0.12 + 0.25 * torch.rand(n, 1, 1, 1, generator=gen)
    grain = 0.65 + 0.35 * torch.rand(n, 1, s, s, generator=gen)
    cover = (m * 0.9 * grain).clamp(0, 1)
    grey = white * (1 - cover) + lead * cover
    return grey.expand(n, 3, s, s).clamp(0, 1)


_PAINTERS = (_paint_photo, _paint_crayon, _paint_pencil)


def render_world(n: int, seed: int, digits=None, styles=None, size: int = SIZE, chunk: int = 4096) -> WorldImages:
    """Render ``n`` pictures of the digit world, deterministically from ``seed``.

    ``digits`` / ``styles``: one value or ``n`` values (style as an index into ``STYLES`` or its name);
    default: uniform random. Returns ``WorldImages`` with images (n, 3, size, size) in [0, 1].
    """
    for name, value in (("n", n), ("seed", seed), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if isinstance(styles, str) or (isinstance(styles, (list, tuple)) and styles and isinstance(styles[0], str)):
        names = [styles] if isinstance(styles, str) else list(styles)
        unknown = [s for s in names if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; the world has {list(STYLES)}")
        styles = [STYLES.index(s) for s in names]
    gen = torch.Generator().manual_seed(int(seed))
    d = _check_labels(digits, "digits", 10, n, gen)
    st = _check_labels(styles, "styles", len(STYLES), n, gen)
    out = torch.empty(n, 3, size, size)
    with torch.no_grad():
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            m = _glyphs(d[sl], st[sl], gen, size)
            img = torch.empty(m.shape[0], 3, size, size)
            for k, paint in enumerate(_PAINTERS):
                sel = st[sl] == k
                if sel.any():
                    img[sel] = paint(m[sel], gen)
            out[sl] = img.clamp(0, 1)
    return WorldImages(out, d, st)


# --------------------------------------------------------------------------- prompts

_STYLE_PHRASES = {
    0: ["a photo of", "a photograph of", "a high quality photo of"],
    1: ["a crayon drawing of", "a high quality crayon drawing of", "a child's crayon drawing of"],
    2: ["a pencil sketch of", "a pencil drawing of", "a high quality pencil sketch of"],
}
_STYLE_ONLY = {
    0: ["a photo", "a high quality photo", "a photograph"],
    1: ["a crayon drawing", "a high quality crayon drawing"],
    2: ["a pencil sketch", "a high quality pencil sketch", "a pencil drawing"],
}
ANY_PROMPTS = ["a high quality picture", "a picture"]


def _digit_phrases(d: int) -> list[str]:
    word = DIGIT_WORDS[d]
    article = "an" if word[0] in "aeiou" else "a"
    numeral_article = "an" if d == 8 else "a"
    return [f"the digit {d}", f"the number {d}", f"the number {word}", f"{numeral_article} {d}", f"{article} {word}"]


def prompt(digit: int | None = None, style: int | str | None = None, variant: int = 0) -> str:
    """A canonical prompt of the world: ``prompt(7, "photo")`` -> ``"a photo of the digit 7"``;
    ``prompt(7)`` -> ``"a picture of the digit 7"``; ``prompt(style="crayon drawing")`` ->
    ``"a high quality crayon drawing"``; ``prompt()`` -> ``"a high quality picture"``."""
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; the world has {list(STYLES)}")
        style = STYLES.index(style)
    if style is not None and not (isinstance(style, int) and not isinstance(style, bool)
                                  and 0 <= style < len(STYLES)):
        raise ValueError(f"style must be a name in {list(STYLES)}, an index 0..{len(STYLES) - 1} or None, "
                         f"got {style!r}")
    if digit is not None and not (isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9):
        raise ValueError(f"digit must be an int 0..9 or None, got {digit!r}")
    if digit is None and style is None:
        return ANY_PROMPTS[0]
    if digit is None:
        return _STYLE_ONLY[style][1]
    phrase = _digit_phrases(digit)[variant % 5]
    if style is None:
        return f"a picture of {phrase}"
    return f"{_STYLE_PHRASES[style][variant % len(_STYLE_PHRASES[style])]} {phrase}"


def all_prompts(digit: int | None, style: int | None) -> list[str]:
    """Every phrasing the world uses for (digit, style); ``None`` means "not named"."""
    if digit is None and style is None:
        return list(ANY_PROMPTS)
    if digit is None:
        return list(_STYLE_ONLY[style])
    phrases = _digit_phrases(digit)
    if style is None:
        return [f"a picture of {p}" for p in phrases] + [f"a high quality picture of {p}" for p in phrases] + phrases
    return [f"{s} {p}" for s in _STYLE_PHRASES[style] for p in phrases]


def vocabulary() -> list[str]:
    """Every word the world's prompts use, sorted."""
    return list(_vocabulary())


@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    words: set[str] = set()
    for d in [None, *range(10)]:
        for s in [None, 0, 1, 2]:
            for p in all_prompts(d, s):
                words.update(tokenize(p, check=False))
    return tuple(sorted(words))


def tokenize(text: str, check: bool = True) -> list[str]:
    """Lower-case words of ``text`` (punctuation other than apostrophes dropped)."""
    if not isinstance(text, str):
        raise TypeError(f"a prompt must be a string, got {type(text).__name__}")
    words = re.findall(r"[a-z0-9']+", text.lower())
    if check:
        known = set(_vocabulary())
        unknown = [w for w in words if w not in known]
        if unknown:
            from diffnb.a.prompts import PromptNotFoundError
            raise PromptNotFoundError(
                f"the mini model does not know the word(s) {unknown} in {text!r}. It knows only its world's words: "
                f"{' '.join(vocabulary())}. Try e.g. {prompt(7, 'photo')!r}, {prompt(3, 'crayon drawing', 2)!r} "
                f"or {prompt(style='pencil sketch')!r}; \"\" is the unconditional prompt.")
    return words


def parse_prompt(text: str) -> tuple[int | None, int | None]:
    """(digit, style) that a world prompt names (``None`` where it names none); checks the words."""
    words = tokenize(text)
    digit = next((int(w) if w.isdigit() else DIGIT_WORDS.index(w) for w in words
                  if w.isdigit() or w in DIGIT_WORDS), None)
    style = None
    if "photo" in words or "photograph" in words:
        style = 0
    elif "crayon" in words:
        style = 1
    elif "pencil" in words:
        style = 2
    return digit, style


# --------------------------------------------------------------------------- example files

#: (file stem, digit, style) of the renders under data/images/world/, and the seed that draws them
EXAMPLES = (("photo_4", 4, 0), ("photo_7", 7, 0), ("pencil_2", 2, 2), ("crayon_5", 5, 1))
EXAMPLE_SEED = 4_000_001

#: two digits drawn as pen strokes (x, y in [0, 1], y down), for the "hand-drawn" inputs of 1.7.1
_HAND_DRAWN = {
    3: [[(0.30, 0.22), (0.45, 0.14), (0.62, 0.16), (0.68, 0.28), (0.60, 0.42), (0.46, 0.48),
         (0.62, 0.54), (0.70, 0.68), (0.62, 0.82), (0.44, 0.86), (0.28, 0.78)]],
    6: [[(0.64, 0.14), (0.48, 0.24), (0.36, 0.40), (0.30, 0.58), (0.34, 0.76), (0.48, 0.86), (0.62, 0.80),
         (0.68, 0.64), (0.58, 0.52), (0.44, 0.52), (0.34, 0.62)]],
}


def _hand_drawn(digit: int, size: int = 128, seed: int = 0):
    from PIL import Image, ImageDraw
    gen = torch.Generator().manual_seed(seed + digit)
    img = Image.new("RGB", (size, size), (250, 249, 244))
    draw = ImageDraw.Draw(img)
    for stroke in _HAND_DRAWN[digit]:
        pts = torch.tensor(stroke) * size
        pts = pts + torch.randn(pts.shape, generator=gen) * size * 0.008        # a slightly unsteady hand
        # many short segments along each stroke, so the line is drawn continuously
        dense = F.interpolate(pts.T[None], size=len(stroke) * 8, mode="linear", align_corners=True)[0].T
        draw.line([tuple(p) for p in dense.tolist()], fill=(30, 30, 40), width=max(2, size // 18), joint="curve")
    return img


def _example_masks(size: int = SIZE) -> dict[str, torch.Tensor]:
    from diffnb.a.images import ellipse_mask, rectangle_mask
    return {"world_top": rectangle_mask(size, 0, 0, size // 2, size),
            "world_left": rectangle_mask(size, 0, 0, size, size // 2),
            "world_centre": ellipse_mask(size, size / 2, size / 2, size / 4, size / 4)}


def write_examples(root=None) -> list:
    """(Re)write the mini profile's input files: renders under ``data/images/world/``, two hand-drawn
    digits and three masks under ``data/masks/``. Deterministic."""
    from pathlib import Path
    from torchvision.utils import save_image
    from diffnb.core.paths import data_dir

    root = Path(root) if root is not None else data_dir()
    (root / "images" / "world").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    written = []
    w = render_world(len(EXAMPLES), EXAMPLE_SEED, digits=[e[1] for e in EXAMPLES], styles=[e[2] for e in EXAMPLES])
    for (stem, _, _), img in zip(EXAMPLES, w.images):
        path = root / "images" / "world" / f"{stem}.png"
        save_image(img, str(path))
        written.append(path)
    for digit in _HAND_DRAWN:
        path = root / "images" / "world" / f"hand_drawn_{digit}.png"
        _hand_drawn(digit).save(path)
        written.append(path)
    for stem, m in _example_masks().items():
        path = root / "masks" / f"{stem}.png"
        save_image(m.float().reshape(1, *m.shape[-2:]), str(path))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_examples():
        print(p)
