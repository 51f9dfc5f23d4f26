"""Helpers the Part A notebooks share, so each notebook cell stays one call and one figure.

Plain glue around ``diffnb.a.models``, ``diffnb.a.prompts``, ``diffnb.a.denoise`` and ``diffnb.a.images``:
resolve the parameters cell, load the stage-1 bundle and the prompt embeddings, load images at the
model's size, hand out seeded generators, show model images, and compute the numbers the checked
cells print.  Conventions as in ``diffnb.a.denoise``: images ``(N, C, H, W)`` in [-1, 1], timesteps
descending, seeds explicit (a fresh CPU ``torch.Generator`` per run, so a run's noise does not
depend on the cells before it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from diffnb.core import plotting
from diffnb.core.devices import choose_threads, get_device
from diffnb.core.progress import show_loops
from diffnb.core.paths import project_root
from diffnb.profiles import part_a_settings

#: one line per model for the setup cell
MODEL_NOTES = {
    "tiny": "random IF-shaped weights, {size}x{size}: the pictures are noise, the code path is real",
    "mini": "a small IF-compatible model the pack trains on its digit world, {size}x{size}",
    "deepfloyd": "DeepFloyd IF stage 1, {size}x{size}",
}


def resolve_path(path: str | Path) -> Path:
    """A path from the parameters cell: absolute, or relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def _prompts_of(value) -> list[str]:
    """Every prompt string inside a settings value (str, list, tuple, dict, nested)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _prompts_of(v)]
    return []


@dataclass
class PartA:
    """What a Part A notebook works with: the bundle, the embeddings, the settings."""
    stage1: object
    embeddings: object
    settings: dict
    device: torch.device
    model: str
    size: int = field(init=False)

    def __post_init__(self):
        size = self.stage1.unet.config.sample_size
        self.size = size if isinstance(size, int) else tuple(size)

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    @property
    def scale(self) -> float:
        return float(self.settings["guidance_scale"])

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed + offset`` (CPU draws are the same on every device)."""
        return torch.Generator().manual_seed(self.seed + int(offset))

    def embed(self, prompt: str) -> torch.Tensor:
        """The embedding ``(1, L, D)`` of ``prompt`` on the model's device and dtype (``""``: unconditional).

        With ``deepfloyd`` a prompt not yet embedded is encoded with T5 (and cached on disk); ``mini``
        embeds any prompt made of its world's words; with the shipped embeddings file (``tiny``) a
        missing prompt is an error listing the prompts that exist.
        """
        if self.model == "deepfloyd" and prompt not in self.embeddings:
            from diffnb.a.prompts import encode_prompts
            self.embeddings = encode_prompts(self.embeddings.prompts + [prompt], device=self.device)
        return self.embeddings.get(prompt, device=self.device, dtype=self.stage1.unet.dtype)

    @property
    def uncond(self) -> torch.Tensor:
        return self.embed("")

    def image(self, path: str | Path) -> torch.Tensor:
        """An image file (repo-relative path) at the model's size: ``(1, 3, H, W)`` in [-1, 1]."""
        from diffnb.a.images import load_image
        return load_image(resolve_path(path), self.size).to(self.device, self.stage1.unet.dtype)

    def images(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Several image files as one batch ``(N, 3, H, W)``."""
        return torch.cat([self.image(p) for p in paths])

    def mask(self, path: str | Path) -> torch.Tensor:
        """A mask PNG (white = 1 = edit) at the model's size: ``(1, 1, H, W)``."""
        from diffnb.a.images import load_mask
        return load_mask(resolve_path(path), self.size).to(self.device, self.stage1.unet.dtype)

    def timesteps(self, stride: int | None = None) -> list[int]:
        """The strided list 990, 990 - stride, ..., 0 (default stride: the profile's, 30)."""
        from diffnb.a.denoise import strided_timesteps
        return strided_timesteps(self.stage1, start=990, stride=stride or self.settings["stride"])


def setup_part_a(profile: str = "quick", model: str | None = None, device: str = "auto",
                 seed: int | None = None, **overrides) -> PartA:
    """Resolve the profile, load the stage-1 bundle and the prompt embeddings, print one line.

    ``tiny`` reads the shipped embeddings file; ``mini`` embeds any prompt of its world with the prompt
    encoder shipped beside it; ``deepfloyd`` computes T5 embeddings of the profile's prompts with
    ``diffnb.a.prompts.encode_prompts`` (cached on disk; a clear error if the T5 weights are absent).
    From here on the denoising loops show a progress bar when they last over 2 s (``show_loops``).
    """
    from diffnb.a.models import load_stage1
    from diffnb.a.prompts import default_embeddings_path, encode_prompts, load_embeddings

    settings = part_a_settings(profile, model=model, seed=seed, **overrides)
    if not isinstance(settings["seed"], int) or isinstance(settings["seed"], bool):
        raise TypeError(f"seed must be an int, got {settings['seed']!r} ({type(settings['seed']).__name__}); "
                        "pass an integer such as 100, or None for the profile's")
    dev = get_device(device)
    threads = choose_threads(dev, profile)
    name = settings["model"]
    stage1 = load_stage1(name, device=dev)
    if name == "deepfloyd":
        prompts = [""] + _prompts_of(settings["prompts"])
        embeddings = encode_prompts(prompts, device=dev)
    elif name == "mini":
        from diffnb.mini.model import load_mini_prompts
        embeddings = load_mini_prompts()
    else:
        embeddings = load_embeddings(default_embeddings_path(name))
    torch.manual_seed(settings["seed"])
    show_loops()                        # a denoising loop that lasts over 2 s shows a bar in the notebook
    part = PartA(stage1, embeddings, settings, dev, name)
    note = MODEL_NOTES[name].format(size=part.size)
    cpu_threads = f" ({threads} thread{'s' if threads > 1 else ''})" if dev.type == "cpu" else ""
    print(f"model: {name} ({note}) | device: {dev}{cpu_threads} | seed: {settings['seed']} | CFG: {settings['guidance_scale']}")
    return part


def world_judge(pa: PartA):
    """The judge of the digit world (``diffnb.mini.judge``) when the model is ``mini``, else ``None``:
    it reads digit and style, which only make sense for pictures of that world."""
    if pa.model != "mini":
        return None
    from diffnb.mini.judge import get_world_judge
    return get_world_judge(device="cpu")


# --------------------------------------------------------------------------- named groups in one batch

class Batch:
    """Named groups of images run as one batch (one generator, one UNet pass per step), split back by name.

        batch = Batch(photos=photos, renders=renders)
        edits = batch.split(sdedit(batch.images, ...))      # {"photos": ..., "renders": ...}

    ``split`` takes a result with one image per input image, or a list of such results (``sdedit``
    returns one per start index), and returns each group's part under its name; ``join`` concatenates
    another per-group input (masks, embeddings) in the same order, checking each group's size.
    """

    def __init__(self, **groups: torch.Tensor):
        if not groups:
            raise ValueError("Batch needs at least one named group of images, e.g. Batch(photos=photos)")
        for name, x in groups.items():
            if not torch.is_tensor(x) or x.dim() != 4:
                got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
                raise TypeError(f"Batch group {name!r} must be images (N, C, H, W), got {got}")
        self.sizes = {name: len(x) for name, x in groups.items()}
        self.images = torch.cat(list(groups.values()))

    def __len__(self) -> int:
        return len(self.images)

    def join(self, **parts: torch.Tensor) -> torch.Tensor:
        """``parts`` (one tensor per group, by the same names) concatenated in the batch's order."""
        if set(parts) != set(self.sizes):
            raise ValueError(f"join needs one part per group {list(self.sizes)}, got {list(parts)}")
        wrong = {name: len(parts[name]) for name, n in self.sizes.items() if len(parts[name]) != n}
        if wrong:
            raise ValueError(f"join: each part needs one entry per image of its group {self.sizes}, got {wrong}")
        return torch.cat([parts[name] for name in self.sizes])

    def split(self, result):
        """Each group's part of ``result`` (a tensor of ``len(self)`` images, or a list of them) by name."""
        if isinstance(result, (list, tuple)):
            per = [self.split(r) for r in result]
            return {name: [p[name] for p in per] for name in self.sizes}
        if len(result) != len(self):
            raise ValueError(f"a result of {len(result)} images cannot be split into the batch's groups "
                             f"{self.sizes} ({len(self)} images)")
        return dict(zip(self.sizes, torch.split(result, list(self.sizes.values()))))


# --------------------------------------------------------------------------- figures

def show(images, nrow: int = 1, **kwargs):
    """Model images (a tensor ``(N, C, H, W)`` or a list of ``(1 or N, C, H, W)``) in [-1, 1] as a grid."""
    from diffnb.a.images import to_display
    if isinstance(images, (list, tuple)):
        images = torch.cat([x if x.dim() == 4 else x[None] for x in images])
    return plotting.show_grid(to_display(images), nrow=nrow, **kwargs)


def show_files(paths: Sequence[str | Path], titles: Sequence[str] | None = None, size: int = 256,
               scale: float = 2.2, title: str | None = None):
    """Image files as the eye sees them: centre-cropped to ``size`` pixels (not the model's size)."""
    from diffnb.a.images import load_image, to_display
    imgs = torch.cat([load_image(resolve_path(p), size) for p in paths])
    return plotting.show_grid(to_display(imgs), nrow=1, titles=titles, scale=scale, title=title)


def show_sdedit(originals: torch.Tensor, edits: Sequence[torch.Tensor], i_starts: Sequence[int],
                timesteps: Sequence[int], names: Sequence[str], title: str | None = None):
    """SDEdit results: one row per image, columns = start index (t) and the original last."""
    cols = [f"idx {i} (t={timesteps[i]})" for i in i_starts] + ["original"]
    rows = [torch.stack([e[k] for e in edits] + [originals[k]]) for k in range(len(originals))]
    return show(torch.cat(rows), nrow=len(rows), col_labels=cols, row_labels=list(names), title=title)


def mask_as_image(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask ``(N, 1, H, W)`` as a white-on-black model image ``(N, 3, H, W)`` in [-1, 1]."""
    return (mask * 2 - 1).expand(-1, 3, -1, -1)


# --------------------------------------------------------------------------- numbers for checked cells

def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error over all pixels."""
    return float(((a.float().cpu() - b.float().cpu()) ** 2).mean())


def forward_statistics(x0: torch.Tensor, x_t: torch.Tensor, t: int, stage1) -> dict:
    """Closed form against the sample: x_t - sqrt(abar_t) x0 should be N(0, 1 - abar_t).

    Returns ``abar``, the closed-form ``signal`` sqrt(abar_t) and ``noise_std`` sqrt(1 - abar_t), and
    the measured ``resid_mean`` and ``resid_std`` of x_t - sqrt(abar_t) x0.
    """
    from diffnb.a.schedule import Schedule
    abar = float(Schedule(stage1).abar(t))
    resid = (x_t.float().cpu() - abar ** 0.5 * x0.float().cpu())
    return dict(abar=abar, signal=abar ** 0.5, noise_std=(1 - abar) ** 0.5,
                resid_mean=float(resid.mean()), resid_std=float(resid.std()))


def estimators_agree(estimator_a, estimator_b, x: torch.Tensor, timesteps: Sequence[int], scale: float):
    """Whether two noise estimators ``(x_t, t) -> (eps, variance)`` give the same answer on ``x`` at every
    ``t`` of ``timesteps``, within float32's rounding budget (``diffnb.core.numerics``).

    This checks an identity (CFG at gamma = 1 is the plain conditional estimate; a hybrid of one prompt
    with itself is CFG) one step at a time.  ``scale`` is the guidance scale gamma the estimators use:
    the two sides batch the UNet differently, and CFG multiplies the rounding that leaves by
    ``|gamma| + |1 - gamma|``.  Returns a ``numerics.Agreement`` (true when they agree) for the step
    closest to its bound; ``.bound`` is a step's budget, which ``numerics.sampler_gain`` carries to a
    whole sample.
    """
    from diffnb.core.numerics import agreement, rounding_bound

    timesteps = list(timesteps)
    if not timesteps:
        raise ValueError("estimators_agree needs at least one timestep; pass the strided list, e.g. pa.timesteps()")
    worst = None
    with torch.no_grad():
        for t in timesteps:
            (eps_a, var_a), (eps_b, var_b) = estimator_a(x, t), estimator_b(x, t)
            size = lambda u, v: float(torch.maximum(u.abs().max(), v.abs().max()))   # noqa: E731
            for found in (agreement(eps_a, eps_b, rounding_bound(scale, size(eps_a, eps_b))),
                          agreement(var_a, var_b, rounding_bound(1.0, size(var_a, var_b)))):  # the variance is one branch's, unguided
                if worst is None or found.ratio > worst.ratio:
                    worst = found
    return worst


def sample_budget(stage1, estimator, x: torch.Tensor, timesteps: Sequence[int], scale: float) -> float:
    """Float32 budget for comparing two whole samples of an identity (``estimators_agree`` is the one-step
    check): ``numerics.rounding_bound`` at the largest |eps| ``estimator`` gives on ``x`` along
    ``timesteps``, carried through the sampler by ``numerics.sampler_gain``."""
    from diffnb.core.numerics import rounding_bound, sampler_gain

    with torch.no_grad():
        size = max(float(estimator(x, t)[0].abs().max()) for t in timesteps)
    return rounding_bound(scale, size, sampler_gain(stage1, timesteps))
