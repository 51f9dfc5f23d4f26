"""A small digit classifier that turns "the samples look like digits" into a number.

It is trained once per dataset on the training split (seeded), checked on the test split, and
cached in ``build/judge``.  Generated samples are judged by it: class-conditional samples should
be read as the digit that was asked for, unconditional samples should be read as digits at all.

A plain ten-way classifier reads almost any blob as *some* digit, often confidently.  So the judge
has an eleventh class, "not a digit", learnt from scrambled digits: real digits cut into 7x7
tiles and shuffled (strokes without a digit's layout) and two digits overlaid.  A sample counts as
legible when the judge picks one of the ten digits with probability at least ``LEGIBLE`` (0.9).

Both judges (this one and the digit world's, ``diffnb.mini.judge``) answer ``predict`` with one
``Reading`` and count legible samples with one rule, ``legible``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from diffnb.core.checks import is_int
from diffnb.core.paths import build_dir


NOT_A_DIGIT = 10

#: a sample is legible when read as one of the ten digits (not ``NOT_A_DIGIT``) with probability >= this,
#: for both judges (``Judge.summary``, ``diffnb.mini.judge.WorldJudge.read``)
LEGIBLE = 0.9


class Reading(NamedTuple):
    """What a judge reads in N images, each field (N,) on the CPU.

    ``digit``: 0-9 or ``NOT_A_DIGIT`` (10); ``p_digit``: its softmax probability (the confidence);
    ``style``, ``p_style``: the style (an index into ``diffnb.mini.world.STYLES``) and its probability,
    ``None`` from Part B's judge, which reads no style."""
    digit: torch.Tensor
    p_digit: torch.Tensor
    style: torch.Tensor | None = None
    p_style: torch.Tensor | None = None


def legible(reading: Reading, threshold: float = LEGIBLE) -> torch.Tensor:
    """(N,) bool: read as one of the ten digits with probability >= ``threshold``."""
    return (reading.digit != NOT_A_DIGIT) & (reading.p_digit >= threshold)


class DigitClassifier(nn.Module):
    """(N, 1, 28, 28) in [0, 1] -> (N, 11) logits: digits 0-9 and "not a digit"."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 7x7
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 11),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class Judge:
    model: DigitClassifier
    test_accuracy: float          # on the clean held-out test split

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Reading:
        """``Reading(digit, p_digit)`` (style fields ``None``) for images (N, 1, 28, 28) in [0, 1] (clamped)."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be digits (N, 1, 28, 28), got {got}")
        if not images.dtype.is_floating_point:
            raise TypeError(f"images have dtype {images.dtype} (raw pixel values 0-255?); the judge reads float "
                            "images in [0, 1]: pass images.float() / 255")
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"images hold {int((~torch.isfinite(images)).sum())} NaN or inf pixel values, which "
                             "the judge cannot read; check the model that made them (its weights or sampler)")
        dev = next(self.model.parameters()).device
        probs = F.softmax(self.model(images.to(dev).float().clamp(0, 1)), dim=1)
        conf, pred = probs.max(dim=1)
        return Reading(pred.cpu(), conf.cpu())

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return (self.predict(images).digit == labels.cpu()).float().mean().item()

    def accuracy_per_class(self, images: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
        """For each label present in ``labels``: the share of its images read as that label."""
        right, labels = self.predict(images).digit == labels.cpu(), labels.cpu()
        return {int(c): right[labels == c].float().mean().item() for c in labels.unique()}

    def summary(self, images: torch.Tensor, threshold: float = LEGIBLE) -> dict:
        """Share of samples read as a digit with probability >= threshold ("legible"), how many
        different digits those cover, and the count of each reading (index 10: not a digit)."""
        reading = self.predict(images)
        pred, ok = reading.digit, legible(reading, threshold)
        return {"legible": ok.float().mean().item(),
                "digits_covered": len(set(pred[ok].tolist())),
                "counts": torch.bincount(pred, minlength=11).tolist()}


class JudgeFeatures(nn.Module):
    """The judge's 128 penultimate activations (after the last ReLU) of images (N, 1, 28, 28) in [0, 1]:
    the feature extractor of a Fréchet distance on the judge (``fid``).  uint8 images (torchmetrics probes
    with one) are read as 0-255."""
    num_features = 128

    def __init__(self, model: DigitClassifier):
        super().__init__()
        self.body = model.net[:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255 if not x.is_floating_point() else x.float()
        return self.body(x.to(next(self.body.parameters()).device).clamp(0, 1))


@torch.no_grad()
def fid(judge: Judge, samples: torch.Tensor, reference: torch.Tensor) -> float:
    """The Fréchet distance between the judge's features of ``samples`` and of ``reference`` (both
    (N, 1, 28, 28) in [0, 1], e.g. the held-out test digits): torchmetrics' ``FrechetInceptionDistance``
    with the judge (``JudgeFeatures``) in Inception's place, so a "FID on the judge's features", in its
    own units (not comparable with an Inception FID).  ||mu_s - mu_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^1/2)
    over 128 features: both sets need well over 128 images, or the covariances are mostly noise."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    for name, x in (("samples", samples), ("reference", reference)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be digits (N, 1, 28, 28) in [0, 1], got {got}")
        if x.shape[0] <= JudgeFeatures.num_features:
            raise ValueError(f"{name} has {x.shape[0]} images; a Fréchet distance over the judge's "
                             f"{JudgeFeatures.num_features} features needs more than that (e.g. 1000)")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} hold NaN or inf pixel values; check the model or sampler that made them")
    metric = FrechetInceptionDistance(feature=JudgeFeatures(judge.model), input_img_size=(1, 28, 28))
    metric.update(reference.float(), real=True)
    metric.update(samples.float(), real=False)
    return float(metric.compute())


#: passes over the training split per source (``get_judge``'s default): the 4,000 digits of ``mnist-5k``
#: take more passes than the 20,000 first digits of the larger sets
JUDGE_EPOCHS = {"mnist": 2, "mnist-5k": 12, "synthetic": 2}


def get_judge(data: str = "mnist-5k", device="cpu", epochs: int | None = None, train_limit: int = 20000,
              seed: int = 0, progress: bool = False) -> Judge:
    """The judge for ``data`` (one of ``diffnb.b.digits.SOURCES``), trained on first use (on at most
    ``train_limit`` training digits, ``epochs`` passes, default ``JUDGE_EPOCHS[data]``) and cached on disk;
    ``test_accuracy`` is measured on the held-out test split."""
    from diffnb.b.digits import SOURCES, load_digits
    from diffnb.core.devices import get_device

    if data not in SOURCES:
        raise ValueError(f"data must be one of {list(SOURCES)}, got {data!r}")
    epochs = JUDGE_EPOCHS[data] if epochs is None else epochs
    for name, value in (("epochs", epochs), ("train_limit", train_limit), ("seed", seed)):
        if not is_int(value) or (name != "seed" and value < 1):
            raise ValueError(f"{name} must be {'an int' if name == 'seed' else 'a positive int'}, got {value!r}")
    device = get_device(device)
    path = build_dir() / "judge" / f"{data}-v2-e{epochs}-n{train_limit}-s{seed}.safetensors"
    model = DigitClassifier()
    test = load_digits(data, train=False)
    if path.exists():
        try:
            model.load_state_dict(load_file(str(path)))
        except Exception as err:
            raise RuntimeError(f"the cached judge {path} is damaged ({type(err).__name__}); delete that file "
                               "and it is trained again on next use") from err
    else:
        train_set = load_digits(data, train=True, limit=train_limit)
        _fit(model, train_set.images, train_set.labels, epochs, seed, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(path)
    model.eval()
    judge = Judge(model, 0.0)
    judge.test_accuracy = judge.accuracy(test.images, test.labels)
    judge.model.to(device)
    return judge


def reset_parameters(model: nn.Module, seed: int) -> None:
    """Re-initialise every layer of ``model`` from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def _fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int,
         progress: bool) -> None:
    from diffnb.core.progress import progress as tqdm

    g = torch.Generator().manual_seed(seed)
    reset_parameters(model, seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    n, bs = len(images), 128
    for _ in tqdm(range(epochs), desc="judge", disable=not progress):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            # light augmentation: small shifts, so samples that are slightly off-centre still read
            x = torch.roll(images[idx], shifts=(int(torch.randint(-1, 2, (1,), generator=g)),
                                                int(torch.randint(-1, 2, (1,), generator=g))), dims=(2, 3))
            y = labels[idx].clone()
            k = bs // 4                            # a quarter of each batch: scrambled, "not a digit"
            x[:k] = scramble(x[:k], g)
            y[:k] = NOT_A_DIGIT
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def scramble(x: torch.Tensor, g: torch.Generator, tile: int = 5, box: int = 20) -> torch.Tensor:
    """Non-digits made from digits (N, 1, H, W): half with the tiles of their central
    ``box`` x ``box`` region shuffled (strokes, centred, but no digit's layout), half two digits
    overlaid."""
    n, c, h, w = x.shape
    out = x.clone()
    half, k = n // 2, box // tile
    top, left = (h - box) // 2, (w - box) // 2
    centre = x[:half, :, top:top + box, left:left + box]
    # (N, C, k, t, k, t) -> (N, k*k, C, t, t): one row per tile, then permute the rows per image
    tiles = centre.reshape(half, c, k, tile, k, tile).permute(0, 2, 4, 1, 3, 5).reshape(half, k * k, c, tile, tile)
    order = torch.argsort(torch.rand(half, k * k, generator=g), dim=1)
    tiles = tiles[torch.arange(half)[:, None], order]
    out[:half, :, top:top + box, left:left + box] = (
        tiles.reshape(half, k, k, c, tile, tile).permute(0, 3, 1, 4, 2, 5).reshape(half, c, box, box))
    other = x[torch.randperm(n, generator=g)[: n - half]]
    shift = int(torch.randint(-6, 7, (1,), generator=g))
    out[half:] = torch.maximum(x[half:], torch.roll(other, shifts=shift, dims=3))
    return out
