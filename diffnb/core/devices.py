"""Devices and seeds, passed explicitly: nothing in diffnb calls ``.cuda()`` on its own."""
from __future__ import annotations

import random

import numpy as np
import torch

from diffnb.core.checks import is_int


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to CUDA when available, else Apple ``mps``, else CPU.

    Any other value is passed to ``torch.device`` and checked, so a typo or a missing GPU
    fails here with a message instead of deep inside a forward pass.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but this machine has no CUDA GPU; "
                         "use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} was asked for but this machine has {torch.cuda.device_count()} "
                         f"CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}; use one of those or 'auto'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but Apple's mps backend is not available here; "
                         "use device='auto' or 'cpu'")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch's global RNGs and return a CPU generator with that seed."""
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}; pass e.g. seed_everything(0)")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed`` (random draws happen on the device)."""
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}; pass e.g. make_generator(0)")
    return torch.Generator(device=get_device(device)).manual_seed(int(seed))


def _cores_busy_elsewhere() -> int:
    """Processes running on the CPU right now besides this one (Linux: /proc/loadavg's running count;
    elsewhere the 1-minute load average)."""
    import os

    try:
        running = int(open("/proc/loadavg").read().split()[3].split("/")[0])
        return max(running - 1, 0)
    except (OSError, ValueError, IndexError):
        return round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0


def free_cores() -> int:
    """CPU cores this process may use that no other process is running on now (at least 1)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - _cores_busy_elsewhere())


def choose_threads(device: torch.device, profile: str) -> int:
    """Set torch's CPU thread count for a notebook and return it.

    ``DIFFNB_THREADS`` in the environment wins.  Otherwise a CPU run uses one thread per core that no
    other process is busy on when the notebook starts (``free_cores``): OpenMP threads spin while they
    wait, so a thread on a core another job holds slows every step several times over, while on an
    idle machine every core helps (``benchmarks/bench_explorers.py`` measures both).  GPU runs keep
    torch's default.
    """
    import os

    env = os.environ.get("DIFFNB_THREADS")
    if env is not None:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"DIFFNB_THREADS must be a positive integer, got {env!r}; unset it or set e.g. 2")
        n = int(env)
    elif torch.device(device).type == "cpu":
        n = free_cores()
    else:
        return torch.get_num_threads()
    torch.set_num_threads(n)
    return n
