"""The DeepFloyd stand-in (``diffnb.a.standin``): the ``seed`` profile's loading path, rehearsed offline.

The stand-in is tiny random weights laid out as the hub cache of ``DeepFloyd/IF-I-XL-v1.0``; with the
hub offline, ``load_stage1("deepfloyd")`` and ``encode_prompts`` load it through the same calls as the
real weights, and every Part A notebook runs under ``-p profile seed`` on a CPU.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffnb.a import standin
from diffnb.a.models import load_stage1, tiny_unet_config
from diffnb.a.prompts import MAX_LENGTH, encode_prompts

ROOT = Path(__file__).resolve().parents[1]
REPO = "DeepFloyd/IF-I-XL-v1.0"
PART_A = sorted(p.name for p in (ROOT / "notebooks").glob("A*.ipynb"))
LONG = " ".join(["a high quality oil painting of a snowy mountain village"] * 12)   # > 77 tokens


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-cache")
    t0 = time.perf_counter()
    snap = standin.build_standin(cache)
    size = sum(f.stat().st_size for f in snap.rglob("*") if f.is_file())
    print(f"\nstand-in built in {time.perf_counter() - t0:.1f} s, {size / 1e6:.1f} MB")
    return cache


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants as hf_constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


def test_load_stage1_deepfloyd_resolves_to_the_standin(cache, offline):
    pipe = load_stage1("deepfloyd", device="cpu", cache_dir=cache)
    cfg = tiny_unet_config()
    for key in ("sample_size", "in_channels", "out_channels", "encoder_hid_dim", "cross_attention_dim"):
        assert pipe.unet.config[key] == cfg[key]
    assert pipe.unet.dtype == torch.float32
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = pipe.unet(x, 500, encoder_hidden_states=torch.randn(1, MAX_LENGTH, 4096)).sample
    assert out.shape == (1, 6, 32, 32) and torch.isfinite(out).all()


def test_the_snapshot_holds_the_fp16_variant(cache):
    snap = next((cache / "models--DeepFloyd--IF-I-XL-v1.0" / "snapshots").iterdir())
    assert (snap / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (snap / "text_encoder" / "model.fp16.safetensors").is_file()
    assert (cache / "models--DeepFloyd--IF-I-XL-v1.0" / "refs" / "main").read_text() == snap.name


def test_encode_prompts_matches_the_pipelines_encode_prompt(cache, offline, tmp_path):
    from diffusers import IFPipeline
    from transformers import AutoTokenizer

    pipe = IFPipeline.from_pretrained(REPO, cache_dir=str(cache), safety_checker=None, feature_extractor=None,
                                      watermarker=None, requires_safety_checker=False)
    tok = AutoTokenizer.from_pretrained(REPO, subfolder="tokenizer", cache_dir=str(cache), local_files_only=True)
    prompts = ["", "A Rocket Ship", LONG]
    assert len(tok(LONG.lower()).input_ids) > MAX_LENGTH
    ours = encode_prompts(prompts, hub_cache_dir=cache, cache_dir=tmp_path / "emb", device="cpu")
    worst = 0.0
    for p in prompts:
        with torch.no_grad():
            ref = pipe.encode_prompt(p, do_classifier_free_guidance=False, clean_caption=False)[0]
        assert ref.shape == ours[p].shape == (1, MAX_LENGTH, 4096)
        worst = max(worst, float((ref.float() - ours[p]).abs().max()))
    print(f"\nT5 parity: max |encode_prompts - IFPipeline.encode_prompt| = {worst:.3g}")
    assert worst <= 1e-6

    # the comparison is sensitive: no attention mask, or the un-lowercased text, moves the embedding far more
    enc = pipe.text_encoder
    text = "A Rocket Ship"
    with torch.no_grad():
        ref = pipe.encode_prompt(text, do_classifier_free_guidance=False, clean_caption=False)[0]
        ids = tok(text.lower(), padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
        no_mask = enc(ids)[0]
        raw = tok(text, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
        cased = enc(raw.input_ids, attention_mask=raw.attention_mask)[0]
    d_mask, d_case = float((no_mask - ref).abs().max()), float((cased - ref).abs().max())
    print(f"without the mask: {d_mask:.3g}; un-lowercased: {d_case:.3g}")
    assert d_mask > 1e-3 and d_case > 1e-3


def test_a_real_download_is_never_overwritten(tmp_path):
    repo = tmp_path / "models--DeepFloyd--IF-I-XL-v1.0"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    keep = repo / "snapshots" / ("0" * 40) / "model_index.json"
    keep.write_text("{}")
    with pytest.raises(FileExistsError, match="not a diffnb stand-in"):
        standin.build_standin(tmp_path)
    assert keep.read_text() == "{}"


#: overrides for notebooks too slow on two CPU cores under ``seed`` (none needed so far)
OVERRIDES: dict[str, list[str]] = {}


@pytest.mark.parametrize("name", PART_A)
def test_part_a_notebook_runs_under_seed_on_the_standin(name, cache, tmp_path):
    out = tmp_path / name
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"),
               OMP_NUM_THREADS="1", DIFFNB_BUILD=str(tmp_path / "build"))
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / name), str(out), "-p", "profile", "seed",
           "-p", "device", "cpu", "-k", "python3", *OVERRIDES.get(name, [])]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT / "notebooks", env=env, capture_output=True, text=True, timeout=1500)
    print(f"\n{name}: {time.perf_counter() - t0:.1f} s under seed on the stand-in")
    assert done.returncode == 0, done.stderr[-4000:]


def test_without_the_standin_both_loaders_name_licence_login_and_network(offline, tmp_path):
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    with pytest.raises(RuntimeError) as model_err:
        load_stage1("deepfloyd", device="cpu", cache_dir=empty)
    with pytest.raises(RuntimeError) as t5_err:
        encode_prompts(["a rocket ship"], hub_cache_dir=empty, cache_dir=tmp_path / "emb", device="cpu")
    for msg in (str(model_err.value), str(t5_err.value)):
        for needle in ("https://huggingface.co/DeepFloyd/IF-I-XL-v1.0", "huggingface-cli login", "HF_TOKEN", "network"):
            assert needle in msg
