"""Part B training in two processes (``accelerate launch``, CPU, gloo): checkpoints, resume, loss curve.

Each run is a subprocess of ``python -m diffnb.part_b train``; the synthetic digits are pre-rendered
(512 + 64) into a temporary build folder so no run renders the full 60,000."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from diffnb import profiles
from diffnb.b.train import load_history, load_model, rank_seed
from diffnb.core.runs import verified
from diffnb.part_b import epoch_losses

EPOCHS = 3
OVERRIDES = dict(epochs=EPOCHS, train_limit=512, num_hiddens=8, batch_size=64)
ARGS = ["train", "class_fm", "--profile", "quick", "--data", "synthetic", "--epochs", str(EPOCHS),
        "--train-limit", "512", "--num-hiddens", "8", "--batch-size", "64", "--device", "cpu", "--no-progress"]
# --multi_gpu selects accelerate's torchrun launcher (gloo on a CPU); with --cpu it runs ONE process
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffnb.part_b"]
# measured (seed 0): 1 process 0.7542 / 0.4175 / 0.3518, 2 processes 0.7729 / 0.4071 / 0.3531, max 2.5 %
TOLERANCE = 0.15


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    env = dict(os.environ, DIFFNB_BUILD=str(root), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", "from diffnb.b.digits import make_synthetic_mnist, default_synthetic_root;"
                    "make_synthetic_mnist(default_synthetic_root(0), seed=0, n_train=512, n_test=64)"],
                   env=env, check=True, capture_output=True, timeout=120)
    return root, env


def _run(env, run_dir, *extra, processes=2):
    cmd = (LAUNCH if processes == 2 else [sys.executable, "-m", "diffnb.part_b"]) + ARGS + ["--run-dir", str(run_dir), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _config(env):
    old = os.environ.get("DIFFNB_BUILD")
    os.environ["DIFFNB_BUILD"] = env["DIFFNB_BUILD"]
    try:
        return profiles.part_b_config("class_fm", "quick", "synthetic", **OVERRIDES)
    finally:
        if old is None:
            os.environ.pop("DIFFNB_BUILD")
        else:
            os.environ["DIFFNB_BUILD"] = old


@pytest.fixture(scope="module")
def runs(build):
    root, env = build
    full, split, single = root / "two", root / "two_resumed", root / "one"
    out = _run(env, full)
    assert "processes: 2" in out, out
    _run(env, split, "--stop-after-epoch", "1")
    assert sorted(p.name for p in split.glob("epoch_*.safetensors")) == ["epoch_001.safetensors"]
    out = _run(env, split)
    assert "trained epochs this call: [2, 3]" in out, out
    out = _run(env, single, processes=1)
    assert "processes: 1" in out, out
    return _config(env), full, split, single


def test_rank_draws_differ():
    seeds = {rank_seed(0, rank, epoch) for rank in range(4) for epoch in range(1, 11)}
    assert len(seeds) == 40
    assert rank_seed(0, 1, 3) == rank_seed(0, 1, 3)
    a = torch.randn(8, generator=torch.Generator().manual_seed(rank_seed(0, 0, 1)))
    b = torch.randn(8, generator=torch.Generator().manual_seed(rank_seed(0, 1, 1)))
    assert not torch.equal(a, b)


def test_one_checkpoint_per_epoch_and_they_verify(runs):
    config, full, _, _ = runs
    assert sorted(p.name for p in full.glob("epoch_*.safetensors")) == [
        f"epoch_{e:03d}.safetensors" for e in range(1, EPOCHS + 1)]
    for epoch in range(1, EPOCHS + 1):
        verified(full / f"epoch_{epoch:03d}.safetensors")
        load_model(config, epoch, run_dir=full)
    losses, ends = load_history(config, run_dir=full)
    assert ends == [8, 16, 24] and len(losses) == 24           # 512 // 64 steps per epoch


def test_resumed_two_process_run_is_bitwise_the_uninterrupted_one(runs):
    config, full, split, _ = runs
    assert load_history(config, run_dir=full) == load_history(config, run_dir=split)
    a, b = load_file(full / "epoch_003.safetensors"), load_file(split / "epoch_003.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_loss_curve_matches_one_process(runs):
    config, full, _, single = runs
    two = epoch_losses(*load_history(config, run_dir=full))
    one = epoch_losses(*load_history(config, run_dir=single))
    assert two != one                                          # other draws, half-batch BatchNorm
    for a, b in zip(two, one):
        assert abs(a - b) / b < TOLERANCE, (two, one)
    assert two[0] > two[1] > two[2] and one[0] > one[1] > one[2], (two, one)
