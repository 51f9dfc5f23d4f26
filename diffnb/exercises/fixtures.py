"""The inputs every check draws on, made once per process: the offline `mini` model on the CPU, its prompt
embeddings, clean renders of its digit world, and small Part B UNets.  Nothing here downloads."""
from __future__ import annotations

import functools

import torch


@functools.cache
def stage1():
    """The pack's `mini` IF-compatible bundle on the CPU (float32)."""
    from diffnb.a.models import load_stage1
    return load_stage1("mini", device="cpu")


@functools.cache
def _prompts():
    from diffnb.mini.model import load_mini_prompts
    return load_mini_prompts()


def embed(prompt: str) -> torch.Tensor:
    """The `mini` embedding ``(1, L, D)`` of ``prompt`` (``""`` is the unconditional one)."""
    return _prompts().get(prompt, device="cpu", dtype=torch.float32)


@functools.cache
def _world(n: int, seed: int) -> torch.Tensor:
    from diffnb.mini import world
    return world.render_world(n, seed, size=stage1().unet.config.sample_size).images * 2 - 1


def clean_images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` clean renders of the digit world ``(n, 3, 32, 32)`` in [-1, 1] (a fresh copy each call)."""
    return _world(n, seed).clone()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def timesteps(stride: int = 30) -> list[int]:
    from diffnb.a.denoise import strided_timesteps
    return strided_timesteps(stage1(), start=990, stride=stride)
