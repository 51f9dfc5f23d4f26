"""``mini``: a small DeepFloyd-IF-compatible text-to-image model that the pack trains on its digit world.

Same interface as IF stage 1, so every Part A function runs on it unchanged: a diffusers
``UNet2DConditionModel`` with 3 channels in and 6 out (noise, then learned-range variance), IF's
``DDPMScheduler`` config, conditioned on prompt embeddings ``(1, L, D)``. The embeddings come from a
small text encoder trained with the UNet (``PromptEncoder``: word embeddings, positions, two
transformer layers; L = 16 words, D = 64), in place of T5's ``(1, 77, 4096)``.

Training (``train_mini``) follows improved DDPM (Nichol & Dhariwal 2021), the recipe behind IF's
learned-range variance: the hybrid loss

    L = || eps - eps_theta(x_t, t, c) ||^2  +  L_vlb(t)

where L_vlb(t) is KL( q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t) ) in bits per dimension (the
discretised decoder likelihood at t = 0), with the mean's gradient stopped so that only the variance
channels learn from it. The variance channels v in [-1, 1] interpolate in log space between the
posterior variance beta~_t and beta_t, exactly as ``DDPMScheduler(variance_type="learned_range")`` reads
them: log sigma^2 = (v+1)/2 log beta_t + (1 - (v+1)/2) log beta~_t.

Prompts are drawn per image: about 10% the null prompt ``""`` (for classifier-free guidance), the rest
name the digit, the style, both or neither in one of the world's phrasings (``diffnb.mini.world``).

Command line::

    python -m diffnb.mini.model train                        # train RECIPE, export to build/mini/<key>/model
    python -m diffnb.mini.model train --overwrite-shipped    # ... and replace data/models/mini-if with it
    python -m diffnb.mini.model train --steps 200 --batch-size 64 --out /tmp/mini   # one run with other settings

The exporter never touches the shipped model unless asked by name (``--overwrite-shipped``,
``overwrite_shipped=True``), writes only into a new or empty folder or over an earlier export
(``EXPORT_FILES``), and deletes nothing but its own files (``export``).

The recipe (``RECIPE``) is 6,000 steps at batch 64, the first 3,500 of them on the world's images at
half size (16x16, ``low_res``): the UNet is convolutional, so the same weights learn the digits'
shapes there at a third of the cost of a full-size step, and the last 2,500 steps at 32x32 learn the
detail. The same random draws are taken on any device.

The run (``build/mini/<config hash>/``) runs in ``diffnb.core.runs.Run``, as Part B's do: one process
per folder, its checkpoint ``state.pt`` written atomically every ``save_every`` steps and verified
against its checksum when read back (``weights_only=True``); an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from diffnb.a.models import tiny_unet_config
from diffnb.mini import world
from diffnb.core.cudagraph import graph_step, make_capturable, portable_state, set_lrs
from diffnb.core.paths import build_dir, data_dir
from diffnb.core.runs import Run, pid_alive, read_safetensors, record_folder, verify_folder

MAX_WORDS = 16
EMBED_DIM = 64

#: The UNet: the tiny IF layout of ``diffnb.a.models`` (IF's block types: ResNet levels with scale-shift
#: time conditioning, a SimpleCrossAttn level and mid block that attend to the projected text) with a
#: third level and widths chosen so that a 33-step CFG sample of 5 images takes a couple of seconds on
#: 2 CPU cores, at 32x32, conditioned on the prompt encoder's 64-wide states (IF: T5's 4096).
MINI_UNET_CONFIG = tiny_unet_config(
    sample_size=world.SIZE,
    block_out_channels=(24, 48, 96),
    down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
    cross_attention_dim=64, attention_head_dim=32, encoder_hid_dim=EMBED_DIM, norm_num_groups=8)


# --------------------------------------------------------------------------- prompt encoder

class PromptEncoder(nn.Module):
    """Words -> ``(B, MAX_WORDS, dim)`` states: word + position embeddings, a small transformer.

    Like T5 for IF, it encodes the padded sequence and the UNet attends to all of it; the null
    prompt ``""`` (all padding) is the unconditional embedding. Unknown words raise an error that
    lists the words it knows.
    """

    def __init__(self, vocab: list[str], max_words: int = MAX_WORDS, dim: int = EMBED_DIM,
                 layers: int = 2, heads: int = 4):
        super().__init__()
        self.vocab = list(vocab)
        self.config = dict(vocab=self.vocab, max_words=max_words, dim=dim, layers=layers, heads=heads)
        self.index = {w: i + 1 for i, w in enumerate(self.vocab)}        # 0 = padding
        self.words = nn.Embedding(len(self.vocab) + 1, dim)
        self.position = nn.Parameter(torch.randn(1, max_words, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Word ids ``(B, max_words)``, zero-padded; checks every word."""
        n = self.config["max_words"]
        ids = torch.zeros(len(prompts), n, dtype=torch.long)
        for row, text in enumerate(prompts):
            words = world.tokenize(text)
            unknown = [w for w in words if w not in self.index]
            if unknown:
                raise ValueError(f"the prompt encoder does not know {unknown}; it knows {' '.join(self.vocab)}")
            if len(words) > n:
                raise ValueError(f"prompt {text!r} has {len(words)} words; the mini model reads at most {n}")
            ids[row, :len(words)] = torch.tensor([self.index[w] for w in words], dtype=torch.long)
        return ids

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.encoder(self.words(ids) + self.position))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.token_ids(prompts).to(self.position.device)
        return self(ids)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config, indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: str | Path) -> "PromptEncoder":
        """The encoder saved in ``folder`` (``config.json`` and ``model.safetensors``); a missing file
        raises ``FileNotFoundError``, a damaged one ``RuntimeError``, each naming the file and the fix."""
        folder = Path(folder)
        config, weights = folder / "config.json", folder / "model.safetensors"
        for path in (config, weights):
            if not path.is_file():
                raise FileNotFoundError(f"no prompt encoder in {folder} ({path.name} missing); "
                                        f"{_damaged_model_fix(folder.parent)}")
        try:
            enc = cls(**json.loads(config.read_text()))
        except (ValueError, TypeError, KeyError) as err:          # JSONDecodeError is a ValueError
            raise RuntimeError(f"the prompt encoder's config {config} is damaged ({err}); "
                               f"{_damaged_model_fix(folder.parent)}") from err
        state = read_safetensors(weights, _damaged_model_fix(folder.parent))
        try:
            enc.load_state_dict(state)
        except RuntimeError as err:
            raise RuntimeError(f"the prompt encoder's weights {weights} do not fit its config.json "
                               f"({str(err).splitlines()[0]}); {_damaged_model_fix(folder.parent)}") from err
        return enc.eval()


def _damaged_model_fix(model_folder: Path) -> str:
    """What to do about a damaged or incomplete mini model folder (the words of the error messages)."""
    shipped = data_dir() / "models" / "mini-if"
    if _same_path(model_folder, shipped):
        return (f"restore the shipped model with `git checkout -- {shipped}` (or re-create it with "
                "`python -m diffnb.mini.model train --overwrite-shipped`)")
    return (f"delete {model_folder} and export the model again (`python -m diffnb.mini.model train --out {model_folder}` "
            "with that run's settings, or diffnb.mini.model.export_run)")


def _same_path(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


class MiniPrompts:
    """The mini model's prompt embeddings, computed on demand (the embeddings-file interface).

    ``get(prompt)`` returns ``(1, MAX_WORDS, EMBED_DIM)``; any prompt made of the world's words works,
    others raise ``PromptNotFoundError`` naming the words known. ``prompts`` lists examples.
    """

    def __init__(self, encoder: PromptEncoder, source: str | None = None):
        self.encoder = encoder.eval()
        self.source = source
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def prompts(self) -> list[str]:
        return ["", world.prompt(), world.prompt(7, "photo"), world.prompt(3, "crayon drawing", 2),
                world.prompt(2, "pencil sketch", 3), world.prompt(style="crayon drawing")]

    def __contains__(self, prompt: object) -> bool:
        if not isinstance(prompt, str):
            return False
        try:
            self.encoder.token_ids([prompt])
        except ValueError:
            return False
        return True

    def __repr__(self) -> str:
        return f"MiniPrompts(words={len(self.encoder.vocab)}, shape (1, {MAX_WORDS}, {EMBED_DIM}), source={self.source!r})"

    def get(self, prompt: str, device=None, dtype=None) -> torch.Tensor:
        if prompt not in self._cache:
            world.tokenize(prompt)                       # PromptNotFoundError naming the known words
            self._cache[prompt] = self.encoder.encode([prompt]).cpu()
        return self._cache[prompt].to(device=device, dtype=dtype)

    __getitem__ = get

    @property
    def uncond(self) -> torch.Tensor:
        return self.get("")


def load_mini_prompts(folder: str | Path | None = None) -> MiniPrompts:
    """The prompt encoder shipped beside the mini UNet (``data/models/mini-if/prompt_encoder``)."""
    folder = Path(folder) if folder is not None else data_dir() / "models" / "mini-if"
    verify_folder(folder, _damaged_model_fix(folder))            # its checksums.json, where it has one
    return MiniPrompts(PromptEncoder.load(folder / "prompt_encoder"), source=str(folder))


# --------------------------------------------------------------------------- the hybrid loss

def _schedule(scheduler, device) -> dict[str, torch.Tensor]:
    """Per-timestep tensors of the (unstrided) schedule that the loss needs (``Schedule.tables``)."""
    from diffnb.a.schedule import Schedule
    return Schedule(scheduler).tables(device)


def _normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _discretised_log_likelihood(x, means, log_scales):
    """log p(x) of images in [-1, 1] quantised to 256 levels under N(means, exp(log_scales)^2)."""
    centred = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _std_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = _std_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


def learned_log_variance(v: torch.Tensor, t: torch.Tensor, sched: dict) -> torch.Tensor:
    """log sigma^2 from the variance channels, as ``DDPMScheduler`` (learned_range) reads them."""
    frac = (v + 1) / 2
    shape = (-1,) + (1,) * (v.dim() - 1)
    return frac * sched["log_beta"][t].view(shape) + (1 - frac) * sched["post_log_var"][t].view(shape)


def min_snr_weight(t: torch.Tensor, sched: dict, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights for the noise MSE (Hang et al. 2023): min(SNR_t, gamma) / SNR_t with
    SNR_t = abar_t / (1 - abar_t). Nearly clean timesteps (SNR above gamma) weigh less, so the
    model spends its capacity on the noisy ones where the digit's shape is decided."""
    abar = sched["abar"][t]
    snr = abar / (1 - abar)
    return snr.clamp(max=gamma) / snr


def hybrid_loss(model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor, sched: dict, snr_gamma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Improved DDPM's hybrid loss. Returns ``(loss, mse, vlb)``, each a scalar (vlb in bits/dim).

    ``snr_gamma > 0`` weighs each image's noise MSE by ``min_snr_weight`` in the loss; the ``mse``
    returned stays the plain mean, so runs with and without it log the same quantity."""
    c = x0.shape[1]
    eps, v = model_output[:, :c], model_output[:, c:]
    per_image = (eps - noise).square().flatten(1).mean(1)
    mse = per_image.mean()
    noise_loss = (per_image * min_snr_weight(t, sched, snr_gamma)).mean() if snr_gamma > 0 else mse
    shape = (-1,) + (1,) * (x0.dim() - 1)
    abar = sched["abar"][t].view(shape)
    x0_pred = (x_t - (1 - abar).sqrt() * eps.detach()) / abar.sqrt()     # stop-grad: the mean is L_simple's job
    mean_pred = sched["coef_x0"][t].view(shape) * x0_pred + sched["coef_xt"][t].view(shape) * x_t
    mean_true = sched["coef_x0"][t].view(shape) * x0 + sched["coef_xt"][t].view(shape) * x_t
    log_var = learned_log_variance(v, t, sched)
    kl = _normal_kl(mean_true, sched["post_log_var"][t].view(shape), mean_pred, log_var)
    nll = -_discretised_log_likelihood(x0, mean_pred, 0.5 * log_var)
    per_pixel = torch.where((t == 0).view(shape), nll, kl) / math.log(2.0)
    vlb = per_pixel.mean()
    return noise_loss + vlb, mse.detach(), vlb.detach()


# --------------------------------------------------------------------------- training

@dataclasses.dataclass(frozen=True)
class MiniConfig:
    """Everything that determines the trained weights (the run folder is named by its hash).

    The defaults are those of an earlier recipe (``benchmarks/mini_recipes.py``, ``gpu_256``); the model
    shipped is ``RECIPE``.

    Every field is checked when a config is made (``CONFIG_RULES``, ``check_setting``): a wrong type
    raises ``TypeError``, a value out of range ``ValueError``, each naming the field. Legal but
    unusual: ``p_uncond=1`` drops every prompt (an unconditional model), ``p_uncond=0`` trains no
    unconditional embedding for guidance, ``ema_decay=0`` exports the last weights as they are; a
    learning rate too large for the model is found at the first checkpoint (``train_mini`` stops
    there, before writing it)."""
    seed: int = 0
    steps: int = 6000              # the length of the lr schedule
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 200
    n_images: int = 100000
    p_uncond: float = 0.1
    ema_decay: float = 0.995
    save_every: int = 500
    pooled_text: bool = True       # IF's pooled text embedding added to the time embedding
    init_from: str = ""            # "" = from scratch; "<run key>@<step>": that run's EMA weights at that step
    snr_gamma: float = 0.0         # > 0: min-SNR-gamma weights on the noise MSE (min_snr_weight); 0: plain mean
    low_res_steps: int = 0         # the first this many steps train on the images at half size (low_res)

    def record(self) -> dict:
        """The settings as training.json records them; fields added later (``init_from``, ``snr_gamma``,
        ``low_res_steps``) are left out at their defaults, so a run keeps the key and the record it had
        before they existed."""
        fields = dataclasses.asdict(self)
        for name in ("init_from", "snr_gamma", "low_res_steps"):
            if not fields[name]:
                del fields[name]
        return fields

    def key(self) -> str:
        text = json.dumps(self.record(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def __post_init__(self):
        for f in dataclasses.fields(self):                  # each field's type and range (CONFIG_RULES)
            object.__setattr__(self, f.name, check_setting(f.name, getattr(self, f.name)))
        if self.n_images < self.batch_size:
            raise ValueError(f"need n_images >= batch_size (a batch draws batch_size of the n_images renders), "
                             f"got n_images={self.n_images} and batch_size={self.batch_size}; raise n_images or "
                             "lower batch_size")
        if self.low_res_steps > self.steps:
            raise ValueError(f"low_res_steps must be an int from 0 (off) to steps ({self.steps}), "
                             f"got {self.low_res_steps!r}; lower it or raise steps")


#: What each ``MiniConfig`` field accepts: (type, test, what is expected, an example or the fix). The
#: command line (``main``) checks its arguments with the same rules, before anything is imported or rendered.
CONFIG_RULES = {
    "seed": (int, lambda v: True, "an int", "e.g. 0"),
    "steps": (int, lambda v: v >= 1, "an int >= 1 (the length of the lr schedule)",
              "e.g. 200 for a short run (the shipped recipe: 6000)"),
    "batch_size": (int, lambda v: v >= 1, "an int >= 1", "e.g. 64"),
    "lr": (float, lambda v: v > 0, "a finite number > 0 (Adam's learning rate)", "e.g. 2e-3 (the recipe's)"),
    "warmup": (int, lambda v: v >= 0, "an int >= 0 (steps of linear warm-up; 0: none)", "e.g. 100"),
    "n_images": (int, lambda v: v >= 1, "an int >= 1 (renders of the world to train on)", "e.g. 100000"),
    "p_uncond": (float, lambda v: 0 <= v <= 1, "a number in [0, 1] (the share of prompts dropped to \"\" for "
                 "classifier-free guidance)", "e.g. 0.1 (1 would drop every prompt)"),
    "ema_decay": (float, lambda v: 0 <= v < 1, "a number in [0, 1) (the EMA's decay per step)", "e.g. 0.995"),
    "save_every": (int, lambda v: v >= 1, "an int >= 1 (steps between checkpoints)", "e.g. 500"),
    "pooled_text": (bool, None, "True or False", "on the command line yes/no, true/false or 1/0"),
    "init_from": (str, lambda v: not v or re.fullmatch(r"[0-9a-f]{10}@[0-9]+", v),
                  "'' (from scratch) or '<run key>@<step>'", f"e.g. '{'0' * 10}@3000'"),
    "snr_gamma": (float, lambda v: v >= 0, "a number >= 0 (0 turns the min-SNR weights off)",
                  "e.g. 5.0, the paper's choice"),
    "low_res_steps": (int, lambda v: v >= 0, "an int from 0 (off) to steps", "e.g. 3500 (the recipe's)"),
}


def check_setting(name: str, value):
    """``value`` for ``MiniConfig`` field ``name`` as the field's type (an int given for a float field
    becomes a float); ``TypeError`` or ``ValueError`` naming the field, what it takes and an example."""
    kind, ok, expect, example = CONFIG_RULES[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be {expect}, got {value!r}; {example}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, {expect}, got {value!r}; {example}")
    elif isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
        raise TypeError(f"{name} must be {expect}, got {value!r} ({type(value).__name__}); {example}")
    else:
        value = kind(value)
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{name} must be {expect}, got {value!r}; {example}")
    if not ok(value):
        raise ValueError(f"{name} must be {expect}, got {value!r}; {example}")
    return value


#: how prompts are drawn per image: (share, names digit, names style)
PROMPT_MIX = ((0.55, True, True), (0.15, True, False), (0.15, False, True), (0.15, False, False))


@functools.lru_cache(maxsize=1)
def _prompt_table() -> dict[tuple, list[str]]:
    return {(d, s): world.all_prompts(d, s) for d in [None, *range(10)] for s in [None, 0, 1, 2]}


def draw_prompts(digits: torch.Tensor, styles: torch.Tensor, gen: torch.Generator, p_uncond: float) -> list[str]:
    """One prompt per image: ``""`` with probability ``p_uncond``, otherwise a phrasing that names the
    image's digit and/or style as ``PROMPT_MIX`` says (never a wrong one)."""
    table = _prompt_table()
    shares = torch.tensor([m[0] for m in PROMPT_MIX])
    kind = torch.multinomial(shares, len(digits), replacement=True, generator=gen)
    drop = torch.rand(len(digits), generator=gen) < p_uncond
    pick = torch.rand(len(digits), generator=gen)
    out = []
    for i in range(len(digits)):
        if drop[i]:
            out.append("")
            continue
        _, name_d, name_s = PROMPT_MIX[int(kind[i])]
        options = table[(int(digits[i]) if name_d else None, int(styles[i]) if name_s else None)]
        out.append(options[int(pick[i] * len(options))])
    return out


def unet_config(pooled_text: bool = False) -> dict:
    """The mini UNet's config; ``pooled_text`` adds IF's pooled text embedding (``addition_embed_type="text"``:
    attention pooling of the prompt states, added to the time embedding, so the prompt reaches every
    ResNet block through the scale-shift conditioning, not only the attention layers)."""
    cfg = dict(MINI_UNET_CONFIG)
    if pooled_text:
        cfg.update(addition_embed_type="text", addition_embed_type_num_heads=4)
    return cfg


def new_models(seed: int, pooled_text: bool = False):
    """The UNet and prompt encoder at their seeded initial weights."""
    from diffusers import UNet2DConditionModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config(pooled_text))
        encoder = PromptEncoder(world.vocabulary())
    return unet, encoder


def snapshot_dir(key: str, step: int) -> Path:
    """Where run ``key``'s EMA model at ``step`` is exported for a run that starts from it."""
    return build_dir() / "mini" / key / f"ema-{step}"


def snapshot(cfg: MiniConfig, step: int, run_dir: str | Path | None = None) -> Path:
    """Export run ``cfg``'s EMA model at ``step`` (its last checkpoint must be that step) to
    ``snapshot_dir``, once; later runs read it with ``init_from="<key>@<step>"``."""
    out = snapshot_dir(cfg.key(), step)
    if not (out / "unet").is_dir():
        unet, encoder, state = ema_models(cfg, run_dir)
        if int(state["step"]) != step:
            raise ValueError(f"run {cfg.key()}'s last checkpoint is at step {state['step']}, not {step}; "
                             f"train it to step {step} (train_mini(cfg, stop_at={step})) before taking a snapshot")
        export(unet, encoder, out, cfg, state["history"])
    return out


def _load_init(cfg: MiniConfig, unet, encoder) -> None:
    """Copy the weights that ``cfg.init_from`` names into ``unet`` and ``encoder``."""
    key, _, step = cfg.init_from.partition("@")
    folder = snapshot_dir(key, int(step))
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"this run starts from run {key}'s EMA weights at step {step}, expected in {folder}; "
                                f"make them with diffnb.mini.model.snapshot(<that run's MiniConfig>, {step}) "
                                "(`python -m diffnb.mini.model train` does it for the shipped recipe)")
    fix = f"delete {folder} and make it again with diffnb.mini.model.snapshot(<that run's MiniConfig>, {step})"
    unet.load_state_dict(read_safetensors(weights, fix))
    encoder.load_state_dict(read_safetensors(folder / "prompt_encoder" / "model.safetensors", fix))


def low_res(images: torch.Tensor) -> torch.Tensor:
    """The images at half size (2x2 means): what a run trains on for its first ``low_res_steps``.

    The UNet is convolutional, so the same weights denoise 16x16 and 32x32 images; at half size a
    step costs about a third as much (the attention and text layers do not shrink), and the first
    phase learns the digits' layout and the styles' colours cheaply before the full-size steps learn
    the detail."""
    if images.dim() != 4 or images.shape[-1] % 2 or images.shape[-2] % 2:
        raise ValueError(f"low_res needs (N, C, H, W) images with even H and W, "
                         f"got shape {tuple(images.shape)}")
    return torch.nn.functional.avg_pool2d(images, 2)


def _lr(cfg: MiniConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_mini(cfg: MiniConfig = MiniConfig(), out: str | Path | None = None, run_dir: str | Path | None = None,
               progress: bool = True, stop_after: int | None = None, stop_at: int | None = None,
               device: str | torch.device = "cpu", cuda_graph: bool | None = None,
               overwrite_shipped: bool = False) -> dict:
    """Train (or resume) the mini model and, once the schedule is done, export it to ``out``.

    ``out``: the model folder (``export``'s rules: new, empty or an earlier export). Default: the run
    folder's ``model/`` (``build/mini/<key>/model``); ``overwrite_shipped=True`` (and no ``out``)
    replaces the shipped ``data/models/mini-if`` instead, the only way to write it.

    ``device``: where the UNet trains (``"cpu"``, ``"cuda"``, ``"auto"``). Every random draw (images,
    prompts, t, noise) comes from one CPU generator, so a run takes the same draws on any device
    and a run started on one device resumes on another.  ``cuda_graph``: on CUDA (the default there)
    the step (forward, hybrid loss, backward, clipping, Adam) is recorded as a CUDA graph, one per
    image size, and replayed, with the step's draws copied into static tensors (``diffnb.core.cudagraph``).

    ``stop_after``: stop after that many more steps, ``stop_at``: at that step, without exporting (export
    such a run with ``export_run``). Returns a summary
    dict with the final losses and the seconds spent in this call.

    Each checkpoint is written only if the losses since the last one and the EMA weights are finite;
    otherwise the run stops with a ``RuntimeError`` (the step itself checks nothing, so that it can be
    recorded as a CUDA graph).
    """
    from diffnb.core.devices import get_device

    # every argument checked before anything is imported, rendered or written
    if not isinstance(cfg, MiniConfig):
        raise TypeError(f"cfg must be a MiniConfig, got {type(cfg).__name__}")
    dev = get_device(device)
    if cuda_graph is None:
        cuda_graph = dev.type == "cuda"
    elif cuda_graph and dev.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {dev}; leave cuda_graph=None to choose "
                         "automatically")
    for name, value in (("stop_after", stop_after), ("stop_at", stop_at)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be None or an int >= 0 (a number of steps), got {value!r}")
    run_dir = Path(run_dir) if run_dir is not None else build_dir() / "mini" / cfg.key()
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"run_dir {run_dir} is a file, not a folder; pass another run_dir (or none: "
                              f"build/mini/{cfg.key()})")
    out = export_target(out, overwrite_shipped, default=run_dir / "model")
    with Run(run_dir, fix=f"delete the run folder {run_dir} and train the run again") as run:
        return _train_mini(cfg, run, out, progress, stop_after, stop_at, dev, cuda_graph, overwrite_shipped)


_STATE_KEYS = {"unet", "encoder", "opt", "ema", "gen", "step", "history"}


def _mini_step(unet, encoder, opt, params, scheduler, sched, cfg, source, idx, t, noise, ids):
    """One optimisation step on ``source[idx]`` (forward, hybrid loss, backward, clipping, Adam); it
    checks nothing and reads no tensor value, so that it can be recorded as a CUDA graph."""
    x0 = source[idx]
    x_t = scheduler.add_noise(x0, noise, t)
    pred = unet(x_t, t, encoder_hidden_states=encoder(ids)).sample
    loss, mse, vlb = hybrid_loss(pred, x0, x_t, t, noise, sched, cfg.snr_gamma)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return mse, vlb


def _flush(pending: list, history: list) -> None:
    """The (mse, vlb) rows still on the device into ``history``: one read, not one per step."""
    if pending:
        history.extend(tuple(row) for row in torch.stack(pending).tolist())
        pending.clear()


def _train_mini(cfg, run, out, progress, stop_after, stop_at, dev, cuda_graph, overwrite_shipped) -> dict:
    from diffusers import DDPMScheduler
    from diffnb.a.models import IF_SCHEDULER_CONFIG
    from diffnb.core.progress import progress as tqdm

    started = time.time()
    data = world.render_world(cfg.n_images, seed=cfg.seed)
    images = (data.images * 2 - 1).to(dev)                         # [-1, 1], the whole set on the device
    scheduler = DDPMScheduler(**IF_SCHEDULER_CONFIG)
    sched = _schedule(scheduler, dev)
    unet, encoder = new_models(cfg.seed, cfg.pooled_text)
    if cfg.init_from:
        _load_init(cfg, unet, encoder)
    unet.to(dev)
    encoder.to(dev)
    params = list(unet.parameters()) + list(encoder.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    ema = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, history = 0, []
    state = run.load(_STATE_KEYS, map_location=dev)
    if state is not None:
        unet.load_state_dict(state["unet"])
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["opt"])
        for e, saved in zip(ema, state["ema"]):
            e.copy_(saved)
        gen.set_state(state["gen"].cpu())
        step, history = int(state["step"]), list(state["history"])
        if progress:
            print(f"resuming {run.dir} at step {step}", flush=True)
    pending: list[torch.Tensor] = []           # (mse, vlb) per step, still on the device
    checked = len(history)                     # history[:checked] is in a checkpoint, known finite
    tokens: dict[str, torch.Tensor] = {}       # the world has few prompts
    lrs = make_capturable(opt, dev) if cuda_graph else None
    # per phase (True: the half-size first phase, if the run has one): the noise shape and the step
    phases = {}
    for low in ([True, False] if cfg.low_res_steps else [False]):
        source = low_res(images) if low else images
        shape = (cfg.batch_size, *source.shape[1:])
        like = (torch.zeros(cfg.batch_size, dtype=torch.long, device=dev),
                torch.zeros(cfg.batch_size, dtype=torch.long, device=dev), torch.zeros(shape, device=dev),
                torch.zeros(cfg.batch_size, encoder.config["max_words"], dtype=torch.long, device=dev))
        fn = functools.partial(_mini_step, unet, encoder, opt, params, scheduler, sched, cfg, source)
        phases[low] = (shape, graph_step(fn, *like, enabled=cuda_graph))
    unet.train()
    encoder.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    if stop_at is not None:
        end = min(end, stop_at)
    bar = tqdm(range(step, end), desc="mini", initial=step, total=cfg.steps, disable=not progress)
    for step_i in bar:
        # every draw from the one CPU generator, in a fixed order: the same run on any device
        idx = torch.randint(0, cfg.n_images, (cfg.batch_size,), generator=gen)
        prompts = draw_prompts(data.digits[idx], data.styles[idx], gen, cfg.p_uncond)
        shape, run_step = phases[step_i < cfg.low_res_steps]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(shape, generator=gen)
        for p in prompts:
            if p not in tokens:
                tokens[p] = encoder.token_ids([p])
        ids = torch.cat([tokens[p] for p in prompts])
        set_lrs(opt, lrs, [_lr(cfg, step_i)] * len(opt.param_groups))
        mse, vlb = run_step(idx.to(dev), t.to(dev), noise.to(dev), ids.to(dev))
        decay = min(cfg.ema_decay, (1 + step_i) / (10 + step_i))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        pending.append(torch.stack([mse, vlb]))                # a copy: the graph's outputs are overwritten
        step = step_i + 1
        if step % 50 == 0 and progress:
            _flush(pending, history)
            recent = history[-50:]
            bar.set_postfix(mse=f"{sum(h[0] for h in recent) / len(recent):.4f}",
                            vlb=f"{sum(h[1] for h in recent) / len(recent):.4f}")
        if step % cfg.save_every == 0 or step == end:
            _flush(pending, history)
            _check_finite(history, checked, ema, step, cfg, run.path)
            checked = len(history)
            run.save(dict(unet=unet.state_dict(), encoder=encoder.state_dict(), opt=portable_state(opt.state_dict())[0],
                          ema=ema, gen=gen.get_state(), step=step, history=history, config=dataclasses.asdict(cfg)))
    _flush(pending, history)
    summary = dict(step=step, seconds=time.time() - started,
                   mse_last_200=sum(h[0] for h in history[-200:]) / max(1, len(history[-200:])),
                   vlb_last_200=sum(h[1] for h in history[-200:]) / max(1, len(history[-200:])),
                   run_dir=str(run.dir))
    if step < cfg.steps:
        return summary
    # the last checkpoint's EMA weights, as an IF-style diffusers folder plus the prompt encoder
    summary["out"] = str(export_run(cfg, run.dir, out, overwrite_shipped=overwrite_shipped))
    return summary


def _check_finite(history: list, start: int, ema: list[torch.Tensor], step: int, cfg: MiniConfig,
                  state_path: Path) -> None:
    """Before a checkpoint: the losses logged since ``history[start]`` and the EMA weights must be
    finite, or the run stops here (a RuntimeError) and the last checkpoint stays as it was. Once per
    checkpoint, never in the step."""
    bad = next((start + i for i, row in enumerate(history[start:]) if not all(map(math.isfinite, row))), None)
    if bad is None and bool(torch.stack([e.isfinite().all() for e in ema]).all()):
        return
    where = (f"the loss is not finite from step {bad + 1} on (mse {history[bad][0]}, vlb {history[bad][1]})"
             if bad is not None else "the EMA weights are not finite")
    kept = (f"the last checkpoint, {state_path}, is kept as it was" if state_path.is_file()
            else "no checkpoint was written")
    raise RuntimeError(f"mini training diverged: {where}; stopped at step {step} without writing a checkpoint "
                       f"({kept}). The same settings would diverge again: lower lr (now {cfg.lr}) or change the "
                       "other settings, which starts a new run")


#: The files of a model folder that ``export`` writes (paths relative to it): a folder that holds these
#: and nothing else is an earlier export, which an export may replace.
EXPORT_FILES = ("model_index.json", "training.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "scheduler/scheduler_config.json", "prompt_encoder/config.json", "prompt_encoder/model.safetensors",
                "checksums.json")
_EXPORT_DIRS = ("unet", "scheduler", "prompt_encoder")
#: the exporter's own temporary folders beside ``out``: ``.<out name>.mini-export-<pid>`` (the new model)
#: and ``...-<pid>.old`` (the export it replaces, for the moment of the swap)
_WORK_NAME = re.compile(r"\.(?P<name>.+)\.mini-export-(?P<pid>[0-9]+)(\.old)?")


def weights_sha256(folder: str | Path | None = None) -> str:
    """One hash of a mini model's weights (default: the shipped model): the sha256 of its weight files'
    own sha256s, in path order, computed from the files.  The results page carries it, so a page that
    belongs to another model is told apart (``tests/test_evaluate.py``)."""
    from diffnb.core.runs import file_sha256

    folder = Path(folder) if folder is not None else shipped_model_dir()
    weights = sorted(folder.rglob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no weight files (*.safetensors) in {folder}; {_damaged_model_fix(folder)}")
    h = hashlib.sha256()
    for path in weights:
        h.update(f"{path.relative_to(folder).as_posix()} {file_sha256(path)}\n".encode())
    return h.hexdigest()


def shipped_model_dir() -> Path:
    """The shipped mini model, ``data/models/mini-if``: written only with ``overwrite_shipped=True``."""
    return data_dir() / "models" / "mini-if"


def _files(folder: Path) -> list[str]:
    """Every entry under ``folder``, as paths relative to it (folders end in ``/``; links are listed, not followed)."""
    found = []
    for root, dirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [(rel / d).as_posix() + "/" for d in dirs] + [(rel / n).as_posix() for n in names]
    return sorted(found)


def _foreign(folder: Path) -> list[str]:
    """What in ``folder`` an export did not write (its own files, and their folders, are not listed)."""
    own = set(EXPORT_FILES) | {d + "/" for d in _EXPORT_DIRS}
    return [f for f in _files(folder) if f not in own or (folder / f.rstrip("/")).is_symlink()]


def export_target(out: str | Path | None, overwrite_shipped: bool = False, default: str | Path | None = None) -> Path:
    """The folder an export may write, checked before any work is done.

    ``out`` must be a new folder, an empty one or an earlier export (``EXPORT_FILES`` and nothing
    else); any other folder, or a file, raises ``FileExistsError``. The shipped model
    (``shipped_model_dir``) is written only with ``overwrite_shipped=True``, which needs ``out`` unset
    (or that folder). ``out=None``: ``default`` (or ``build/mini/model``)."""
    if not isinstance(overwrite_shipped, bool):
        raise TypeError(f"overwrite_shipped must be True or False, got {overwrite_shipped!r}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or Path) or None, got {type(out).__name__}")
    shipped = shipped_model_dir()
    if overwrite_shipped:
        if out is not None and not _same_path(Path(out), shipped):
            raise ValueError(f"overwrite_shipped=True writes the shipped model {shipped}, but out={str(out)!r} "
                             "was given too; pass one of them")
        out = shipped
    elif out is None:
        out = Path(default) if default is not None else build_dir() / "mini" / "model"
    out = Path(out)
    if not overwrite_shipped and _same_path(out, shipped):
        raise ValueError(f"out={str(out)!r} is the shipped model; it is replaced only when asked by name: pass "
                         "overwrite_shipped=True (--overwrite-shipped on the command line) and no out, or "
                         "choose another out")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise FileExistsError(f"out={str(out)!r} exists and is not a folder; choose a new folder for the model")
        foreign = _foreign(out)
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise FileExistsError(
                f"out={str(out)!r} holds files that are not a mini export ({', '.join(foreign[:5])}{more}); the "
                "exporter writes only into a new or empty folder or over an earlier export (model_index.json, "
                "unet/, scheduler/, prompt_encoder/, training.json and nothing else), and deletes nothing else. "
                "Choose another out (--out), or move those files away")
        if _files(out) and not (out / "model_index.json").is_file():
            raise FileExistsError(f"out={str(out)!r} holds part of a mini export without its model_index.json "
                                  f"({', '.join(_files(out))}): an export that did not finish? Delete it, or choose "
                                  "another out")
    return out


def _remove_export(folder: Path) -> bool:
    """Delete an export's own files (``EXPORT_FILES``) in ``folder``, then the folders they leave empty.
    Anything else stays, and with it the folder. Returns whether ``folder`` is gone."""
    for rel in EXPORT_FILES:
        path = folder / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
    for sub in (*_EXPORT_DIRS, "."):
        try:
            (folder / sub).rmdir()
        except OSError:          # missing, or it holds something the export did not write
            pass
    return not folder.exists()


def _clean_stale(out: Path) -> None:
    """Remove the work folders that exports of ``out`` left when they were killed (their process is gone)."""
    if not out.parent.is_dir():
        return
    for work in out.parent.iterdir():
        m = _WORK_NAME.fullmatch(work.name)
        if m and m["name"] == out.name and work.is_dir() and not work.is_symlink() and not pid_alive(int(m["pid"]), own=False):
            if not _remove_export(work):
                warnings.warn(f"{work}, left by an export that was stopped, holds files an export does not write; "
                              "it is left as it is", RuntimeWarning, stacklevel=3)


def export(unet, encoder: PromptEncoder, out: str | Path | None, cfg: MiniConfig, history,
           overwrite_shipped: bool = False) -> Path:
    """Write the model folder: model_index.json, unet/, scheduler/, prompt_encoder/, training.json and
    checksums.json (the sha256 of each, verified by ``load_stage1`` and ``load_mini_prompts``).

    ``out`` (``export_target``): a new folder, an empty one, or an earlier export, which is replaced
    atomically (the new model is written beside it in ``.<name>.mini-export-<pid>``, swapped in, and
    then the old export's own files are deleted). Nothing the exporter did not write is ever deleted;
    any other folder is refused. ``out=None``: ``build/mini/<cfg key>/model``, or the shipped
    ``data/models/mini-if`` with ``overwrite_shipped=True`` (the only way to write it)."""
    from diffusers import DDPMScheduler, IFPipeline
    from diffnb.a.models import IF_SCHEDULER_CONFIG

    out = export_target(out, overwrite_shipped, default=build_dir() / "mini" / cfg.key() / "model")
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tmp = out.with_name(f".{out.name}.mini-export-{os.getpid()}")
    tmp.mkdir()                    # ours alone: a leftover of this process went in _clean_stale
    try:
        pipe = IFPipeline(tokenizer=None, text_encoder=None, unet=unet.eval(),
                          scheduler=DDPMScheduler(**IF_SCHEDULER_CONFIG), safety_checker=None,
                          feature_extractor=None, watermarker=None, requires_safety_checker=False)
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        encoder.eval().save(tmp / "prompt_encoder")
        curve = [sum(h[0] for h in history[i:i + 100]) / len(history[i:i + 100]) for i in range(0, len(history), 100)]
        info = dict(config=cfg.record(), steps_trained=len(history), mse_per_100_steps=curve)
        if cfg.init_from:                                   # the run it started from, as that run recorded itself
            key, _, step = cfg.init_from.partition("@")
            info["started_from"] = json.loads((snapshot_dir(key, int(step)) / "training.json").read_text())
        (tmp / "training.json").write_text(json.dumps(info, indent=1))
        record_folder(tmp)                          # checksums.json: every file's sha256, checked when loaded
        unknown = _foreign(tmp)
        if unknown:                 # a diffusers that writes more: the next export could not recognise this one
            raise RuntimeError(f"the export wrote files that diffnb.mini.model.EXPORT_FILES does not list: {unknown}; "
                               "add them there")
        export_target(out, overwrite_shipped)        # still new, empty or an export (it may have changed)
        if not out.exists():
            tmp.replace(out)
        elif not _files(out):                        # an empty folder: fill it, model_index.json last
            for entry in sorted(tmp.iterdir(), key=lambda e: e.name == "model_index.json"):
                entry.replace(out / entry.name)
            tmp.rmdir()
        else:                                        # an earlier export: swap, then delete its own files
            old = tmp.with_name(tmp.name + ".old")
            out.replace(old)
            try:
                tmp.replace(out)
            except BaseException:
                old.replace(out)                     # put the earlier export back
                raise
            if not _remove_export(old):
                warnings.warn(f"the replaced export, now {old}, holds files an export does not write; it is left "
                              "as it is", RuntimeWarning, stacklevel=2)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)                       # our own folder of this call, never anything else
    return out


def ema_models(cfg: MiniConfig, run_dir: str | Path | None = None):
    """The EMA weights at a run's last checkpoint: ``(unet, encoder, state)``."""
    run_dir = Path(run_dir) if run_dir is not None else build_dir() / "mini" / cfg.key()
    path = run_dir / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"run {cfg.key()} has no checkpoint in {run_dir}; train it first "
                                "(`python -m diffnb.mini.model train` for the shipped recipe)")
    state = Run(run_dir, f"delete the run folder {run_dir} and train the run again", lock=False).load(
        _STATE_KEYS)
    unet, encoder = new_models(cfg.seed, cfg.pooled_text)
    with torch.no_grad():
        for p, e in zip(list(unet.parameters()) + list(encoder.parameters()), state["ema"]):
            p.copy_(e)
    return unet.eval(), encoder.eval(), state


def export_run(cfg: MiniConfig, run_dir: str | Path | None = None, out: str | Path | None = None,
               overwrite_shipped: bool = False) -> Path:
    """Export the EMA model of a run at its last checkpoint (finished or not) to ``out`` (``export``'s
    rules; default: the run folder's ``model/``, or the shipped model with ``overwrite_shipped=True``)."""
    run_dir = Path(run_dir) if run_dir is not None else build_dir() / "mini" / cfg.key()
    out = export_target(out, overwrite_shipped, default=run_dir / "model")      # before the weights are read
    unet, encoder, state = ema_models(cfg, run_dir)
    return export(unet, encoder, out, cfg, state["history"], overwrite_shipped=overwrite_shipped)


#: The shipped model's recipe: batch 64, Adam at 2e-3 (cosine over 6000 steps), min-SNR-5 weights, and
#: the first 3500 steps on the world at 16x16 (``low_res``), the last 2500 at 32x32.  Its timings and
#: judge readings, and the recipes it replaced, are in ``benchmarks/mini_recipes.py``.
RECIPE = MiniConfig(steps=6000, batch_size=64, lr=2e-3, warmup=100, snr_gamma=5.0, low_res_steps=3500)


_TRUE, _FALSE = ("1", "true", "yes", "y", "on"), ("0", "false", "no", "n", "off")


def _setting_argument(name: str):
    """argparse ``type`` of ``--<name>``: the text read as the field's type and checked by ``check_setting``."""
    kind = CONFIG_RULES[name][0]

    def read(text: str):
        value = text
        try:
            if kind is bool:
                if text.lower() not in _TRUE + _FALSE:
                    raise ValueError(f"{name} must be yes or no (also true/false, 1/0, on/off), got {text!r}")
                value = text.lower() in _TRUE
            elif kind is int:
                value = int(text) if re.fullmatch(r"[+-]?[0-9]+", text.strip()) else text
            elif kind is float:
                try:
                    value = float(text)
                except ValueError:
                    pass
            return check_setting(name, value)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    read.__name__ = name
    return read


def main(argv: list[str] | None = None) -> int:
    from diffnb.mini.judge import device_argument

    parser = argparse.ArgumentParser(prog="python -m diffnb.mini.model", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (or resume) the mini model and export it: the shipped recipe, or one "
                        "run with the settings given")
    for f in dataclasses.fields(MiniConfig):
        kind, _, expect, _ = CONFIG_RULES[f.name]
        tr.add_argument(f"--{f.name.replace('_', '-')}", type=_setting_argument(f.name), default=None,
                        metavar="YES/NO" if kind is bool else None,
                        help="yes or no (also true/false, 1/0)" if kind is bool else expect.replace("%", "%%"))
    tr.add_argument("--out", type=Path, default=None,
                    help="the model folder: new, empty or an earlier export (default build/mini/<run key>/model)")
    tr.add_argument("--overwrite-shipped", action="store_true",
                    help=f"replace the shipped model ({shipped_model_dir()}) with this run's export")
    tr.add_argument("--device", default="auto", type=device_argument,
                    help="auto (default: a GPU if there is one), cpu or cuda; the random draws are the same on any device")
    args = parser.parse_args(argv)
    if args.command == "train":
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(MiniConfig) if getattr(args, f.name) is not None}
        try:
            cfg = MiniConfig(**given) if given else RECIPE
            if args.overwrite_shipped and args.out is not None:
                raise ValueError(f"--overwrite-shipped writes {shipped_model_dir()}; leave out --out {args.out}, "
                                 "or drop --overwrite-shipped")
            out = export_target(args.out, args.overwrite_shipped, default=build_dir() / "mini" / cfg.key() / "model")
        except (TypeError, ValueError, FileExistsError) as err:
            tr.error(str(err))
        print(f"the model will be exported to {out}" + ("" if args.overwrite_shipped or args.out else
              f" (the shipped {shipped_model_dir()} stays as it is; --overwrite-shipped replaces it)"), flush=True)
        summary = train_mini(cfg, out=out, device=args.device, overwrite_shipped=args.overwrite_shipped)
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
