"""Counting a network's evaluations (NFE): the model wrapped, not arithmetic about the sampler.

``CallCounter(model)`` is the model with every call recorded (``calls``: each call's batch size;
``nfe``: how many calls); every other attribute is the model's, so a sampler uses it unchanged.
``counting_bundle(stage1)`` is a Part A bundle whose UNet is so wrapped (the tests count that the
anagram, hybrid and factorized samplers make one batched UNet call per step; benchmarks count the
passes per step).
"""
from __future__ import annotations

from types import SimpleNamespace


class CallCounter:
    """``model`` with each call's batch size appended to ``calls`` (the first argument's ``shape[0]``)."""

    def __init__(self, model):
        self.model = model
        self.calls: list[int] = []

    def __call__(self, x, *args, **kwargs):
        self.calls.append(int(x.shape[0]))
        return self.model(x, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)

    @property
    def nfe(self) -> int:
        """The number of evaluations so far."""
        return len(self.calls)


def counting_bundle(stage1) -> tuple[SimpleNamespace, CallCounter]:
    """``(bundle, counter)``: ``stage1`` (anything with ``.unet`` and ``.scheduler``) with its UNet counted."""
    counter = CallCounter(stage1.unet)
    return SimpleNamespace(unet=counter, scheduler=stage1.scheduler), counter
