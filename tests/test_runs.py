"""Faults of a training run, for both trainers (Part B's ``train``, mini's ``train_mini``): damaged
checkpoints, a second process on the same run folder, a save killed half-way.  Each is one clear error
naming the file or the holder and the fix, or is repaired at the next start (``diffnb.core.runs.Run``)."""
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffnb.b.train import TrainConfig, load_history, load_model, train
from diffnb.core.runs import CheckpointError
from diffnb.mini import model as mini

ROOT = Path(__file__).resolve().parents[1]


def _toy_data(n=64):
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 1, 28, 28)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 4 + 2 * c: 6 + 2 * c, 6:22] = 1.0
    return images, labels


CFG = TrainConfig(name="toy", objective="class_fm", num_hiddens=4, batch_size=16, epochs=3, seed=5)
MINI = mini.MiniConfig(steps=4, batch_size=4, n_images=16, warmup=2, save_every=2)


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path):
    p.write_bytes(b"")


def _flip(p: Path):
    data = bytearray(p.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    p.write_bytes(bytes(data))


DAMAGE = [pytest.param(f, id=f.__name__[1:]) for f in (_truncate, _empty, _flip)]


def _two_epochs(run_dir):
    images, labels = _toy_data()
    return train(CFG, images, labels, device="cpu", run_dir=run_dir, progress=False, stop_after_epoch=2)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


HOLD = "from diffnb.core.runs import Run\nwith Run(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"
KILLED_SAVE = ("from pathlib import Path\nfrom diffnb.core.runs import atomic_write\ndef write(p):\n"
               "    open(p, 'wb').write(b'half a state')\n    print('held', flush=True)\n    time.sleep(120)\n"
               "atomic_write(Path(sys.argv[1]) / 'state.pt', write)\n")


def _child(run_dir: Path, code: str = HOLD):
    """A second process on ``run_dir`` running ``code``; returns once it prints 'held'."""
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\n" + code, str(run_dir)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert child.stdout.readline().strip() == "held"
    return child


def _kill9(child):
    child.send_signal(signal.SIGKILL)
    child.wait()


def _temporaries(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- Part B

@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_state_names_the_file_and_the_last_good_epoch_and_resumes_from_it(tmp_path, damage):
    first = _two_epochs(tmp_path)
    damage(tmp_path / "state.pt")
    images, labels = _toy_data()
    with pytest.raises(CheckpointError, match=r"state\.pt.*delete the folder.*resume_from=2") as err:
        train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False)
    assert err.value.path == tmp_path / "state.pt" and err.value.last_good == 2
    with pytest.raises(CheckpointError, match=r"state\.pt"):
        load_history(CFG, run_dir=tmp_path)
    # the fix the error offers: resume from the last good epoch's weights
    res = train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False, resume_from=err.value.last_good)
    assert res.trained_epochs == [3] and res.epoch_ends == [4, 8, 12]
    assert res.losses[:8] == first.losses and all(math.isfinite(v) for v in res.losses)
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert load_history(CFG, run_dir=tmp_path) == (res.losses, res.epoch_ends)      # state.pt is whole again
    assert train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False).trained_epochs == []


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_epoch_weights_are_one_checkpoint_error_naming_them(tmp_path, damage):
    _two_epochs(tmp_path)
    damage(tmp_path / "epoch_002.safetensors")
    images, labels = _toy_data()
    with pytest.raises(CheckpointError, match=r"epoch_002\.safetensors.*resume_from=1") as err:
        train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False)       # resumes from epoch 2
    assert err.value.path.name == "epoch_002.safetensors" and err.value.last_good == 1
    with pytest.raises(CheckpointError, match=r"epoch_002\.safetensors.*delete the folder"):
        load_model(CFG, 2, run_dir=tmp_path)
    assert all(torch.isfinite(p).all() for p in load_model(CFG, 1, run_dir=tmp_path).parameters())
    res = train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False, resume_from=1)
    assert res.trained_epochs == [2, 3]


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    images, labels = _toy_data()
    child = _child(tmp_path)
    try:
        with pytest.raises(RuntimeError, match=rf"pid {child.pid} on host {socket.gethostname()}"):
            train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False)
        assert not (tmp_path / "state.pt").exists()
    finally:
        _kill9(child)
    assert train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False).trained_epochs == [1, 2, 3]


def test_a_save_killed_half_way_leaves_no_temporaries_after_the_next_start(tmp_path):
    _two_epochs(tmp_path)
    (tmp_path / f".epoch_003.safetensors.tmp-{_dead_pid()}").write_bytes(b"half an epoch")
    child = _child(tmp_path, KILLED_SAVE)             # killed inside atomic_write, its temporary written
    _kill9(child)
    assert f".state.pt.tmp-{child.pid}" in _temporaries(tmp_path) and len(_temporaries(tmp_path)) == 2
    images, labels = _toy_data()
    res = train(CFG, images, labels, device="cpu", run_dir=tmp_path, progress=False)
    assert res.trained_epochs == [3] and _temporaries(tmp_path) == []


# --------------------------------------------------------------------------- mini

@pytest.fixture(scope="module")
def mini_run(tmp_path_factory, one_thread):
    """A mini run stopped at step 2 of 4 (its state.pt), copied afresh for each test."""
    run_dir = tmp_path_factory.mktemp("mini") / "run"
    mini.train_mini(MINI, run_dir=run_dir, progress=False, stop_after=2)
    return run_dir


def _copy(run_dir: Path, to: Path) -> Path:
    import shutil
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns(".lock"))
    return to


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_mini_state_is_one_checkpoint_error_naming_it(mini_run, tmp_path, damage):
    run_dir = _copy(mini_run, tmp_path / "run")
    damage(run_dir / "state.pt")
    with pytest.raises(CheckpointError, match=r"state\.pt.*delete the run folder") as err:
        mini.train_mini(MINI, run_dir=run_dir, out=tmp_path / "out", progress=False)
    assert err.value.path == run_dir / "state.pt"
    with pytest.raises(CheckpointError, match=r"state\.pt"):
        mini.ema_models(MINI, run_dir)                  # what export_run reads
    with pytest.raises(CheckpointError, match=r"state\.pt"):
        mini.export_run(MINI, run_dir, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", [pytest.param(_truncate, id="truncate"), pytest.param(_empty, id="empty")])
def test_damaged_exported_mini_weights_are_one_checkpoint_error_naming_them(mini_run, tmp_path, damage):
    out = mini.export_run(MINI, _copy(mini_run, tmp_path / "run"), out=tmp_path / "model")
    damage(out / "prompt_encoder" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*damaged"):
        mini.PromptEncoder.load(out / "prompt_encoder")


def test_a_second_mini_process_is_refused_and_a_killed_holders_lock_and_temporaries_go(mini_run, tmp_path, one_thread):
    run_dir = _copy(mini_run, tmp_path / "run")
    child = _child(run_dir)
    try:
        with pytest.raises(RuntimeError, match=rf"pid {child.pid} on host {socket.gethostname()}"):
            mini.train_mini(MINI, run_dir=run_dir, out=tmp_path / "out", progress=False)
    finally:
        _kill9(child)
    (run_dir / f".state.pt.tmp-{_dead_pid()}").write_bytes(b"half a state")
    done = mini.train_mini(MINI, run_dir=run_dir, out=tmp_path / "out", progress=False)
    assert done["step"] == 4 and _temporaries(run_dir) == []


# --------------------------------------------------------------------------- a model folder's checksums

def test_an_export_records_every_files_sha256_and_the_loaders_check_them(mini_run, tmp_path):
    out = mini.export_run(MINI, _copy(mini_run, tmp_path / "run"), out=tmp_path / "model")
    recorded = json.loads((out / "checksums.json").read_text())
    assert sorted(recorded) == sorted(f for f in mini.EXPORT_FILES if f != "checksums.json")
    assert mini.load_mini_prompts(out).encoder is not None                  # verified, then read


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("file", ["unet/diffusion_pytorch_model.safetensors", "prompt_encoder/model.safetensors",
                                  "scheduler/scheduler_config.json"])
def test_a_damaged_file_of_a_model_folder_is_refused_by_name(tmp_path, damage, file):
    """A flipped byte, not only a truncated file: the shipped mini model's checksums.json catches it, and the
    message names the file and how to restore it."""
    import shutil
    from diffnb.core.runs import verify_folder
    folder = shutil.copytree(mini.shipped_model_dir(), tmp_path / "mini-if")
    assert verify_folder(folder, "restore it")                              # the shipped copy is intact
    damage(folder / file)
    with pytest.raises(CheckpointError, match=rf"{re.escape(file)} is damaged: its sha256 does not match .*restore it"):
        verify_folder(folder, "restore it")
    with pytest.raises(CheckpointError, match=re.escape(file)):
        mini.load_mini_prompts(folder)


def test_the_shipped_mini_folder_records_all_its_files_and_loads_verified():
    from diffnb.core.runs import verify_folder
    folder = mini.shipped_model_dir()
    assert verify_folder(folder, "restore it")
    recorded = json.loads((folder / "checksums.json").read_text())
    assert sorted(recorded) == sorted(f for f in mini.EXPORT_FILES if f != "checksums.json")


def test_a_model_folder_with_a_file_its_checksums_do_not_record_is_refused(tmp_path):
    import shutil
    from diffnb.core.runs import verify_folder
    folder = shutil.copytree(mini.shipped_model_dir(), tmp_path / "mini-if")
    (folder / "unet" / "extra.safetensors").write_bytes(b"not ours")
    with pytest.raises(CheckpointError, match=r"holds files its checksums.json does not record \(unet/extra"):
        verify_folder(folder, "restore it")
    (folder / "unet" / "extra.safetensors").unlink()
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"scheduler_config.json is missing"):
        verify_folder(folder, "restore it")


def test_load_stage1_refuses_a_mini_folder_with_a_flipped_byte(tmp_path, monkeypatch):
    import shutil
    from diffnb.a import models
    folder = shutil.copytree(mini.shipped_model_dir(), tmp_path / "mini-if")
    _flip(folder / "unet" / "diffusion_pytorch_model.safetensors")
    monkeypatch.setattr(models, "model_dir", lambda model: folder)
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.safetensors is damaged.*git checkout -- data/models/mini-if"):
        models.load_stage1("mini", device="cpu")
