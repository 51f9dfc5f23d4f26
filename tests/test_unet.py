"""Shapes through every block and UNet, and the write-up's modulation points."""
import pytest
import torch

from diffnb.b.unet import (ClassConditionalUNet, Conv, ConvBlock, DownBlock, DownConv, FCBlock, Flatten,
                         TimeConditionalUNet, UnconditionalUNet, Unflatten, UpBlock, UpConv)

D = 8


@pytest.mark.parametrize("block, x_shape, out_shape", [
    (Conv(1, D), (2, 1, 28, 28), (2, D, 28, 28)),
    (DownConv(D, 2 * D), (2, D, 28, 28), (2, 2 * D, 14, 14)),
    (UpConv(2 * D, D), (2, 2 * D, 7, 7), (2, D, 14, 14)),
    (Flatten(), (2, 2 * D, 7, 7), (2, 2 * D, 1, 1)),
    (Unflatten(2 * D), (2, 2 * D, 1, 1), (2, 2 * D, 7, 7)),
    (ConvBlock(3, D), (2, 3, 28, 28), (2, D, 28, 28)),
    (DownBlock(D, 2 * D), (2, D, 14, 14), (2, 2 * D, 7, 7)),
    (UpBlock(4 * D, D), (2, 4 * D, 7, 7), (2, D, 14, 14)),
])
def test_block_shapes(block, x_shape, out_shape):
    assert block(torch.randn(x_shape)).shape == out_shape


def test_fcblock_is_linear_gelu_linear():
    fc = FCBlock(1, D)
    kinds = [type(m).__name__ for m in fc.net]
    assert kinds == ["Linear", "GELU", "Linear"]
    assert fc(torch.rand(5, 1)).shape == (5, D)


def test_flatten_is_global_average():
    x = torch.randn(2, 3, 7, 7)
    expected = torch.nn.functional.gelu(x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(Flatten()(x), expected)


def test_unet_shapes():
    x = torch.randn(4, 1, 28, 28)
    t = torch.rand(4)
    c = torch.tensor([0, 3, 9, 5])
    assert UnconditionalUNet(1, D)(x).shape == x.shape
    assert TimeConditionalUNet(1, 10, D)(x, t).shape == x.shape
    assert TimeConditionalUNet(1, 10, D)(x, t[:, None]).shape == x.shape
    assert ClassConditionalUNet(1, 10, D)(x, c, t, torch.ones(4)).shape == x.shape
    assert ClassConditionalUNet(1, 10, D)(x, c, t).shape == x.shape
    x3 = torch.randn(2, 3, 28, 28)
    assert UnconditionalUNet(3, D)(x3).shape == x3.shape


def _eval(model):
    """Eval mode with BatchNorm statistics from one real batch, so that activations are O(1)
    (with the default running stats an untrained net's output barely depends on anything)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None                      # cumulative average: one batch -> its stats
    model.train()
    x = torch.randn(16, model.in_channels, 28, 28)
    with torch.no_grad():
        if isinstance(model, ClassConditionalUNet):
            model(x, torch.arange(16) % 10, torch.rand(16))
        elif isinstance(model, TimeConditionalUNet):
            model(x, torch.rand(16))
        else:
            model(x)
    return model.eval()


def _close(a, b):
    return torch.allclose(a, b, rtol=0, atol=1e-4)


def test_time_changes_output_and_scales_the_bottleneck():
    unet = _eval(TimeConditionalUNet(1, 10, D))
    x = torch.randn(3, 1, 28, 28)
    a = unet(x, torch.full((3,), 0.1))
    b = unet(x, torch.full((3,), 0.9))
    assert not _close(a, b)
    # time modulates by multiplication: zero t1 wipes the bottleneck, so the output no longer
    # depends on the bottleneck input (only on the skips)
    captured = {}
    unet.unflatten.register_forward_hook(lambda m, i, o: captured.update(h=o))
    unet(x, torch.zeros(3))
    assert captured["h"].shape == (3, 2 * D, 7, 7)
    with torch.no_grad():
        unet.fc1_t.net[2].weight.zero_()
        unet.fc1_t.net[2].bias.zero_()
    x2 = x.clone()
    out1 = unet(x2, torch.full((3,), 0.5))
    # perturb the bottleneck path only: the Unflatten weights
    with torch.no_grad():
        unet.unflatten.net[0].weight.mul_(3.0)
    out2 = unet(x2, torch.full((3,), 0.5))
    torch.testing.assert_close(out1, out2)


def test_class_changes_output_and_mask_removes_it():
    unet = _eval(ClassConditionalUNet(1, 10, D))
    x = torch.randn(4, 1, 28, 28)
    t = torch.rand(4)
    c_a = torch.tensor([1, 2, 3, 4])
    c_b = torch.tensor([7, 8, 9, 0])
    assert not _close(unet(x, c_a, t), unet(x, c_b, t))
    zero = torch.zeros(4)
    torch.testing.assert_close(unet(x, c_a, t, zero), unet(x, c_b, t, zero))
    # a per-sample mask only affects the masked samples
    half = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out_a, out_b = unet(x, c_a, t, half), unet(x, c_b, t, half)
    torch.testing.assert_close(out_a[1::2], out_b[1::2])
    assert not _close(out_a[0::2], out_b[0::2])
    # t still matters when the class is masked out
    assert not _close(unet(x, c_a, t, zero), unet(x, c_a, 1 - t, zero))


def test_class_modulation_formula():
    """bottleneck = c1 * unflatten + t1: with fc1_c's output forced to 0 the bottleneck is t1."""
    unet = _eval(ClassConditionalUNet(1, 10, D))
    with torch.no_grad():
        unet.fc1_c.net[2].weight.zero_()
        unet.fc1_c.net[2].bias.zero_()
    seen = {}
    unet.up1.register_forward_hook(lambda m, i, o: seen.update({"in": i[0]}))
    x, c, t = torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([0.25, 0.75])
    unet(x, c, t)
    bottleneck = seen["in"][:, 2 * D:]             # cat([skip2, bottleneck])
    t1 = unet.fc1_t(t[:, None])[:, :, None, None].expand_as(bottleneck)
    torch.testing.assert_close(bottleneck, t1)


@pytest.mark.parametrize("make, call, match", [
    (lambda: UnconditionalUNet(1, D), lambda m: m(torch.randn(2, 1, 32, 32)), "spatial size 32x32"),
    (lambda: UnconditionalUNet(1, D), lambda m: m(torch.randn(2, 3, 28, 28)), "3 channels"),
    (lambda: UnconditionalUNet(1, D), lambda m: m(torch.randn(1, 28, 28)), r"\(N, C, H, W\)"),
    (lambda: ClassConditionalUNet(1, 10, D),
     lambda m: m(torch.randn(2, 1, 28, 28), torch.tensor([3, 10]), torch.rand(2)), r"\[0, 9\]"),
    (lambda: ClassConditionalUNet(1, 10, D),
     lambda m: m(torch.randn(2, 1, 28, 28), torch.tensor([3]), torch.rand(2)), "1 class labels"),
    (lambda: TimeConditionalUNet(1, 10, D),
     lambda m: m(torch.randn(2, 1, 28, 28), torch.rand(3)), "3 time values"),
    (lambda: UnconditionalUNet(1, 0), lambda m: None, "num_hiddens"),
])
def test_bad_inputs_raise_one_clear_error(make, call, match):
    with pytest.raises(ValueError, match=match):
        call(make())
