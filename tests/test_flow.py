"""Flow matching and denoising objectives against closed forms, and the samplers with fake models."""
import math

import pytest
import torch
import torch.nn as nn

from diffnb.b import denoiser, flow


class Recorder(nn.Module):
    """A fake UNet that records its inputs and returns a chosen function of them."""

    def __init__(self, fn, in_channels=1, num_classes=10):
        super().__init__()
        self.fn = fn
        self.calls = []
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, *args):
        self.calls.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        return self.fn(*args)


def test_euler_on_linear_field_matches_closed_form():
    # dx/dt = a x has x(1) = x0 e^a; Euler with T steps gives x0 (1 + a/T)^T exactly
    a, T = 0.7, 40
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    x1 = flow.euler_integrate(lambda x, t: a * x, x0, T)
    torch.testing.assert_close(x1, x0 * (1 + a / T) ** T)
    # Euler is first order: doubling the steps halves the error against the ODE's e^a
    err = [abs((1 + a / n) ** n - math.exp(a)) for n in (T, 2 * T)]
    assert err[0] / err[1] == pytest.approx(2.0, rel=0.02)


def test_euler_on_time_field_is_a_riemann_sum():
    # dx/dt = 2t: left Riemann sum sum_i 2 (i/T) / T = (T - 1) / T
    T = 10
    x1 = flow.euler_integrate(lambda x, t: 2 * t.reshape(-1, 1, 1, 1).expand_as(x), torch.zeros(2, 1, 3, 3), T)
    torch.testing.assert_close(x1, torch.full_like(x1, (T - 1) / T))


def test_constant_velocity_integrates_exactly_to_the_target():
    # the flow-matching target of a straight path: u = x1 - x0, constant in t
    x0, target = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
    out = flow.euler_integrate(lambda x, t: target - x0, x0, 7)
    torch.testing.assert_close(out, target)


def test_time_fm_sample_calls_with_uniform_times_and_seeded_noise():
    fake = Recorder(lambda x, t: torch.ones_like(x))
    out = flow.time_fm_sample(fake, (6, 4), num_ts=5, seed=3, num_samples=2)
    assert out.shape == (2, 1, 4, 6)                          # img_wh is (width, height)
    ts = [call[1][0].item() for call in fake.calls]
    assert ts == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    x0 = torch.randn((2, 1, 4, 6), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, x0 + 1.0)                 # u = 1 for time 1
    again = flow.time_fm_sample(fake, (6, 4), num_ts=5, seed=3, num_samples=2)
    torch.testing.assert_close(out, again)


def test_samplers_show_a_bar_over_the_euler_steps_when_asked(monkeypatch):
    from diffnb.core import progress
    bars = []

    def spy(steps, **kw):
        bars.append((len(steps), kw["desc"]))
        return steps

    monkeypatch.setattr(flow, "tqdm", spy)
    monkeypatch.setattr(progress, "_LOOPS", {"shown": False})
    fake = Recorder(lambda x, t: torch.ones_like(x))
    quiet = flow.time_fm_sample(fake, (4, 4), num_ts=5, seed=1, num_samples=2)
    assert bars == []                                         # library use: no bar unless asked
    shown = flow.time_fm_sample(fake, (4, 4), num_ts=5, seed=1, num_samples=2, progress=True)
    assert bars == [(5, "Euler steps")]
    torch.testing.assert_close(shown, quiet)                  # the bar changes nothing
    progress.show_loops()                                     # what a notebook's setup does
    cfg = Recorder(lambda x, c, t, mask: torch.ones_like(x))
    flow.class_fm_sample(cfg, torch.arange(3), (4, 4), num_ts=4, guidance_scale=5.0)
    flow.class_fm_sample(cfg, torch.arange(3), (4, 4), num_ts=4, guidance_scale=5.0, progress=False)  # explorers
    assert bars == [(5, "Euler steps"), (4, "Euler steps")]


def test_cfg_formula_and_single_batched_pass():
    # fake model: u = 2 + c where the class is kept (mask 1), u = -1 where it is dropped
    def fn(x, c, t, mask):
        return torch.where(mask.reshape(-1, 1, 1, 1) > 0, 2.0 + c.float().reshape(-1, 1, 1, 1), -1.0).expand_as(x)

    fake = Recorder(fn)
    c = torch.tensor([0, 4, 9])
    gamma, T = 5.0, 4
    out = flow.class_fm_sample(fake, c, (3, 3), num_ts=T, guidance_scale=gamma, seed=1)
    assert len(fake.calls) == T                               # one forward per Euler step
    x, c2, t2, mask = fake.calls[0]
    assert x.shape[0] == 6 and mask.tolist() == [1, 1, 1, 0, 0, 0] and c2.tolist() == [0, 4, 9, 0, 4, 9]
    u_cond, u_uncond = 2.0 + c.float(), torch.full((3,), -1.0)
    u = u_uncond + gamma * (u_cond - u_uncond)                # u = u_uncond + gamma (u_cond - u_uncond)
    x0 = torch.randn((3, 1, 3, 3), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x0 + u.reshape(-1, 1, 1, 1))


def test_cfg_scale_one_is_conditional_sampling():
    torch.testing.assert_close(flow.cfg_velocity(torch.tensor(-2.0), torch.tensor(3.0), 1.0), torch.tensor(3.0))
    torch.testing.assert_close(flow.cfg_velocity(torch.tensor(-2.0), torch.tensor(3.0), 0.0), torch.tensor(-2.0))


def test_time_fm_forward_target_and_interpolation():
    """Rebuild x_0 and t from the same generator and check the model saw x_t and was scored on x_1 - x_0."""
    x1 = torch.rand(8, 1, 4, 4)
    fake = Recorder(lambda x, t: torch.zeros_like(x))
    loss = flow.time_fm_forward(fake, x1, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(8, generator=g)
    seen_x, seen_t = fake.calls[0]
    torch.testing.assert_close(seen_t, t)
    torch.testing.assert_close(seen_x, (1 - t.reshape(-1, 1, 1, 1)) * x0 + t.reshape(-1, 1, 1, 1) * x1)
    torch.testing.assert_close(loss, ((x1 - x0) ** 2).mean())    # model predicts 0


def test_perfect_velocity_has_zero_loss():
    # with x_0, x_t, t known, u = (x_t - x_0)/t... use the identity x1 - x0 = (x1 - x_t) / (1 - t)
    x1 = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    fake = Recorder(lambda x, t: (x1 - x) / (1 - t.reshape(-1, 1, 1, 1)))
    loss = flow.time_fm_forward(fake, x1, torch.Generator().manual_seed(2))
    assert loss.item() < 1e-18


def test_class_fm_forward_masks_about_p_uncond():
    x1 = torch.rand(20000, 1, 1, 1)
    c = torch.randint(0, 10, (20000,))
    fake = Recorder(lambda x, c, t, mask: torch.zeros_like(x))
    flow.class_fm_forward(fake, x1, c, p_uncond=0.1, generator=torch.Generator().manual_seed(0))
    mask = fake.calls[0][3]
    dropped = 1 - mask.mean().item()
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs(dropped - 0.1) < 0.01                          # 20000 draws: std of the share is 0.002
    fake.calls.clear()
    flow.class_fm_forward(fake, x1, c, p_uncond=0.0, generator=torch.Generator().manual_seed(0))
    assert fake.calls[0][3].min().item() == 1.0


def test_denoiser_objectives():
    x = torch.rand(4, 1, 8, 8)
    ident = Recorder(lambda z: z)
    loss = denoiser.denoiser_loss(ident, x, 0.5, torch.Generator().manual_seed(0))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, ((0.5 * eps) ** 2).mean())
    loss0 = denoiser.denoiser_loss(ident, x, 0.0, torch.Generator().manual_seed(0))
    assert loss0.item() == 0.0
    mean = Recorder(lambda z: x.mean(0, keepdim=True).expand_as(z))
    pn = denoiser.pure_noise_loss(mean, x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(pn, x.var(0, unbiased=False).mean())


@pytest.mark.parametrize("call, match", [
    (lambda m: flow.class_fm_sample(m, torch.tensor([1, 10]), (4, 4), 2), r"\[0, 9\]"),
    (lambda m: flow.time_fm_sample(m, (4, 4), num_ts=0), "num_ts"),
    (lambda m: flow.time_fm_sample(m, 28, num_ts=2), "img_wh"),
    (lambda m: flow.class_fm_forward(m, torch.rand(2, 1, 4, 4), torch.tensor([1, 2]), p_uncond=1.5), "p_uncond"),
    (lambda m: flow.time_fm_forward(m, torch.rand(1, 4, 4)), r"\(N, C, H, W\)"),
])
def test_bad_inputs(call, match):
    fake = Recorder(lambda *a: torch.zeros_like(a[0]))
    with pytest.raises(ValueError, match=match):
        call(fake)
