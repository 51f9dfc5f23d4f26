"""diffnb: the helper package of a Jupyter course pack on diffusion models and flow matching.

The names the notebooks use are importable from here.  Part B (UNets on digits, flow matching)
is imported eagerly; Part A (DeepFloyd IF) pulls in diffusers, so its names load on first use.
"""
from __future__ import annotations

import importlib

from .data import DigitData, load_digits, make_synthetic_mnist, render_digits
from . import judge
from .devices import get_device, make_generator, seed_everything
from .flow import (add_noise, class_fm_forward, class_fm_sample, denoiser_loss, euler_integrate,
                   pure_noise_loss, time_fm_forward, time_fm_sample)
from .profiles import part_b_config, part_b_sampling
from .train import TrainConfig, load_history, load_model, train
from .unet import (ClassConditionalUNet, Conv, ConvBlock, DownBlock, DownConv, FCBlock, Flatten,
                   TimeConditionalUNet, UnconditionalUNet, Unflatten, UpBlock, UpConv, count_parameters,
                   trace_shapes)

__version__ = "0.1.0"

# Part A names -> the module that defines them (imported lazily: diffusers is heavy)
_LAZY = {
    "load_stage1": "models", "check_bundle": "models",
    "PromptEmbeddings": "prompts", "load_embeddings": "prompts", "encode_prompts": "prompts",
    "forward": "ddpm", "strided_timesteps": "ddpm", "one_step_denoise": "ddpm", "add_variance": "ddpm",
    "iterative_denoise": "ddpm", "iterative_denoise_cfg": "ddpm", "sdedit": "ddpm", "inpaint": "ddpm",
    "blur_denoise": "ddpm", "estimate_noise": "ddpm", "sample_cfg": "ddpm", "pure_noise": "ddpm",
    "make_flip_illusion": "guidance", "make_anagram": "guidance", "make_hybrids": "guidance",
    "FlipView": "guidance", "IdentityView": "guidance", "NegateView": "guidance",
    "load_image": "images", "to_display": "images", "load_mask": "images", "rectangle_mask": "images",
    "ellipse_mask": "images",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diffnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
