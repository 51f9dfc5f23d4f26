"""The catalogue of bad inputs to Part B and the pack runner: each one refused at the edge, once, by
one clear error that names the argument, what it got and how to fix it.

A new case is one line in ``CASES``.  Cases of ``train`` also check that nothing was done first: the
run folder they point at is never made.  Cases that need files or a command line follow the table.
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import diffnb
from diffnb.b import denoiser, flow
from diffnb import part_b as nbk, pack, profiles
from diffnb.core.devices import get_device, make_generator, seed_everything
from diffnb.b.judge import DigitClassifier, Judge
from diffnb.b.train import TrainConfig, load_history, load_model, train
from diffnb.b.unet import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet

NAN, INF = float("nan"), float("inf")
D = 4                                                     # the narrowest UNet: cases stay fast

_TMP = Path(tempfile.mkdtemp(prefix="diffnb-bad-inputs-"))
_RUN_DIR = _TMP / "run"                                   # train's cases must never make it
_A_FILE = _TMP / "a-file"
_A_FILE.write_text("not a folder")


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    shutil.rmtree(_TMP, ignore_errors=True)


def _x(n=2, **kw):
    return torch.rand(n, 1, 28, 28, **kw)


def _nan_x():
    x = _x()
    x[0, 0, 3, 3] = NAN
    return x


_UNCOND = UnconditionalUNet(1, D).eval()
_TIME = TimeConditionalUNet(1, 10, D).eval()
_CLASS = ClassConditionalUNet(1, 10, D).eval()
_C = torch.tensor([1, 2])


def _cfg(**kw):
    base = dict(name="bad", objective="class_fm", num_hiddens=D, batch_size=16, epochs=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _images(n=32):
    return torch.rand(n, 1, 28, 28)


def _train(images=None, labels=None, config=None, **kw):
    images = _images() if images is None else images
    kw.setdefault("run_dir", _RUN_DIR)
    return train(config or _cfg(), images, labels, device=kw.pop("device", "cpu"), progress=False, **kw)


def _with(t, index, value):
    t = t.clone()
    t.view(-1)[index] = value
    return t


_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")

CASES = [
    # ---- the UNets: values checked outside training mode, dtypes always
    pytest.param(lambda: _TIME(_x(), torch.tensor([0.5, NAN])), ValueError, r"t must lie in \[0, 1\].*pass t in \[0, 1\]", id="time-unet-nan-t"),
    pytest.param(lambda: _TIME(_x(), torch.tensor([0.5, 1.5])), ValueError, r"t must lie in \[0, 1\].*1\.5", id="time-unet-t-above-1"),
    pytest.param(lambda: _TIME(_x(), -0.25), ValueError, r"t must lie in \[0, 1\].*-0\.25", id="time-unet-t-negative"),
    pytest.param(lambda: _CLASS(_x(), _C, torch.tensor([NAN, 0.5])), ValueError, r"t must lie in \[0, 1\]", id="class-unet-nan-t"),
    pytest.param(lambda: _CLASS(_x(), _C, torch.rand(2), torch.tensor([1.0, 0.5])), ValueError, r"mask must hold only 0 .* or 1 .*0\.5.*pass a 0/1 mask", id="class-unet-mask-half"),
    pytest.param(lambda: _CLASS(_x(), _C, torch.rand(2), torch.tensor([2.0, 0.0])), ValueError, r"mask must hold only 0 .*2\.0.*0/1 mask", id="class-unet-mask-two"),
    pytest.param(lambda: _UNCOND(_nan_x()), ValueError, r"x holds 1 NaN or inf pixel.*pass finite images", id="uncond-unet-nan-pixels"),
    pytest.param(lambda: _TIME(_nan_x(), torch.rand(2)), ValueError, r"x holds 1 NaN or inf.*pass finite", id="time-unet-nan-pixels"),
    pytest.param(lambda: _CLASS(_with(_x(), 5, INF), _C, torch.rand(2)), ValueError, r"x holds 1 NaN or inf.*pass finite", id="class-unet-inf-pixels"),
    pytest.param(lambda: _UNCOND(_x(dtype=torch.float64)), TypeError, r"x has dtype torch\.float64.*pass x\.to\(torch\.float32\) \(x\.float\(\)", id="uncond-unet-float64"),
    pytest.param(lambda: _TIME((_x() * 255).to(torch.uint8), torch.rand(2)), TypeError, r"x has dtype torch\.uint8 .*pass x\.float\(\) / 255", id="time-unet-uint8"),
    pytest.param(lambda: ClassConditionalUNet(1, 10, D).train()(_x(dtype=torch.float64), _C, torch.rand(2)), TypeError, r"x has dtype torch\.float64.*x\.float\(\)", id="class-unet-float64-in-training"),
    pytest.param(lambda: _CLASS(_x(), torch.tensor([1.0, 2.0]), torch.rand(2)), TypeError, r"class labels must be integers", id="class-unet-float-labels"),
    pytest.param(lambda: _UNCOND(torch.rand(2, 1, 32, 32)), ValueError, r"spatial size 32x32.*resize", id="uncond-unet-32x32"),
    pytest.param(lambda: _TIME(_x(), torch.rand(3)), ValueError, r"3 time values for a batch of 2", id="time-unet-t-count"),
    # ---- the objectives and samplers (flow.py)
    pytest.param(lambda: denoiser.add_noise(_x(), NAN), ValueError, r"sigma must be a finite number, got nan; pass a noise level", id="add-noise-nan-sigma"),
    pytest.param(lambda: denoiser.add_noise(_x(), -0.5), ValueError, r"sigma must be >= 0, got -0\.5; pass a noise level", id="add-noise-negative-sigma"),
    pytest.param(lambda: denoiser.add_noise(_x(), "0.5"), TypeError, r"sigma must be a number, got the string '0\.5'; pass a noise level", id="add-noise-string-sigma"),
    pytest.param(lambda: denoiser.add_noise((_x() * 255).to(torch.uint8), 0.5), TypeError, r"x must be a float image.*x\.float\(\) / 255", id="add-noise-uint8"),
    pytest.param(lambda: denoiser.denoiser_loss(_UNCOND, _x(), INF), ValueError, r"sigma must be a finite number, got inf", id="denoiser-loss-inf-sigma"),
    pytest.param(lambda: flow.class_fm_sample(_CLASS, _C, num_ts=1, guidance_scale=NAN), ValueError, r"guidance_scale must be a finite number, got nan; pass a number such as 5\.0", id="cfg-scale-nan"),
    pytest.param(lambda: flow.class_fm_sample(_CLASS, _C, num_ts=1, guidance_scale=INF), ValueError, r"guidance_scale must be a finite number, got inf; pass a number", id="cfg-scale-inf"),
    pytest.param(lambda: flow.class_fm_sample(_CLASS, _C, num_ts=1, guidance_scale=None), TypeError, r"guidance_scale must be a number, got None.*pass a number such as 5\.0", id="cfg-scale-none"),
    pytest.param(lambda: flow.class_fm_sample(_CLASS, _C, num_ts=1, guidance_scale="five"), TypeError, r"guidance_scale must be a number, got the string 'five'; pass a number", id="cfg-scale-string"),
    pytest.param(lambda: flow.class_fm_sample(_CLASS, torch.tensor([1, 10]), num_ts=1), ValueError, r"class labels must lie in \[0, 9\]", id="cfg-sample-label-10"),
    pytest.param(lambda: flow.class_fm_sample(_CLASS, torch.tensor([1.0, 2.0]), num_ts=1), TypeError, r"c \(class labels\) must be integers.*c\.long\(\)", id="cfg-sample-float-labels"),
    pytest.param(lambda: flow.time_fm_sample(_TIME, num_ts=0), ValueError, r"num_ts must be a positive integer.*num_ts=50", id="time-sample-num-ts-0"),
    pytest.param(lambda: flow.time_fm_sample(_TIME, num_ts=2, seed=1.5), TypeError, r"seed must be an int, got 1\.5; pass e\.g\. seed=0", id="time-sample-seed-float"),
    pytest.param(lambda: flow.time_fm_sample(_TIME, 28, num_ts=2), ValueError, r"img_wh must be \(width, height\)", id="time-sample-img-wh"),
    pytest.param(lambda: flow.class_fm_forward(_CLASS, _x(), _C, p_uncond=NAN), ValueError, r"p_uncond must be a finite number.*probability", id="class-fm-forward-nan-p-uncond"),
    pytest.param(lambda: flow.class_fm_forward(_CLASS, _x(), _C, p_uncond=1.5), ValueError, r"p_uncond must be in \[0, 1\], got 1\.5", id="class-fm-forward-p-uncond-1.5"),
    # ---- TrainConfig: every field, checked when the config is made
    pytest.param(lambda: _cfg(lr="0.01"), TypeError, r"lr must be a number, got the string '0\.01'; pass a positive learning rate", id="config-lr-string"),
    pytest.param(lambda: _cfg(lr=NAN), ValueError, r"lr must be a finite number, got nan; pass a positive learning rate", id="config-lr-nan"),
    pytest.param(lambda: _cfg(lr=INF), ValueError, r"lr must be a finite number, got inf", id="config-lr-inf"),
    pytest.param(lambda: _cfg(lr=-1.0), ValueError, r"lr must be positive, got -1\.0; pass a learning rate", id="config-lr-negative"),
    pytest.param(lambda: _cfg(seed=1.5), TypeError, r"seed must be an int, got 1\.5 \(float\); pass e\.g\. seed=0", id="config-seed-float"),
    pytest.param(lambda: _cfg(seed="0"), TypeError, r"seed must be an int, got '0'.*seed=0", id="config-seed-string"),
    pytest.param(lambda: _cfg(sigma=NAN), ValueError, r"sigma must be a finite number, got nan; pass a noise level", id="config-sigma-nan"),
    pytest.param(lambda: _cfg(sigma=-0.1), ValueError, r"sigma must be >= 0, got -0\.1; pass a noise level", id="config-sigma-negative"),
    pytest.param(lambda: _cfg(p_uncond=1.5), ValueError, r"p_uncond must be in \[0, 1\], got 1\.5; it is the probability", id="config-p-uncond-1.5"),
    pytest.param(lambda: _cfg(p_uncond=NAN), ValueError, r"p_uncond must be a finite number, got nan", id="config-p-uncond-nan"),
    pytest.param(lambda: _cfg(p_uncond="0.1"), TypeError, r"p_uncond must be a number, got the string", id="config-p-uncond-string"),
    pytest.param(lambda: _cfg(batch_size="64"), TypeError, r"batch_size must be a positive integer, got '64'.*batch_size=64", id="config-batch-size-string"),
    pytest.param(lambda: _cfg(epochs=2.0), TypeError, r"epochs must be a positive integer, got 2\.0.*epochs=10", id="config-epochs-float"),
    pytest.param(lambda: _cfg(num_hiddens=0), ValueError, r"num_hiddens must be a positive integer, got 0.*num_hiddens=64", id="config-num-hiddens-0"),
    pytest.param(lambda: _cfg(train_limit=100.0), TypeError, r"train_limit must be a positive integer.*train_limit=2048", id="config-train-limit-float"),
    pytest.param(lambda: _cfg(train_limit=8), ValueError, r"train_limit=8 is smaller than one batch.*lower batch_size", id="config-train-limit-small"),
    pytest.param(lambda: _cfg(lr_decay="yes"), TypeError, r"lr_decay must be True or False, got 'yes'", id="config-lr-decay-string"),
    pytest.param(lambda: _cfg(name="a/b"), ValueError, r"name must be a non-empty run name .*no slashes", id="config-name-slash"),
    pytest.param(lambda: _cfg(objective="diffusion"), ValueError, r"unknown objective 'diffusion'; choose one of", id="config-objective-unknown"),
    pytest.param(lambda: _cfg(data="cifar"), ValueError, r"data must be one of 'mnist', 'mnist-5k', 'synthetic' here, got 'cifar'", id="config-data-cifar"),
    # ---- train: the images, labels and run_dir, before the run folder is made
    pytest.param(lambda: _train(_images().double()), TypeError, r"images have dtype torch\.float64; .*pass images\.float\(\)", id="train-float64-images"),
    pytest.param(lambda: _train((_images() * 255).to(torch.uint8)), TypeError, r"images have dtype torch\.uint8 .*pass images\.float\(\) / 255", id="train-uint8-images"),
    pytest.param(lambda: _train(_with(_images(), 7, NAN)), ValueError, r"images hold 1 NaN or inf pixel values; train needs finite images", id="train-nan-images"),
    pytest.param(lambda: _train(_images() * 255), ValueError, r"images must lie in \[0, 1\], got values from .* 0-255 .*pass images / 255", id="train-images-0-255"),
    pytest.param(lambda: _train(_images() * 2 - 1), ValueError, r"images must lie in \[0, 1\].*rescale them to \[0, 1\]", id="train-images-minus-1-to-1"),
    pytest.param(lambda: _train(torch.rand(32, 28, 28)), ValueError, r"images must be \(N, 1, 28, 28\).*unsqueeze\(1\)", id="train-images-no-channel"),
    pytest.param(lambda: _train(labels=torch.rand(32)), TypeError, r"labels must be integers 0-9, got dtype torch\.float32; pass labels\.long\(\)", id="train-float-labels"),
    pytest.param(lambda: _train(labels=torch.full((32,), 10)), ValueError, r"training labels must be digits 0-9, got values from 10 to 10", id="train-label-10"),
    pytest.param(lambda: _train(labels=torch.zeros(31, dtype=torch.long)), ValueError, r"labels of shape \(31,\) for 32 training images.*one label per image", id="train-label-count"),
    pytest.param(lambda: _train(_images(8)), ValueError, r"8 training images is less than one batch of 16", id="train-fewer-than-a-batch"),
    pytest.param(lambda: train({"lr": 1e-2}, _images(), device="cpu", run_dir=_RUN_DIR), TypeError, r"config must be a TrainConfig .*part_b_config", id="train-config-dict"),
    pytest.param(lambda: _train(run_dir=_A_FILE), ValueError, r"run_dir must be a folder, but .*a-file is a file; pass another run_dir", id="train-run-dir-is-a-file"),
    pytest.param(lambda: _train(run_dir=_A_FILE / "sub"), ValueError, r"run_dir must be a folder, but .* lies under .*a-file, which is a file", id="train-run-dir-under-a-file"),
    pytest.param(lambda: _train(device="cpu", cuda_graph=True), ValueError, r"cuda_graph=True needs a CUDA device", id="train-cuda-graph-on-cpu"),
    pytest.param(lambda: _train(device="gpu"), ValueError, r"unknown device 'gpu'; use 'auto', 'cpu'", id="train-device-typo"),
    pytest.param(lambda: load_model(_cfg(), run_dir=_A_FILE), ValueError, r"run_dir must be a folder, but .* is a file", id="load-model-run-dir-is-a-file"),
    pytest.param(lambda: load_history(_cfg(), run_dir=_A_FILE), ValueError, r"run_dir must be a folder, but .* is a file", id="load-history-run-dir-is-a-file"),
    pytest.param(lambda: load_model(_cfg(), "1", run_dir=_RUN_DIR), TypeError, r"epoch must be an int in 1\.\.1 or None", id="load-model-epoch-string"),
    pytest.param(lambda: load_model(profiles.part_b_config("time_fm"), 3, run_dir=_RUN_DIR), FileNotFoundError, r"run notebooks/B2\.2_train_time_conditioned\.ipynb first", id="load-model-not-trained"),
    # ---- profiles: every overridable notebook parameter, Part A's and Part B's
    pytest.param(lambda: profiles.part_a_settings("quick", guidance_scale="seven"), TypeError, r"guidance_scale must be a finite number .*got the string 'seven'; pass e\.g\. guidance_scale=7\.0", id="part-a-guidance-seven"),
    pytest.param(lambda: profiles.part_a_settings("quick", guidance_scale=NAN), ValueError, r"guidance_scale must be a finite number .*got nan; pass e\.g\.", id="part-a-guidance-nan"),
    pytest.param(lambda: profiles.part_a_settings("quick", guidance_scale=INF), ValueError, r"guidance_scale must be a finite number .*got inf", id="part-a-guidance-inf"),
    pytest.param(lambda: profiles.part_a_settings("quick", i_starts=5), TypeError, r"i_starts must be a non-empty list .*got 5 \(int\); pass e\.g\. i_starts=\[1, 3", id="part-a-i-starts-int"),
    pytest.param(lambda: profiles.part_a_settings("quick", seed=1.5), TypeError, r"seed must be an int, got 1\.5 \(float\); pass e\.g\. seed=0", id="part-a-seed-float"),
    pytest.param(lambda: profiles.part_a_settings("quick", stride=0), ValueError, r"stride must be a positive int .*got 0; pass e\.g\. stride=30", id="part-a-stride-0"),
    pytest.param(lambda: profiles.part_a_settings("quick", prompts={"pairs": "a cat"}), TypeError, r"prompts\['pairs'\] must be a non-empty list like", id="part-a-prompts-pairs-string"),
    pytest.param(lambda: profiles.part_a_settings("quick", model="big"), ValueError, r"model must be one of \['deepfloyd', 'mini', 'tiny'\], got 'big'", id="part-a-model-unknown"),
    pytest.param(lambda: profiles.part_a_settings("quick", steps=3), ValueError, r"unknown Part A setting\(s\) \['steps'\]; known:", id="part-a-unknown-setting"),
    pytest.param(lambda: profiles.part_b_sampling("quick", guidance_scale="seven"), TypeError, r"guidance_scale must be a finite number .*got the string 'seven'; pass e\.g\.", id="part-b-sampling-guidance-seven"),
    pytest.param(lambda: profiles.part_b_sampling("quick", guidance_scale=NAN), ValueError, r"guidance_scale must be a finite number .*got nan", id="part-b-sampling-guidance-nan"),
    pytest.param(lambda: profiles.part_b_sampling("quick", num_ts=2.5), TypeError, r"num_ts must be a positive int .*got 2\.5.*num_ts=50", id="part-b-sampling-num-ts-float"),
    pytest.param(lambda: profiles.part_b_sampling("quick", steps=3), ValueError, r"unknown sampling setting\(s\) \['steps'\]", id="part-b-sampling-unknown"),
    pytest.param(lambda: profiles.SampleSettings(num_ts=50, guidance_scale=None, seed=0), TypeError, r"guidance_scale must be a finite number .*got None.*guidance_scale=7\.0$", id="sample-settings-guidance-none"),
    pytest.param(lambda: profiles.part_b_config("class_fm", "quick", lr="0.01"), TypeError, r"lr must be a positive number, got the string '0\.01'; pass e\.g\. lr=1e-3", id="part-b-config-lr-string"),
    pytest.param(lambda: profiles.part_b_config("class_fm", "quick", epochs=2.5), TypeError, r"epochs must be a positive int, got 2\.5.*epochs=10", id="part-b-config-epochs-float"),
    pytest.param(lambda: profiles.part_b_config("class_fm", "quick", seed=1.5), TypeError, r"seed must be an int, got 1\.5.*seed=0", id="part-b-config-seed-float"),
    pytest.param(lambda: profiles.part_b_config("class_fm", "quick", data="cifar"), ValueError, r"data must be one of \['auto', 'mnist', 'mnist-5k', 'synthetic'\], got 'cifar'", id="part-b-config-data-cifar"),
    pytest.param(lambda: profiles.part_b_config("class_fm", "quick", learning_rate=1.0), ValueError, r"unknown setting\(s\) \['learning_rate'\]", id="part-b-config-unknown-setting"),
    pytest.param(lambda: profiles.part_b_config("class_fm", "fast"), ValueError, r"unknown profile 'fast'; use one of", id="part-b-config-unknown-profile"),
    pytest.param(lambda: profiles.check_notebook_parameters({"pairs": 3}), TypeError, r"pairs must be a non-empty list of \(prompt, prompt\) pairs, got 3 \(int\); pass e\.g\. pairs=\[", id="nb-param-pairs-int"),
    pytest.param(lambda: profiles.check_notebook_parameters({"pairs": "a cat, a dog"}), TypeError, r"pairs must be a non-empty list .*got the string 'a cat, a dog'; pass e\.g\.", id="nb-param-pairs-string"),
    pytest.param(lambda: profiles.check_notebook_parameters({"pairs": [["a cat"]]}), TypeError, r"pairs must be a non-empty list of \(prompt, prompt\) pairs", id="nb-param-pairs-one-prompt"),
    pytest.param(lambda: profiles.check_notebook_parameters({"prompts": "a rocket ship"}), TypeError, r"prompts must be a non-empty list of prompt strings, got the string 'a rocket ship'; pass e\.g\.", id="nb-param-prompts-string"),
    pytest.param(lambda: profiles.check_notebook_parameters({"prompts": []}), ValueError, r"prompts must be a non-empty list of prompt strings, got \[\]", id="nb-param-prompts-empty"),
    pytest.param(lambda: profiles.check_notebook_parameters({"image_paths": "data/images/cat.jpg"}), TypeError, r"image_paths must be a non-empty list of image file paths, got the string", id="nb-param-image-paths-string"),
    pytest.param(lambda: profiles.check_notebook_parameters({"noise_levels": 500}), TypeError, r"noise_levels must be a non-empty list of timesteps.*pass e\.g\. noise_levels=\[250, 500, 750\]", id="nb-param-noise-levels-int"),
    pytest.param(lambda: profiles.check_notebook_parameters({"noise_levels": [250, 1000]}), ValueError, r"noise_levels must be .*ints in \[0, 999\], got \[250, 1000\]", id="nb-param-noise-levels-1000"),
    pytest.param(lambda: profiles.check_notebook_parameters({"i_starts": "1, 3"}), TypeError, r"i_starts must be a non-empty list of indices", id="nb-param-i-starts-string"),
    pytest.param(lambda: profiles.check_notebook_parameters({"kernel_size": 4}), ValueError, r"kernel_size must be a positive odd int, got 4; pass e\.g\. kernel_size=5", id="nb-param-kernel-size-even"),
    pytest.param(lambda: profiles.check_notebook_parameters({"num_samples": 0}), ValueError, r"num_samples must be a positive int, got 0", id="nb-param-num-samples-0"),
    pytest.param(lambda: profiles.check_notebook_parameters({"blur_sigma": "2"}), TypeError, r"blur_sigma must be a positive number .*got the string '2'", id="nb-param-blur-sigma-string"),
    pytest.param(lambda: profiles.check_notebook_parameters({"guidance_scale": NAN}), ValueError, r"guidance_scale must be a finite number .*got nan", id="nb-param-guidance-nan"),
    pytest.param(lambda: profiles.check_notebook_parameters({"lr": 0.0}), ValueError, r"lr must be a positive number, got 0\.0; pass e\.g\. lr=1e-3", id="nb-param-lr-0"),
    pytest.param(lambda: profiles.check_notebook_parameters({"profile": "fast"}), ValueError, r"profile must be one of \['quick', 'seed'\], got 'fast'", id="nb-param-profile-fast"),
    pytest.param(lambda: nbk.setup("quick", "cpu", "auto", None), TypeError, r"seed must be an int, got None.*pass e\.g\. seed=0$", id="setup-seed-none"),
    pytest.param(lambda: nbk.setup("quick", "cpu", "auto", True), TypeError, r"seed must be an int, got True", id="setup-seed-bool"),
    pytest.param(lambda: nbk.setup("quick", 0, "auto", 0), TypeError, r"device must be a device name such as 'auto'", id="setup-device-int"),
    # ---- devices
    pytest.param(lambda: get_device("cuda"), ValueError, r"has no CUDA GPU; use device='auto' or 'cpu'", id="device-cuda-without-gpu", marks=_NO_CUDA),
    pytest.param(lambda: get_device("cuda:1x"), ValueError, r"unknown device 'cuda:1x'; use 'auto', 'cpu', 'cuda'", id="device-typo"),
    pytest.param(lambda: get_device(3), TypeError, r"device must be a string such as 'auto'", id="device-int"),
    pytest.param(lambda: make_generator(1.5), TypeError, r"seed must be an int, got 1\.5; pass e\.g\. make_generator\(0\)", id="make-generator-seed-float"),
    pytest.param(lambda: seed_everything("0"), TypeError, r"seed must be an int, got '0'", id="seed-everything-string"),
    # ---- the digits (data.py)
    pytest.param(lambda: diffnb.load_digits("synthetic", root=_A_FILE), ValueError, r"root must be a folder, but .*a-file is a file; pass another root", id="load-digits-root-is-a-file"),
    pytest.param(lambda: diffnb.make_synthetic_mnist(_A_FILE / "x", n_train=8, n_test=8), ValueError, r"root must be a folder, but .* lies under .*a-file, which is a file", id="make-synthetic-root-under-a-file"),
    pytest.param(lambda: diffnb.load_digits("cifar"), ValueError, r"unknown digit source 'cifar'; valid values are 'mnist', 'mnist-5k', 'synthetic'", id="load-digits-unknown-source"),
    pytest.param(lambda: diffnb.load_digits("synthetic", limit=0), ValueError, r"limit must be a positive int or None, got 0", id="load-digits-limit-0"),
    pytest.param(lambda: diffnb.render_digits(10, seed=1.5), TypeError, r"seed must be an int, got 1\.5", id="render-digits-seed-float"),
    # ---- the judge
    pytest.param(lambda: diffnb.b.judge.get_judge("cifar"), ValueError, r"data must be one of \['mnist', 'mnist-5k', 'synthetic'\], got 'cifar'", id="get-judge-unknown-data"),
    pytest.param(lambda: diffnb.b.judge.get_judge("synthetic", epochs=0), ValueError, r"epochs must be a positive int, got 0", id="get-judge-epochs-0"),
    pytest.param(lambda: Judge(DigitClassifier(), 0.0).predict(_nan_x()), ValueError, r"images hold 1 NaN or inf pixel values.*check the model", id="judge-nan-images"),
    pytest.param(lambda: Judge(DigitClassifier(), 0.0).predict((_x() * 255).to(torch.uint8)), TypeError, r"images have dtype torch\.uint8.*images\.float\(\) / 255", id="judge-uint8-images"),
    pytest.param(lambda: Judge(DigitClassifier(), 0.0).predict(torch.rand(2, 3, 28, 28)), ValueError, r"images must be digits \(N, 1, 28, 28\), got \(2, 3, 28, 28\)", id="judge-rgb-images"),
]


@pytest.mark.parametrize("call, error, words", CASES)
def test_bad_input_is_refused_clearly(call, error, words):
    with pytest.raises(error, match=words):
        call()
    assert not _RUN_DIR.exists(), "a refused call made the run folder: the check came after the work"


# ------------------------------------------------------------------------------ legal but unusual
def test_a_negative_guidance_scale_is_legal():
    x = flow.class_fm_sample(_CLASS, _C, num_ts=2, guidance_scale=-1.0)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
    assert profiles.part_b_sampling("quick", guidance_scale=-2.0).guidance_scale == -2.0
    assert profiles.part_a_settings("quick", guidance_scale=-2.0)["guidance_scale"] == -2.0
    assert "negative" in flow.class_fm_sample.__doc__ and "legal" in flow.class_fm_sample.__doc__


def test_value_checks_stay_out_of_training_mode():
    """In training mode (the captured CUDA-graph step) nothing reads tensor values on the host."""
    unet = ClassConditionalUNet(1, 10, D).train()
    out = unet(_x(), _C, torch.tensor([1.5, NAN]), torch.tensor([0.5, 2.0]))   # checked only in eval
    assert out.shape == (2, 1, 28, 28)
    unet.eval()
    unet(_x(), _C, torch.tensor([0.0, 1.0]), torch.tensor([True, False]))          # bool masks and t = 0, 1 are fine


# ------------------------------------------------------------------------------ runs on disk
def _toy_run(tmp_path, **kw):
    cfg = _cfg(lr=1e-2, **kw)
    labels = torch.arange(32) % 10
    train(cfg, _images(), labels, device="cpu", run_dir=tmp_path / "run", progress=False)
    return cfg, tmp_path / "run"


def test_load_model_and_history_refuse_a_run_of_other_settings(tmp_path):
    cfg, run = _toy_run(tmp_path)
    other = _cfg(lr=1e-3)
    with pytest.raises(RuntimeError, match=r"other settings \(lr: 0\.01 in the run, 0\.001 here\); pass the config"):
        load_model(other, run_dir=run)
    with pytest.raises(RuntimeError, match=r"other settings \(lr: 0\.01 in the run, 0\.001 here\)"):
        load_history(other, run_dir=run)
    with pytest.raises(RuntimeError, match=r"other settings \(lr: 0\.01 in the run, 0\.001 here\)"):
        train(other, _images(), device="cpu", run_dir=run, progress=False)
    with pytest.raises(RuntimeError, match=r"num_hiddens: 4 in the run, 8 here"):   # another width
        load_model(_cfg(lr=1e-2, num_hiddens=8), run_dir=run)
    assert load_history(cfg, run_dir=run)[1] == [2]                                  # the right config loads
    assert not load_model(cfg, run_dir=run).training


def test_weights_of_another_width_without_stored_settings_give_a_clear_error(tmp_path):
    """An older checkpoint (no settings in its metadata, no state.pt): the shapes give it away."""
    from safetensors.torch import load_file, save_file
    _, run = _toy_run(tmp_path)
    path = run / "epoch_001.safetensors"
    save_file(load_file(str(path)), str(path))               # drop the metadata
    (run / "state.pt").unlink()
    (run / "checksums.json").unlink()                         # and older than the checksums
    with pytest.raises(ValueError, match=r"do not fit a ClassConditionalUNet with num_hiddens=8 \(they were "
                                         r"trained with num_hiddens=4\); pass the config"):
        load_model(_cfg(lr=1e-2, num_hiddens=8), run_dir=run)


def test_damaged_run_files_name_the_file_and_the_fix(tmp_path):
    cfg, run = _toy_run(tmp_path)
    (run / "epoch_001.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(RuntimeError, match=r"epoch_001\.safetensors is damaged.*delete the folder .* and train the run again"):
        load_model(cfg, run_dir=run)
    (run / "state.pt").write_bytes(b"not a pickle")
    with pytest.raises(RuntimeError, match=r"state\.pt is damaged.*delete the folder .* and train the run again"):
        load_history(cfg, run_dir=run)


@pytest.mark.parametrize("bad_epoch", [1, 2])
def test_a_diverging_loss_stops_before_that_epochs_checkpoint(tmp_path, monkeypatch, bad_epoch):
    import importlib
    tr = importlib.import_module("diffnb.b.train")
    real, steps = tr.OBJECTIVES["class_fm"], {"n": 0}

    def diverging(model, x, y, g, c):
        steps["n"] += 1
        loss = real[0](model, x, y, g, c)
        return loss * NAN if steps["n"] > 2 * (bad_epoch - 1) else loss   # 2 steps per epoch

    monkeypatch.setitem(tr.OBJECTIVES, "class_fm", (diverging, real[1]))
    cfg = _cfg(epochs=2)
    with pytest.raises(RuntimeError, match=rf"diverged: the loss became nan at step 1 of 2 in epoch {bad_epoch}, "
                                           r"so no checkpoint was written .*lower lr"):
        train(cfg, _images(), device="cpu", run_dir=tmp_path, progress=False)
    assert (tmp_path / f"epoch_{bad_epoch:03d}.safetensors").exists() is False
    assert (tmp_path / "epoch_001.safetensors").exists() is (bad_epoch == 2)


def test_damaged_synthetic_digits_name_the_folder_and_the_fix(tmp_path):
    root = diffnb.make_synthetic_mnist(tmp_path / "digits", n_train=16, n_test=16)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])                    # truncated
    with pytest.raises(RuntimeError, match=r"synthetic digits in .*raw are damaged .*delete the folder .* rendered again"):
        diffnb.load_digits("synthetic", root=root)


# ------------------------------------------------------------------------------ the pack runner
def _tiny_books(tmp_path, monkeypatch):
    import nbformat
    books = tmp_path / "notebooks"
    books.mkdir()
    for name in ("A1_first.ipynb", "B1_second.ipynb"):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('profile = "quick"\nnum_hiddens = None')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), params, nbformat.v4.new_code_cell("raise SystemExit('ran')")]
        nbformat.write(nb, str(books / name))
    monkeypatch.setattr(pack, "notebook_dir", lambda: books)
    return tmp_path


def test_pack_fails_a_notebook_given_a_parameter_it_does_not_have(tmp_path, monkeypatch, capsys):
    out = _tiny_books(tmp_path, monkeypatch) / "out"
    ran = []
    monkeypatch.setattr(pack, "run_notebook", lambda *a, **k: ran.append(a) or 0.0)
    assert pack.main(["--out", str(out), "-p", "num_hidden", "8"]) == 1
    assert ran == []                                                   # not executed at all
    text = capsys.readouterr().out
    assert "A1_first.ipynb has no parameter 'num_hidden'; its parameters are ['profile', 'num_hiddens']" in text
    assert "a parameter of no notebook here (a misspelling?)" in text
    assert "0 of 2 notebooks ran" in text
    index = (out / "index.html").read_text()
    assert index.count("FAILED") == 2 and "its parameters are" in index


def test_pack_refuses_a_value_of_the_wrong_kind_before_running(tmp_path, monkeypatch, capsys):
    out = _tiny_books(tmp_path, monkeypatch) / "out"
    with pytest.raises(SystemExit) as exit_:
        pack.main(["--out", str(out), "-p", "pairs", "3"])
    assert exit_.value.code == 2
    assert "pairs must be a non-empty list of (prompt, prompt) pairs, got 3 (int)" in capsys.readouterr().err
    assert not out.exists()                                            # nothing was made or run
    with pytest.raises(SystemExit):
        pack.main(["--out", str(out), "-p", "guidance_scale", "seven"])
    assert "guidance_scale must be a finite number" in capsys.readouterr().err


def test_pack_command_line_exits_non_zero_for_a_misspelt_parameter(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "diffnb.pack", "--only", "B1.1", "--out", str(tmp_path),
                           "-p", "num_hidden", "8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "B1.1_unet.ipynb has no parameter 'num_hidden'; its parameters are" in proc.stdout
    assert "'num_hiddens'" in proc.stdout and not (tmp_path / "notebooks" / "B1.1_unet.ipynb").exists()


def test_every_notebook_parameter_has_a_check_and_its_default_passes_it():
    for path in pack.list_notebooks():
        for name, value in pack.parameter_values(json.loads(path.read_text(encoding="utf-8"))).items():
            assert name in profiles.NOTEBOOK_PARAMETERS, f"{path.name}: parameter {name!r} has no check in profiles"
            profiles.check_parameter(name, value)
