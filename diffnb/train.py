"""One training loop for the five Part B trainings; they differ only in objective and config.

  * The dataset lives as ONE tensor on the training device; each epoch draws a permutation
    there and batches are index slices of it (no DataLoader, no per-batch transfer).
  * Noise, t and the class-dropout mask are drawn on the device from one ``torch.Generator``
    seeded by ``config.seed``; its state is checkpointed, so a resumed run draws exactly the
    numbers an uninterrupted run would.
  * After every epoch the loop writes ``epoch_NNN.safetensors`` (model weights) and
    ``state.pt`` (optimizer, scheduler, generator, loss history), each atomically (temporary
    file, then ``os.replace``).  Calling ``train`` again with the same config resumes after the
    last finished epoch; a finished run is loaded, not recomputed.
  * Runs live in ``build/runs/<name>-<hash of the config>``, so a changed setting starts a new
    run instead of resuming an incompatible one.
  * On a CUDA GPU the optimisation step (loss, backward, Adam) is recorded once as a CUDA graph
    and replayed: these UNets are small, so launching their hundreds of kernels one by one from
    Python, not the GPU's arithmetic, is what bounds an eager step.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from . import flow
from .cudagraph import CudaGraphStep, make_capturable, portable_state, set_lrs
from .devices import get_device
from .paths import build_dir
from .progress import progress as tqdm
from .unet import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet

MODELS = {"unconditional": UnconditionalUNet, "time": TimeConditionalUNet, "class": ClassConditionalUNet}


def _loss_denoise(model, x, y, g, cfg):
    return flow.denoiser_loss(model, x, cfg.sigma, g)


def _loss_pure_noise(model, x, y, g, cfg):
    return flow.pure_noise_loss(model, x, g)


def _loss_time_fm(model, x, y, g, cfg):
    return flow.time_fm_forward(model, x, g)


def _loss_class_fm(model, x, y, g, cfg):
    return flow.class_fm_forward(model, x, y, cfg.p_uncond, g)


# objective -> (loss, model kind it needs)
OBJECTIVES: dict[str, tuple[Callable, str]] = {
    "denoise": (_loss_denoise, "unconditional"),
    "pure_noise": (_loss_pure_noise, "unconditional"),
    "time_fm": (_loss_time_fm, "time"),
    "class_fm": (_loss_class_fm, "class"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and so its checkpoint folder)."""

    name: str
    objective: str                 # one of OBJECTIVES
    num_hiddens: int = 64          # D
    batch_size: int = 64
    lr: float = 1e-2
    epochs: int = 10
    lr_decay: bool = True          # ExponentialLR with gamma = 0.1 ** (1 / epochs)
    sigma: float = 0.5             # noise level of the "denoise" objective
    p_uncond: float = 0.1          # class dropout of the "class_fm" objective
    seed: int = 0
    data: str = "synthetic"        # "mnist" or "synthetic"
    train_limit: int | None = None # use the first N training images (None: all)
    notebook: str = field(default="", compare=False)  # the notebook that trains it (for messages)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {sorted(OBJECTIVES)}")
        for name in ("num_hiddens", "batch_size", "epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.data not in ("mnist", "synthetic"):
            raise ValueError(f"data must be 'mnist' or 'synthetic' here, got {self.data!r}")
        if self.train_limit is not None and self.train_limit < self.batch_size:
            raise ValueError(f"train_limit={self.train_limit} is smaller than one batch "
                             f"({self.batch_size}); raise it or lower batch_size")

    @property
    def model_kind(self) -> str:
        return OBJECTIVES[self.objective][1]

    def key(self) -> str:
        """Short hash of the settings that change the result (not the notebook name)."""
        d = dataclasses.asdict(self)
        d.pop("notebook")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_model(config: TrainConfig, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The UNet the objective needs, initialised from ``config.seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        cls = MODELS[config.model_kind]
        if cls is UnconditionalUNet:
            return cls(in_channels, config.num_hiddens)
        return cls(in_channels, num_classes, config.num_hiddens)


def default_run_dir(config: TrainConfig) -> Path:
    return build_dir() / "runs" / f"{config.name}-{config.key()}"


@dataclass
class TrainResult:
    model: nn.Module
    config: TrainConfig
    run_dir: Path
    losses: list[float]            # one per optimisation step
    epoch_ends: list[int]          # step count at the end of each epoch
    trained_epochs: list[int]      # epochs computed in this call (empty if all were loaded)
    seconds: float                 # training time of the computed epochs, this call

    def checkpoint(self, epoch: int) -> Path:
        return self.run_dir / f"epoch_{epoch:03d}.safetensors"

    def load_epoch(self, epoch: int, device="cpu") -> nn.Module:
        return load_model(self.config, epoch, device=device, run_dir=self.run_dir)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_epoch(run_dir: Path, epoch: int, model: nn.Module, state: dict) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # weights first, then the state that points at them: a crash in between only redoes an epoch
    _atomic_write(run_dir / f"epoch_{epoch:03d}.safetensors",
                  lambda p: save_file(weights, p, metadata={"epoch": str(epoch)}))
    _atomic_write(run_dir / "state.pt", lambda p: torch.save(state, p))


def _load_state(run_dir: Path) -> dict | None:
    path = run_dir / "state.pt"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def train(config: TrainConfig, images: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
          device="auto", run_dir: str | Path | None = None, progress: bool = True,
          stop_after_epoch: int | None = None, accelerator=None, cuda_graph: bool | None = None) -> TrainResult:
    """Train (or resume, or load) the run described by ``config``.

    images: (N, C, H, W) float in [0, 1] and labels: (N,) int; if omitted they are loaded from
    ``config.data`` (first ``config.train_limit`` training images).
    stop_after_epoch: stop early after that epoch, as an interruption would (for tests).
    accelerator: an ``accelerate.Accelerator``; each process then takes its share of every
    batch and only the main process writes checkpoints.
    cuda_graph: replay each step as a CUDA graph (default: on CUDA without an accelerator).  The
    draws are the same kind on every device; bitwise repeatable runs are a CPU property.
    """
    device = accelerator.device if accelerator is not None else get_device(device)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda" and accelerator is None
    elif cuda_graph and (device.type != "cuda" or accelerator is not None):
        raise ValueError(f"cuda_graph=True needs a CUDA device and no accelerator (device {device}, "
                         f"accelerator {'given' if accelerator is not None else 'none'}); "
                         "leave cuda_graph=None to choose automatically")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(run_dir)
    if state is not None and state["config"] != _comparable(config):
        raise RuntimeError(f"{run_dir} holds a run with other settings ({state['config']}); "
                           "delete that folder or pass another run_dir")
    done = 0 if state is None else int(state["epoch"])
    losses: list[float] = [] if state is None else list(state["losses"])
    epoch_ends: list[int] = [] if state is None else list(state["epoch_ends"])

    model = build_model(config).to(device)
    if done >= config.epochs:                      # finished earlier: load, nothing to compute
        model.load_state_dict(load_file(str(run_dir / f"epoch_{done:03d}.safetensors"), device=str(device)))
        model.eval()
        return TrainResult(model, config, run_dir, losses, epoch_ends, [], 0.0)

    if images is None:
        from .data import load_digits
        data = load_digits(config.data, train=True, limit=config.train_limit, device=device)
        images, labels = data.images, data.labels
    images = images.to(device)
    labels = labels.to(device) if labels is not None else torch.zeros(len(images), dtype=torch.long, device=device)
    n = images.shape[0]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} training images")
    if n and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(f"training labels must be digits 0-9, got values from {int(labels.min())} to {int(labels.max())}")
    if n < config.batch_size:
        raise ValueError(f"{n} training images is less than one batch of {config.batch_size}")
    steps_per_epoch = n // config.batch_size     # drop the last partial batch (BatchNorm needs > 1)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.1 ** (1.0 / config.epochs))
                 if config.lr_decay else None)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    if state is not None:                          # resume where the last finished epoch left off
        model.load_state_dict(load_file(str(run_dir / f"epoch_{done:03d}.safetensors"), device=str(device)))
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])

    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        rank, world = accelerator.process_index, accelerator.num_processes
        is_main = accelerator.is_main_process
    else:
        rank, world, is_main = 0, 1, True

    loss_fn = OBJECTIVES[config.objective][0]

    def one_step(idx):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, images[idx], labels[idx], gen, config)
        if accelerator is not None:
            accelerator.backward(loss)
        else:
            loss.backward()
        optimizer.step()
        return loss.detach()

    run_step, lrs = one_step, None
    if cuda_graph:
        lrs = make_capturable(optimizer, device)
        run_step = CudaGraphStep(one_step, torch.zeros(config.batch_size, dtype=torch.long, device=device),
                                 generator=gen)
    last = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
    bar = tqdm(total=(last - done) * steps_per_epoch, desc=config.name, disable=not (progress and is_main),
               unit="batch", leave=True)
    trained, t0 = [], time.perf_counter()
    model.train()
    for epoch in range(done + 1, last + 1):
        perm = torch.randperm(n, generator=gen, device=device)
        epoch_losses = torch.empty(steps_per_epoch, device=device)   # kept on device: no sync per step
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size][rank::world]
            loss = run_step(idx)
            epoch_losses[step] = loss
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        if scheduler is not None:
            scheduler.step()
            if lrs is not None:
                set_lrs(optimizer, lrs)              # the new rate into the tensor the graph reads
        losses.extend(epoch_losses.cpu().tolist())
        epoch_ends.append(len(losses))
        trained.append(epoch)
        if is_main:
            raw = accelerator.unwrap_model(model) if accelerator is not None else model
            opt_state, sched_state = portable_state(optimizer.state_dict(),
                                               scheduler.state_dict() if scheduler is not None else None)
            _save_epoch(run_dir, epoch, raw, {
                "epoch": epoch, "config": _comparable(config), "losses": losses, "epoch_ends": epoch_ends,
                "optimizer": opt_state,
                "scheduler": sched_state,
                "generator": gen.get_state(),
            })
    bar.close()
    seconds = time.perf_counter() - t0
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    model.eval()
    return TrainResult(model, config, run_dir, losses, epoch_ends, trained, seconds)


def _comparable(config: TrainConfig) -> dict:
    d = config.to_dict()
    d.pop("notebook")
    return d


def load_model(config: TrainConfig, epoch: int | None = None, device="cpu",
               run_dir: str | Path | None = None) -> nn.Module:
    """The model of ``config`` after ``epoch`` (default: the last), in eval mode.

    A missing checkpoint is a ``FileNotFoundError`` that names the notebook to run first.
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    epoch = config.epochs if epoch is None else epoch
    if not 1 <= epoch <= config.epochs:
        raise ValueError(f"epoch must lie in 1..{config.epochs} for run {config.name!r}, got {epoch}")
    path = run_dir / f"epoch_{epoch:03d}.safetensors"
    if not path.exists():
        where = f"run notebooks/{config.notebook} first" if config.notebook else "train it first"
        raise FileNotFoundError(
            f"no checkpoint for {config.name!r} after epoch {epoch} (looked for {path}); {where}, "
            "with the same profile and overrides as this notebook")
    device = get_device(device)
    model = build_model(config).to(device)
    model.load_state_dict(load_file(str(path), device=str(device)))
    return model.eval()


def load_history(config: TrainConfig, run_dir: str | Path | None = None) -> tuple[list[float], list[int]]:
    """Loss per step and epoch boundaries of a run, from its last checkpoint."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    state = _load_state(run_dir)
    if state is None:
        where = f"run notebooks/{config.notebook} first" if config.notebook else "train it first"
        raise FileNotFoundError(f"no training state for {config.name!r} in {run_dir}; {where}")
    return list(state["losses"]), list(state["epoch_ends"])
