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
name the digit, the style, both or neither in one of the world's phrasings (``diffnb.world``).

Command line::

    python -m diffnb.mini train            # reproduce data/models/mini-if (RECIPE)
    python -m diffnb.mini train --steps 200 --batch-size 64 --out /tmp/mini   # one run with other settings

The recipe (``RECIPE``) is 6,000 steps at batch 64, the first 3,500 of them on the world's images at
half size (16x16, ``low_res``): the UNet is convolutional, so the same weights learn the digits'
shapes there at a third of the cost of a full-size step, and the last 2,500 steps at 32x32 learn the
detail. On 2 CPU cores that is under an hour (measured: 57 min 50 s for ``python -m diffnb.mini train``,
uninterrupted, the world's rendering included; its weights equal the shipped ones bit for bit).
The same random draws are taken on any device.

The run's checkpoint (``build/mini/<config hash>/state.pt``) is written atomically every few hundred
steps and read back with ``weights_only=True``; an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn

from diffnb import world
from diffnb.cudagraph import CudaGraphStep, make_capturable, portable_state, set_lrs
from diffnb.paths import build_dir, data_dir
from diffnb.train import _atomic_write

MAX_WORDS = 16
EMBED_DIM = 64

#: The UNet: IF's block types (ResNet levels with scale-shift time conditioning, a SimpleCrossAttn
#: level and mid block that attend to the projected text), at 32x32 and small widths so that a
#: 33-step CFG sample of 5 images takes a couple of seconds on 2 CPU cores.
MINI_UNET_CONFIG = dict(
    sample_size=world.SIZE,
    in_channels=3,
    out_channels=6,                                       # noise (3) + learned-range variance (3)
    layers_per_block=1,
    block_out_channels=(24, 48, 96),
    down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=32,
    encoder_hid_dim=EMBED_DIM,                            # the prompt encoder's width (IF: T5's 4096)
    encoder_hid_dim_type="text_proj",
    addition_embed_type=None,
    class_embed_type=None,
    cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift",
    act_fn="gelu",
    norm_num_groups=8,
    flip_sin_to_cos=True,
    freq_shift=0,
    upcast_attention=False,
    use_linear_projection=False,
)


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
        from safetensors.torch import load_file
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no prompt encoder in {folder} (config.json missing); "
                                    "retrain the mini model with `python -m diffnb.mini train`")
        enc = cls(**json.loads((folder / "config.json").read_text()))
        enc.load_state_dict(load_file(str(folder / "model.safetensors")))
        return enc.eval()


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
    return MiniPrompts(PromptEncoder.load(folder / "prompt_encoder"), source=str(folder))


# --------------------------------------------------------------------------- the hybrid loss

def _schedule(scheduler, device) -> dict[str, torch.Tensor]:
    """Per-timestep tensors of the (unstrided) schedule that the loss needs."""
    abar = scheduler.alphas_cumprod.to(device=device, dtype=torch.float64)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1 - abar / abar_prev
    post_var = beta * (1 - abar_prev) / (1 - abar)
    post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))     # clipped at t = 0 (improved DDPM)
    out = dict(abar=abar, log_beta=torch.log(beta), post_log_var=post_log_var,
               coef_x0=beta * abar_prev.sqrt() / (1 - abar), coef_xt=(1 - abar_prev) * (1 - beta).sqrt() / (1 - abar))
    return {k: v.float() for k, v in out.items()}


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

    The defaults are the first shipped model's recipe (``GPU_RECIPE``, stopped at ``GPU_RECIPE_STOP``); the
    model shipped now is ``RECIPE``."""
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
        if not (isinstance(self.snr_gamma, (int, float)) and self.snr_gamma >= 0):
            raise ValueError(f"snr_gamma must be a number >= 0 (0 turns the min-SNR weights off; 5 is the "
                             f"paper's choice), got {self.snr_gamma!r}")
        if not (isinstance(self.low_res_steps, int) and 0 <= self.low_res_steps <= self.steps):
            raise ValueError(f"low_res_steps must be an int from 0 (off) to steps ({self.steps}), "
                             f"got {self.low_res_steps!r}")
        if self.init_from:
            key, _, step = self.init_from.partition("@")
            if not (len(key) == 10 and step.isdigit()):
                raise ValueError(f"init_from must be '<run key>@<step>' (e.g. '{'0' * 10}@3000'), got {self.init_from!r}")


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
    from safetensors.torch import load_file
    key, _, step = cfg.init_from.partition("@")
    folder = snapshot_dir(key, int(step))
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"this run starts from run {key}'s EMA weights at step {step}, expected in {folder}; "
                                f"make them with diffnb.mini.snapshot(<that run's MiniConfig>, {step}) "
                                "(`python -m diffnb.mini train` does it for the shipped recipe)")
    unet.load_state_dict(load_file(str(weights)))
    encoder.load_state_dict(load_file(str(folder / "prompt_encoder" / "model.safetensors")))


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
               device: str | torch.device = "cpu", cuda_graph: bool | None = None) -> dict:
    """Train (or resume) the mini model and export it to ``out`` (default ``data/models/mini-if``).

    ``device``: where the UNet trains (``"cpu"``, ``"cuda"``, ``"auto"``). Every random draw (images,
    prompts, t, noise) comes from one CPU generator, so a run takes the same draws on any device
    and a run started on one device resumes on another.  ``cuda_graph``: on CUDA (the default there)
    the step (forward, hybrid loss, backward, clipping, Adam) is recorded as a CUDA graph, one per
    image size, and replayed, with the step's draws copied into static tensors (``diffnb.cudagraph``).

    ``stop_after``: stop after that many more steps, ``stop_at``: at that step, without exporting (the
    first GPU recipe stopped at ``GPU_RECIPE_STOP`` and exported with ``export_run``). Returns a summary
    dict with the final losses and the seconds spent in this call.
    """
    from diffusers import DDPMScheduler
    from diffnb.models import IF_SCHEDULER_CONFIG
    from diffnb.devices import get_device
    from diffnb.progress import progress as tqdm

    dev = get_device(device)
    if cuda_graph is None:
        cuda_graph = dev.type == "cuda"
    elif cuda_graph and dev.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {dev}; leave cuda_graph=None to choose "
                         "automatically")
    if not isinstance(cfg, MiniConfig):
        raise TypeError(f"cfg must be a MiniConfig, got {type(cfg).__name__}")
    if cfg.steps <= 0 or cfg.batch_size <= 0 or cfg.n_images < cfg.batch_size:
        raise ValueError(f"need steps > 0, batch_size > 0 and n_images >= batch_size, got {cfg}")
    run_dir = Path(run_dir) if run_dir is not None else build_dir() / "mini" / cfg.key()
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.pt"
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
    if state_path.is_file():
        state = torch.load(state_path, map_location=dev, weights_only=True)
        unet.load_state_dict(state["unet"])
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["opt"])
        for e, saved in zip(ema, state["ema"]):
            e.copy_(saved)
        gen.set_state(state["gen"].cpu())
        step, history = int(state["step"]), list(state["history"])
        if progress:
            print(f"resuming {run_dir} at step {step}", flush=True)

    pending: list[torch.Tensor] = []           # (mse, vlb) per step, still on the device

    def flush():
        if pending:
            history.extend(tuple(row) for row in torch.stack(pending).tolist())
            pending.clear()

    def save():
        flush()
        opt_state, _ = portable_state(opt.state_dict())
        state = dict(unet=unet.state_dict(), encoder=encoder.state_dict(), opt=opt_state,
                     ema=ema, gen=gen.get_state(), step=step, history=history, config=dataclasses.asdict(cfg))
        _atomic_write(state_path, lambda p: torch.save(state, p))

    def make_step(source: torch.Tensor):
        def one_step(idx, t, noise, ids):
            x0 = source[idx]
            x_t = scheduler.add_noise(x0, noise, t)
            emb = encoder(ids)
            pred = unet(x_t, t, encoder_hidden_states=emb).sample
            loss, mse, vlb = hybrid_loss(pred, x0, x_t, t, noise, sched, cfg.snr_gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return mse, vlb
        return one_step

    token_cache = functools.lru_cache(maxsize=None)(lambda p: encoder.token_ids([p]))   # the world has few prompts
    lrs = make_capturable(opt, dev) if cuda_graph else None
    # per phase (True: the half-size first phase, if the run has one): the noise shape and the step
    phases = {}
    for low in ([True, False] if cfg.low_res_steps else [False]):
        source = low_res(images) if low else images
        shape = (cfg.batch_size, *source.shape[1:])
        run = make_step(source)
        if cuda_graph:
            run = CudaGraphStep(run, torch.zeros(cfg.batch_size, dtype=torch.long, device=dev),
                                torch.zeros(cfg.batch_size, dtype=torch.long, device=dev),
                                torch.zeros(shape, device=dev),
                                torch.zeros(cfg.batch_size, encoder.config["max_words"], dtype=torch.long, device=dev))
        phases[low] = (shape, run)
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
        ids = torch.cat([token_cache(p) for p in prompts])
        lr = _lr(cfg, step_i)
        if lrs is not None:
            set_lrs(opt, lrs, [lr] * len(lrs))
        else:
            for group in opt.param_groups:
                group["lr"] = lr
        mse, vlb = run_step(idx.to(dev), t.to(dev), noise.to(dev), ids.to(dev))
        decay = min(cfg.ema_decay, (1 + step_i) / (10 + step_i))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        pending.append(torch.stack([mse, vlb]))                # a copy: the graph's outputs are overwritten
        step = step_i + 1
        if step % 50 == 0 and progress:
            flush()
            recent = history[-50:]
            bar.set_postfix(mse=f"{sum(h[0] for h in recent) / len(recent):.4f}",
                            vlb=f"{sum(h[1] for h in recent) / len(recent):.4f}")
        if step % cfg.save_every == 0 or step == end:
            save()
    flush()
    summary = dict(step=step, seconds=time.time() - started,
                   mse_last_200=sum(h[0] for h in history[-200:]) / max(1, len(history[-200:])),
                   vlb_last_200=sum(h[1] for h in history[-200:]) / max(1, len(history[-200:])),
                   run_dir=str(run_dir))
    if step < cfg.steps:
        return summary
    # the last checkpoint's EMA weights, as an IF-style diffusers folder plus the prompt encoder
    summary["out"] = str(export_run(cfg, run_dir, out))
    return summary


def export(unet, encoder: PromptEncoder, out: str | Path | None, cfg: MiniConfig, history) -> Path:
    """Write the model folder atomically: model_index.json, unet/, scheduler/, prompt_encoder/, training.json."""
    from diffusers import DDPMScheduler, IFPipeline
    from diffnb.models import IF_SCHEDULER_CONFIG

    out = Path(out) if out is not None else data_dir() / "models" / "mini-if"
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe = IFPipeline(tokenizer=None, text_encoder=None, unet=unet.eval(), scheduler=DDPMScheduler(**IF_SCHEDULER_CONFIG),
                      safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    encoder.eval().save(tmp / "prompt_encoder")
    curve = [sum(h[0] for h in history[i:i + 100]) / len(history[i:i + 100]) for i in range(0, len(history), 100)]
    info = dict(config=cfg.record(), steps_trained=len(history), mse_per_100_steps=curve)
    if cfg.init_from:                                   # the run it started from, as that run recorded itself
        key, _, step = cfg.init_from.partition("@")
        info["started_from"] = json.loads((snapshot_dir(key, int(step)) / "training.json").read_text())
    (tmp / "training.json").write_text(json.dumps(info, indent=1))
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.replace(old)
        tmp.replace(out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(out)
    return out


def ema_models(cfg: MiniConfig, run_dir: str | Path | None = None):
    """The EMA weights at a run's last checkpoint: ``(unet, encoder, state)``."""
    run_dir = Path(run_dir) if run_dir is not None else build_dir() / "mini" / cfg.key()
    path = run_dir / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"run {cfg.key()} has no checkpoint in {run_dir}; train it first "
                                "(`python -m diffnb.mini train` for the shipped recipe)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    unet, encoder = new_models(cfg.seed, cfg.pooled_text)
    with torch.no_grad():
        for p, e in zip(list(unet.parameters()) + list(encoder.parameters()), state["ema"]):
            p.copy_(e)
    return unet.eval(), encoder.eval(), state


def export_run(cfg: MiniConfig, run_dir: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Export the EMA model of a run at its last checkpoint (finished or not) to ``out``."""
    unet, encoder, state = ema_models(cfg, run_dir)
    return export(unet, encoder, out, cfg, state["history"])


#: The recipe of the first shipped model (an H200 run): batch 256, Adam at 2e-3 with a cosine schedule
#: set for 6000 steps, stopped at 3000. Judge (60 samples, CFG 7): 82% digit, 63% style; the same
#: schedule at lr 1e-3 reached 58%. On 2 CPU cores it takes 5 to 6 hours, and cut to an hour
#: (batch 64: 2500 steps at lr 1e-3, or 3000 at 2e-3 with min-SNR-5) it reaches 3% and 8%.
GPU_RECIPE = MiniConfig()
GPU_RECIPE_STOP = 3000

#: The shipped model's recipe, under an hour on 2 CPU cores: batch 64, Adam at 2e-3 (cosine over 6000
#: steps), min-SNR-5 weights, and the first 3500 steps on the world at 16x16 (``low_res``), where a
#: step costs a third as much and the digits' shapes are learned; the last 2500 at 32x32.
#: Measured on 2 CPU cores: ``python -m diffnb.mini train``, uninterrupted, 57 min 50 s with the world's
#: rendering, and its weights equal the shipped ones bit for bit (the shipped run was trained in slices
#: with judge breaks, 3641 s in all). Judge (60 samples, CFG 7, as ``benchmarks/mini_recipes.py``
#: reads them): after the half-size phase (step 3500) 97% of samples drawn at 16x16 (upsampled for the
#: judge) show the digit, 2% of those drawn at 32x32; then at 32x32 33%, 75%, 87%, 90%, 90% at steps
#: 4000, 4500, 5000, 5500, 6000, style 100% from step 4000 on.
RECIPE = MiniConfig(steps=6000, batch_size=64, lr=2e-3, warmup=100, snr_gamma=5.0, low_res_steps=3500)
RECIPE_STOP = RECIPE.steps


def train_recipe(out: str | Path | None = None, progress: bool = True, device: str | torch.device = "auto") -> dict:
    """Train (or resume) the shipped recipe and export it to ``out`` (default ``data/models/mini-if``)."""
    return train_mini(RECIPE, out=out, progress=progress, device=device)      # exports when it finishes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffnb.mini", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (or resume) the mini model and write it to data/models/mini-if: "
                        "the shipped recipe, or one run with the settings given")
    for f in dataclasses.fields(MiniConfig):
        kind = (lambda v: bool(int(v))) if f.type in (bool, "bool") else type(f.default)
        tr.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)
    tr.add_argument("--out", type=Path, default=None, help="model folder (default data/models/mini-if)")
    tr.add_argument("--device", default="auto", help="auto (default: a GPU if there is one), cpu or cuda; "
                    "the random draws are the same on any device")
    args = parser.parse_args(argv)
    if args.command == "train":
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(MiniConfig) if getattr(args, f.name) is not None}
        summary = (train_mini(MiniConfig(**given), out=args.out, device=args.device) if given
                   else train_recipe(out=args.out, device=args.device))
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
