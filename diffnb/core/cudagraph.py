"""Training steps as CUDA graphs, for the small models of the pack.

A training step of a small UNet launches hundreds of tiny kernels; on a GPU, launching them one by one
from Python takes longer than running them.  ``CudaGraphStep`` records a step function once and
replays it: each replay is one launch.  What the step reads (batch indices, noise, ...) lives in static
tensors that each call overwrites; what it returns is static too (read it before the next call).

Used by ``diffnb.b.train`` (Part B) and ``diffnb.mini.model`` (the Part A model).  The optimizer must run
with ``capturable=True`` and tensor learning rates (``make_capturable``); checkpoints store the
ordinary form (``portable_state``), so a run resumes on any device, graphed or not.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch


class CudaGraphStep:
    """``step(*inputs)`` runs ``fn(*static_inputs)``: eagerly (on a side stream) for the first
    ``warmup`` calls, then recorded as a CUDA graph and replayed.

    ``like``: one tensor per input, on the GPU, with the shapes and dtypes every call passes.
    ``generator``: a CUDA ``torch.Generator`` that ``fn`` draws from; it is registered with the graph,
    so each replay draws fresh numbers.  If recording fails (an older PyTorch, an operation that
    cannot be recorded), it warns once and goes on eagerly: slower, same results.
    """

    def __init__(self, fn: Callable, *like: torch.Tensor, generator: torch.Generator | None = None,
                 warmup: int = 3):
        if not like or any(not isinstance(x, torch.Tensor) or x.device.type != "cuda" for x in like):
            raise ValueError("CudaGraphStep needs one CUDA tensor per input of the step function")
        self.fn, self.generator, self.device = fn, generator, like[0].device
        self.static = [torch.empty_like(x) for x in like]
        self.graph, self.out, self.eager_left = None, None, warmup

    def _eager(self):
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = self.fn(*self.static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out

    def __call__(self, *inputs: torch.Tensor):
        for s, x in zip(self.static, inputs, strict=True):
            s.copy_(x, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
            return self.out
        if self.eager_left > 0:
            self.eager_left -= 1
            return self._eager()
        try:
            graph = torch.cuda.CUDAGraph()
            if self.generator is not None:
                graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph):
                self.out = self.fn(*self.static)
        except Exception as err:
            warnings.warn(f"recording the training step as a CUDA graph failed ({type(err).__name__}: {err}); "
                          "training goes on without it (slower, same results)", RuntimeWarning, stacklevel=2)
            self.eager_left = float("inf")
            return self._eager()
        self.graph = graph
        graph.replay()                          # recording does not run the step: run it now
        return self.out


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> list[torch.Tensor]:
    """Switch ``optimizer`` (Adam and kin) to ``capturable=True`` with one learning-rate tensor per
    parameter group on ``device``; returns those tensors (``set_lrs`` writes them)."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
    for state in optimizer.state.values():      # a resumed run: step counts move to the GPU
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].to(device, torch.float32)
    return [group["lr"] for group in optimizer.param_groups]


def graph_step(fn: Callable, *like: torch.Tensor, generator: torch.Generator | None = None,
               enabled: bool = True) -> Callable:
    """The training step both trainers run: ``fn`` recorded as a ``CudaGraphStep`` when ``enabled``
    (``like``, ``generator``: as there), else ``fn`` itself."""
    return CudaGraphStep(fn, *like, generator=generator) if enabled else fn


def set_lrs(optimizer: torch.optim.Optimizer, lrs: list[torch.Tensor] | None, values=None) -> None:
    """Write learning rates into the tensors a recorded step reads: ``values`` (one float per group),
    or what a scheduler has just put in the groups.  ``lrs=None`` (an eager step): plain floats."""
    for i, group in enumerate(optimizer.param_groups):
        value = float(group["lr"] if values is None else values[i])
        if lrs is None:
            group["lr"] = value
        else:
            lrs[i].fill_(value)
            group["lr"] = lrs[i]


def portable_state(optimizer_state: dict, scheduler_state: dict | None = None) -> tuple[dict, dict | None]:
    """Optimizer and scheduler state without the graph's run-time settings (tensor learning rates,
    ``capturable``), so that a checkpoint resumes on any device, graphed or not."""
    groups = [dict(g, lr=float(g["lr"]), capturable=False) for g in optimizer_state["param_groups"]]
    optimizer_state = dict(optimizer_state, param_groups=groups)
    if scheduler_state is not None:
        scheduler_state = {k: ([float(x) for x in v] if k in ("_last_lr", "base_lrs") else v)
                           for k, v in scheduler_state.items()}
    return optimizer_state, scheduler_state
