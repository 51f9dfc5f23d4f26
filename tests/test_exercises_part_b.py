"""Part B's exercises of B1.1, B1.2 and B2.1: each solution, as written in its notebook, passes its check with
the hidden cases; the stub reads "not written"; code that calls diffnb's own answer reads "used reference";
and a catalogue of plausible wrong implementations (small edits of the solutions) each fails with a message
that names the symptom."""
import pytest

from exercise_cells import exercise_cells, learner
from diffnb.exercises import catalog, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["conv", "down_conv", "up_conv", "flatten", "unflatten", "conv_block", "unet_forward", "add_noise",
         "denoiser_loss", "fc_block", "time_conditioning"]


def check(name: str, fn, hidden: bool = False):
    return evaluate(catalog.get(name), fn, hidden)


def test_the_notebooks_hold_these_exercises_in_course_order():
    found = [n for stem in ("B1.1_unet", "B1.2_denoiser", "B2.1_time_conditioning") for n, _ in exercise_cells(stem)]
    assert found == NAMES




# code that hands back diffnb's own answer
USES_REFERENCE = {
    "conv": "import diffnb\n\n\nclass Conv(diffnb.Conv):\n    pass\n",
    "down_conv": ("import torch.nn as nn\nimport diffnb\n\n\nclass DownConv(nn.Module):\n"
                  "    def __init__(self, in_channels, out_channels):\n        super().__init__()\n"
                  "        self.net = diffnb.DownConv(in_channels, out_channels)\n\n"
                  "    def forward(self, x):\n        return self.net(x)\n"),
    "up_conv": "from diffnb.b.unet import UpConv\n",
    "flatten": "import diffnb\n\n\nclass Flatten(diffnb.Flatten):\n    pass\n",
    "unflatten": "import diffnb\n\n\nclass Unflatten(diffnb.Unflatten):\n    pass\n",
    "conv_block": "import diffnb\n\n\nclass ConvBlock(diffnb.ConvBlock):\n    pass\n",
    "unet_forward": "def unet_forward(unet, x):\n    return unet(x)\n",
    "add_noise": ("import diffnb\n\n\ndef add_noise(x, sigma, generator=None):\n"
                  "    return diffnb.add_noise(x, sigma, generator)\n"),
    "denoiser_loss": ("from diffnb.b.denoiser import denoiser_loss as loss\n\n\n"
                      "def denoiser_loss(unet, x, sigma=0.5, generator=None):\n"
                      "    return loss(unet, x, sigma, generator)\n"),
    "fc_block": "import diffnb\n\n\nclass FCBlock(diffnb.FCBlock):\n    pass\n",
    "time_conditioning": "def time_unet_forward(unet, x, t):\n    return unet._run(x)\n",
}


@pytest.mark.parametrize("name", NAMES)
def test_calling_diffnbs_answer_is_used_reference(name):
    result = check(name, learner(name, edit=lambda source: USES_REFERENCE[name]))
    assert result.status == "used reference", result.message


def replace(*pairs):
    """An edit of a cell's solution: each (old, new) replaced at its first place after the first
    ``### BEGIN SOLUTION`` (not in the docstring); old must be there."""
    def edit(source):
        for old, new in pairs:
            k = source.find(old, source.index("### BEGIN SOLUTION"))
            assert k >= 0, f"{old!r} is not in the solution"
            source = source[:k] + new + source[k + len(old):]
        return source
    return edit


BN = "            nn.BatchNorm2d(out_channels),\n"
SOLUTION = "z = add_noise(x, sigma, generator)"

# (exercise, what the mistake is, the edit, words the message must contain)
CATALOGUE = [
    ("conv", "padding 0", replace(("stride=1, padding=1", "stride=1, padding=0")), "expected padding=1"),
    ("conv", "no BatchNorm", replace((BN, "")), "your Conv has no BatchNorm2d"),
    ("conv", "ReLU", replace(("nn.GELU()", "nn.ReLU()")), "ReLU where GELU belongs"),
    ("conv", "stride 2", replace(("stride=1, padding=1", "stride=2, padding=1")), "did you set stride=2?"),
    ("conv", "no bias", replace(("padding=1),", "padding=1, bias=False),")), "has no bias (bias=False)"),
    ("conv", "5×5 kernel", replace(("kernel_size=3, stride=1, padding=1", "kernel_size=5, stride=1, padding=2")),
     "has kernel_size 5; expected 3"),
    ("conv", "GELU before BatchNorm", replace((BN + "            nn.GELU(),\n",
                                               "            nn.GELU(),\n" + BN)), "GELU before BatchNorm2d"),
    ("conv", "BatchNorm skipped in forward", replace(("return self.net(x)", "return self.net[2](self.net[0](x))")),
     "BatchNorm2d is built but not applied"),
    ("conv", "tanh GELU", replace(("nn.GELU()", "nn.GELU(approximate='tanh')")), "GELU(approximate='tanh')"),
    ("down_conv", "stride 1", replace(("stride=2, padding=1", "stride=1, padding=1")),
     "your DownConv gives 28×28 for a 28×28 input; expected 14×14: did you set stride=2?"),
    ("down_conv", "padding 0", replace(("stride=2, padding=1", "stride=2, padding=0")), "expected padding=1"),
    ("down_conv", "ReLU", replace(("nn.GELU()", "nn.ReLU()")), "ReLU where GELU belongs"),
    ("down_conv", "no BatchNorm", replace((BN, "")), "your DownConv has no BatchNorm2d"),
    ("up_conv", "3×3 kernel", replace(("kernel_size=4, stride=2, padding=1", "kernel_size=3, stride=2, padding=1")),
     "UpConv kernel_size 4/stride 2/padding 1"),
    ("up_conv", "a Conv2d", replace(("nn.ConvTranspose2d(", "nn.Conv2d(")), "UpConv kernel_size 4/stride 2/padding 1"),
    ("up_conv", "no GELU", replace(("            nn.GELU(),\n", "")), "the GELU is left out"),
    ("flatten", "pooled to (N, C)", replace(("F.adaptive_avg_pool2d(x, 1)", "x.mean(dim=(2, 3))")),
     "Flatten should average-pool to 1×1 (AvgPool2d(7) or adaptive_avg_pool2d) then GELU"),
    ("flatten", "max pool", replace(("F.adaptive_avg_pool2d(x, 1)", "F.adaptive_max_pool2d(x, 1)")),
     "max-pooled instead of averaged"),
    ("flatten", "ReLU", replace(("self.act = nn.GELU()", "self.act = nn.ReLU()")), "ReLU where GELU belongs"),
    ("flatten", "no GELU", replace(("return self.act(F.adaptive_avg_pool2d(x, 1))",
                                    "return F.adaptive_avg_pool2d(x, 1)")),
     "the GELU is left out"),
    ("unflatten", "size fixed to 7", replace(("kernel_size=size, stride=size", "kernel_size=7, stride=7")),
     "grows 1×1 to size×size"),
    ("unflatten", "no BatchNorm", replace(("            nn.BatchNorm2d(in_channels),\n", "")),
     "your Unflatten has no BatchNorm2d"),
    ("unflatten", "ReLU", replace(("nn.GELU()", "nn.ReLU()")), "ReLU where GELU belongs"),
    ("conv_block", "one Conv", replace(("Conv(in_channels, out_channels), Conv(out_channels, out_channels)",
                                        "Conv(in_channels, out_channels)")), "has 1 Conv2d layer(s); diffnb's has 2"),
    ("conv_block", "second Conv from in_channels", replace(("Conv(out_channels, out_channels))",
                                                            "Conv(in_channels, out_channels))")),
     "Conv2d number 2 maps 1 → 4 channels; expected 4 → 4"),
    ("unet_forward", "skips in the wrong order", replace(("torch.cat([skip2, h], dim=1)",
                                                          "torch.cat([h, skip2], dim=1)")),
     "skips concatenated in the wrong order [h, skip] instead of [skip, h] at unet.up1"),
    ("unet_forward", "skip added", replace(("unet.up2(torch.cat([skip1, h], dim=1))", "unet.up2(skip1 + h)")),
     "unet_forward: the skip connection added instead of concatenated at unet.up2"),
    ("unet_forward", "skip left out", replace(("unet.conv_out(torch.cat([skip0, h], dim=1))", "unet.conv_out(h)")),
     "a skip left out: unet.conv_out got only h"),
    ("unet_forward", "no head", replace(("return unet.head(h)", "return h")), "never calls unet.head"),
    ("unet_forward", "no flatten", replace(("unet.unflatten(unet.flatten(skip2))", "unet.unflatten(skip2)")),
     "never calls unet.flatten"),
    ("add_noise", "σ²", replace(("return x + sigma * eps", "return x + sigma ** 2 * eps")),
     "did you use σ² (a variance) instead of σ"),
    ("add_noise", "noise not from the generator", replace(("generator=generator, ", "")), "but not the generator's"),
    ("add_noise", "x left out", replace(("return x + sigma * eps", "return sigma * eps")), "x left out"),
    ("add_noise", "(1 − σ) x", replace(("return x + sigma * eps", "return (1 - sigma) * x + sigma * eps")),
     "= 1 − σ"),
    ("add_noise", "√σ", replace(("return x + sigma * eps", "return x + sigma ** 0.5 * eps")), "did you take √σ"),
    ("denoiser_loss", "against the noisy input", replace(("(unet(z) - x)", "(unet(z) - z)")),
     "compared with the noisy input"),
    ("denoiser_loss", "against the noise", replace(("(unet(z) - x)", "(unet(z) - (z - x) / sigma)")),
     "compared with the noise"),
    ("denoiser_loss", "sum", replace((".mean()", ".sum()")), "the sum instead of the mean"),
    ("denoiser_loss", "clean input", replace(("(unet(z) - x)", "(unet(x) - x)")), "the UNet given the clean x"),
    ("denoiser_loss", "a float", replace((".mean()", ".mean().item()")), "your loss is a Python float"),
    ("denoiser_loss", "noise not from the generator", replace((SOLUTION, "z = add_noise(x, sigma)")),
     "changes between two calls with the same generator seed"),
    ("denoiser_loss", "detached", replace((".mean()", ".mean().detach()")), "your loss carries no gradient"),
    ("fc_block", "ReLU", replace(("nn.GELU()", "nn.ReLU()")), "ReLU where GELU belongs"),
    ("fc_block", "no GELU", replace(("nn.GELU(), ", "")), "the GELU is left out"),
    ("fc_block", "second Linear from in_channels", replace(("nn.Linear(out_channels, out_channels)",
                                                             "nn.Linear(in_channels, out_channels)")),
     "Linear number 2 maps 1 → 8 features; expected 8 → 8"),
    ("time_conditioning", "t1 and t2 swapped", replace(("t1 = unet.fc1_t(t)", "t1 = unet.fc2_t(t)"),
                                                       ("t2 = unet.fc2_t(t)", "t2 = unet.fc1_t(t)")),
     "t1 and t2 swapped"),
    ("time_conditioning", "t1 added", replace(("h = t1 * unet.unflatten", "h = t1 + unet.unflatten")),
     "t1 added instead of multiplied"),
    ("time_conditioning", "t2 added", replace(("h = t2 * unet.up1(", "h = t2 + unet.up1(")),
     "t2 added instead of multiplied"),
    ("time_conditioning", "t not reshaped", replace(("    t = t.reshape(-1, 1)", "    pass")),
     "t not reshaped to (N, 1)"),
    ("time_conditioning", "t1 on the flattened vector", replace(("h = t1 * unet.unflatten(unet.flatten(skip2))",
                                                                 "h = unet.unflatten(t1 * unet.flatten(skip2))")),
     "t1 scales the 1×1 flattened vector"),
    ("time_conditioning", "t2 on up2's output", replace(("h = t2 * unet.up1(", "h = unet.up1("),
                                                        ("h = unet.up2(", "h = t2 * unet.up2(")),
     "t2 scales up2's output"),
    ("time_conditioning", "t1 left out", replace(("h = t1 * unet.unflatten", "h = unet.unflatten")),
     "t1 is left out"),
    ("time_conditioning", "skip left out", replace(("unet.up2(torch.cat([skip1, h], dim=1))", "unet.up2(h)")),
     "a skip left out: unet.up2 got only h"),
]


@pytest.mark.parametrize("name, mistake, edit, words", CATALOGUE, ids=[f"{c[0]}: {c[1]}" for c in CATALOGUE])
def test_a_plausible_mistake_fails_with_its_diagnosis(name, mistake, edit, words):
    result = check(name, learner(name, edit=edit))
    assert result.status == "wrong", result.message
    assert words in result.message


# other correct ways to write them, which must pass too
ALTERNATIVES = [
    ("conv", replace(("self.net = nn.Sequential(", "self.conv, self.bn, self.act = ("),
                     ("return self.net(x)", "return self.act(self.bn(self.conv(x)))"))),
    ("flatten", replace(("F.adaptive_avg_pool2d(x, 1)", "nn.AvgPool2d(7)(x)"))),
    ("flatten", replace(("F.adaptive_avg_pool2d(x, 1)", "x.mean(dim=(2, 3), keepdim=True)"))),
    ("fc_block", replace(("return self.net(x)", "return self.net[2](torch.nn.functional.gelu(self.net[0](x)))"))),
    ("unet_forward", replace(("h = unet.unflatten(unet.flatten(skip2))",
                              "h = unet.flatten(skip2)\n    h = unet.unflatten(h)"))),
    ("add_noise", replace(("return x + sigma * eps", "return sigma * eps + x"))),
    ("denoiser_loss", replace(("return ((unet(z) - x) ** 2).mean()",
                               "return torch.nn.functional.mse_loss(unet(z), x)"))),
    ("time_conditioning", replace(("t = t.reshape(-1, 1)", "t = t.view(len(x), 1)"),
                                  ("t1 * unet.unflatten(unet.flatten(skip2))",
                                   "unet.unflatten(unet.flatten(skip2)) * t1"))),
]


@pytest.mark.parametrize("name, edit", ALTERNATIVES, ids=[a[0] for a in ALTERNATIVES])
def test_another_correct_implementation_passes(name, edit):
    result = check(name, learner(name, edit=edit), hidden=True)
    assert result.status == "passed", result.message


def test_a_check_leaves_the_global_rng_as_it_was():
    import torch
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check("conv", learner("conv"))
    assert torch.equal(torch.get_rng_state(), before)
