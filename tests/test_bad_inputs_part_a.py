"""Part A's bad inputs, one line each: the error type and the words of its message (issue 19, part A).

Every case is answered at the edge (the public function, before any work) by one exception that names
the argument, what it got and the fix.  A new case is one ``pytest.param`` line in ``CASES``; cases
that need files read them from ``FILES``, made once for the module by the ``files`` fixture.
"""
from __future__ import annotations

import functools
import io
import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from diffnb.a import denoise as ddpm, views as guidance, models
from diffnb import part_a
from diffnb.a.denoise import (blur_denoise, denoise_loop, estimate_noise, forward, inpaint, iterative_denoise,
                         iterative_denoise_cfg, one_step_denoise, pure_noise, sample_cfg, sdedit, strided_timesteps)
from diffnb.a.views import (FlipView, IdentityView, anagram_estimator, hybrid_estimator, make_anagram,
                             make_flip_illusion, make_hybrids)
from diffnb.a.images import load_image, load_mask, rectangle_mask
from diffnb.a.models import load_stage1, model_dir
from diffnb.core.paths import data_dir
from diffnb.a.prompts import _cache_file, encode_prompts, load_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")

NAN, INF = float("nan"), float("inf")
FILES = Path("/nonexistent")                    # set by the ``files`` fixture before any case runs


@functools.lru_cache(maxsize=None)
def tiny():
    return load_stage1("tiny", device="cpu")


@functools.lru_cache(maxsize=None)
def mini():
    return load_stage1("mini", device="cpu")


@functools.lru_cache(maxsize=None)
def _emb():
    return load_embeddings()


def c():
    return _emb().get("a rocket ship")


def u():
    return _emb().get("")


def ts():
    return strided_timesteps(tiny(), 990, 330)   # 990, 660, 330, 0: three steps


def img(size: int = 32, fill: float | None = None, scale: float = 1.0) -> torch.Tensor:
    """A clean image (1, 3, size, size) in [-1, 1] (times ``scale``); ``fill`` puts that value in one pixel."""
    x = (torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1) * scale
    if fill is not None:
        x[0, 0, 3, 4] = fill
    return x


def mini_img(size: int) -> torch.Tensor:
    return torch.zeros(1, 3, size, size)


def mini_e():
    return torch.zeros(1, 8, mini().unet.config.encoder_hid_dim)


def load_folder(model: str, folder: Path):
    """``load_stage1(model)`` reading its weights from ``folder`` (a damaged copy) instead of data/models."""
    real = models.model_dir
    with mock.patch.object(models, "model_dir", lambda m: folder if m == model else real(m)):
        return load_stage1(model, device="cpu")


def setup_quietly(**kwargs):
    """``setup_part_a`` that must refuse before it loads or prints anything."""
    with mock.patch("diffnb.a.models.load_stage1", side_effect=AssertionError("loaded before the check")):
        buf = io.StringIO()
        with mock.patch("sys.stdout", buf):
            try:
                part_a.setup_part_a("quick", **kwargs)
            finally:
                assert buf.getvalue() == "", f"printed before the check: {buf.getvalue()!r}"


CASES = [
    # ---- the CFG scale: NaN, inf, None, a string -> refused with its name, once, at the public function
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), NAN), ValueError,
                 r"scale \(the guidance scale\) must be a finite number, got nan.*such as 7\.0", id="sample_cfg-scale-nan"),
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), INF), ValueError,
                 r"scale .*finite number, got inf.*such as 7\.0", id="sample_cfg-scale-inf"),
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), None), TypeError,
                 r"scale .*must be a number, got None.*such as 7\.0", id="sample_cfg-scale-None"),
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), "seven"), TypeError,
                 r"scale .*must be a number, got 'seven'.*such as 7\.0", id="sample_cfg-scale-str"),
    pytest.param(lambda: iterative_denoise_cfg(pure_noise(tiny()), 0, tiny(), c(), u(), ts(), NAN), ValueError,
                 r"scale .*finite.*such as 7\.0", id="iterative_denoise_cfg-scale-nan"),
    pytest.param(lambda: ddpm.cfg_estimator(tiny(), c(), u(), NAN), ValueError,
                 r"scale .*finite.*such as 7\.0", id="cfg_estimator-scale-nan"),
    pytest.param(lambda: sdedit(img(), [1], tiny(), c(), u(), ts(), INF), ValueError,
                 r"scale .*finite.*such as 7\.0", id="sdedit-scale-inf"),
    pytest.param(lambda: inpaint(img(), rectangle_mask(32, 0, 0, 16, 32), tiny(), c(), u(), ts(), "7"), TypeError,
                 r"scale .*number, got '7'.*such as 7\.0", id="inpaint-scale-str"),
    pytest.param(lambda: make_flip_illusion(tiny(), c(), c(), u(), ts(), NAN), ValueError,
                 r"scale .*finite.*such as 7\.0", id="flip_illusion-scale-nan"),
    pytest.param(lambda: make_anagram(tiny(), [IdentityView()], [c()], u(), ts(), None), TypeError,
                 r"scale .*number, got None.*such as 7\.0", id="anagram-scale-None"),
    pytest.param(lambda: anagram_estimator(tiny(), [IdentityView(), FlipView()], [c(), c()], u(), INF), ValueError,
                 r"scale .*finite.*such as 7\.0", id="anagram_estimator-scale-inf"),
    pytest.param(lambda: make_hybrids(tiny(), c(), c(), u(), ts(), INF), ValueError,
                 r"scale .*finite.*such as 7\.0", id="hybrids-scale-inf"),
    pytest.param(lambda: hybrid_estimator(tiny(), c(), c(), u(), "high"), TypeError,
                 r"scale .*number, got 'high'.*such as 7\.0", id="hybrid_estimator-scale-str"),

    # ---- pixels: NaN/inf wherever an image enters; clean images must be in [-1, 1]
    pytest.param(lambda: sdedit(img(fill=NAN), [1], tiny(), c(), u(), ts()), ValueError,
                 r"im contains NaN values; every pixel must be a finite", id="sdedit-nan-pixel"),
    pytest.param(lambda: sdedit(img(scale=127.5) + 127.5, [1], tiny(), c(), u(), ts()), ValueError,
                 r"im has values up to .*must be in \[-1, 1\].*x / 127\.5 - 1.*load_image", id="sdedit-0-255"),
    pytest.param(lambda: forward(img(fill=INF), 500, tiny()), ValueError,
                 r"im contains inf values.*finite", id="forward-inf-pixel"),
    pytest.param(lambda: forward(img(scale=127.5) + 127.5, 500, tiny()), ValueError,
                 r"im has values up to .*\[-1, 1\].*x / 127\.5 - 1", id="forward-0-255"),
    pytest.param(lambda: forward((img() * 127.5 + 127.5).to(torch.uint8), 500, tiny()), TypeError,
                 r"im has dtype torch\.uint8.*float.*127\.5 - 1", id="forward-uint8"),
    pytest.param(lambda: inpaint(img(fill=NAN), rectangle_mask(32, 0, 0, 16, 32), tiny(), c(), u(), ts()), ValueError,
                 r"original contains NaN values", id="inpaint-nan-pixel"),
    pytest.param(lambda: inpaint(img(scale=127.5) + 127.5, rectangle_mask(32, 0, 0, 16, 32), tiny(), c(), u(), ts()),
                 ValueError, r"original has values up to .*x / 127\.5 - 1", id="inpaint-0-255"),
    pytest.param(lambda: iterative_denoise(img(fill=NAN) * 3, 0, tiny(), c(), ts()), ValueError,
                 r"im_noisy contains NaN values", id="iterative_denoise-nan-pixel"),
    pytest.param(lambda: one_step_denoise(tiny(), img(fill=INF), 500, c()), ValueError,
                 r"im_noisy contains inf values", id="one_step-inf-pixel"),
    pytest.param(lambda: denoise_loop(img(fill=NAN), ts(), 0, tiny(), ddpm.plain_estimator(tiny(), c())), ValueError,
                 r"x contains NaN values", id="denoise_loop-nan-pixel"),
    pytest.param(lambda: blur_denoise(img(fill=NAN)), ValueError, r"im contains NaN", id="blur-nan-pixel"),

    # ---- sizes and counts that failed deep in diffusers
    pytest.param(lambda: sdedit(mini_img(30), [1], mini(), mini_e(), mini_e(), ts()), ValueError,
                 r"im is 30 x 30, but this UNet \(sample_size 32 x 32\).*multiples of 4; resize it to 32 x 32",
                 id="mini-30x30-image"),
    pytest.param(lambda: estimate_noise(mini(), mini_img(34), 500, mini_e()), ValueError,
                 r"im_noisy is 34 x 34.*multiples of 4.*load_image", id="mini-34x34-noisy"),
    pytest.param(lambda: sdedit(img(31), [1], tiny(), c(), u(), ts()), ValueError,
                 r"im is 31 x 31.*multiples of 2; resize it to 32 x 32", id="tiny-31x31-image"),
    pytest.param(lambda: sample_cfg(mini(), mini_e(), mini_e(), ts(), height=30), ValueError,
                 r"height=30 does not fit.*multiple of 4; pass height=None for the model's 32", id="mini-height-30"),
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), width=33), ValueError,
                 r"width=33 .*multiple of 2; pass width=None", id="tiny-width-33"),
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), height="32"), TypeError,
                 r"height must be a positive integer or None", id="height-str"),
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), num_images=0), ValueError,
                 r"num_images must be at least 1, got 0; pass e\.g\. num_images=4", id="num_images-0"),
    pytest.param(lambda: make_flip_illusion(tiny(), c(), c(), u(), ts(), num_images=-1), ValueError,
                 r"num_images must be at least 1, got -1", id="num_images-minus-1"),
    pytest.param(lambda: pure_noise(tiny(), num_images=2.5), TypeError,
                 r"num_images must be a positive integer, got 2\.5", id="num_images-float"),
    pytest.param(lambda: make_hybrids(tiny(), c(), c(), u(), ts(), num_images="4"), TypeError,
                 r"num_images must be a positive integer, got '4'", id="num_images-str"),
    pytest.param(lambda: sample_cfg(None, c(), u(), ts()), TypeError,
                 r"stage1 must be a stage-1 bundle .*got None; load one with diffnb\.a\.models\.load_stage1",
                 id="sample_cfg-stage1-None"),
    pytest.param(lambda: pure_noise(None), TypeError, r"stage1 must be a stage-1 bundle.*load_stage1",
                 id="pure_noise-stage1-None"),
    pytest.param(lambda: make_anagram(None, [IdentityView()], [c()], u(), ts()), TypeError,
                 r"stage1 must be a stage-1 bundle.*load_stage1", id="anagram-stage1-None"),
    pytest.param(lambda: make_hybrids(None, c(), c(), u(), ts()), TypeError,
                 r"stage1 must be a stage-1 bundle.*load_stage1", id="hybrids-stage1-None"),
    pytest.param(lambda: forward(img(), 500, None), TypeError,
                 r"stage1 must be a stage-1 bundle or a diffusers DDPMScheduler, got None.*load_stage1",
                 id="forward-stage1-None"),

    # ---- load_image / load_mask: size, damaged files
    pytest.param(lambda: load_image(data_dir() / "images" / "cat.jpg", "32"), TypeError,
                 r"size must be a positive int or a pair of ints.*got '32'.*sample_size", id="load_image-size-str"),
    pytest.param(lambda: load_image(data_dir() / "images" / "cat.jpg", 32.0), TypeError,
                 r"size must be a positive int.*got 32\.0", id="load_image-size-float"),
    pytest.param(lambda: load_image(data_dir() / "images" / "cat.jpg", (32, "32")), TypeError,
                 r"size must be a positive int or a pair of ints", id="load_image-size-pair-str"),
    pytest.param(lambda: load_image(data_dir() / "images" / "cat.jpg", 0), ValueError,
                 r"size must be positive, got \(0, 0\).*sample_size", id="load_image-size-0"),
    pytest.param(lambda: load_image(FILES / "truncated.png", 32), ValueError,
                 r"image file .*truncated\.png is damaged or truncated.*re-download or re-save", id="truncated-png"),
    pytest.param(lambda: load_image(FILES / "truncated.jpg", 32), ValueError,
                 r"image file .*truncated\.jpg is damaged or truncated.*re-download or re-save", id="truncated-jpeg"),
    pytest.param(lambda: load_image(FILES / "flipped.png", 32), ValueError,
                 r"image file .*flipped\.png is damaged.*re-download or re-save", id="damaged-png"),
    pytest.param(lambda: load_mask(FILES / "truncated.png", 32), ValueError,
                 r"mask file .*truncated\.png is damaged or truncated.*re-download or re-save", id="truncated-mask"),
    pytest.param(lambda: load_mask(FILES / "mask.png", "32"), TypeError,
                 r"size must be a positive int", id="load_mask-size-str"),
    pytest.param(lambda: load_image(FILES / "not-an-image.png", 32), ValueError,
                 r"not-an-image\.png is not an image PIL can read.*re-save this one as PNG or JPEG", id="not-an-image"),
    pytest.param(lambda: load_image(FILES / "missing.png", 32), FileNotFoundError,
                 r"image not found: .*missing\.png.*image_path", id="missing-image"),

    # ---- damaged embeddings and model files
    pytest.param(lambda: load_embeddings(FILES / "truncated.safetensors"), ValueError,
                 r"embeddings file .*truncated\.safetensors is damaged.*re-create it", id="embeddings-truncated"),
    pytest.param(lambda: load_embeddings(FILES / "garbage.safetensors"), ValueError,
                 r"embeddings file .*garbage\.safetensors is damaged.*re-create it", id="embeddings-garbage"),
    pytest.param(lambda: load_embeddings(FILES / "evil.pth"), ValueError,
                 r"evil\.pth is refused: it holds more than tensors.*loads only tensors", id="embeddings-malicious-pth"),
    pytest.param(lambda: load_embeddings(FILES / "truncated.pth"), ValueError,
                 r"truncated\.pth is damaged or not a torch file.*re-create it", id="embeddings-truncated-pth"),
    pytest.param(lambda: encode_prompts(["a dog"], cache_dir=FILES / "t5-cache"), ValueError,
                 r"embeddings file .*t5-cache.*is damaged.*delete it .*run again", id="t5-cache-damaged"),
    pytest.param(lambda: load_folder("tiny", FILES / "tiny-damaged"), RuntimeError,
                 r"model file .*tiny-damaged/unet/diffusion_pytorch_model\.safetensors is damaged.*make-tiny",
                 id="tiny-unet-weights-damaged"),
    pytest.param(lambda: load_folder("mini", FILES / "mini-damaged"), RuntimeError,
                 r"model file .*mini-damaged/unet/diffusion_pytorch_model\.safetensors is damaged.*"
                 r"git checkout -- data/models/mini-if", id="mini-unet-weights-damaged"),
    pytest.param(lambda: load_folder("mini", FILES / "mini-bad-config"), RuntimeError,
                 r"model file .*mini-bad-config/unet/config\.json is damaged.*git checkout", id="mini-unet-config-damaged"),

    # ---- already clear before the issue (kept clear)
    pytest.param(lambda: forward(img(), 1000, tiny()), ValueError, r"t=1000 is out of range.*\[0, 1000\)",
                 id="forward-t-1000"),
    pytest.param(lambda: sdedit(img(), [40], tiny(), c(), u(), ts()), ValueError,
                 r"i_start=40 leaves no step.*must be in \[0, 2\]", id="sdedit-i_start-past-the-end"),
    pytest.param(lambda: sdedit(img(), [], tiny(), c(), u(), ts()), ValueError,
                 r"i_starts is empty; pass one start index", id="sdedit-no-starts"),
    pytest.param(lambda: iterative_denoise(img(), 0, tiny(), c(), [0, 500]), ValueError,
                 r"timesteps must be strictly descending", id="timesteps-ascending"),
    pytest.param(lambda: iterative_denoise(img(), 0, tiny(), c(), None), TypeError,
                 r"timesteps must be a list of integers such as strided_timesteps", id="timesteps-None"),
    pytest.param(lambda: sample_cfg(tiny(), torch.zeros(1, 77, 16), u(), ts()), ValueError,
                 r"cond_embeds has shape \(1, 77, 16\); this UNet expects \(1, L, 4096\)", id="embeds-wrong-width"),
    pytest.param(lambda: sample_cfg(tiny(), torch.full((1, 77, 4096), NAN), u(), ts()), ValueError,
                 r"cond_embeds holds non-finite .*load_embeddings", id="embeds-nan"),
    pytest.param(lambda: sdedit(img(), [1], tiny(), "a rocket ship", u(), ts()), TypeError,
                 r"cond_embeds must be an embedding tensor.*load_embeddings\(\)\.get\(prompt\)", id="embeds-a-string"),
    pytest.param(lambda: sdedit(tiny(), [1], img(), c(), u(), ts()), TypeError,
                 r"stage1 must be a stage-1 bundle .*got a Tensor.*load_stage1", id="sdedit-arguments-swapped"),
    pytest.param(lambda: inpaint(img(), torch.full((32, 32), 0.5), tiny(), c(), u(), ts()), ValueError,
                 r"mask must hold only 0 .* and 1.*\(mask > 0\.5\)\.float\(\)", id="mask-half"),
    pytest.param(lambda: inpaint(img(), torch.full((32, 32), NAN), tiny(), c(), u(), ts()), ValueError,
                 r"mask must hold only 0 .* and 1.*nan", id="mask-nan"),
    pytest.param(lambda: inpaint(img(), torch.ones(1, 32, 16), tiny(), c(), u(), ts()), ValueError,
                 r"mask has shape \(1, 32, 16\); expected \(1, 32, 32\)", id="mask-wrong-shape"),
    pytest.param(lambda: make_hybrids(tiny(), c(), c(), u(), ts(), kernel_size=4), ValueError,
                 r"kernel_size must be a positive odd integer, got 4", id="hybrids-kernel-even"),
    pytest.param(lambda: make_hybrids(tiny(), c(), c(), u(), ts(), sigma=NAN), ValueError,
                 r"sigma .*finite positive number, got nan", id="hybrids-sigma-nan"),
    pytest.param(lambda: make_hybrids(tiny(), c(), c(), u(), ts(), height=16, width=16), ValueError,
                 r"kernel_size=33 is too large for a 16 x 16 image", id="hybrids-kernel-too-large"),
    pytest.param(lambda: blur_denoise(img(), 5, "2"), TypeError, r"sigma .*must be a number, got '2'.*e\.g\. 2\.0", id="blur-sigma-str"),
    pytest.param(lambda: make_anagram(tiny(), [IdentityView(), FlipView()], [c()], u(), ts()), ValueError,
                 r"give one prompt embedding per view: 2 views, 1 prompts", id="anagram-prompts-per-view"),
    pytest.param(lambda: make_anagram(tiny(), FlipView(), [c()], u(), ts()), TypeError,
                 r"views must be a list of views.*\[IdentityView\(\), FlipView\(\)\]", id="anagram-one-view-not-a-list"),
    pytest.param(lambda: sample_cfg(tiny(), c(), u(), ts(), generator=100), TypeError,
                 r"generator must be a torch\.Generator or None, got 100.*manual_seed", id="generator-a-seed"),
    pytest.param(lambda: load_stage1("big", device="cpu"), ValueError,
                 r"unknown model 'big'; choose one of .*'tiny'", id="load_stage1-unknown-model"),
    pytest.param(lambda: load_embeddings(FILES / "none.safetensors"), FileNotFoundError,
                 r"embeddings file not found: .*none\.safetensors.*make-tiny", id="embeddings-missing"),
    pytest.param(lambda: _emb().get("a photo of a cat"), KeyError,
                 r"(?s)no embedding for prompt 'a photo of a cat'.*Pick one of these.*encode_prompts", id="prompt-not-embedded"),

    # ---- setup_part_a: refuses before it loads the model or prints its line
    pytest.param(lambda: setup_quietly(seed=1.5), TypeError, r"seed must be an int, got 1\.5 .*None", id="setup-seed-float"),
    pytest.param(lambda: setup_quietly(profile_typo=1), ValueError, r"unknown Part A setting.*known", id="setup-unknown"),
]


@pytest.fixture(scope="module", autouse=True)
def files(tmp_path_factory):
    """The damaged files the cases read: images, embeddings, T5 cache entries and model folders."""
    global FILES
    FILES = tmp_path_factory.mktemp("bad_inputs_part_a")
    arr = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg")):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        data = buf.getvalue()
        (FILES / f"truncated.{suffix}").write_bytes(data[: len(data) // 2])
        flipped = bytearray(data)
        flipped[200] ^= 0xFF                        # inside the compressed data
        flipped[300] ^= 0xFF
        (FILES / f"flipped.{suffix}").write_bytes(bytes(flipped))
    Image.fromarray(arr[..., 0]).save(FILES / "mask.png")
    (FILES / "not-an-image.png").write_bytes(b"hello, not a picture")

    shipped = (data_dir() / "embeddings" / "tiny-if.safetensors").read_bytes()
    (FILES / "truncated.safetensors").write_bytes(shipped[: len(shipped) // 2])
    (FILES / "garbage.safetensors").write_bytes(b"this is not a safetensors file" * 10)

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())                  # harmless, but code: weights_only must refuse it
    torch.save({"a dog": Evil()}, FILES / "evil.pth")
    torch.save({"a dog": torch.zeros(1, 77, 16)}, FILES / "good.pth")
    (FILES / "truncated.pth").write_bytes((FILES / "good.pth").read_bytes()[:100])

    cached = _cache_file(FILES / "t5-cache", "DeepFloyd/IF-I-XL-v1.0", "a dog")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken!")

    for name, src in (("tiny-damaged", model_dir("tiny")), ("mini-damaged", model_dir("mini")),
                      ("mini-bad-config", model_dir("mini"))):
        shutil.copytree(src, FILES / name)
    for name in ("tiny-damaged", "mini-damaged"):
        w = FILES / name / "unet" / "diffusion_pytorch_model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    (FILES / "mini-bad-config" / "unet" / "config.json").write_text('{"sample_size": 32,')
    yield FILES


@pytest.mark.parametrize("call, error, words", CASES)
def test_bad_input_is_refused_clearly(call, error, words):
    with pytest.raises(error, match=words):
        call()


# --------------------------------------------------------------------------- what must keep working

def test_a_negative_scale_is_legal():
    """gamma < 0 steers away from the prompt: unusual, documented, not refused."""
    out = sample_cfg(tiny(), c(), u(), ts(), -1.0, torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 32, 32) and bool(out.isfinite().all())
    assert "negative" in sample_cfg.__doc__ and "negative" in ddpm.__doc__


def test_scale_as_numpy_or_tensor_number_is_accepted():
    a = sample_cfg(tiny(), c(), u(), ts(), np.float32(3.0), torch.Generator().manual_seed(0))
    b = sample_cfg(tiny(), c(), u(), ts(), torch.tensor(3.0), torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_noisy_images_are_not_range_checked():
    """x_t (pure noise, a noised image) legitimately leaves [-1, 1]; only clean images are range-checked."""
    x = pure_noise(tiny(), torch.Generator().manual_seed(0)) * 3
    assert x.abs().max() > 1.5
    out = iterative_denoise(x, 0, tiny(), c(), ts(), torch.Generator().manual_seed(1))
    assert bool(out.isfinite().all())
    eps, _ = estimate_noise(tiny(), x, 990, c())
    assert eps.shape == x.shape


def test_other_sizes_that_fit_the_unet_still_work():
    out = sample_cfg(tiny(), c(), u(), ts(), generator=torch.Generator().manual_seed(0), height=16, width=24)
    assert out.shape == (1, 3, 16, 24)
    edited = sdedit(img(48), [1], tiny(), c(), u(), ts(), generator=torch.Generator().manual_seed(0))
    assert edited[0].shape == (1, 3, 48, 48)


def test_a_slight_overshoot_of_a_clean_image_is_accepted():
    x = img().clamp(-1, 1) * 1.05                                # bicubic resampling overshoots a little
    assert forward(x, 500, tiny(), torch.Generator().manual_seed(0)).shape == x.shape


def test_refused_before_any_work(monkeypatch):
    """A bad scale or count is refused before noise is drawn (and the scheduler's timesteps are never set)."""
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    ts_before = tiny().scheduler.timesteps.clone()
    calls = []
    monkeypatch.setattr(ddpm, "randn_tensor", lambda *a, **k: calls.append(a))
    for bad in (dict(scale=NAN), dict(num_images=0), dict(height=31)):
        with pytest.raises((ValueError, TypeError)):
            sample_cfg(tiny(), c(), u(), None, generator=g, **bad)
    assert not calls and torch.equal(g.get_state(), state)
    assert torch.equal(tiny().scheduler.timesteps, ts_before)


def test_scale_is_checked_once_not_per_step(monkeypatch):
    """The estimators check the scale when built; the loop's steps run no check."""
    seen = []
    real = ddpm.check_scale
    monkeypatch.setattr(ddpm, "check_scale", lambda s, name="scale": seen.append(s) or real(s, name))
    monkeypatch.setattr(guidance, "check_scale", ddpm.check_scale)
    sample_cfg(tiny(), c(), u(), strided_timesteps(tiny(), 990, 110), 5.0, torch.Generator().manual_seed(0))
    make_flip_illusion(tiny(), c(), c(), u(), ts(), 5.0, torch.Generator().manual_seed(0))
    assert seen == [5.0, 5.0]


def test_setup_part_a_refuses_a_wordy_guidance_scale_before_printing():
    """The type of guidance_scale is checked by diffnb.profiles.part_a_settings (another part of issue 19),
    the first thing setup_part_a calls: nothing is loaded or printed before it."""
    from diffnb.profiles import part_a_settings
    try:
        part_a_settings("quick", guidance_scale="seven")
    except (TypeError, ValueError):
        pass
    else:
        pytest.skip("diffnb.profiles.part_a_settings does not check guidance_scale yet")
    with pytest.raises((TypeError, ValueError), match="guidance_scale"):
        setup_quietly(guidance_scale="seven")
