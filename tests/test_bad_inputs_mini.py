"""Bad inputs to the pack's own ``mini`` model, its exporter, the digit world, the world judge and the
command lines of ``diffnb.mini.model``, ``diffnb.evaluate`` and ``diffnb.mini.judge`` (issue 19, this
area's part of the catalogue): each is refused at the edge by one clear error that names the argument
and the fix. A new case is one line in ``CASES`` (the Python side) or ``CLI_CASES`` (a command line,
which argparse answers with exit status 2 and the message on stderr)."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from diffnb import evaluate
from diffnb.mini import model as mini, world, judge as world_judge
from diffnb.core.paths import project_root

TINY = dict(steps=2, batch_size=2, n_images=4, warmup=1, save_every=2)

CASES = [
    # MiniConfig: every field with its name, what it takes and an example (the Python side of `mini train`)
    pytest.param(lambda: mini.MiniConfig(p_uncond=1.5), ValueError, r"p_uncond must be a number in \[0, 1\].*e\.g\. 0\.1",
                 id="p_uncond-above-1"),
    pytest.param(lambda: mini.MiniConfig(p_uncond=float("nan")), ValueError, r"p_uncond must be .*got nan; e\.g\. 0\.1",
                 id="p_uncond-nan"),
    pytest.param(lambda: mini.MiniConfig(save_every=0), ValueError, r"save_every must be an int >= 1.*e\.g\. 500",
                 id="save_every-0"),
    pytest.param(lambda: mini.MiniConfig(lr=-1.0), ValueError, r"lr must be a finite number > 0.*e\.g\. 2e-3",
                 id="lr-negative"),
    pytest.param(lambda: mini.MiniConfig(lr=float("inf")), ValueError, r"lr must be a finite number > 0.*got inf",
                 id="lr-inf"),
    pytest.param(lambda: mini.MiniConfig(lr="0.01"), TypeError, r"lr must be a finite number .*'0\.01' \(str\); e\.g\.",
                 id="lr-string"),
    pytest.param(lambda: mini.MiniConfig(steps=0), ValueError, r"steps must be an int >= 1 .*e\.g\. 200", id="steps-0"),
    pytest.param(lambda: mini.MiniConfig(steps=10.0), TypeError, r"steps must be an int >= 1 .*\(float\); e\.g\. 200",
                 id="steps-float"),
    pytest.param(lambda: mini.MiniConfig(batch_size=0), ValueError, r"batch_size must be an int >= 1.*e\.g\. 64",
                 id="batch_size-0"),
    pytest.param(lambda: mini.MiniConfig(warmup=-1), ValueError, r"warmup must be an int >= 0.*e\.g\. 100",
                 id="warmup-negative"),
    pytest.param(lambda: mini.MiniConfig(n_images=0, batch_size=1), ValueError, r"n_images must be an int >= 1.*e\.g\.",
                 id="n_images-0"),
    pytest.param(lambda: mini.MiniConfig(n_images=4, batch_size=8), ValueError,
                 r"n_images >= batch_size .*raise n_images or lower batch_size", id="n_images-below-batch_size"),
    pytest.param(lambda: mini.MiniConfig(ema_decay=1.0), ValueError, r"ema_decay must be a number in \[0, 1\).*0\.995",
                 id="ema_decay-1"),
    pytest.param(lambda: mini.MiniConfig(seed=1.5), TypeError, r"seed must be an int, got 1\.5 .*e\.g\. 0",
                 id="seed-float"),
    pytest.param(lambda: mini.MiniConfig(pooled_text="yes"), TypeError, r"pooled_text must be True or False.*yes/no",
                 id="pooled_text-string"),
    pytest.param(lambda: mini.MiniConfig(snr_gamma=float("nan")), ValueError, r"snr_gamma must be a number >= 0.*5\.0",
                 id="snr_gamma-nan"),
    pytest.param(lambda: mini.MiniConfig(snr_gamma=-1.0), ValueError, r"snr_gamma must be a number >= 0 \(0 turns",
                 id="snr_gamma-negative"),                                                      # clear before
    pytest.param(lambda: mini.MiniConfig(steps=4, low_res_steps=5), ValueError,
                 r"low_res_steps must be an int from 0 \(off\) to steps \(4\).*raise steps", id="low_res_steps-above-steps"),
    pytest.param(lambda: mini.MiniConfig(init_from="last run"), ValueError, r"init_from must be .*'<run key>@<step>'.*e\.g\.",
                 id="init_from-not-a-run"),                                                     # clear before
    # train_mini, export_run: refused before the world is rendered or a folder made
    pytest.param(lambda: mini.train_mini(dict(steps=3)), TypeError, r"cfg must be a MiniConfig, got dict", id="cfg-dict"),
    pytest.param(lambda: mini.train_mini(mini.MiniConfig(**TINY), device="gpu"), ValueError,
                 r"unknown device 'gpu'; use 'auto', 'cpu'", id="train-device-unknown"),
    pytest.param(lambda: mini.train_mini(mini.MiniConfig(**TINY), stop_after=-1), ValueError,
                 r"stop_after must be None or an int >= 0", id="train-stop_after-negative"),
    pytest.param(lambda: mini.train_mini(mini.MiniConfig(**TINY), cuda_graph=True, device="cpu"), ValueError,
                 r"cuda_graph=True needs a CUDA device.*cuda_graph=None", id="train-cuda_graph-on-cpu"),  # clear before
    pytest.param(lambda: mini.train_mini(mini.MiniConfig(**TINY), out=mini.shipped_model_dir()), ValueError,
                 r"is the shipped model; it is replaced only when asked by name: pass overwrite_shipped=True",
                 id="train-out-is-the-shipped-model"),
    pytest.param(lambda: mini.export_run(mini.MiniConfig(**TINY), out=mini.shipped_model_dir()), ValueError,
                 r"is the shipped model.*overwrite_shipped=True", id="export_run-out-is-the-shipped-model"),
    pytest.param(lambda: mini.train_mini(mini.MiniConfig(**TINY), out="elsewhere", overwrite_shipped=True), ValueError,
                 r"overwrite_shipped=True writes the shipped model .*out='elsewhere'.*pass one of them",
                 id="train-overwrite_shipped-and-out"),
    pytest.param(lambda: mini.export_target(None, overwrite_shipped="yes"), TypeError,
                 r"overwrite_shipped must be True or False", id="export-overwrite_shipped-string"),
    pytest.param(lambda: mini.export_target(3), TypeError, r"out must be a folder path .*got int", id="export-out-int"),
    pytest.param(lambda: mini.PromptEncoder.load("no/such/folder"), FileNotFoundError,
                 r"no prompt encoder in no/such/folder \(config\.json missing\); delete .* export the model again",
                 id="prompt-encoder-missing"),
    # the world and its prompts
    pytest.param(lambda: world.render_world(0, 0), ValueError, r"n must be positive", id="render-n-0"),  # clear before
    pytest.param(lambda: world.render_world(2, 0.5), TypeError, r"seed must be an int", id="render-seed-float"),
    pytest.param(lambda: world.render_world(2, 0, digits=2.5), ValueError, r"digits must be whole numbers 0\.\.9",
                 id="render-digits-fraction"),
    pytest.param(lambda: world.render_world(2, 0, digits=[1, 2, 3]), ValueError, r"digits has 3 entries for n=2 .*give one",
                 id="render-digits-count"),                                                     # clear before
    pytest.param(lambda: world.render_world(2, 0, styles="oil painting"), ValueError,
                 r"unknown style\(s\) \['oil painting'\]; the world has \['photo'", id="render-style-unknown"),
    pytest.param(lambda: world.prompt(3, 5), ValueError, r"style must be a name in \['photo'.*index 0\.\.2",
                 id="prompt-style-index"),
    pytest.param(lambda: world.prompt(True), ValueError, r"digit must be an int 0\.\.9 or None, got True",
                 id="prompt-digit-bool"),
    pytest.param(lambda: world.tokenize("a photo of a cat"), ValueError, r"does not know the word\(s\) \['cat'\].*Try e\.g\.",
                 id="prompt-unknown-word"),                                                     # clear before
    # the world judge
    pytest.param(lambda: world_judge.get_world_judge(n_train=4), ValueError, r"n_train >= 8", id="judge-n_train-4"),
    pytest.param(lambda: world_judge.get_world_judge(device="gpu"), ValueError, r"unknown device 'gpu'; use 'auto', 'cpu'",
                 id="judge-device-unknown"),
]


@pytest.mark.parametrize("call, error, words", CASES)
def test_bad_input_is_refused_clearly(call, error, words):
    with pytest.raises(error, match=words):
        call()


CLI_CASES = [
    pytest.param(mini.main, ["train", "--p-uncond", "1.5"], r"--p-uncond: p_uncond must be a number in \[0, 1\].*e\.g\. 0\.1",
                 id="mini-p-uncond-1.5"),
    pytest.param(mini.main, ["train", "--save-every", "0"], r"--save-every: save_every must be an int >= 1.*e\.g\. 500",
                 id="mini-save-every-0"),
    pytest.param(mini.main, ["train", "--pooled-text", "maybe"], r"--pooled-text: pooled_text must be yes or no",
                 id="mini-pooled-text-maybe"),
    pytest.param(mini.main, ["train", "--lr", "-1"], r"--lr: lr must be a finite number > 0.*e\.g\. 2e-3", id="mini-lr-negative"),
    pytest.param(mini.main, ["train", "--lr", "nan"], r"--lr: lr must be a finite number > 0 .*got nan", id="mini-lr-nan"),
    pytest.param(mini.main, ["train", "--steps", "0"], r"--steps: steps must be an int >= 1.*e\.g\. 200", id="mini-steps-0"),
    pytest.param(mini.main, ["train", "--steps", "1e3"], r"--steps: steps must be an int >= 1.*'1e3'", id="mini-steps-1e3"),
    pytest.param(mini.main, ["train", "--warmup", "-2"], r"--warmup: warmup must be an int >= 0", id="mini-warmup-negative"),
    pytest.param(mini.main, ["train", "--ema-decay", "1"], r"--ema-decay: ema_decay must be a number in \[0, 1\)",
                 id="mini-ema-decay-1"),
    pytest.param(mini.main, ["train", "--batch-size", "8", "--n-images", "4"], r"need n_images >= batch_size.*lower batch_size",
                 id="mini-n-images-below-batch"),
    pytest.param(mini.main, ["train", "--out", "x", "--overwrite-shipped"], r"--overwrite-shipped writes .*mini-if; leave out --out",
                 id="mini-out-and-overwrite-shipped"),
    pytest.param(mini.main, ["train", "--out", "data/models/mini-if"], r"is the shipped model.*--overwrite-shipped",
                 id="mini-out-is-the-shipped-model"),
    pytest.param(mini.main, ["train", "--device", "gpu"], r"--device: unknown device 'gpu'.*--device auto, cpu, cuda",
                 id="mini-device-unknown"),
    pytest.param(evaluate.main, ["--sections", "bogus"],
                 r"--sections: unknown section\(s\) bogus; the sections are 1\.4, 1\.5, .*1\.9", id="evaluate-sections-bogus"),
    pytest.param(evaluate.main, ["--sections", ","], r"--sections: no section in ','; the sections are 1\.4",
                 id="evaluate-sections-empty"),
    pytest.param(evaluate.main, ["--n", "0"], r"--n: must be an int >= 2 \(samples per experiment\), got 0", id="evaluate-n-0"),
    pytest.param(evaluate.main, ["--n", "many"], r"--n: must be an int >= 2 .*got 'many'", id="evaluate-n-word"),
    pytest.param(evaluate.main, ["--out", "no/such/folder/figures.json"], r"--out: the folder of .* does not exist; create it",
                 id="evaluate-out-folder-missing"),
    pytest.param(world_judge.main, ["--epochs", "0"], r"--epochs: must be an int >= 1", id="judge-epochs-0"),
    pytest.param(world_judge.main, ["--n-train", "4"], r"--n-train: must be an int >= 8 \(training renders\)",
                 id="judge-n-train-4"),
    pytest.param(world_judge.main, ["--device", "tpu"], r"--device: unknown device 'tpu'", id="judge-device-unknown"),
]


@pytest.mark.parametrize("main, argv, words", CLI_CASES)
def test_bad_command_line_is_refused_before_any_work(main, argv, words, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert re.search(words, err), err


def test_a_missing_gpu_is_named_with_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for main, argv in ((world_judge.main, ["--device", "cuda"]), (mini.main, ["train", "--device", "cuda"]),
                       (evaluate.main, ["--device", "cuda:0"])):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert re.search(r"--device: 'cuda(:0)?' asks for a CUDA GPU and there is none here; use --device cpu or "
                         r"--device auto", capsys.readouterr().err)
    with pytest.raises(ValueError, match=r"no CUDA GPU; use device='auto' or 'cpu'"):
        world_judge.get_world_judge(device="cuda")
    with pytest.raises(ValueError, match=r"no CUDA GPU; use device='auto' or 'cpu'"):
        mini.train_mini(mini.MiniConfig(**TINY), device="cuda")


def test_the_checks_come_before_the_heavy_imports():
    """`evaluate --n 0` and `mini train --steps 0` stop before diffusers is imported (they took 16-20 s)."""
    code = ("import sys\nfrom diffnb import evaluate\nfrom diffnb.mini import model as mini\n"
            "for main, argv in ((evaluate.main, ['--n', '0']), (mini.main, ['train', '--steps', '0']),"
            " (evaluate.main, ['--sections', 'bogus'])):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        print(e.code)\n"
            "print('diffusers' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=project_root())
    assert run.stdout.split() == ["2", "2", "2", "False"], run.stderr
    assert "--n: must be an int >= 2" in run.stderr and "--steps: steps must be an int >= 1" in run.stderr


def test_the_command_line_reads_yes_no_and_exports_beside_the_run_unless_asked(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DIFFNB_BUILD", str(tmp_path / "build"))
    calls = []
    monkeypatch.setattr(mini, "train_mini", lambda cfg, **kw: calls.append((cfg, kw)) or {"step": cfg.steps})
    for word, value in (("yes", True), ("No", False), ("1", True), ("false", False)):
        assert mini.main(["train", "--steps", "3", "--pooled-text", word]) == 0
        assert calls[-1][0].pooled_text is value and calls[-1][0].steps == 3
    cfg, kw = calls[-1]
    assert kw["out"] == tmp_path / "build" / "mini" / cfg.key() / "model" and kw["overwrite_shipped"] is False
    assert "stays as it is; --overwrite-shipped replaces it" in capsys.readouterr().out
    assert mini.main(["train"]) == 0 and calls[-1][0] == mini.RECIPE             # the shipped recipe ...
    assert mini.main(["train", "--overwrite-shipped"]) == 0                      # ... and, asked, the shipped folder
    assert calls[-1][1]["out"] == mini.shipped_model_dir() and calls[-1][1]["overwrite_shipped"] is True


def test_the_command_line_refuses_a_users_folder_and_replaces_its_own_export(monkeypatch, capsys, tmp_path, one_thread):
    monkeypatch.setenv("DIFFNB_BUILD", str(tmp_path / "build"))
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "keep.txt").write_text("mine")
    argv = ["train", "--steps", "2", "--batch-size", "2", "--n-images", "4", "--warmup", "1", "--save-every", "2",
            "--device", "cpu", "--out"]
    with pytest.raises(SystemExit) as stopped:
        mini.main(argv + [str(mine)])
    assert stopped.value.code == 2 and not (tmp_path / "build" / "mini").exists()      # nothing trained
    assert re.search(r"holds files that are not a mini export \(keep\.txt, notes/\).*Choose another out",
                     capsys.readouterr().err)
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt", "notes"]
    for _ in range(2):                               # a new folder, then the same folder: an earlier export
        assert mini.main(argv + [str(tmp_path / "model")]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"the model will be exported to {tmp_path / 'model'}\n"), out
        assert json.loads(out[out.index("\n{") + 1:])["out"] == str(tmp_path / "model"), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "mine", "model"]


# --------------------------------------------------------------------------- the exporter

@pytest.fixture(scope="module")
def models():
    return mini.new_models(0)


def _export(models, out, **kw):
    unet, enc = models
    return mini.export(unet, enc, out, mini.MiniConfig(**TINY), [(1.0, 0.5)] * 2, **kw)


def _tree(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_the_exporter_refuses_a_users_folder_and_deletes_nothing_it_did_not_write(models, tmp_path):
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "keep.txt").write_text("mine")
    (mine / "notes" / "n.md").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files that are not a mini export \(keep\.txt, notes/, notes/n\.md\)"
                                              r".*Choose another out \(--out\), or move those files away"):
        _export(models, mine)
    assert _tree(mine) == ["keep.txt", "notes", "notes/n.md"]
    # DIR.tmp and DIR.old are the user's too: an export to DIR leaves them as they are
    for name in ("model.tmp", "model.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text("mine")
    out = _export(models, tmp_path / "model")
    assert _tree(out) == sorted(list(mini.EXPORT_FILES) + ["unet", "scheduler", "prompt_encoder"])
    assert all((tmp_path / name / "keep.txt").read_text() == "mine" for name in ("model.tmp", "model.old"))
    # an export with a file of the user's inside is not an export any more
    (out / "unet" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"unet/notes\.txt"):
        _export(models, out)
    assert (out / "unet" / "notes.txt").read_text() == "mine"
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(FileExistsError, match=r"exists and is not a folder; choose a new folder"):
        _export(models, tmp_path / "a-file")


def test_the_exporter_replaces_an_earlier_export_and_fills_an_empty_folder(models, tmp_path):
    out = _export(models, tmp_path / "model")
    first = (out / "training.json").read_text()
    unet, enc = models
    mini.export(unet, enc, out, mini.MiniConfig(**TINY), [(2.0, 0.5)] * 3)            # the atomic replace
    assert json.loads((out / "training.json").read_text())["steps_trained"] == 3 and first != (out / "training.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]                   # no work folder left
    (tmp_path / "empty").mkdir()
    _export(models, tmp_path / "empty")
    assert _tree(tmp_path / "empty") == _tree(out)
    assert (tmp_path / "empty" / "unet" / "config.json").is_file()


def test_a_killed_exports_work_folder_is_cleaned_and_nothing_else(models, tmp_path):
    dead = tmp_path / ".model.mini-export-999999999"              # no such process
    (dead / "unet").mkdir(parents=True)
    (dead / "unet" / "config.json").write_text("{}")
    odd = tmp_path / ".model.mini-export-999999998.old"
    odd.mkdir()
    (odd / "keep.txt").write_text("mine")
    with pytest.warns(RuntimeWarning, match="holds files an export does not write; it is left"):
        _export(models, tmp_path / "model")
    assert not dead.exists() and (odd / "keep.txt").read_text() == "mine"


def test_the_shipped_model_is_written_only_when_asked_by_name(models, tmp_path, monkeypatch):
    shipped = tmp_path / "data" / "models" / "mini-if"
    monkeypatch.setattr(mini, "shipped_model_dir", lambda: shipped)
    monkeypatch.setenv("DIFFNB_BUILD", str(tmp_path / "build"))
    out = _export(models, None)                                        # no out: under build/, beside the run
    assert out == tmp_path / "build" / "mini" / mini.MiniConfig(**TINY).key() / "model" and not shipped.exists()
    with pytest.raises(ValueError, match="overwrite_shipped=True"):
        _export(models, shipped)
    assert _export(models, None, overwrite_shipped=True) == shipped and (shipped / "model_index.json").is_file()


def test_a_run_without_out_exports_beside_its_checkpoint(tmp_path, one_thread):
    summary = mini.train_mini(mini.MiniConfig(**TINY), run_dir=tmp_path / "run", progress=False)
    assert summary["out"] == str(tmp_path / "run" / "model") and (tmp_path / "run" / "model" / "unet").is_dir()
    # the shipped data/models/mini-if is untouched: conftest's session fixture fails the run otherwise


def test_a_diverging_training_stops_before_it_writes_a_checkpoint(tmp_path, one_thread):
    cfg = mini.MiniConfig(steps=3, batch_size=2, n_images=4, warmup=1, save_every=3, lr=1e30)   # legal, far too large
    with pytest.raises(RuntimeError, match=r"mini training diverged: the loss is not finite from step \d.*no checkpoint "
                                           r"was written.*lower lr \(now 1e\+30\)"):
        mini.train_mini(cfg, out=tmp_path / "model", run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "state.pt").exists() and not (tmp_path / "model").exists()


def test_damaged_model_files_are_named_with_the_fix(models, tmp_path, monkeypatch):
    _, enc = models
    enc.save(tmp_path / "model" / "prompt_encoder")
    weights = tmp_path / "model" / "prompt_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])                     # truncated
    with pytest.raises(RuntimeError, match=r"prompt_encoder/model\.safetensors is not a readable safetensors file .*"
                                           r"damaged: delete .*model and export the model again"):
        mini.PromptEncoder.load(tmp_path / "model" / "prompt_encoder")
    (tmp_path / "model" / "prompt_encoder" / "config.json").write_text("{not json")
    with pytest.raises(RuntimeError, match=r"config .*config\.json is damaged .*export the model again"):
        mini.load_mini_prompts(tmp_path / "model")
    monkeypatch.setenv("DIFFNB_BUILD", str(tmp_path / "build"))
    judge = world_judge.cache_path(seed=0, n_train=8, epochs=1)
    judge.parent.mkdir(parents=True)
    judge.write_bytes(b"garbage" * 20)
    with pytest.raises(RuntimeError, match=r"world judge's weights .* are damaged .*delete it and run "
                                           r"`python -m diffnb\.mini\.judge --seed 0 --n-train 8 --epochs 1`"):
        world_judge.get_world_judge(n_train=8, epochs=1)
