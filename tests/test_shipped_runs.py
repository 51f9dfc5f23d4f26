"""The quick flow-matching runs the pack ships trained (data/runs, written by python -m diffnb.part_b ship).

They are what the committed recipe trains: each copy's settings are the current quick config's (a
changed recipe fails here, naming the command that re-makes them), and retraining its first epoch
from scratch gives the shipped losses and weights.  train() loads a copy instead of training and
never writes into data/; retrain=True, or a run of this machine's own in build/runs, takes precedence.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import diffnb
from diffnb import part_b, profiles
from diffnb.b import train as T
from diffnb.b.digits import load_digits
from diffnb.core import paths
from diffnb.core.runs import read_safetensors, verified

REMAKE = "the quick recipe changed: re-make the shipped runs with python -m diffnb.part_b ship --replace"


@pytest.fixture
def empty_build(tmp_path, monkeypatch):
    """A build folder with no runs (as on a fresh clone); the mnist-5k digits are extracted there."""
    monkeypatch.setenv("DIFFNB_BUILD", str(tmp_path / "build"))
    return tmp_path / "build"


def _snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", part_b.SHIPPED_RUNS)
def test_shipped_run_is_the_current_recipe(name):
    cfg = profiles.part_b_config(name, "quick")
    run_dir = T.shipped_run_dir(cfg)
    assert run_dir is not None, f"no shipped run data/runs/{cfg.name}-{cfg.key()}: {REMAKE}"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checksums.json", "epoch_001.safetensors", "epoch_005.safetensors", f"epoch_{cfg.epochs:03d}.safetensors",
        "state.pt"]
    comparable = {k: v for k, v in cfg.to_dict().items() if k != "notebook"}
    for path in run_dir.glob("*.safetensors"):
        meta = read_safetensors(path, metadata=True)                  # verified against checksums.json
        assert json.loads(meta["config"]) == comparable, f"{path}: {REMAKE}"
    state = torch.load(verified(run_dir / "state.pt"), weights_only=True)
    assert set(state) == {"epoch", "config", "losses", "epoch_ends"}    # no optimizer: a copy is only read
    assert state["config"] == comparable and state["epoch"] == cfg.epochs
    steps = cfg.train_limit // cfg.batch_size
    assert state["epoch_ends"] == [steps * (e + 1) for e in range(cfg.epochs)]
    assert len(state["losses"]) == steps * cfg.epochs and all(0 < l < 2 for l in state["losses"])


def test_no_stale_shipped_runs():
    """Every folder in data/runs is the copy of a current quick recipe (an old one is dead weight)."""
    current = {f"{c.name}-{c.key()}" for c in (profiles.part_b_config(r, "quick") for r in part_b.SHIPPED_RUNS)}
    found = {p.name for p in (paths.data_dir() / "runs").iterdir()}
    assert found == current, f"stale: {sorted(found - current)}, missing: {sorted(current - found)}; {REMAKE}"


def test_train_loads_the_shipped_run_and_writes_nothing_there(empty_build, capsys):
    cfg = profiles.part_b_config("class_fm", "quick")
    shipped = T.shipped_run_dir(cfg)
    before = _snapshot(shipped)
    run = diffnb.train(cfg, device="cpu")
    assert run.shipped and run.trained_epochs == [] and run.run_dir == shipped
    assert "loaded the pack's trained run, data/runs/class_fm-" in capsys.readouterr().out
    weights = load_file(str(shipped / "epoch_010.safetensors"))
    assert all(torch.equal(v, weights[k]) for k, v in run.model.state_dict().items())
    assert (run.losses, run.epoch_ends) == diffnb.load_history(cfg)
    five = diffnb.load_model(cfg, 5)                                   # the sampling notebooks' epochs
    assert torch.equal(five.state_dict()["conv_in.net.0.net.0.weight"],
                       load_file(str(shipped / "epoch_005.safetensors"))["conv_in.net.0.net.0.weight"])
    with pytest.raises(FileNotFoundError, match=r"only the weights after epochs 1, 5, 10 .*for epoch 3, train it "
                                                r"here: set retrain = True in notebooks/B2.5"):
        diffnb.load_model(cfg, 3)
    assert _snapshot(shipped) == before                                # no lock, temporaries or rewrites
    assert not (empty_build / "runs").exists() or not any((empty_build / "runs").iterdir())


@pytest.mark.parametrize("name", ["time_fm", "class_fm"])
def test_retraining_the_first_epoch_reproduces_the_shipped_run(empty_build, name):
    """retrain=True trains here (build/runs), and its first epoch is the shipped one: every step's loss the
    same to float32 rounding (kernels and thread counts add in other orders), and the epoch-1 model's loss
    on held-out digits within 3% of the shipped epoch-1 model's (measured: 0.08% for time_fm, 1% for
    class_fm, 1 thread against the copies' 2; single weights drift further: a conv bias before a BatchNorm
    has no gradient but float noise, and Adam turns that noise into full-size steps).  The machine's own
    run is then the one read."""
    cfg = profiles.part_b_config(name, "quick")
    shipped = T.shipped_run_dir(cfg)
    state = torch.load(shipped / "state.pt", weights_only=True)
    run = diffnb.train(cfg, device="cpu", retrain=True, stop_after_epoch=1, progress=False)
    assert not run.shipped and run.trained_epochs == [1] and run.run_dir == T.default_run_dir(cfg)
    steps = state["epoch_ends"][0]
    assert run.epoch_ends == [steps]
    torch.testing.assert_close(torch.tensor(run.losses), torch.tensor(state["losses"][:steps]), rtol=5e-4, atol=1e-6)
    held_out = load_digits(cfg.data, train=False, limit=256)
    losses = []
    with torch.no_grad():
        for model in (run.model.eval(), diffnb.load_model(cfg, 1, run_dir=shipped)):
            g = torch.Generator().manual_seed(1)
            losses.append(float(diffnb.time_fm_forward(model, held_out.images, g) if name == "time_fm" else
                                diffnb.class_fm_forward(model, held_out.images, held_out.labels, cfg.p_uncond, g)))
    assert losses[0] == pytest.approx(losses[1], rel=0.03), f"held-out loss here {losses[0]:.4f}, shipped {losses[1]:.4f}"
    with pytest.raises(ValueError, match="has 1 of 10 epochs; finish training it before copying it"):
        T.write_copy(run, empty_build / "copy")                        # only a finished run ships
    assert T.run_dir_for(cfg) == run.run_dir                           # this machine's run is read now
    with pytest.raises(FileNotFoundError, match=f"run notebooks/{cfg.notebook} first"):
        diffnb.load_model(cfg)                                         # ... and it stopped after epoch 1


def _scratch_ship(tmp_path, monkeypatch, epochs: int):
    """ship() on a tiny time_fm recipe of ``epochs`` into a scratch data folder: ``(data folder, config)``."""
    data = tmp_path / "data"
    monkeypatch.setattr(paths, "data_dir", lambda: data)
    monkeypatch.setattr(T, "data_dir", lambda: data)
    tiny = T.TrainConfig(name="time_fm", objective="time_fm", num_hiddens=4, batch_size=32, lr=1e-2, epochs=epochs,
                         train_limit=64, data="mnist-5k", notebook="B2.2_train_time_conditioned.ipynb")
    monkeypatch.setattr(profiles, "part_b_config", lambda run, profile: tiny)
    return data, tiny


def test_ship_writes_a_verified_copy_and_keeps_one_that_exists(empty_build, tmp_path, monkeypatch):
    """ship() on a tiny recipe into a scratch data folder: the kept epochs, a state without optimizer,
    checksums; a second ship is refused unless replace=True; train() then loads it."""
    data, tiny = _scratch_ship(tmp_path, monkeypatch, epochs=6)
    [target] = part_b.ship(("time_fm",))
    assert target == data / "runs" / f"time_fm-{tiny.key()}"
    assert sorted(p.name for p in target.iterdir()) == [
        "checksums.json", "epoch_001.safetensors", "epoch_005.safetensors", "epoch_006.safetensors", "state.pt"]
    for p in target.iterdir():
        if p.name != "checksums.json":
            verified(p)
    with pytest.raises(FileExistsError, match="replace=True"):
        part_b.ship(("time_fm",))
    part_b.ship(("time_fm",), replace=True)
    assert not [p for p in (data / "runs").iterdir() if p.name.startswith(".")]    # no temporaries left
    local = T.default_run_dir(tiny)
    import shutil
    shutil.rmtree(local)                                                   # a fresh clone: only the copy
    run = diffnb.train(tiny, device="cpu", progress=False)
    assert run.shipped and run.run_dir == target and len(run.epoch_ends) == 6
    with pytest.raises(ValueError, match=r"unknown Part B run\(s\) \['nope'\]"):
        part_b.ship(("nope",))


def test_a_stopped_ship_leaves_nothing_and_a_killed_ones_leftovers_are_tidied(empty_build, tmp_path, monkeypatch):
    """A ship stopped while it writes (Ctrl-C) removes its half-written copy and keeps the previous one; the
    folders a killed ship left (its process gone) are removed, or the moved-aside copy put back, by the next
    ship; a folder of a ship still running, and anything else in data/runs, is left alone."""
    import os
    import subprocess
    import sys
    data, _ = _scratch_ship(tmp_path, monkeypatch, epochs=2)
    [target] = part_b.ship(("time_fm",))
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_write_copy = T.write_copy

    def stopped(result, folder):
        real_write_copy(result, folder)
        raise KeyboardInterrupt                                  # after the copy is written, before the swap
    monkeypatch.setattr(T, "write_copy", stopped)
    with pytest.raises(KeyboardInterrupt):
        part_b.ship(("time_fm",), replace=True)
    runs = data / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [target.name]               # no .tmp- folder left
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    monkeypatch.setattr(T, "write_copy", real_write_copy)

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = child.pid
    (runs / f".{target.name}.tmp-{dead}").mkdir()                                # a killed ship's half copy
    (runs / f".{target.name}.tmp-{dead}" / "epoch_001.safetensors").write_bytes(b"half")
    (runs / f".{target.name}.tmp-{os.getpid()}").mkdir()                         # a ship still running
    (runs / "notes-of-mine").mkdir()                                             # not the pack's
    assert part_b.clean_interrupted_ship(target) == [runs / f".{target.name}.tmp-{dead}"]
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        [target.name, f".{target.name}.tmp-{os.getpid()}", "notes-of-mine"])
    (runs / f".{target.name}.tmp-{os.getpid()}").rmdir()
    target.rename(runs / f".{target.name}.old-{dead}")                           # killed between the two renames
    part_b.clean_interrupted_ship(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before          # the previous copy is back
