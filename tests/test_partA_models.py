"""The stage-1 bundle: the tiny model loads offline, is IF-shaped, and bad requests fail clearly."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import diffnb.a.models as models
from diffnb.a.models import IF_SCHEDULER_CONFIG, check_bundle, load_stage1, make_tiny_model, model_dir, tiny_unet_config


@pytest.fixture(scope="module")
def stage1():
    return load_stage1("tiny", device="cpu")


def test_tiny_loads_as_an_if_pipeline_without_t5(stage1):
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    assert isinstance(stage1, IFPipeline)
    assert stage1.text_encoder is None and stage1.tokenizer is None and stage1.safety_checker is None
    assert isinstance(stage1.unet, UNet2DConditionModel) and isinstance(stage1.scheduler, DDPMScheduler)
    cfg = stage1.unet.config
    assert (cfg.in_channels, cfg.out_channels) == (3, 6)
    assert cfg.encoder_hid_dim == 4096 and cfg.encoder_hid_dim_type == "text_proj"
    assert cfg.mid_block_type == "UNetMidBlock2DSimpleCrossAttn"
    assert cfg.resnet_time_scale_shift == "scale_shift"
    assert stage1.unet.dtype == torch.float32
    for key, value in IF_SCHEDULER_CONFIG.items():
        assert stage1.scheduler.config[key] == value, key


def test_tiny_folder_is_small_and_reproducible(tmp_path):
    shipped = model_dir("tiny")
    size = sum(f.stat().st_size for f in shipped.rglob("*") if f.is_file())
    assert size < 2_000_000
    made = make_tiny_model(tmp_path / "tiny-if")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (made / weights).read_bytes() == (shipped / weights).read_bytes()


def test_check_bundle_wants_noise_and_variance_channels():
    from diffusers import DDPMScheduler, UNet2DConditionModel
    unet = UNet2DConditionModel(**tiny_unet_config(out_channels=3))
    bad = SimpleNamespace(unet=unet, scheduler=DDPMScheduler(**IF_SCHEDULER_CONFIG))
    with pytest.raises(ValueError, match=r"outputs 3 channels for 3 input channels.*2 x 3 = 6"):
        check_bundle(bad)
    with pytest.raises(ValueError, match=r"no \.unet"):
        check_bundle(SimpleNamespace(scheduler=bad.scheduler))


def test_check_bundle_wants_learned_range_variance(stage1):
    from diffusers import DDPMScheduler
    sched = DDPMScheduler(**{**IF_SCHEDULER_CONFIG, "variance_type": "fixed_small"})
    with pytest.raises(ValueError, match="learned_range"):
        check_bundle(SimpleNamespace(unet=stage1.unet, scheduler=sched))


def test_check_bundle_wants_the_public_scheduler_state_the_schedule_reads(stage1):
    """check_bundle asks for what diffnb.a.schedule.Schedule reads (alphas_cumprod, init_noise_sigma,
    the config), not for a private diffusers method."""
    s = stage1.scheduler
    bare = SimpleNamespace(alphas_cumprod=s.alphas_cumprod, init_noise_sigma=1.0,
                           config=SimpleNamespace(**IF_SCHEDULER_CONFIG))
    assert not hasattr(bare, "_get_variance")
    check_bundle(SimpleNamespace(unet=stage1.unet, scheduler=bare))
    no_ratio = {k: v for k, v in IF_SCHEDULER_CONFIG.items() if k != "dynamic_thresholding_ratio"}
    with pytest.raises(ValueError, match="dynamic thresholding.*dynamic_thresholding_ratio"):
        check_bundle(SimpleNamespace(unet=stage1.unet, scheduler=SimpleNamespace(
            alphas_cumprod=s.alphas_cumprod, init_noise_sigma=1.0, config=SimpleNamespace(**no_ratio))))
    with pytest.raises(ValueError, match="not a diffusers DDPMScheduler"):
        check_bundle(SimpleNamespace(unet=stage1.unet, scheduler=SimpleNamespace(alphas_cumprod=s.alphas_cumprod,
                                                                                 config=bare.config)))


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 on the CPU.*float32"):
        load_stage1("tiny", device="cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="fp16 on the CPU"):
        load_stage1("deepfloyd", device="cpu", dtype="fp16")


def test_cpu_offload_needs_cuda():
    with pytest.raises(ValueError, match="cpu_offload"):
        load_stage1("tiny", device="cpu", cpu_offload=True)


def test_unknown_model_and_variant():
    with pytest.raises(ValueError, match="unknown model 'big'.*'deepfloyd'.*'tiny'"):
        load_stage1("big", device="cpu")
    with pytest.raises(ValueError, match="unknown DeepFloyd variant 'XXL'"):
        load_stage1("deepfloyd", device="cpu", variant="XXL")


def test_a_missing_mini_model_says_how_to_rebuild_it(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "data_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="'mini' model is missing.*python -m diffnb.mini.model train"):
        load_stage1("mini", device="cpu")


def test_deepfloyd_offline_gives_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError) as info:
        load_stage1("deepfloyd", device="cpu", cache_dir=tmp_path)
    msg = str(info.value)
    for needle in ("https://huggingface.co/DeepFloyd/IF-I-XL-v1.0", "huggingface-cli login", "HF_TOKEN",
                   "network", "model='tiny'"):
        assert needle in msg
