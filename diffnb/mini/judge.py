"""A judge for the digit world: reads the digit and the style of a picture back (``diffnb.mini.world``).

The ``mini`` model is asked for "a crayon drawing of the digit 3"; the judge says whether a sample
shows a 3 and whether it looks like a crayon drawing.  It is Part B's judge (``diffnb.b.judge``) in
colour: a small CNN with two heads,

  * a digit head with eleven classes, the digits 0-9 and ``NOT_A_DIGIT`` (10), learnt from
    scrambled renders (``diffnb.b.judge.scramble``: tiles shuffled, or two digits of one style
    overlaid), so that a blob or a muddle is not read confidently as *some* digit;
  * a style head with the three classes of ``STYLES`` ("photo", "crayon drawing", "pencil sketch").
    Scrambled pictures keep their style label: they still look like a photo, a drawing, a sketch.

It is trained once (seeded, deterministic: 30,000 renders, 6 epochs, about four minutes on one CPU
thread), checked on 3,000 held-out renders of another seed stream (99.4% of digits and 100% of
styles read right) and shipped in ``data/judge/`` (the default judge) or cached in ``build_dir()/judge``; ``python -m diffnb.mini.judge`` builds it.

Conventions (stated once):
  * Images are ``(N, 3, 32, 32)`` float in [0, 1], as ``render_world`` draws them.  Samples of the
    mini model live in [-1, 1]: convert them (``(x + 1) / 2``) before judging.
  * A style is an index into ``STYLES``; ``read`` also takes a style's name.
  * Its render seeds are ``seed + TRAIN_SEED_OFFSET`` (training) and ``seed + TEST_SEED_OFFSET``
    (held-out): seed streams of the judge alone.  The mini model's training renders use other
    seeds, so the judge is measured on pictures neither it nor the mini model has seen.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffnb.core.devices import get_device

from diffnb.b.judge import LEGIBLE, NOT_A_DIGIT, Reading, legible, reset_parameters, scramble
from diffnb.core.paths import build_dir, data_dir
from diffnb.mini.world import SIZE, STYLES, render_world

TRAIN_SEED_OFFSET = 7_000_001      # training renders: render_world(n_train, seed + TRAIN_SEED_OFFSET)
TEST_SEED_OFFSET = 9_000_001       # held-out renders: render_world(N_TEST, seed + TEST_SEED_OFFSET)
N_TEST = 3000
VERSION = "v1"                     # bump when the network or its training changes: a new cache file


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class WorldClassifier(nn.Module):
    """(N, 3, 32, 32) in [0, 1] -> (digit_logits (N, 11), style_logits (N, 3)).

    Digit classes 0-9 and ``NOT_A_DIGIT`` (10); style classes index ``STYLES``.  Three conv stages
    (3x3 conv, BatchNorm, ReLU, 2x2 max-pool: 32 -> 16 -> 8 -> 4 pixels), one more conv on the 4x4
    map, a shared hidden layer and two linear heads."""

    def __init__(self, widths: tuple[int, int, int] = (16, 64, 128), hidden: int = 128):
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(
            *_conv(3, a), nn.MaxPool2d(2), *_conv(a, b), nn.MaxPool2d(2), *_conv(b, c), nn.MaxPool2d(2),
            *_conv(c, c), nn.Flatten(), nn.Linear(c * 4 * 4, hidden), nn.ReLU())
        self.digit_head = nn.Linear(hidden, 11)
        self.style_head = nn.Linear(hidden, len(STYLES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.digit_head(h), self.style_head(h)


def _labels(value, n: int, name: str, high: int) -> torch.Tensor:
    """An int, a name (styles) or n values -> (n,) int64; checked against 0..high-1."""
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and isinstance(value[0], str)):
        if name != "style":
            raise TypeError(f"{name} must be an int or (N,) ints, got {value!r}")
        names = [value] if isinstance(value, str) else list(value)
        unknown = [s for s in names if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; the world has {list(STYLES)}")
        value = [STYLES.index(s) for s in names]
    t = torch.as_tensor(value).reshape(-1).cpu()
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an int or (N,) ints, got dtype {t.dtype}")
    t = t.long()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} entries for {n} images; give one value or {n} values")
    if (t < 0).any() or (t >= high).any():
        raise ValueError(f"{name} must lie in 0..{high - 1}, got {t.unique().tolist()}")
    return t


class WorldJudge:
    """The classifier and its accuracies on clean held-out renders (``render_world(N_TEST, test_seed)``).

    Accuracies not given are measured on first use of ``digit_accuracy`` or ``style_accuracy`` (a few
    seconds on a CPU), so a notebook that only reads samples does not pay for them."""

    def __init__(self, model: WorldClassifier, digit_accuracy: float | None = None,
                 style_accuracy: float | None = None, train_seconds: float = float("nan"),
                 test_seed: int = TEST_SEED_OFFSET):
        self.model = model
        self.train_seconds = train_seconds       # how long training took when the cache file was written
        self.test_seed = test_seed
        self._accuracy = None if digit_accuracy is None or style_accuracy is None else (digit_accuracy, style_accuracy)

    def __repr__(self) -> str:
        acc = "not measured yet" if self._accuracy is None else f"digit {self._accuracy[0]:.4f}, style {self._accuracy[1]:.4f}"
        return f"WorldJudge(held-out accuracy: {acc})"

    def _held_out(self) -> tuple[float, float]:
        if self._accuracy is None:
            test = render_world(N_TEST, seed=self.test_seed)
            r = self.read(test.images, test.digits, test.styles)
            self._accuracy = (r["digit_accuracy"], r["style_accuracy"])
        return self._accuracy

    @property
    def digit_accuracy(self) -> float:
        return self._held_out()[0]

    @property
    def style_accuracy(self) -> float:
        return self._held_out()[1]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 1024) -> Reading:
        """``Reading(digit, p_digit, style, p_style)`` (``diffnb.b.judge.Reading``), each (N,) on the CPU, for images (N, 3, 32, 32)
        in [0, 1] (clamped; convert [-1, 1] samples first).  ``digit`` 10 is ``NOT_A_DIGIT``;
        the confidences are softmax probabilities of the predicted classes."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor of shape (N, 3, {SIZE}, {SIZE}), "
                            f"got {type(images).__name__}")
        if not images.is_floating_point():
            raise TypeError(f"images must be float in [0, 1], got dtype {images.dtype}")
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, SIZE, SIZE):
            raise ValueError(f"images must have shape (N, 3, {SIZE}, {SIZE}) (RGB, {SIZE}x{SIZE} pixels, "
                             f"values in [0, 1]), got {tuple(images.shape)}")
        self.model.eval()
        dev = next(self.model.parameters()).device
        out = [[], [], [], []]
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(dev).float().clamp(0, 1)
            digit_logits, style_logits = self.model(x)
            dc, d = F.softmax(digit_logits.float(), dim=1).max(dim=1)
            sc, s = F.softmax(style_logits.float(), dim=1).max(dim=1)
            for lst, t in zip(out, (d, dc, s, sc)):
                lst.append(t.cpu())
        if not len(images):
            return Reading(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                           torch.zeros(0))
        return Reading(*(torch.cat(lst) for lst in out))

    def read(self, images: torch.Tensor, digit=None, style=None, threshold: float = LEGIBLE) -> dict:
        """How the judge reads ``images`` against what was asked for.

        ``digit``: an int 0-9 or (N,) ints; ``style``: an index, a name in ``STYLES`` or N of them.
        Returns floats (shares of the N images): ``digit_accuracy`` (read as ``digit``),
        ``style_accuracy`` (read as ``style``), ``both`` (both right) - ``None`` where the digit or
        style was not given - and ``legible`` (read as one of the ten digits, not ``NOT_A_DIGIT``,
        with probability >= ``threshold``)."""
        reading = self.predict(images)
        d, s = reading.digit, reading.style
        n = len(d)
        if n == 0:
            raise ValueError("read needs at least one image")
        digit_ok = (d == _labels(digit, n, "digit", 10)) if digit is not None else None
        style_ok = (s == _labels(style, n, "style", len(STYLES))) if style is not None else None
        share = lambda ok: None if ok is None else ok.float().mean().item()   # noqa: E731
        return {"digit_accuracy": share(digit_ok),
                "style_accuracy": share(style_ok),
                "both": share(digit_ok & style_ok) if digit_ok is not None and style_ok is not None else None,
                "legible": legible(reading, threshold).float().mean().item()}


def cache_path(seed: int = 0, n_train: int = 30000, epochs: int = 6):
    """Where ``get_world_judge`` keeps the weights of this (seed, n_train, epochs)."""
    return build_dir() / "judge" / f"world-{VERSION}-n{n_train}-e{epochs}-s{seed}.safetensors"


def get_world_judge(device="cpu", seed: int = 0, n_train: int = 30000, epochs: int = 6,
                    progress: bool = False) -> WorldJudge:
    """The world's judge: the weights shipped under ``data/judge/`` (the defaults), or trained on first
    use (on the CPU, deterministically from ``seed``) and cached in ``build/judge``; later calls load
    it.  Its accuracies on held-out renders are measured when first read."""
    for name, value in (("seed", seed), ("n_train", n_train), ("epochs", epochs)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n_train < 8 or epochs < 1:
        raise ValueError(f"need n_train >= 8 and epochs >= 1, got n_train={n_train}, epochs={epochs}")
    device = get_device(device)           # a missing GPU is named here, before any training
    path = cache_path(seed, n_train, epochs)
    shipped = data_dir() / "judge" / path.name          # the pack ships the default judge's weights
    if shipped.is_file():
        path = shipped
    model = WorldClassifier()
    if path.exists():
        fix = (f"restore it with `git checkout -- {path}`" if path == shipped else
               f"delete it and run `python -m diffnb.mini.judge --seed {seed} --n-train {n_train} --epochs {epochs}` "
               "to train it again")
        try:
            model.load_state_dict(load_file(str(path)))
            with safe_open(str(path), framework="pt") as f:
                seconds = float((f.metadata() or {}).get("train_seconds", "nan"))
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise RuntimeError(f"the world judge's weights {path} are damaged ({str(err).splitlines()[0]}); "
                               f"{fix}") from err
    else:
        train = render_world(n_train, seed=seed + TRAIN_SEED_OFFSET)
        start = time.perf_counter()
        _fit(model, train.images, train.digits, train.styles, epochs, seed, progress)
        seconds = time.perf_counter() - start
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"train_seconds": f"{seconds:.1f}", "n_train": str(n_train), "epochs": str(epochs),
                            "seed": str(seed)})
        tmp.replace(path)
    model.eval()
    model.to(device)
    return WorldJudge(model, train_seconds=seconds, test_seed=seed + TEST_SEED_OFFSET)


def _dark_ink(x: torch.Tensor) -> torch.Tensor:
    """(N,) bool: is the digit darker than its background?  Pixels 0.25 darker or lighter than the
    mean of the 2-pixel border (the background) are counted; the larger count wins."""
    luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    border = torch.ones_like(luma[0], dtype=torch.bool)
    border[2:-2, 2:-2] = False
    diff = luma - luma[:, border].mean(1)[:, None, None]
    return (diff < -0.25).sum((1, 2)) > (diff > 0.25).sum((1, 2))


def _ink(x: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """(N, H, W) bool: strokes of light ink on a darker ground - pixels brighter by ``threshold``
    (luma) than the darkest pixel within 3 pixels (the ground, as strokes are thinner than 7)."""
    luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    ground = -F.max_pool2d(-luma, 7, 1, 3)
    return (luma - ground > threshold)[:, 0]


def _two_digits(x: torch.Tensor, overlay: torch.Tensor, min_pixels: int = 15) -> torch.Tensor:
    """(N,) bool: does ``overlay`` (``scramble``'s ``max`` of light-ink pictures ``x`` and shifted
    partners) show a second digit?  It must add ``min_pixels`` of ink off the first digit's strokes:
    not so where the partner hides under the picture's ink or in its background, or where it is the
    picture itself, shifted a pixel (a bold digit is still a digit)."""
    own = F.max_pool2d(_ink(x).float()[:, None], 3, 1, 1)[:, 0] > 0
    return (_ink(overlay) & ~own).sum((1, 2)) >= min_pixels


def _scramble_world(x: torch.Tensor, styles: torch.Tensor, g: torch.Generator, share: float = 0.25
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``share`` of the pictures of each style made into non-digits by Part B's ``scramble``
    (half tile shuffles, half overlays of two digits); returns (pictures, which were scrambled).

    ``scramble`` overlays with ``max``: it adds light strokes on a dark ground.  So it runs on one
    group at a time, pictures of one style with ink of one polarity, dark ink as negatives: an
    overlay is the union of two digits' strokes in one style (the style label still holds), and its
    partner comes from the whole group (rarely the picture itself)."""
    out, done = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    dark = _dark_ink(x) | (styles != STYLES.index("photo"))      # crayon and pencil: dark on paper
    for k in range(len(STYLES)):
        for negative in (False, True):
            idx = ((styles == k) & (dark == negative)).nonzero()[:, 0]
            n = len(idx)
            if n < 2:
                continue
            src = 1 - x[idx] if negative else x[idx]
            mixed = scramble(src, g, tile=6, box=24)
            half = n // 2
            n_tiles, n_over = (max(1, round(share * m)) for m in (half, n - half))
            over = torch.arange(half, half + n_over)
            keep = torch.cat([torch.arange(0, n_tiles), over[_two_digits(src[over], mixed[over])]])
            if negative:
                mixed = 1 - mixed
            out[idx[keep]] = mixed[keep]       # scramble's first half: tile shuffles, second: overlays
            done[idx[keep]] = True
    return out, done


def _fit(model: nn.Module, images: torch.Tensor, digits: torch.Tensor, styles: torch.Tensor, epochs: int,
         seed: int, progress: bool) -> None:
    from diffnb.core.progress import progress as tqdm

    g = torch.Generator().manual_seed(seed)
    reset_parameters(model, seed)
    model.to(memory_format=torch.channels_last)   # about a fifth faster on CPUs
    n, bs = len(images), 128
    steps = epochs * max(1, n // bs)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    model.train()
    step = 0
    with tqdm(total=steps, desc="world judge", disable=not progress) as bar:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, max(1, n // bs) * bs, bs):
                idx = perm[i:i + bs]
                m = len(idx)
                # light augmentation: shifts of up to 2 px and a little brightness and contrast jitter
                dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
                x = torch.roll(images[idx], shifts=(dy, dx), dims=(2, 3))
                gain = 1 + 0.1 * (torch.rand(m, 1, 1, 1, generator=g) * 2 - 1)
                offset = 0.04 * (torch.rand(m, 1, 1, 1, generator=g) * 2 - 1)
                x = ((x - 0.5) * gain + 0.5 + offset).clamp(0, 1)
                y, s = digits[idx].clone(), styles[idx]
                x, scrambled = _scramble_world(x, s, g)   # a quarter of each batch: "not a digit"
                y[scrambled] = NOT_A_DIGIT
                x = x.contiguous(memory_format=torch.channels_last)
                digit_logits, style_logits = model(x)
                loss = F.cross_entropy(digit_logits, y) + F.cross_entropy(style_logits, s)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if step < steps - 1:
                    sched.step()
                step += 1
                bar.update(1)
    model.to(memory_format=torch.contiguous_format)
    model.eval()


def device_argument(text: str) -> str:
    """argparse ``type`` of the command lines' ``--device``: it must name a device this machine has
    (``diffnb.core.devices.get_device``), so a missing GPU is said before anything is imported or trained."""
    try:
        get_device(text)
    except (TypeError, ValueError) as err:
        if text.startswith("cuda") and not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asks for a CUDA GPU and there is none here; use --device cpu "
                                             "or --device auto") from None
        raise argparse.ArgumentTypeError(f"{err} (--device auto, cpu, cuda or cuda:N)") from None
    return text


def int_at_least(low: int, what: str):
    """argparse ``type`` of an int option that must be ``>= low`` (``what``: what the number counts)."""
    def read(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low} ({what}), got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low} ({what}), got {value}")
        return value

    read.__name__ = f"int >= {low}"
    return read


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffnb.mini.judge", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int_at_least(8, "training renders"), default=30000)
    ap.add_argument("--epochs", type=int_at_least(1, "passes over the training renders"), default=6)
    ap.add_argument("--device", type=device_argument, default="cpu", help="cpu (default), cuda or auto")
    args = ap.parse_args(argv)
    path = cache_path(args.seed, args.n_train, args.epochs)
    cached = path.exists()
    start = time.perf_counter()
    judge = get_world_judge(args.device, args.seed, args.n_train, args.epochs, progress=True)
    took = time.perf_counter() - start
    print(f"world judge: {path} ({'loaded from the cache' if cached else 'trained now'}, {took:.1f} s in all)")
    print(f"training time: {judge.train_seconds:.1f} s (n_train={args.n_train}, epochs={args.epochs}, "
          f"{torch.get_num_threads()} thread(s) now)")
    print(f"held-out renders ({N_TEST}): digit accuracy {judge.digit_accuracy:.4f}, "
          f"style accuracy {judge.style_accuracy:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
