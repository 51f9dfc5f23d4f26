"""Part B's flow-matching exercises (B2.2 to B2.6): each notebook's solution passes its check, hidden cases
included; the stub reads "not written"; a function that uses diffnb's own answer reads "used reference"; and
each plausible mistake (a small edit of the notebook's solution) is caught with a message that names it."""
import re

import pytest
import torch

from exercise_cells import learner
from diffnb.exercises import catalog
from diffnb.exercises.core import evaluate

NAMES = ["time_fm_forward", "time_fm_sample", "class_conditioning", "class_fm_forward", "class_fm_sample"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _edited(name: str, *edits: tuple[str, str]):
    return learner(name, edits)


def _with_body(name: str, body: str):
    """The exercise with its solution region replaced by ``body`` (lines indented by four spaces)."""
    return learner(name, edit=lambda source: re.sub(r"    ### BEGIN SOLUTION\n.*?### END SOLUTION", body.rstrip(),
                                                     source, flags=re.S))


def _result(name: str, fn, hidden: bool = False):
    return evaluate(catalog.get(name), fn, hidden)


@pytest.mark.parametrize("name", NAMES)
def test_the_notebooks_solution_passes(name):
    before = torch.random.get_rng_state()
    for hidden in (False, True):
        r = _result(name, learner(name), hidden)
        assert r.status == "passed", r.message
    assert torch.equal(torch.random.get_rng_state(), before), "the check changed the global random state"


@pytest.mark.parametrize("name", NAMES)
def test_the_stub_is_not_written(name):
    r = _result(name, _with_body(name, "    raise NotImplementedError()"))
    assert r.status == "not written", r.message


@pytest.mark.parametrize("name, body", [
    ("time_fm_forward", "    import diffnb\n    return diffnb.time_fm_forward(unet, x_1, generator)"),
    ("time_fm_sample", "    import diffnb\n"
                       "    return diffnb.time_fm_sample(unet, img_wh, num_ts, seed, num_samples=num_samples)"),
    ("time_fm_sample", "    from diffnb.b.flow import euler_integrate\n"
                       "    g = torch.Generator().manual_seed(seed)\n"
                       "    x_0 = torch.randn((num_samples, 1, img_wh[1], img_wh[0]), generator=g)\n"
                       "    return euler_integrate(lambda x, t: unet(x, t), x_0, num_ts)"),
    ("class_conditioning", "    return unet(x, c, t, mask)"),
    ("class_conditioning", "    import diffnb\n    return diffnb.ClassConditionalUNet.forward(unet, x, c, t, mask)"),
    ("class_fm_forward", "    import diffnb\n    return diffnb.class_fm_forward(unet, x_1, c, p_uncond, generator)"),
    ("class_fm_sample", "    import diffnb\n"
                        "    return diffnb.class_fm_sample(unet, c, img_wh, num_ts, guidance_scale, seed)"),
    ("class_fm_sample", "    from diffnb.b.flow import cfg_velocity\n"
                        "    n = len(c)\n"
                        "    g = torch.Generator().manual_seed(seed)\n"
                        "    x = torch.randn((n, 1, img_wh[1], img_wh[0]), generator=g)\n"
                        "    for i in range(num_ts):\n"
                        "        t = torch.full((n,), i / num_ts)\n"
                        "        u_c, u_u = unet(x, c, t, torch.ones(n)), unet(x, c, t, torch.zeros(n))\n"
                        "        x = x + cfg_velocity(u_u, u_c, guidance_scale) / num_ts\n"
                        "    return x"),
])
def test_using_diffnbs_answer_is_refused(name, body):
    r = _result(name, _with_body(name, body))
    assert r.status == "used reference", r.message


MASK_LINE = ("    mask = (torch.rand(n, generator=generator, device=x_1.device) >= p_uncond).to(x_1.dtype)"
             "  # 0: drop the class\n")
X0_LINE = "    x_0 = torch.randn(x_1.shape, generator=generator, device=x_1.device)      # noise, (N, C, H, W)\n"
T_LINE = "    t = torch.rand(x_1.shape[0], generator=generator, device=x_1.device)      # one time per image, U[0, 1]\n"
CFG = "u = u_uncond + guidance_scale * (u_cond - u_uncond)"
BOTTLENECK = "h = c1 * unet.unflatten(unet.flatten(skip2)) + t1"
UP1 = "h = c2 * unet.up1(torch.cat([skip2, h], dim=1)) + t2"

# (exercise, edits of the notebook's solution, words the message must hold)
MISTAKES = [
    # B2.2 time_fm_forward
    ("time_fm_forward", [("(1 - t_) * x_0 + t_ * x_1", "(1 - t_) * x_1 + t_ * x_0")], "x_0 and x_1 are swapped"),
    ("time_fm_forward", [("unet(x_t, t), x_1 - x_0)", "unet(x_t, t), x_0 - x_1)")], "the target has the wrong sign"),
    ("time_fm_forward", [("unet(x_t, t), x_1 - x_0)", "unet(x_t, t), x_1)")], "not the velocity x_1 − x_0"),
    ("time_fm_forward", [("t_ = t.view(-1, 1, 1, 1)", "t_ = t")], "did you reshape t to (N, 1, 1, 1)"),
    ("time_fm_forward", [("t = torch.rand(x_1.shape[0], generator", "t = torch.rand((), generator")],
     "every image of your batch got the same time"),
    ("time_fm_forward", [("t = torch.rand(x_1.shape[0], generator", "t = torch.rand(1, generator")],
     "draw one time per image"),
    ("time_fm_forward", [(X0_LINE + T_LINE, T_LINE + X0_LINE)], "you drew t, then x_0"),
    ("time_fm_forward", [("F.mse_loss(unet(x_t, t), x_1 - x_0)", "((unet(x_t, t) - (x_1 - x_0)) ** 2).sum()")],
     "you summed the squared errors"),
    ("time_fm_forward", [("unet(x_t, t), x_1 - x_0)", "unet(x_t, 1 - t), x_1 - x_0)")], "you gave the UNet 1 − t"),
    # B2.3 time_fm_sample
    ("time_fm_sample", [("torch.full((num_samples,), i * dt", "torch.full((num_samples,), 1 - i * dt")],
     "your steps run from t = 1 towards 0"),
    ("time_fm_sample", [("dt = 1.0 / num_ts", "dt = 1.0 / (num_ts - 1)")], "not 1/(num_ts − 1)"),
    ("time_fm_sample", [("torch.full((num_samples,), i * dt", "torch.full((num_samples,), (i + 1) * dt")],
     "off by one"),
    ("time_fm_sample", [("x = x + dt * unet(x, t)", "x = x - dt * unet(x, t)")], "you update x with −dt"),
    ("time_fm_sample", [("x = x + dt * unet(x, t)", "x = x + unet(x, t)")], "multiply it by Δt"),
    ("time_fm_sample", [("generator=g, device=device)", "device=device)")], "does not start from diffnb's noise"),
    ("time_fm_sample", [("for i in range(num_ts):", "for i in range(num_ts + 1):")], "take exactly num_ts steps"),
    ("time_fm_sample", [("torch.full((num_samples,), i * dt", "torch.full((1,), i * dt")], "pass t per sample"),
    # B2.4 class_conditioning
    ("class_conditioning", [("onehot = onehot * mask.to(x.dtype)[:, None]", "onehot = onehot")],
     "your output ignores the mask"),
    ("class_conditioning", [(BOTTLENECK, BOTTLENECK.replace("c1 *", "t1 *").replace("+ t1", "+ c1")),
                            (UP1, UP1.replace("c2 *", "t2 *").replace("+ t2", "+ c2"))],
     "c and t play each other's part"),
    ("class_conditioning", [(BOTTLENECK, BOTTLENECK.replace("+ t1", "* t1")), (UP1, UP1.replace("+ t2", "* t2"))],
     "you multiplied h by both c_1 and t_1"),
    ("class_conditioning", [("onehot = onehot * mask.to(x.dtype)[:, None]",
                             "onehot = F.one_hot(c * mask.long(), unet.num_classes).to(x.dtype)")], "saw class 0"),
    ("class_conditioning", [("F.one_hot(c, unet.num_classes).to(x.dtype)", "F.one_hot(c, unet.num_classes)")],
     "F.one_hot gives integers"),
    ("class_conditioning", [("t = t.to(x.dtype).reshape(-1, 1)", "t = t.to(x.dtype)")], "take t as (N, 1)"),
    ("class_conditioning", [(UP1, "h = unet.up1(torch.cat([skip2, h], dim=1))")], "the second modulation is missing"),
    ("class_conditioning", [(f"torch.cat([skip{k}, h], dim=1)", f"torch.cat([h, skip{k}], dim=1)") for k in (2, 1, 0)],
     "the skip connection goes first"),
    # B2.5 class_fm_forward
    ("class_fm_forward", [(">= p_uncond).to(x_1.dtype)", "< p_uncond).to(x_1.dtype)")],
     "keeps the class with probability p_uncond"),
    ("class_fm_forward", [("unet(x_t, c, t, mask)", "unet(x_t, c, t)")], "your loss never drops the class"),
    ("class_fm_forward", [("(1 - t_) * x_0 + t_ * x_1", "(1 - t_) * x_1 + t_ * x_0")], "x_0 and x_1 are swapped"),
    ("class_fm_forward", [("unet(x_t, c, t, mask)", "unet(x_t, c * mask.long(), t)")], "you zeroed the labels"),
    ("class_fm_forward", [(MASK_LINE, ""), ("    x_0 = torch.randn(", MASK_LINE + "    x_0 = torch.randn(")],
     "you drew the mask's uniforms, then x_0, then t"),
    ("class_fm_forward", [("(torch.rand(n, generator=generator, device=x_1.device) >= p_uncond)",
                           "torch.bernoulli(torch.full((n,), 1 - p_uncond), generator=generator)")],
     "as torch.bernoulli does"),
    ("class_fm_forward", [("unet(x_t, c, t, mask), x_1 - x_0)", "unet(x_t, c, t, mask), x_0 - x_1)")],
     "the target has the wrong sign"),
    # B2.6 class_fm_sample
    ("class_fm_sample", [(CFG, "u = u_cond + guidance_scale * (u_uncond - u_cond)")], "the two velocities are swapped"),
    ("class_fm_sample", [(CFG, "u = guidance_scale * u_cond")], "guidance to u_cond alone"),
    ("class_fm_sample", [("torch.zeros(n, device=device)])", "torch.ones(n, device=device)])")],
     "no unconditional branch"),
    ("class_fm_sample", [("torch.full((n,), i * dt", "torch.full((n,), 1 - i * dt")],
     "your steps run from t = 1 towards 0"),
    ("class_fm_sample", [(CFG, "u = u_cond + guidance_scale * (u_cond - u_uncond)")], "which is guidance γ + 1"),
    ("class_fm_sample", [("x = x + dt * u ", "x = x - dt * u ")], "you update x with −dt"),
    ("class_fm_sample", [("dt = 1.0 / num_ts", "dt = 1.0 / (num_ts - 1)")], "not 1/(num_ts − 1)"),
    ("class_fm_sample", [(CFG, "u = u_cond")], "u_cond alone, without guidance"),
    ("class_fm_sample", [("manual_seed(seed)", "manual_seed(seed + 1)")], "does not start from diffnb's noise"),
]


@pytest.mark.parametrize("name, edits, words", MISTAKES, ids=[f"{m[0]}-{m[2][:30]}" for m in MISTAKES])
def test_a_mistake_is_named(name, edits, words):
    r = _result(name, _edited(name, *edits))
    assert r.status == "wrong", r.message
    assert words in r.message, r.message


def test_the_catalogue_is_large_enough():
    assert len(MISTAKES) >= 14
    assert {m[0] for m in MISTAKES} == set(NAMES)


def test_returning_the_input_or_zeros_fails():
    r = _result("class_conditioning", _with_body("class_conditioning", "    return x"))
    assert r.status == "wrong" and "is its input, unchanged" in r.message, r.message
    r = _result("time_fm_sample", _with_body("time_fm_sample", "    return torch.zeros(num_samples, 1, 28, 28)"))
    assert r.status == "wrong" and "all zeros" in r.message, r.message


def test_a_learners_change_to_the_unet_does_not_reach_the_next_check():
    r = _result("time_fm_forward", _with_body("time_fm_forward", "    unet.train()\n"
                                                                 "    torch.nn.init.zeros_(unet.head.weight)\n"
                                                                 "    return torch.ones(())"))
    assert r.status == "wrong", r.message
    assert _result("time_fm_forward", learner("time_fm_forward")).passed


@pytest.mark.parametrize("name, edits", [
    ("time_fm_forward", [("F.mse_loss(unet(x_t, t), x_1 - x_0)", "((unet(x_t, t) - (x_1 - x_0)) ** 2).mean()")]),
    ("time_fm_sample", [("x = x + dt * unet(x, t)", "x = x + unet(x, i / num_ts) / num_ts")]),
    ("class_conditioning", [("onehot = onehot * mask.to(x.dtype)[:, None]", "onehot = onehot * mask[:, None]")]),
    ("class_fm_sample", [("unet(torch.cat([x, x]), c2, torch.cat([t, t]), mask).chunk(2)",
                          "unet(x, c, t, torch.ones(n)), unet(x, c, t, torch.zeros(n))")]),
])
def test_an_equivalent_way_of_writing_it_passes(name, edits):
    """Float rounding apart, another correct order of operations (a Python float t, two UNet calls a step) passes."""
    r = _result(name, _edited(name, *edits), hidden=True)
    assert r.status == "passed", r.message
