"""One training loop for the five Part B trainings; they differ only in objective and config.

  * The dataset lives as ONE tensor on the training device; each epoch draws a permutation
    there and batches are index slices of it (no DataLoader, no per-batch transfer).
  * Noise, t and the class-dropout mask are drawn on the device from one ``torch.Generator``
    seeded by ``config.seed``; its state is checkpointed, so a resumed run draws exactly the
    numbers an uninterrupted run would.  With several processes (``accelerate launch``) that
    generator draws only the permutation; each process draws its noise from its own generator,
    seeded per epoch by ``rank_seed(seed, rank, epoch)``, and the epoch's losses are averaged over them.
  * After every epoch the loop writes ``epoch_NNN.safetensors`` (model weights) and
    ``state.pt`` (optimizer, scheduler, generator, loss history), each atomically (temporary
    file, then ``os.replace``).  Calling ``train`` again with the same config resumes after the
    last finished epoch; a finished run is loaded, not recomputed.
  * Runs live in ``build/runs/<name>-<hash of the config>``, so a changed setting starts a new
    run instead of resuming an incompatible one.
  * The ``quick`` flow-matching runs (minutes each on two CPU cores) also ship, trained by this loop
    with ``python -m diffnb.part_b ship``, in ``data/runs/<name>-<hash>`` (epochs 1, 5 and the last, and
    the loss history).  ``train`` loads that copy instead of training, unless ``retrain=True`` or
    this machine has a run of its own in ``build/runs``; ``load_model`` and ``load_history`` read
    from the same place (``run_dir_for``).
  * On a CUDA GPU the optimisation step (loss, backward, Adam) is recorded once as a CUDA graph
    and replayed: these UNets are small, so launching their hundreds of kernels one by one from
    Python, not the GPU's arithmetic, is what bounds an eager step.
  * Inputs are checked once, at the edge: ``TrainConfig`` checks every setting when it is made,
    ``train`` checks the images (float32, finite, in [0, 1]), the labels and ``run_dir`` before a
    folder is made or data is loaded, and the epoch's losses once per epoch (a non-finite loss stops
    the run before that epoch's checkpoint).  Nothing is checked inside a step.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors.torch import save_file

from diffnb.b import denoiser, flow
from diffnb.b.digits import SOURCES
from diffnb.core.checks import check_number
from diffnb.core.cudagraph import graph_step, make_capturable, portable_state, set_lrs
from diffnb.core.devices import get_device
from diffnb.core.paths import build_dir, check_folder, data_dir
from diffnb.core.runs import CheckpointError, Run, atomic_write, read_safetensors, verified
from diffnb.core.progress import progress as tqdm
from diffnb.b.unet import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet

MODELS = {"unconditional": UnconditionalUNet, "time": TimeConditionalUNet, "class": ClassConditionalUNet}


# the course's losses; their checks read no tensor values, so they run inside a CUDA graph too
def _loss_denoise(model, x, y, g, cfg):
    return denoiser.denoiser_loss(model, x, cfg.sigma, g)


def _loss_pure_noise(model, x, y, g, cfg):
    return denoiser.pure_noise_loss(model, x, g)


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
    data: str = "synthetic"        # one of diffnb.b.digits.SOURCES
    train_limit: int | None = None # use the first N training images (None: all)
    notebook: str = field(default="", compare=False)  # the notebook that trains it (for messages)

    def __post_init__(self):
        """Every setting checked here, once, with its name: a bad config fails where it is made."""
        for name in ("name", "notebook"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.name or any(ch in self.name for ch in "/\\\0") or self.name in (".", ".."):
            raise ValueError(f"name must be a non-empty run name usable in a folder name (no slashes), "
                             f"got {self.name!r}; e.g. name='class_fm'")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {sorted(OBJECTIVES)}")
        for name in ("num_hiddens", "batch_size", "epochs", "seed") + (("train_limit",) if self.train_limit is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                kind = "an int" if name == "seed" else "a positive integer"
                raise TypeError(f"{name} must be {kind}, got {v!r} ({type(v).__name__}); "
                                f"pass e.g. {name}={_EXAMPLES[name]}")
            if not isinstance(v, int):
                object.__setattr__(self, name, int(v))       # a NumPy integer: a plain int for the hash
            if name != "seed" and v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}; pass e.g. {name}={_EXAMPLES[name]}")
        for name, low, high, fix in (("lr", None, None, "pass a positive learning rate such as 1e-3"),
                                     ("sigma", 0.0, None, "pass a noise level such as 0.5"),
                                     ("p_uncond", 0.0, 1.0, "it is the probability of dropping the class, e.g. 0.1")):
            v = getattr(self, name)
            checked = check_number(name, v, low=low, high=high, fix=fix)
            if not isinstance(v, (int, float)):
                object.__setattr__(self, name, checked)     # a NumPy float: a plain float for the hash
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}; pass a learning rate such as 1e-3")
        if not isinstance(self.lr_decay, bool):
            raise TypeError(f"lr_decay must be True or False, got {self.lr_decay!r}")
        if self.data not in SOURCES:
            raise ValueError(f"data must be one of {', '.join(repr(s) for s in SOURCES)} here, got {self.data!r}")
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


_EXAMPLES = dict(num_hiddens=64, batch_size=64, epochs=10, seed=0, train_limit=2048)


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


def shipped_path(config: TrainConfig) -> Path:
    """Where the pack keeps its trained copy of ``config``'s run: ``data/runs/<name>-<key>``."""
    return data_dir() / "runs" / f"{config.name}-{config.key()}"


def shipped_run_dir(config: TrainConfig) -> Path | None:
    """The pack's trained copy of ``config``'s run (``shipped_path``, written by ``python -m diffnb.part_b
    ship``), or None when the pack ships none for these settings."""
    path = shipped_path(config)
    return path if (path / "state.pt").is_file() else None


def shipped_epochs(config: TrainConfig) -> list[int]:
    """The epochs whose weights a shipped copy keeps: 1, 5 and the last (what the sampling notebooks read)."""
    return sorted({1, 5, config.epochs} & set(range(1, config.epochs + 1)))


def write_copy(result: "TrainResult", folder: str | Path) -> Path:
    """A finished run as a read-only copy in ``folder`` (made here; it must not exist): the weights of
    ``shipped_epochs`` as the trainer wrote them (metadata and all) and a ``state.pt`` of the settings and
    loss history, no optimizer state (a copy is only read), each recorded in ``checksums.json``."""
    import shutil

    config, folder = result.config, Path(folder)
    if len(result.epoch_ends) != config.epochs:
        raise ValueError(f"{result.run_dir} has {len(result.epoch_ends)} of {config.epochs} epochs; finish "
                         "training it before copying it")
    folder.mkdir(parents=True)
    for epoch in shipped_epochs(config):
        src = verified(result.checkpoint(epoch))
        atomic_write(folder / src.name, lambda p, src=src: shutil.copyfile(src, p))
    state = {"epoch": config.epochs, "config": _comparable(config), "losses": list(result.losses),
             "epoch_ends": list(result.epoch_ends)}
    atomic_write(folder / "state.pt", lambda p: torch.save(state, p))
    return folder


def run_dir_for(config: TrainConfig) -> Path:
    """Where ``config``'s run is read from: ``build/runs/...`` once this machine has a run of its own
    there (finished or not), else the pack's shipped copy, else ``build/runs/...`` (to be trained)."""
    local = default_run_dir(config)
    if local.is_dir() and ((local / "state.pt").exists() or _epochs(local)):
        return local
    return shipped_run_dir(config) or local


@dataclass
class TrainResult:
    model: nn.Module
    config: TrainConfig
    run_dir: Path
    losses: list[float]            # one per optimisation step
    epoch_ends: list[int]          # step count at the end of each epoch
    trained_epochs: list[int]      # epochs computed in this call (empty if all were loaded)
    seconds: float                 # training time of the computed epochs, this call
    shipped: bool = False          # loaded from the pack's trained copy in data/runs (not trained here)

    def checkpoint(self, epoch: int) -> Path:
        return self.run_dir / f"epoch_{epoch:03d}.safetensors"

    def load_epoch(self, epoch: int, device="cpu") -> nn.Module:
        return load_model(self.config, epoch, device=device, run_dir=self.run_dir)


def _save_epoch(run: Run, epoch: int, model: nn.Module, state: dict) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # weights first, then the state that points at them: a crash in between only redoes an epoch;
    # the settings and the loss history ride along, so that load_model can tell a checkpoint of
    # another run and a run whose state.pt is damaged can resume from this epoch (resume_from)
    meta = {"epoch": str(epoch), "config": json.dumps(state["config"], sort_keys=True),
            "losses": json.dumps(state["losses"]), "epoch_ends": json.dumps(state["epoch_ends"])}
    atomic_write(run.dir / f"epoch_{epoch:03d}.safetensors", lambda p: save_file(weights, p, metadata=meta))
    run.save(state)


def _epochs(run_dir: Path) -> list[int]:
    return sorted(int(p.stem[6:]) for p in run_dir.glob("epoch_[0-9][0-9][0-9].safetensors"))


def last_good_epoch(run_dir: str | Path) -> int | None:
    """The last epoch of a run folder whose weights verify against its checksums (None: no such epoch)."""
    for epoch in reversed(_epochs(Path(run_dir))):
        try:
            verified(Path(run_dir) / f"epoch_{epoch:03d}.safetensors")
            return epoch
        except CheckpointError:
            pass
    return None


def _recovering(run_dir: Path, read):
    """``read(fix, last_good)``; when the file it reads is damaged, the CheckpointError names the last
    good epoch and how to resume from it (looked for only then: it reads every epoch's weights)."""
    try:
        return read(None, None)
    except CheckpointError:
        good = last_good_epoch(run_dir)
        fix = f"delete the folder {run_dir} and train the run again"
        if good is not None:
            fix += f", or resume from its last good epoch, {good}: train(config, ..., resume_from={good})"
        return read(fix, good)                  # raises again, with that fix


def _load_state(run_dir: Path) -> dict | None:
    return _recovering(run_dir, lambda fix, good: Run(run_dir, fix, lock=False).load(
        {"epoch", "config", "losses", "epoch_ends"}, last_good=good))


def _epoch_state(run_dir: Path, epoch: int, config: TrainConfig) -> dict:
    """The state to resume from epoch ``epoch``'s weights alone (``resume_from``): its settings and losses."""
    path = run_dir / f"epoch_{epoch:03d}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"resume_from={epoch}: {run_dir} has no weights of epoch {epoch} ({path}); "
                                f"its epochs: {_epochs(run_dir) or 'none'}")
    meta = _recovering(run_dir, lambda fix, good: read_safetensors(path, fix, good, metadata=True))
    if "losses" not in meta:
        raise CheckpointError(f"{path} was written before checkpoints recorded their losses, so the run cannot "
                              f"resume from it; delete the folder {run_dir} and train the run again", path)
    return {"epoch": epoch, "config": json.loads(meta["config"]), "losses": json.loads(meta["losses"]),
            "epoch_ends": json.loads(meta["epoch_ends"])}


def _check_run_dir(run_dir) -> Path:
    return check_folder(run_dir, "run_dir", "build/runs/...")


def _differences(stored: dict, config: TrainConfig) -> str:
    """The settings where a run's stored config and ``config`` differ, as 'lr: 0.01 in the run, 0.001 here'."""
    current = _comparable(config)
    keys = sorted(set(stored) | set(current))
    return "; ".join(f"{k}: {stored.get(k, '(unset)')!r} in the run, {current.get(k, '(unset)')!r} here"
                     for k in keys if stored.get(k) != current.get(k))


def _check_same_run(stored: dict, config: TrainConfig, run_dir: Path) -> None:
    if stored != _comparable(config):
        raise RuntimeError(f"{run_dir} holds a run with other settings ({_differences(stored, config)}); "
                           "pass the config it was trained with, or another run_dir "
                           "(or delete that folder to train this config there)")


def _load_weights(model: nn.Module, path: Path, device: torch.device) -> None:
    """Checkpoint ``path`` into ``model``, with clear errors for a damaged file or other shapes."""
    weights = _recovering(path.parent, lambda fix, good: read_safetensors(path, fix, good, device))
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        w = weights.get("conv_in.net.0.net.0.weight")
        theirs = f" (they were trained with num_hiddens={w.shape[0]})" if w is not None and w.dim() == 4 else ""
        raise ValueError(f"the weights in {path} do not fit a {type(model).__name__} with "
                         f"num_hiddens={model.num_hiddens}{theirs}; pass the config that run was trained "
                         "with") from None


def train(config: TrainConfig, images: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
          device="auto", run_dir: str | Path | None = None, progress: bool = True,
          stop_after_epoch: int | None = None, accelerator=None, cuda_graph: bool | None = None,
          resume_from: int | None = None, retrain: bool = False) -> TrainResult:
    """Train (or resume, or load) the run described by ``config``.

    images: (N, 1, 28, 28) float32 in [0, 1] and labels: (N,) int 0-9; if omitted they are loaded
    from ``config.data`` (first ``config.train_limit`` training images).  Given images are checked
    once, before the run folder is made: a uint8 (0-255) or float64 batch is a ``TypeError`` saying
    how to convert it; NaN, inf or values outside [0, 1] a ``ValueError``.
    A loss that turns NaN or inf stops the run with a ``RuntimeError`` before that epoch's
    checkpoint is written (checked once per epoch, not per step).
    stop_after_epoch: stop early after that epoch, as an interruption would (for tests).
    accelerator: an ``accelerate.Accelerator``; each process then takes its share of every
    batch and only the main process writes checkpoints.
    cuda_graph: replay each step as a CUDA graph (default: on CUDA without an accelerator).  The
    draws are the same kind on every device; bitwise repeatable runs are a CPU property.
    retrain: train here even where the pack ships this run trained (``shipped_run_dir``; the quick
    flow-matching runs).  Without it, and with no run of this config in ``build/runs`` yet, the shipped
    copy is loaded (``TrainResult.shipped``; a line says so), nothing is trained.
    resume_from: continue after that epoch from its weights alone (for a run whose ``state.pt`` is
    damaged: its ``CheckpointError`` names the last good epoch, ``.last_good``); the loss history up
    to it comes from the weights file, Adam's moments start afresh at that epoch's learning rate and
    the random draws from a new seed, so the rest of the run is not bit for bit an uninterrupted one.

    The run folder is held by one process at a time (a second is refused, naming the holder), and a
    damaged checkpoint is one ``CheckpointError`` naming the file and the fix (``diffnb.core.runs``).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. diffnb.part_b_config('class_fm')), got {config!r}")
    if stop_after_epoch is not None and (isinstance(stop_after_epoch, bool)
                                         or not isinstance(stop_after_epoch, int) or stop_after_epoch < 1):
        raise ValueError(f"stop_after_epoch must be a positive int or None, got {stop_after_epoch!r}")
    if resume_from is not None and (isinstance(resume_from, bool) or not isinstance(resume_from, int)
                                    or not 1 <= resume_from <= config.epochs):
        raise ValueError(f"resume_from must be None or an epoch in 1..{config.epochs}, got {resume_from!r}")
    if cuda_graph is not None and not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be True, False or None (automatic), got {cuda_graph!r}")
    if not isinstance(retrain, bool):
        raise TypeError(f"retrain must be True or False, got {retrain!r}")
    device = accelerator.device if accelerator is not None else get_device(device)
    if device.type == "cpu":
        device = torch.device("cpu")      # a multi-process CPU accelerator says "cpu:0", which safetensors refuses
    if cuda_graph is None:
        cuda_graph = device.type == "cuda" and accelerator is None
    elif cuda_graph and (device.type != "cuda" or accelerator is not None):
        raise ValueError(f"cuda_graph=True needs a CUDA device and no accelerator (device {device}, "
                         f"accelerator {'given' if accelerator is not None else 'none'}); "
                         "leave cuda_graph=None to choose automatically")
    if images is not None:
        _check_training_data(images, labels, config)
    elif labels is not None:
        raise ValueError("labels were given without images; pass both, or neither to load config.data")
    if run_dir is None and not retrain and resume_from is None and run_dir_for(config) != default_run_dir(config):
        return _load_shipped(config, device, progress and (accelerator is None or accelerator.is_main_process))
    run_dir = _check_run_dir(run_dir if run_dir is not None else default_run_dir(config))
    # one process per run folder (helpers of a distributed run only read): the checks cannot be raced
    with Run(run_dir, lock=accelerator is None or accelerator.is_main_process) as run:
        return _train(config, images, labels, device, run, progress, stop_after_epoch, accelerator, cuda_graph,
                      resume_from)


def _load_shipped(config: TrainConfig, device: torch.device, say: bool) -> TrainResult:
    """The pack's trained copy of ``config``'s run, read (never written: no lock, no temporaries)."""
    run_dir = shipped_run_dir(config)
    state = _load_state(run_dir)
    _check_same_run(state["config"], config, run_dir)
    model = build_model(config).to(device)
    _load_weights(model, run_dir / f"epoch_{int(state['epoch']):03d}.safetensors", device)
    if say:
        where = (f"retrain = True in the parameters cell of notebooks/{config.notebook}" if config.notebook
                 else "train(config, ..., retrain=True)")
        print(f"{config.name}: loaded the pack's trained run, {_shown(run_dir)} (these settings; epochs "
              f"{', '.join(map(str, _epochs(run_dir)))}; made by this loop, python -m diffnb.part_b ship).\n"
              f"To train it here instead: {where}.")
    return TrainResult(model.eval(), config, run_dir, list(state["losses"]), list(state["epoch_ends"]), [], 0.0,
                       shipped=True)


def _shown(path: Path) -> str:
    """``path`` relative to the repository root where it lies under it (for messages)."""
    try:
        return str(path.relative_to(data_dir().parent))
    except ValueError:
        return str(path)


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of process ``rank``'s draws (noise, t, class dropout) in ``epoch`` of a distributed run:
    distinct per rank and epoch, and a function of them alone, so a resumed run redraws them exactly."""
    digest = hashlib.sha256(f"diffnb-draws:{int(seed)}:{int(rank)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _train(config, images, labels, device, run, progress, stop_after_epoch, accelerator, cuda_graph, resume_from):
    run_dir = run.dir
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()            # the helpers read state.pt after the main process's cleanup
    state = _load_state(run_dir) if resume_from is None else _epoch_state(run_dir, resume_from, config)
    if state is not None:
        _check_same_run(state["config"], config, run_dir)
    done = 0 if state is None else int(state["epoch"])
    losses: list[float] = [] if state is None else list(state["losses"])
    epoch_ends: list[int] = [] if state is None else list(state["epoch_ends"])

    model = build_model(config).to(device)
    if done >= config.epochs:                      # finished earlier: load, nothing to compute
        _load_weights(model, run_dir / f"epoch_{done:03d}.safetensors", device)
        model.eval()
        return TrainResult(model, config, run_dir, losses, epoch_ends, [], 0.0)

    images, labels = _training_tensors(config, images, labels, device)
    n = images.shape[0]
    steps_per_epoch = n // config.batch_size     # drop the last partial batch (BatchNorm needs > 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.1 ** (1.0 / config.epochs))
                 if config.lr_decay else None)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    if state is not None:
        _restore(state, run_dir, model, optimizer, scheduler, gen, config, device)
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        rank, world = accelerator.process_index, accelerator.num_processes
        is_main = accelerator.is_main_process
    else:
        rank, world, is_main = 0, 1, True

    lrs = make_capturable(optimizer, device) if cuda_graph else None
    # one process: ``gen`` draws the permutation and every step's noise (as ever).  Several: ``gen`` (the
    # same on every rank) draws only the permutation; each rank draws its noise from its own generator,
    # re-seeded each epoch from (seed, rank, epoch), so the half-batches get independent draws and a
    # resumed run redraws them exactly without per-rank state in the checkpoint
    draws = gen if world == 1 else torch.Generator(device=device)
    one_step = functools.partial(_step, OBJECTIVES[config.objective][0], model, optimizer, images, labels, draws,
                                 config, accelerator)
    run_step = graph_step(one_step, torch.zeros(config.batch_size, dtype=torch.long, device=device),
                          generator=draws, enabled=cuda_graph)
    last = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
    bar = tqdm(total=(last - done) * steps_per_epoch, desc=config.name, disable=not (progress and is_main),
               unit="batch", leave=True)
    trained, t0 = [], time.perf_counter()
    model.train()
    for epoch in range(done + 1, last + 1):
        perm = torch.randperm(n, generator=gen, device=device)
        if world > 1:
            draws.manual_seed(rank_seed(config.seed, rank, epoch))
        epoch_losses = torch.empty(steps_per_epoch, device=device)   # kept on device: no sync per step
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size][rank::world]
            loss = run_step(idx)
            epoch_losses[step] = loss
            bar.update(1)
            if step % 50 == 49:                       # within a long epoch: the latest batch's loss
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        if world > 1:                                 # every rank: the mean over the ranks, so all stop together
            epoch_losses = accelerator.reduce(epoch_losses, "mean")
        epoch_losses = epoch_losses.cpu()             # the one read per epoch, checked before the checkpoint
        bar.set_postfix(epoch=epoch, loss=f"{float(epoch_losses.mean()):.4f}")   # the epoch's mean loss
        if not bool(torch.isfinite(epoch_losses).all()):
            bar.close()
            first = int((~torch.isfinite(epoch_losses)).nonzero()[0])
            last_good = (f"epoch {epoch - 1} in {run_dir}" if epoch > 1 else "none")
            raise RuntimeError(
                f"training {config.name!r} diverged: the loss became {float(epoch_losses[first])} at step "
                f"{first + 1} of {steps_per_epoch} in epoch {epoch}, so no checkpoint was written for that "
                f"epoch (last good checkpoint: {last_good}); lower lr (now {config.lr:g}) or check the "
                "training images (finite, in [0, 1])")
        if scheduler is not None:
            scheduler.step()
            set_lrs(optimizer, lrs)                  # the new rate into the tensor a graph reads
        losses.extend(epoch_losses.tolist())
        epoch_ends.append(len(losses))
        trained.append(epoch)
        if is_main:
            raw = accelerator.unwrap_model(model) if accelerator is not None else model
            opt_state, sched_state = portable_state(optimizer.state_dict(),
                                               scheduler.state_dict() if scheduler is not None else None)
            _save_epoch(run, epoch, raw, {
                "epoch": epoch, "config": _comparable(config), "losses": losses, "epoch_ends": epoch_ends,
                "optimizer": opt_state,
                "scheduler": sched_state,
                "generator": gen.get_state(),
            })
        if world > 1:
            accelerator.wait_for_everyone()          # the checkpoint is written before any rank goes on
    bar.close()
    seconds = time.perf_counter() - t0
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    model.eval()
    return TrainResult(model, config, run_dir, losses, epoch_ends, trained, seconds)


def _training_tensors(config, images, labels, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set on ``device`` (``config.data`` when no images are given), labels zero if none."""
    if images is None:
        from diffnb.b.digits import load_digits
        data = load_digits(config.data, train=True, limit=config.train_limit, device=device)
        images, labels = data.images, data.labels
    images = images.to(device)
    labels = labels.to(device) if labels is not None else torch.zeros(len(images), dtype=torch.long, device=device)
    if images.shape[0] < config.batch_size:
        raise ValueError(f"{images.shape[0]} training images is less than one batch of {config.batch_size}")
    return images, labels


def _restore(state, run_dir, model, optimizer, scheduler, gen, config, device) -> None:
    """Resume where the last finished epoch left off; after ``resume_from`` (a state without an
    optimizer), with a fresh Adam at that epoch's learning rate and new draws."""
    done = int(state["epoch"])
    _load_weights(model, run_dir / f"epoch_{done:03d}.safetensors", device)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        return
    for group in optimizer.param_groups:
        group["lr"] = config.lr * (0.1 ** (done / config.epochs) if scheduler is not None else 1.0)
    if scheduler is not None:
        scheduler.last_epoch, scheduler._last_lr = done, [g["lr"] for g in optimizer.param_groups]
    gen.manual_seed(config.seed + 1000003 * done)


def _step(loss_fn, model, optimizer, images, labels, gen, config, accelerator, idx) -> torch.Tensor:
    """One optimisation step on the batch ``idx``; it reads no tensor value, so it can be a CUDA graph."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, images[idx], labels[idx], gen, config)
    if accelerator is not None:
        accelerator.backward(loss)
    else:
        loss.backward()
    optimizer.step()
    return loss.detach()


def _comparable(config: TrainConfig) -> dict:
    d = config.to_dict()
    d.pop("notebook")
    return d


def _check_training_data(images, labels, config: TrainConfig) -> None:
    """Images (N, 1, 28, 28) float32 finite in [0, 1] and labels (N,) integers 0-9: once, before training."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (N, 1, 28, 28), got {type(images).__name__}; "
                        "pass e.g. diffnb.load_digits('synthetic').images")
    if images.dtype != torch.float32:
        if not images.dtype.is_floating_point:
            raise TypeError(f"images have dtype {images.dtype} (raw pixel values 0-255?); train takes float32 "
                            "images in [0, 1]: pass images.float() / 255")
        raise TypeError(f"images have dtype {images.dtype}; train takes float32 images in [0, 1]: "
                        "pass images.float()")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28) digits, got shape {tuple(images.shape)}; "
                         "add the channel with images.unsqueeze(1) or resize to 28x28")
    if images.shape[0] < config.batch_size:
        raise ValueError(f"{images.shape[0]} training images is less than one batch of {config.batch_size}; "
                         "pass more images or a smaller batch_size")
    if images.numel():
        lo, hi = (float(v) for v in torch.aminmax(images))      # one pass; NaN propagates, inf shows
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int((~torch.isfinite(images)).sum())
            raise ValueError(f"images hold {bad} NaN or inf pixel values; train needs finite images in [0, 1] "
                             "(find them with (~torch.isfinite(images)).nonzero() and fix or drop those images)")
        if lo < 0 or hi > 1:
            fix = ("they look like 0-255 pixel values: pass images / 255" if hi > 1.5 and lo >= 0
                   else "rescale them to [0, 1], e.g. (images - images.min()) / (images.max() - images.min())")
            raise ValueError(f"images must lie in [0, 1], got values from {lo:g} to {hi:g}; {fix}")
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a tensor (N,) of digits 0-9, got {type(labels).__name__}; "
                        "pass torch.as_tensor(labels)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels must be integers 0-9, got dtype {labels.dtype}; pass labels.long()")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"got labels of shape {tuple(labels.shape)} for {images.shape[0]} training images; "
                         "pass one label per image, shape (N,)")
    if labels.numel():
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo < 0 or hi > 9:
            raise ValueError(f"training labels must be digits 0-9, got values from {lo} to {hi}")


def load_model(config: TrainConfig, epoch: int | None = None, device="cpu",
               run_dir: str | Path | None = None) -> nn.Module:
    """The model of ``config`` after ``epoch`` (default: the last), in eval mode.

    A missing checkpoint is a ``FileNotFoundError`` that names the notebook to run first; a run
    folder trained with other settings than ``config`` (or weights of another width) is refused,
    naming the settings that differ.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. diffnb.part_b_config('class_fm')), got {config!r}")
    run_dir = _check_run_dir(run_dir if run_dir is not None else run_dir_for(config))
    epoch = config.epochs if epoch is None else epoch
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
        raise TypeError(f"epoch must be an int in 1..{config.epochs} or None (the last), got {epoch!r}")
    if not 1 <= epoch <= config.epochs:
        raise ValueError(f"epoch must lie in 1..{config.epochs} for run {config.name!r}, got {epoch}")
    path = run_dir / f"epoch_{epoch:03d}.safetensors"
    if not path.exists() and run_dir == shipped_run_dir(config):
        where = (f"set retrain = True in notebooks/{config.notebook} and run it" if config.notebook
                 else "train it with diffnb.train(config, retrain=True)")
        raise FileNotFoundError(
            f"the pack ships {config.name!r} trained with these settings, but only the weights after epochs "
            f"{', '.join(map(str, _epochs(run_dir)))} ({_shown(run_dir)}); for epoch {epoch}, train it here: {where} "
            "(about as long as the shipped run took: a few minutes on two CPU cores)")
    if not path.exists():
        where = f"run notebooks/{config.notebook} first" if config.notebook else "train it first"
        raise FileNotFoundError(
            f"no checkpoint for {config.name!r} after epoch {epoch} (looked for {path}); {where}, "
            "with the same profile and overrides as this notebook")
    _recovering(run_dir, lambda fix, good: verified(path, fix, good))
    stored = _stored_config(path)
    if stored is None:
        state = _load_state(run_dir)
        stored = state["config"] if state is not None else None
    if stored is not None:
        _check_same_run(stored, config, run_dir)
    device = get_device(device)
    model = build_model(config).to(device)
    _load_weights(model, path, device)
    return model.eval()


def _stored_config(path: Path) -> dict | None:
    """The settings a checkpoint was written with (its metadata), or None for an older checkpoint."""
    meta = read_safetensors(path, metadata=True)
    return json.loads(meta["config"]) if "config" in meta else None


def load_history(config: TrainConfig, run_dir: str | Path | None = None) -> tuple[list[float], list[int]]:
    """Loss per step and epoch boundaries of a run, from its last checkpoint (refused, naming the
    differing settings, when ``run_dir`` holds a run of other settings than ``config``)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. diffnb.part_b_config('class_fm')), got {config!r}")
    run_dir = _check_run_dir(run_dir if run_dir is not None else run_dir_for(config))
    state = _load_state(run_dir)
    if state is None:
        where = f"run notebooks/{config.notebook} first" if config.notebook else "train it first"
        raise FileNotFoundError(f"no training state for {config.name!r} in {run_dir}; {where}")
    _check_same_run(state["config"], config, run_dir)
    return list(state["losses"]), list(state["epoch_ends"])
