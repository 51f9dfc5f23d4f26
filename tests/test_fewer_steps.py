"""B2.6a's helpers in ``diffnb.b.solvers``: the class-conditioned UNet's guided velocity as a solver's field,
its samples by any solver from ``class_fm_sample``'s noise, the error to a converged solve, and the smallest
NFE that reaches a target."""
import pytest
import torch

from diffnb.b import flow, solvers
from diffnb.b.unet import ClassConditionalUNet


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return ClassConditionalUNet(1, 10, 8).eval()


def test_library_euler_gives_class_fm_sample(unet):
    c = torch.tensor([3, 1, 4, 1])
    course = flow.class_fm_sample(unet, c, (28, 28), 3, 5.0, 7, progress=False)
    ours = solvers.sample_class_fm(unet, c, "euler", steps=3, guidance_scale=5.0, seed=7)
    assert torch.equal(course, ours.x)
    assert ours.nfe == 3                                          # counted: one batched UNet call per step


def test_the_velocity_is_cfg_from_one_batched_call(unet):
    c = torch.tensor([2, 9])
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0.3, 0.3])
    calls = []
    unet_seen = lambda *args: calls.append(args[0].shape[0]) or unet(*args)   # noqa: E731
    v = solvers.class_fm_velocity(unet_seen, c, 3.0)(x, t)
    with torch.no_grad():
        u_cond = unet(x, c, t, torch.ones(2))
        u_uncond = unet(x, c, t, torch.zeros(2))
    assert calls == [4]                                           # one call on the 2N batch
    assert torch.allclose(v, u_uncond + 3.0 * (u_cond - u_uncond), atol=1e-5)


def test_time_past_one_is_clipped_for_dopri5(unet):
    c = torch.tensor([5])
    x = torch.randn(1, 1, 28, 28)
    velocity = solvers.class_fm_velocity(unet, c, 5.0)
    with torch.no_grad():
        assert torch.equal(velocity(x, torch.tensor([1.02])), velocity(x, torch.tensor([1.0])))
    sol = solvers.sample_class_fm(unet, torch.arange(3), "dopri5", rtol=1e-2, atol=1e-2)
    assert sol.nfe > 0 and sol.x.shape == (3, 1, 28, 28) and torch.isfinite(sol.x).all()


def test_higher_order_solvers_converge_to_the_same_samples(unet):
    c = torch.arange(4)
    fine = solvers.sample_class_fm(unet, c, "rk4", steps=16, seed=1).x
    errors = [solvers.rms_error(solvers.sample_class_fm(unet, c, "midpoint", steps=k, seed=1).x, fine) for k in (2, 8)]
    assert errors[1] < errors[0]


def test_rms_error_and_smallest_nfe():
    a, b = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 3.0)
    assert solvers.rms_error(a, b) == pytest.approx(3.0)
    assert solvers.rms_error(a, a) == 0.0
    assert solvers.smallest_nfe({8: 0.05, 16: 0.01, 20: 0.005}, 0.01) == 16
    assert solvers.smallest_nfe({8: 0.05, 16: 0.02}, 0.01) is None


@pytest.mark.parametrize("call, err, words", [
    (lambda u: solvers.rms_error(torch.zeros(2, 3), torch.zeros(3, 2)), ValueError, "same noise"),
    (lambda u: solvers.smallest_nfe({8: 0.1}, float("nan")), ValueError, "target"),
    (lambda u: solvers.class_fm_velocity(u, torch.tensor([0.5]), 5.0), TypeError, "integer class labels"),
    (lambda u: solvers.class_fm_velocity(u, torch.tensor([1]), float("nan")), ValueError, "guidance_scale"),
    (lambda u: solvers.class_fm_velocity(u, torch.tensor([1]), 5.0)(torch.zeros(2, 1, 28, 28), torch.zeros(2)),
     ValueError, "one label per sample"),
    (lambda u: solvers.sample_class_fm(u, torch.arange(2), "euler", steps=0), ValueError, "steps"),
    (lambda u: solvers.sample_class_fm(u, torch.arange(2), "rk5", steps=2), ValueError, "unknown solver"),
    (lambda u: solvers.sample_class_fm(u, torch.arange(2), "euler", steps=2, img_wh=(28,)), ValueError, "img_wh"),
])
def test_bad_inputs_say_what_to_pass(unet, call, err, words):
    with pytest.raises(err, match=words):
        call(unet)
