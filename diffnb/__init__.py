"""diffnb: the helper package of a Jupyter course pack on diffusion models and flow matching.

The names the notebooks use are importable from here.  The package is laid out by audience:
``a/`` is Part A's course (DeepFloyd IF), ``b/`` Part B's (UNets and flow matching on digits),
``mini/`` the pack's own small IF-compatible model, ``core/`` the plumbing both share; ``part_a`` and
``part_b`` set up a notebook, ``profiles`` holds the settings, ``evaluate`` measures Part A on
``mini``, ``pack`` runs the notebooks.

Part B's names are imported eagerly; Part A's pull in diffusers, so they load on first use.
"""
from __future__ import annotations

import importlib

from .b.digits import DigitData, load_digits, make_synthetic_mnist, render_digits
from .core.devices import get_device, make_generator, seed_everything
from .b.denoiser import add_noise, denoiser_loss, pure_noise_loss
from .b.flow import class_fm_forward, class_fm_sample, euler_integrate, time_fm_forward, time_fm_sample
from .profiles import part_b_config, part_b_sampling
from .b.train import TrainConfig, load_history, load_model, train
from .b.unet import (ClassConditionalUNet, Conv, ConvBlock, DownBlock, DownConv, FCBlock, Flatten,
                     TimeConditionalUNet, UnconditionalUNet, Unflatten, UpBlock, UpConv, count_parameters,
                     trace_shapes)

__version__ = "0.1.0"

# Part A names -> the module that defines them (imported lazily: diffusers is heavy)
_LAZY = {
    "load_stage1": "a.models", "check_bundle": "a.models",
    "PromptEmbeddings": "a.prompts", "load_embeddings": "a.prompts", "encode_prompts": "a.prompts",
    "forward": "a.denoise", "strided_timesteps": "a.denoise", "one_step_denoise": "a.denoise", "add_variance": "a.denoise",
    "iterative_denoise": "a.denoise", "iterative_denoise_cfg": "a.denoise", "sdedit": "a.denoise", "inpaint": "a.denoise",
    "blur_denoise": "a.denoise", "estimate_noise": "a.denoise", "sample_cfg": "a.denoise", "pure_noise": "a.denoise",
    "make_flip_illusion": "a.views", "make_anagram": "a.views", "make_hybrids": "a.views",
    "FlipView": "a.views", "IdentityView": "a.views", "NegateView": "a.views",
    "Rotate90CWView": "a.views", "Rotate90CCWView": "a.views", "SkewView": "a.views", "JigsawView": "a.views",
    "PatchPermuteView": "a.views", "PixelPermuteView": "a.views", "InnerCircleView": "a.views",
    "SquareHingeView": "a.views", "RotateBilinearFailureView": "a.views", "BlurFailureView": "a.views",
    "ScaleFailureView": "a.views", "orthogonality": "a.views",
    "make_factorized": "a.decompositions", "LowHigh": "a.decompositions", "ThreeBands": "a.decompositions",
    "GrayColor": "a.decompositions", "MotionBlur": "a.decompositions",
    "load_image": "a.images", "to_display": "a.images", "load_mask": "a.images", "rectangle_mask": "a.images",
    "ellipse_mask": "a.images",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diffnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
