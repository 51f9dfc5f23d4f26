"""The Part B UNet, built from the write-up's blocks.

Shapes are written for a 28x28 input with ``D = num_hiddens`` channels, but nothing is hard-coded:
the bottleneck pools whatever spatial size the second down block leaves (7x7 for 28x28 input)
and the unflatten layer grows it back to that size.  Input height and width must be divisible
by 4 (two stride-2 downsamples).

Conventions (stated once):
  * images are ``(N, C, H, W)``;
  * time ``t`` is a float in [0, 1], given as ``(N,)`` or ``(N, 1)``; flow time t=0 is noise, t=1 is data;
  * classes ``c`` are integer labels ``(N,)`` in ``[0, num_classes)`` and become one-hot vectors inside;
  * ``mask`` is ``(N,)`` of 0/1: 0 zeroes the class vector (the unconditional branch of CFG).
  * images are float tensors of the model's dtype (float32 unless the model was converted), pixels
    in [0, 1] for the digits; a uint8 batch (0-255) or a float64 one is a ``TypeError`` that says
    how to convert it.

Checks: shapes and dtypes are checked on every call (host-side metadata, nothing is read from the
GPU); the VALUES of ``x``, ``t`` and ``mask`` (finite, t in [0, 1], mask 0 or 1) are checked only
outside training mode (``model.eval()``, as the samplers run it), in one reduction and one read, so
that a training step stays free of host reads and can be recorded as a CUDA graph.

Path through the network (D = num_hiddens)::

    x (C, 28, 28) -> ConvBlock(C, D)            -> skip0 (D, 28, 28)
                  -> DownBlock(D, D)            -> skip1 (D, 14, 14)
                  -> DownBlock(D, 2D)           -> skip2 (2D, 7, 7)
                  -> Flatten (AvgPool 7 -> 1)   -> (2D, 1, 1)
                  -> Unflatten (1 -> 7)         -> (2D, 7, 7)   <- modulated by t1 (and c1)
    cat skip2     -> UpBlock(4D, D)             -> up1 (D, 14, 14) <- modulated by t2 (and c2)
    cat skip1     -> UpBlock(2D, D)             -> (D, 28, 28)
    cat skip0     -> ConvBlock(2D, D) -> 1x1 conv -> (C, 28, 28)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv(nn.Module):
    """3x3 convolution that keeps the size: (N, in, H, W) -> (N, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DownConv(nn.Module):
    """Stride-2 3x3 convolution: (N, in, H, W) -> (N, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UpConv(nn.Module):
    """Stride-2 transposed convolution: (N, in, H, W) -> (N, out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Flatten(nn.Module):
    """Average-pool the whole map to 1x1: (N, C, h, w) -> (N, C, 1, 1)  (7 -> 1 for MNIST)."""

    def __init__(self):
        super().__init__()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.adaptive_avg_pool2d(x, 1))


class Unflatten(nn.Module):
    """Grow a 1x1 map back to ``size`` x ``size``: (N, C, 1, 1) -> (N, C, 7, 7) for MNIST."""

    def __init__(self, in_channels: int, size: int = 7):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=size, stride=size, padding=0),
            nn.BatchNorm2d(in_channels),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvBlock(nn.Module):
    """Two ``Conv`` layers: (N, in, H, W) -> (N, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(Conv(in_channels, out_channels), Conv(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DownBlock(nn.Module):
    """``DownConv`` then ``ConvBlock``: (N, in, H, W) -> (N, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(DownConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UpBlock(nn.Module):
    """``UpConv`` then ``ConvBlock``: (N, in, H, W) -> (N, out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(UpConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FCBlock(nn.Module):
    """Linear, GELU, Linear: (N, in) -> (N, out).  Embeds t or a one-hot class."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, out_channels), nn.GELU(), nn.Linear(out_channels, out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _UNetBody(nn.Module):
    """The shared encoder/decoder; ``modulate`` hooks let the subclasses condition it."""

    def __init__(self, in_channels: int, num_hiddens: int, bottleneck_size: int = 7):
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_hiddens", num_hiddens)
        d = num_hiddens
        self.in_channels = in_channels
        self.num_hiddens = num_hiddens
        self.conv_in = ConvBlock(in_channels, d)
        self.down1 = DownBlock(d, d)
        self.down2 = DownBlock(d, 2 * d)
        self.flatten = Flatten()
        self.unflatten = Unflatten(2 * d, bottleneck_size)
        self.up1 = UpBlock(4 * d, d)
        self.up2 = UpBlock(2 * d, d)
        self.conv_out = ConvBlock(2 * d, d)
        self.head = nn.Conv2d(d, in_channels, kernel_size=1)
        self.bottleneck_size = bottleneck_size

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be an image batch (N, C, H, W); got {shape}")
        want = self.head.weight.dtype
        if x.dtype != want:
            if not x.dtype.is_floating_point:
                raise TypeError(f"x has dtype {x.dtype} (raw pixel values 0-255?), but the UNet takes float "
                                f"images in [0, 1] of dtype {want}; pass x.float() / 255")
            raise TypeError(f"x has dtype {x.dtype}, but this UNet's weights are {want}; "
                            f"pass x.to({want}) (x.float() for float32), or convert the model to {x.dtype}")
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"x has {c} channels but this UNet was built with in_channels={self.in_channels}")
        side = 4 * self.bottleneck_size
        if (h, w) != (side, side):
            raise ValueError(
                f"x has spatial size {h}x{w}, but this UNet expects {side}x{side} "
                f"(two stride-2 downsamples to the {self.bottleneck_size}x{self.bottleneck_size} bottleneck); "
                f"resize the images or build the UNet with bottleneck_size={h // 4}"
            )

    def _check_values(self, x: torch.Tensor, t: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> None:
        """Outside training only: x finite, t in [0, 1], mask 0 or 1 (one reduction, one host read)."""
        if self.training or (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            return
        ok = torch.isfinite(x).all()
        if t is not None:
            ok = ok & ((t >= 0) & (t <= 1)).all()          # NaN fails both comparisons
        if mask is not None:
            ok = ok & ((mask == 0) | (mask == 1)).all()
        if bool(ok):
            return
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"x holds {int((~torch.isfinite(x)).sum())} NaN or inf pixel values; pass finite "
                             "images (in a sampler, non-finite inputs mean the model's weights or the previous "
                             "step went non-finite: check the checkpoint)")
        if t is not None and not bool(((t >= 0) & (t <= 1)).all()):
            bad = t[~((t >= 0) & (t <= 1))].flatten()
            raise ValueError(f"t must lie in [0, 1] (flow time: 0 is noise, 1 is data), got "
                             f"{bad[:5].tolist()}{' ...' if bad.numel() > 5 else ''}; pass t in [0, 1]")
        bad = mask[~((mask == 0) | (mask == 1))]
        raise ValueError(f"mask must hold only 0 (drop the class) or 1 (keep it), got "
                         f"{bad[:5].tolist()}{' ...' if bad.numel() > 5 else ''}; pass a 0/1 mask, e.g. "
                         "torch.ones(N) or (torch.rand(N) >= p_uncond).float()")

    def _run(self, x: torch.Tensor, mod_bottleneck=None, mod_up1=None) -> torch.Tensor:
        skip0 = self.conv_in(x)                       # (N, D, 28, 28)
        skip1 = self.down1(skip0)                     # (N, D, 14, 14)
        skip2 = self.down2(skip1)                     # (N, 2D, 7, 7)
        h = self.unflatten(self.flatten(skip2))       # (N, 2D, 7, 7)
        if mod_bottleneck is not None:
            h = mod_bottleneck(h)
        h = self.up1(torch.cat([skip2, h], dim=1))    # (N, D, 14, 14)
        if mod_up1 is not None:
            h = mod_up1(h)
        h = self.up2(torch.cat([skip1, h], dim=1))    # (N, D, 28, 28)
        h = self.conv_out(torch.cat([skip0, h], dim=1))  # (N, D, 28, 28)
        return self.head(h)                           # (N, C, 28, 28)


class UnconditionalUNet(_UNetBody):
    """``unet(x) -> same shape as x``: the denoiser of sections 1.2 and 1.2.3."""

    def __init__(self, in_channels: int = 1, num_hiddens: int = 128, bottleneck_size: int = 7):
        super().__init__(in_channels, num_hiddens, bottleneck_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        self._check_values(x)
        return self._run(x)


class TimeConditionalUNet(_UNetBody):
    """``unet(x, t) -> u`` with ``x: (N, C, H, W)``, ``t: (N,)`` or ``(N, 1)`` in [0, 1].

    Time scales the unflattened bottleneck by ``t1 = fc1_t(t)`` and the first up block by
    ``t2 = fc2_t(t)`` (section 2.1).  ``num_classes`` is accepted for the course's signature
    and ignored.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, num_hiddens: int = 64,
                 bottleneck_size: int = 7):
        super().__init__(in_channels, num_hiddens, bottleneck_size)
        d = num_hiddens
        self.fc1_t = FCBlock(1, 2 * d)
        self.fc2_t = FCBlock(1, d)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        t = _as_time(t, x)
        self._check_values(x, t)
        t1 = self.fc1_t(t)[:, :, None, None]          # (N, 2D, 1, 1)
        t2 = self.fc2_t(t)[:, :, None, None]          # (N, D, 1, 1)
        return self._run(x, lambda h: h * t1, lambda h: h * t2)


class ClassConditionalUNet(_UNetBody):
    """``unet(x, c, t, mask=None) -> u``: time and class conditioning (section 2.4).

    ``c: (N,)`` integer labels, one-hot encoded inside; ``mask: (N,)`` of 0/1 zeroes the
    class vector where it is 0 (None means all ones).  Modulation:
    ``bottleneck = c1 * unflatten + t1`` and ``up1 = c2 * up1 + t2``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, num_hiddens: int = 64,
                 bottleneck_size: int = 7):
        super().__init__(in_channels, num_hiddens, bottleneck_size)
        _check_positive_int("num_classes", num_classes)
        d = num_hiddens
        self.num_classes = num_classes
        self.fc1_t = FCBlock(1, 2 * d)
        self.fc2_t = FCBlock(1, d)
        self.fc1_c = FCBlock(num_classes, 2 * d)
        self.fc2_c = FCBlock(num_classes, d)

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        t = _as_time(t, x)
        onehot = one_hot(c, self.num_classes, x)       # (N, K)
        if mask is not None:
            mask = torch.as_tensor(mask, device=x.device, dtype=x.dtype).reshape(-1)
            if mask.shape[0] != x.shape[0]:
                raise ValueError(f"mask has {mask.shape[0]} entries for a batch of {x.shape[0]}")
        self._check_values(x, t, mask)
        if mask is not None:
            onehot = onehot * mask[:, None]            # zero the class vector: unconditional branch
        c1 = self.fc1_c(onehot)[:, :, None, None]     # (N, 2D, 1, 1)
        c2 = self.fc2_c(onehot)[:, :, None, None]     # (N, D, 1, 1)
        t1 = self.fc1_t(t)[:, :, None, None]
        t2 = self.fc2_t(t)[:, :, None, None]
        return self._run(x, lambda h: c1 * h + t1, lambda h: c2 * h + t2)


def one_hot(c: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Integer labels ``(N,)`` -> float one-hot ``(N, num_classes)`` on ``like``'s device and dtype."""
    c = torch.as_tensor(c, device=like.device)
    if c.dtype.is_floating_point or c.dtype == torch.bool:
        raise TypeError(f"class labels must be integers, got dtype {c.dtype}; pass c.long()")
    c = c.reshape(-1)
    if c.shape[0] != like.shape[0]:
        raise ValueError(f"got {c.shape[0]} class labels for a batch of {like.shape[0]} images")
    capturing = c.is_cuda and torch.cuda.is_current_stream_capturing()   # a CUDA graph: no host reads
    if c.numel() and not capturing and (int(c.min()) < 0 or int(c.max()) >= num_classes):
        raise ValueError(f"class labels must lie in [0, {num_classes - 1}]; got values from "
                         f"{int(c.min())} to {int(c.max())}")
    return F.one_hot(c.long(), num_classes).to(like.dtype)


def _as_time(t, x: torch.Tensor) -> torch.Tensor:
    """Time as ``(N, 1)`` on x's device; accepts a float, ``(N,)`` or ``(N, 1)``."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    t = t.reshape(-1, 1)
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"got {t.shape[0]} time values for a batch of {x.shape[0]} images")
    return t


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def trace_shapes(model: nn.Module, *inputs) -> list[tuple[str, tuple[int, ...]]]:
    """Run ``model(*inputs)`` and return (child name, output shape) for each top-level block, in
    the order they ran: the table of section 1.1."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = [child.register_forward_hook(lambda m, i, o, name=name: seen.append((name, tuple(o.shape))))
             for name, child in model.named_children()]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen
