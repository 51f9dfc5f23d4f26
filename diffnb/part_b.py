"""Small helpers the Part B notebooks share, so each notebook cell stays one call.

Everything here is plain glue around the package: resolving the parameters cell, picking fixed
test digits, and measuring errors the narrative quotes.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from diffnb import profiles
from diffnb.b.digits import DigitData, load_digits
from diffnb.core.checks import is_int
from diffnb.core.devices import choose_threads, get_device
from diffnb.core.progress import show_loops


def setup(profile: str, device: str, data: str, seed: int) -> tuple[torch.device, str]:
    """Check the parameters cell, resolve ``auto`` values and print what this run uses.

    Every argument is checked (``diffnb.profiles.check_parameter``) before anything is loaded or
    printed; Part B's ``seed`` is an int (no ``None``).  From here on the Euler samplers show a progress
    bar when they last over 2 s (``show_loops``)."""
    profiles.check_profile(profile)
    profiles.check_parameter("seed", seed, allow_none=False)
    profiles.check_parameter("device", device)
    source = profiles.resolve_data(data, profile)
    dev = get_device(device)
    threads = choose_threads(dev, profile)
    torch.manual_seed(seed)
    show_loops()                        # an Euler sampler that runs over 2 s shows a bar in the notebook
    # fetch or render the digits now, so later cells (some of them checked by nbval) print no progress
    train_set = load_digits(source, train=True)
    load_digits(source, train=False)
    cpu_threads = f" ({threads} thread{'s' if threads > 1 else ''})" if dev.type == "cpu" else ""
    print(f"profile: {profile} | device: {dev}{cpu_threads} | seed: {seed}")
    print(f"data: {train_set.description}")
    return dev, source


def test_digits(source: str, n: int, first_index: int = 0) -> DigitData:
    """The first ``n`` test digits of ``source`` (fixed, so every run shows the same ones)."""
    for name, value, low in (("n", n, 1), ("first_index", first_index, 0)):
        if not is_int(value) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    test = load_digits(source, train=False)
    sl = slice(first_index, first_index + n)
    return DigitData(test.images[sl], test.labels[sl], test.source, test.root)


def one_of_each(source: str) -> torch.Tensor:
    """One test digit per class 0..9, (10, 1, 28, 28)."""
    test = load_digits(source, train=False)
    idx = [int((test.labels == c).nonzero()[0]) for c in range(10)]
    return test.images[idx]


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image pair: (N,)."""
    return ((a.float() - b.float()) ** 2).flatten(1).mean(1)


@torch.no_grad()
def denoise(model: torch.nn.Module, noisy: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Run an unconditional denoiser in eval mode on its own device; results on the CPU."""
    dev = next(model.parameters()).device
    model.eval()
    out = [model(noisy[i:i + batch].to(dev)).cpu() for i in range(0, len(noisy), batch)]
    return torch.cat(out)


def epoch_losses(losses: list[float], epoch_ends: list[int]) -> list[float]:
    """Mean training loss of each epoch."""
    starts = [0] + list(epoch_ends[:-1])
    return [sum(losses[s:e]) / max(e - s, 1) for s, e in zip(starts, epoch_ends)]


# the quick runs the pack ships trained (each takes minutes on two CPU cores; the denoisers train in seconds)
SHIPPED_RUNS = ("time_fm", "class_fm", "class_fm_constant_lr")


def clean_interrupted_ship(target: Path) -> list[Path]:
    """Tidy what a ``ship`` of ``target`` that was killed left beside it: its half-written copy
    (``.<name>.tmp-<pid>``) is removed, and a previous copy it had moved aside (``.<name>.old-<pid>``) is
    put back if ``target`` is missing, else removed.  Only folders of those names whose process is gone
    are touched (a running ``ship`` keeps its own).  Returns the folders removed."""
    from diffnb.core.runs import pid_alive

    removed = []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?P<kind>tmp|old)-(?P<pid>[0-9]+)")
    if not target.parent.is_dir():
        return removed
    for work in sorted(target.parent.iterdir()):
        m = pattern.fullmatch(work.name)
        if not m or not work.is_dir() or work.is_symlink() or pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not target.exists():
            os.replace(work, target)
            continue
        shutil.rmtree(work)
        removed.append(work)
    return removed


def ship(runs=SHIPPED_RUNS, replace: bool = False, device="cpu") -> list[Path]:
    """Train the ``quick`` runs ``runs`` (or take this machine's finished runs in ``build/runs``) and write
    the pack's copies, ``data/runs/<name>-<config hash>`` (``diffnb.b.train.write_copy``: epochs 1, 5 and
    the last, the settings and loss history, checksums).  A copy that exists is kept unless ``replace``;
    the new one is written beside it and swapped in; a ship that is stopped leaves nothing behind, and one
    that was killed is tidied by the next (``clean_interrupted_ship``)."""
    from diffnb.b.train import shipped_path, train, write_copy

    unknown = [r for r in runs if r not in profiles.PART_B_RUNS]
    if unknown:
        raise ValueError(f"unknown Part B run(s) {unknown}; choose from {sorted(profiles.PART_B_RUNS)}")
    configs = [profiles.part_b_config(r, "quick") for r in runs]
    targets = [shipped_path(c) for c in configs]
    kept = [t for t in targets if t.exists()]
    if kept and not replace:
        raise FileExistsError(f"{', '.join(map(str, kept))} exist(s); pass replace=True (--replace) to write "
                              "them again")
    for config, target in zip(configs, targets):
        clean_interrupted_ship(target)
        result = train(config, device=device, retrain=True)          # build/runs: trains, resumes or loads
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        try:
            write_copy(result, tmp)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
        finally:                                     # stopped (Ctrl-C, an error): no half-written copy stays
            if old.exists() and not target.exists():
                os.replace(old, target)              # the previous copy back in its place
            if tmp.exists():
                shutil.rmtree(tmp)
        if old.exists():
            shutil.rmtree(old)                       # the pack's own previous copy, replaced as asked
        print(f"{config.name}: wrote {target} (epochs {', '.join(p.stem[6:] for p in sorted(target.glob('epoch_*')))})")
    return targets


def main(argv: list[str] | None = None) -> int:
    """``python -m diffnb.part_b train RUN --profile quick [...]``: train (or resume) one Part B run.

    Under ``accelerate launch --num_processes N -m diffnb.part_b train ...`` each process takes its
    share of every batch (global batch = ``batch_size``); the run folder is the one the notebooks
    compute from the same profile and overrides."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m diffnb.part_b", description=main.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or resume, or load) one Part B run")
    t.add_argument("run", choices=sorted(profiles.PART_B_RUNS))
    t.add_argument("--profile", default="quick", choices=list(profiles.PROFILES))
    t.add_argument("--data", default=None, help="digit source (default: the profile's)")
    for name, kind in (("epochs", int), ("train_limit", int), ("num_hiddens", int), ("batch_size", int),
                       ("lr", float), ("seed", int)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    t.add_argument("--run-dir", default=None, help="run folder (default: build/runs/<name>-<config hash>)")
    t.add_argument("--stop-after-epoch", type=int, default=None, help="stop after that epoch (resumable)")
    t.add_argument("--device", default="auto", choices=["cpu", "auto", "cuda"])
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    sh = sub.add_parser("ship", help="train the quick flow-matching runs and write the pack's copies in data/runs")
    sh.add_argument("runs", nargs="*", help=f"which runs (default: {' '.join(SHIPPED_RUNS)})")
    sh.add_argument("--replace", action="store_true", help="write copies that exist again")
    args = parser.parse_args(argv)
    if args.command == "ship":
        try:
            ship(tuple(args.runs) or SHIPPED_RUNS, replace=args.replace)
        except (ValueError, FileExistsError) as err:
            parser.error(str(err))
        return 0

    import accelerate

    from diffnb.b.train import train

    overrides = {k: getattr(args, k) for k in ("epochs", "train_limit", "num_hiddens", "batch_size", "lr", "seed")
                 if getattr(args, k) is not None}
    config = profiles.part_b_config(args.run, args.profile, args.data or "auto", **overrides)
    acc = accelerate.Accelerator(cpu=args.device == "cpu")
    result = train(config, accelerator=acc, run_dir=args.run_dir, stop_after_epoch=args.stop_after_epoch,
                   progress=not args.no_progress, retrain=True)
    if acc.is_main_process:
        print(f"run: {result.run_dir}")
        print(f"processes: {acc.num_processes} | device: {acc.device} | "
              f"trained epochs this call: {result.trained_epochs or 'none (loaded)'}")
        for epoch, loss in enumerate(epoch_losses(result.losses, result.epoch_ends), 1):
            print(f"epoch {epoch}: mean loss {loss:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
