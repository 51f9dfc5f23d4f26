"""Part A maths and loop checked against diffusers (DDPMScheduler, IFPipeline) on the tiny model."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from diffnb.a.denoise import (add_variance, blur_denoise, ddpm_step, estimate_noise, forward, inpaint,
                         iterative_denoise, iterative_denoise_cfg, one_step_denoise, pure_noise, sample_cfg,
                         sdedit, strided_timesteps)
from diffnb.core.devices import make_generator
from diffnb.a.images import rectangle_mask
from diffnb.a.models import IF_SCHEDULER_CONFIG
from diffnb.a.schedule import Schedule
from diffnb.core.numerics import ddpm_step_bound, formula_bound


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def image(stage1):
    s = stage1.unet.config.sample_size
    g = make_generator(11)
    return torch.rand((1, 3, s, s), generator=g) * 2 - 1          # (1, 3, H, W) in [-1, 1]


class CountingUNet:
    """Wraps a UNet and records the batch size of every call."""

    def __init__(self, unet):
        self.unet = unet
        self.batches: list[int] = []

    def __getattr__(self, name):
        return getattr(self.unet, name)

    def __call__(self, x, t, **kwargs):
        self.batches.append(x.shape[0])
        return self.unet(x, t, **kwargs)


# --------------------------------------------------------------------------- forward process

@pytest.mark.parametrize("t", [0, 250, 500, 999])
def test_forward_equals_scheduler_add_noise(stage1, image, t):
    x_t = forward(image, t, stage1, generator=make_generator(3))
    noise = randn_tensor(image.shape, generator=make_generator(3), dtype=image.dtype)
    ref = stage1.scheduler.add_noise(image, noise, torch.tensor([t]))
    # sqrt(abar) x0 + sqrt(1 - abar) eps: 3 roundings on values up to |x0| + |eps| (diffnb.core.numerics)
    torch.testing.assert_close(x_t, ref, atol=formula_bound(image.abs().max() + noise.abs().max(), 3), rtol=0)


def test_forward_takes_a_scheduler_too(stage1, image):
    a = forward(image, 400, stage1.scheduler, generator=make_generator(1))
    b = forward(image, 400, stage1, generator=make_generator(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("t, error", [(1000, ValueError), (-1, ValueError), (2.5, TypeError), ("10", TypeError)])
def test_forward_rejects_t_off_range(stage1, image, t, error):
    with pytest.raises(error, match=r"\[0, 1000\)"):
        forward(image, t, stage1)


def test_strided_timesteps(stage1):
    before = stage1.scheduler.timesteps.clone()
    ts = strided_timesteps(stage1)
    assert ts == list(range(990, -1, -30)) and len(ts) == 34
    assert strided_timesteps(stage1, start=100, stride=40) == [100, 60, 20, 0]
    assert torch.equal(stage1.scheduler.timesteps, before)           # the scheduler is left as it was
    assert Schedule(stage1).strided_timesteps() == ts


def test_the_loop_leaves_the_scheduler_untouched(stage1, emb):
    before = stage1.scheduler.timesteps.clone()
    sample_cfg(stage1, emb.get("a rocket ship"), emb.get(""), strided_timesteps(stage1, 990, 330),
               generator=make_generator(0))
    assert torch.equal(stage1.scheduler.timesteps, before)


# --------------------------------------------------------------------------- one step

def _reference(stage1, ts):
    """diffusers' own DDPMScheduler, a fresh copy of the bundle's with the strided list set on it."""
    ref = DDPMScheduler.from_config(stage1.scheduler.config)
    ref.set_timesteps(timesteps=ts)
    return ref


def test_one_strided_step_equals_ddpm_scheduler_step(stage1, emb, image):
    ts = strided_timesteps(stage1)
    t, prev_t = 690, 660
    x_t = forward(image, t, stage1, generator=make_generator(4))
    eps, var = estimate_noise(stage1, x_t, t, emb.get("a high quality picture"))
    ours = ddpm_step(x_t, eps, var, t, prev_t, stage1, generator=make_generator(5))
    ref = _reference(stage1, ts).step(torch.cat([eps, var], dim=1), t, x_t, generator=make_generator(5)).prev_sample
    torch.testing.assert_close(ours, ref, atol=ddpm_step_bound(stage1, x_t, eps, t), rtol=0)
    # the budget still sees a step with another noise draw, or with the noise estimate scaled by 1%
    assert not torch.allclose(ddpm_step(x_t, eps, var, t, prev_t, stage1, generator=make_generator(6)), ref,
                              atol=ddpm_step_bound(stage1, x_t, eps, t), rtol=0)
    assert not torch.allclose(ddpm_step(x_t, 1.01 * eps, var, t, prev_t, stage1, generator=make_generator(5)), ref,
                              atol=ddpm_step_bound(stage1, x_t, eps, t), rtol=0)


def test_last_loop_step_equals_ddpm_scheduler_step(stage1, emb, image):
    """The loop's last step (t=30 -> 0) through iterative_denoise is the scheduler's step."""
    ts = strided_timesteps(stage1)
    c = emb.get("a high quality picture")
    x_t = forward(image, 30, stage1, generator=make_generator(6))
    ours = iterative_denoise(x_t, len(ts) - 2, stage1, c, ts, generator=make_generator(7))
    eps, var = estimate_noise(stage1, x_t, 30, c)
    ref = _reference(stage1, ts).step(torch.cat([eps, var], 1), 30, x_t, generator=make_generator(7)).prev_sample
    torch.testing.assert_close(ours, ref, atol=ddpm_step_bound(stage1, x_t, eps, 30), rtol=0)


def test_one_step_denoise_inverts_the_forward_formula(stage1, emb, image):
    t = 500
    x_t = forward(image, t, stage1, generator=make_generator(8))
    eps, _ = estimate_noise(stage1, x_t, t, emb.get(""))
    x0 = one_step_denoise(stage1, x_t, t, emb.get(""))
    abar = stage1.scheduler.alphas_cumprod[t]
    # x0 = (x_t - sqrt(1-abar) eps) / sqrt(abar), then back: 6 roundings on values up to (|x_t| + |eps|) / sqrt(abar)
    bound = formula_bound((x_t.abs().max() + eps.abs().max()) / abar.sqrt(), 6)
    torch.testing.assert_close(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, x_t, atol=bound, rtol=0)


def test_t_not_on_the_list_is_refused(stage1, image):
    """The previous timestep is explicit: ddpm_step takes it, add_variance defaults to the course's list."""
    var = torch.zeros_like(image)
    with pytest.raises(ValueError, match="t=35 is not on the course's strided list.*pass prev_t="):
        add_variance(var, 35, image, stage1)
    with pytest.raises(ValueError, match="t=0 is not on the course's strided list"):
        add_variance(var, 0, image, stage1)                         # 0 is the list's end: no step from it
    with pytest.raises(ValueError, match=r"prev_t=700 must be below t=690"):
        ddpm_step(image, var, var, 690, 700, stage1)
    with pytest.raises(ValueError, match=r"prev_t=690 must be below t=690"):
        add_variance(var, 690, image, stage1, prev_t=690)
    with pytest.raises(ValueError, match=r"prev_t=-1 is out of range"):
        ddpm_step(image, var, var, 690, -1, stage1)
    # a list with an entry off the timesteps, or not running down, is refused by the loop that takes it
    with pytest.raises(ValueError, match="out of range"):
        iterative_denoise(image, 0, stage1, torch.zeros(1, 4, 4096), [1200, 30, 0])
    with pytest.raises(ValueError, match="descending"):
        iterative_denoise(image, 0, stage1, torch.zeros(1, 4, 4096), [990, 995, 0])


def test_add_variance_defaults_to_the_course_list(stage1, emb, image):
    x_t = forward(image, 690, stage1, generator=make_generator(4))
    _, var = estimate_noise(stage1, x_t, 690, emb.get(""))
    a = add_variance(var, 690, x_t, stage1, make_generator(5))
    assert torch.equal(a, add_variance(var, 690, x_t, stage1, make_generator(5), prev_t=660))
    assert not torch.equal(a, add_variance(var, 690, x_t, stage1, make_generator(5), prev_t=600))


# --------------------------------------------------------------------------- the schedule against diffusers

@pytest.mark.parametrize("t, prev_t", [(990, 960), (690, 660), (690, 600), (30, 0), (1, 0), (999, 0)])
def test_learned_range_variance_equals_diffusers(stage1, t, prev_t):
    """Schedule.log_variance is diffusers' _get_variance bit for bit (the reference may read the private
    method; the library does not), for the strided step t -> prev_t set on a fresh scheduler."""
    ref = _reference(stage1, [t, prev_t])
    v = torch.rand((2, 3, 8, 8), generator=make_generator(t)) * 2.4 - 1.2   # the UNet's channels, a bit past [-1, 1]
    ours = Schedule(stage1).log_variance(v, t, prev_t)
    assert torch.equal(ours, ref._get_variance(t, v))


@pytest.mark.parametrize("scale", [0.5, 1.2, 3.0, 40.0])
def test_dynamic_thresholding_equals_diffusers(stage1, scale):
    """Schedule.clip_x0 (IF: Imagen's dynamic thresholding) is diffusers' _threshold_sample bit for bit,
    per image, below s = 1 (plain clipping), in between and above sample_max_value."""
    x0 = torch.randn((3, 3, 16, 16), generator=make_generator(1)) * scale
    x0[1] *= 0.1                                                    # one image needs no thresholding at all
    assert torch.equal(Schedule(stage1).clip_x0(x0), stage1.scheduler._threshold_sample(x0))
    assert torch.equal(Schedule(stage1).clip_x0(x0.double()), stage1.scheduler._threshold_sample(x0.double()))


def test_clip_x0_follows_the_config():
    cfg = dict(IF_SCHEDULER_CONFIG, thresholding=False)
    x0 = torch.linspace(-3, 3, 48).reshape(1, 3, 4, 4)
    assert torch.equal(Schedule(DDPMScheduler(**cfg)).clip_x0(x0), x0.clamp(-1, 1))
    assert torch.equal(Schedule(DDPMScheduler(**dict(cfg, clip_sample=False))).clip_x0(x0), x0)


def test_one_step_with_fixed_noise_equals_diffusers_bit_for_bit(stage1, emb, image):
    """A strided step through the Schedule (x0_hat, thresholding, posterior mean, learned variance) against
    DDPMScheduler.step with the same generator: the same operations, so the same bits."""
    ts = strided_timesteps(stage1)
    for t, prev_t in [(990, 960), (690, 660), (30, 0)]:
        x_t = forward(image, t, stage1, generator=make_generator(t))
        eps, var = estimate_noise(stage1, x_t, t, emb.get("a high quality picture"))
        ours = ddpm_step(x_t, eps, var, t, prev_t, stage1, generator=make_generator(5))
        ref = _reference(stage1, ts).step(torch.cat([eps, var], 1), t, x_t, generator=make_generator(5))
        assert torch.equal(ours, ref.prev_sample)
        schedule = Schedule(stage1)
        assert torch.equal(schedule.clip_x0(schedule.predict_x0(x_t, eps, t)), ref.pred_original_sample)


def test_schedule_reads_only_public_scheduler_state(stage1, emb):
    """The loop runs on a stand-in scheduler with just alphas_cumprod, init_noise_sigma and the config,
    and gives the same image bit for bit: no private diffusers method, no scheduler timesteps."""
    s = stage1.scheduler
    bare = SimpleNamespace(alphas_cumprod=s.alphas_cumprod.clone(), init_noise_sigma=s.init_noise_sigma,
                           config=SimpleNamespace(**dict(s.config)))
    ts = strided_timesteps(stage1, 990, 330)
    c, u = emb.get("a rocket ship"), emb.get("")
    a = sample_cfg(stage1, c, u, ts, generator=make_generator(3))
    b = sample_cfg(SimpleNamespace(unet=stage1.unet, scheduler=bare), c, u, ts, generator=make_generator(3))
    assert torch.equal(a, b)


def test_tables_are_minis_formula_and_match_the_schedulers_betas():
    """Schedule.tables (what mini's hybrid loss reads) is, bit for bit, the formula mini's loss used
    before it moved here (written out below as the reference), and agrees with the scheduler's own
    float32 betas.  That mini's training is unchanged is tests/test_mini_reproduces.py's job."""
    sched = DDPMScheduler(**IF_SCHEDULER_CONFIG)
    tab = Schedule(sched).tables("cpu")
    abar = sched.alphas_cumprod.double()
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1 - abar / abar_prev
    post_var = beta * (1 - abar_prev) / (1 - abar)
    ref = dict(abar=abar, log_beta=beta.log(), post_log_var=torch.cat([post_var[1:2], post_var[1:]]).log(),
               coef_x0=beta * abar_prev.sqrt() / (1 - abar), coef_xt=(1 - abar_prev) * (1 - beta).sqrt() / (1 - abar))
    assert set(tab) == set(ref)
    for k, v in ref.items():
        assert tab[k].dtype == torch.float32 and torch.equal(tab[k], v.float()), k
    # beta from float32 abar (1 - abar_t / abar_{t-1}) carries abar's rounding, 2^-24 relative, as an
    # absolute error of a few 2^-24 in beta_t ~ 1e-4: hence atol against the scheduler's betas
    close = dict(rtol=1e-5, atol=4 * 2.0 ** -24)
    torch.testing.assert_close(tab["log_beta"].double().exp(), sched.betas.double(), **close)
    betas = sched.betas.double()
    torch.testing.assert_close(tab["post_log_var"][1:].double().exp(), (betas * (1 - abar_prev) / (1 - abar))[1:], **close)


def test_forward_statistics_reads_abar_from_the_schedule(stage1, image):
    from diffnb.part_a import forward_statistics
    x_t = forward(image, 500, stage1, generator=make_generator(3))
    stats = forward_statistics(image, x_t, 500, stage1)
    assert stats["abar"] == float(stage1.scheduler.alphas_cumprod[500])


def test_i_start_and_timesteps_are_checked(stage1, emb, image):
    ts = strided_timesteps(stage1)
    c, u = emb.get("a high quality picture"), emb.get("")
    with pytest.raises(ValueError, match=r"i_start=33 leaves no step.*\[0, 32\]"):
        iterative_denoise_cfg(image, 33, stage1, c, u, ts)
    with pytest.raises(ValueError, match="descending"):
        iterative_denoise_cfg(image, 0, stage1, c, u, [0, 30, 60])
    with pytest.raises(ValueError, match="out of range"):
        iterative_denoise_cfg(image, 0, stage1, c, u, [1200, 30, 0])
    with pytest.raises(ValueError, match=r"expects \(1, L, 4096\)"):
        iterative_denoise_cfg(image, 0, stage1, c[..., :768], u, ts)


# --------------------------------------------------------------------------- the loop vs IFPipeline

def test_cfg_sampling_equals_ifpipeline(stage1, emb):
    """iterative_denoise_cfg from pure noise = IFPipeline with the same UNet, embeddings, timesteps, seed.

    The pipeline also takes a last step at t=0; compare the intermediate after every step up to t=30.
    """
    ts = strided_timesteps(stage1)
    c, u = emb.get("a high quality picture"), emb.get("")
    seen = {}
    stage1(prompt_embeds=c, negative_prompt_embeds=u, timesteps=ts, guidance_scale=7.0,
           generator=make_generator(100), output_type="pt", callback_steps=1,
           callback=lambda i, t, x: seen.__setitem__(int(t), x.clone()))

    g = make_generator(100)
    x = pure_noise(stage1, g)                                      # drawn first, as the pipeline does
    trace = []
    ours = iterative_denoise_cfg(x, 0, stage1, c, u, ts, scale=7.0, generator=g, intermediates=trace,
                                 return_every=1)
    assert len(trace) == len(ts) - 1
    # The same UNet batches and the same operations: bit-equal under every kernel choice and thread count
    # tried (tests/numerics_drift.py, the "loop" row). 1e-5 leaves room for float32 formulas evaluated in
    # another order (a step is about 13 roundings, diffnb.core.numerics.ddpm_step_bound) without admitting a
    # wrong step, which moves the image by far more.
    for step in trace:                                             # the pipeline's callback gets x after step t
        torch.testing.assert_close(step.image, seen[step.t], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, seen[30], atol=1e-5, rtol=1e-5)


def test_cfg_calls_the_unet_once_per_step_with_2n(stage1, emb):
    counting = CountingUNet(stage1.unet)
    bundle = SimpleNamespace(unet=counting, scheduler=stage1.scheduler)
    ts = strided_timesteps(stage1, 990, 90)
    x = pure_noise(stage1, make_generator(0), num_images=3)
    iterative_denoise_cfg(x, 0, bundle, emb.get("a rocket ship"), emb.get(""), ts, generator=make_generator(1))
    assert counting.batches == [6] * (len(ts) - 1)


def test_intermediates_every_five_steps_like_section_1_4(stage1, emb, image):
    ts = strided_timesteps(stage1)
    x_t = forward(image, ts[10], stage1, generator=make_generator(2))
    trace = []
    out = iterative_denoise(x_t, 10, stage1, emb.get("a high quality picture"), ts, make_generator(3),
                            intermediates=trace, return_every=5)
    assert [(s.step, s.t, s.prev_t) for s in trace] == [(1, 690, 660), (6, 540, 510), (11, 390, 360),
                                                      (16, 240, 210), (21, 90, 60)]
    assert out.shape == image.shape


def test_same_seed_same_image(stage1, emb):
    ts = strided_timesteps(stage1, 990, 90)
    a = sample_cfg(stage1, emb.get("a rocket ship"), emb.get(""), ts, generator=make_generator(9))
    b = sample_cfg(stage1, emb.get("a rocket ship"), emb.get(""), ts, generator=make_generator(9))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- SDEdit and inpainting

def test_sdedit_one_result_per_start(stage1, emb, image):
    ts = strided_timesteps(stage1, 990, 90)
    outs = sdedit(image, [1, 3, 7], stage1, emb.get("a high quality picture"), emb.get(""), ts,
                  generator=make_generator(0))
    assert isinstance(outs, list) and len(outs) == 3
    assert all(o.shape == image.shape for o in outs)


def test_inpaint_keeps_every_unmasked_pixel(stage1, emb, image):
    s = image.shape[-1]
    mask = rectangle_mask(s, s // 4, s // 4, s // 2, s // 2)      # 1 = edit
    ts = strided_timesteps(stage1, 990, 90)
    out = inpaint(image, mask, stage1, emb.get("a high quality picture"), emb.get(""), ts,
                  generator=make_generator(0))
    keep = mask[0, 0] == 0
    assert torch.equal(out[..., keep], image[..., keep])
    assert not torch.allclose(out[..., ~keep], image[..., ~keep])


def test_inpaint_mask_checks(stage1, emb, image):
    s = image.shape[-1]
    ts = strided_timesteps(stage1, 990, 90)
    c, u = emb.get(""), emb.get("")
    with pytest.raises(ValueError, match=rf"mask has shape \(1, {s}, {s // 2}\); expected \(1, {s}, {s}\)"):
        inpaint(image, torch.ones(1, s, s // 2), stage1, c, u, ts)
    with pytest.raises(ValueError, match="only 0 .* and 1"):
        inpaint(image, torch.full((s, s), 0.5), stage1, c, u, ts)


# --------------------------------------------------------------------------- classical baseline

def test_blur_denoise(image):
    out = blur_denoise(image, kernel_size=5, sigma=2.0)
    assert out.shape == image.shape
    assert out.std() < image.std()                                 # smoothing lowers the pixel spread
    with pytest.raises(ValueError, match="odd"):
        blur_denoise(image, kernel_size=4)


# --------------------------------------------------------------------------- named groups in one batch

def test_batch_splits_a_result_back_by_name_and_joins_inputs_in_its_order():
    from diffnb.part_a import Batch

    photos, renders = torch.randn(3, 3, 8, 8), torch.randn(2, 3, 8, 8)
    batch = Batch(photos=photos, renders=renders, none=photos[:0])
    assert len(batch) == 5 and torch.equal(batch.images, torch.cat([photos, renders]))
    parts = batch.split(batch.images * 2)
    assert list(parts) == ["photos", "renders", "none"]
    assert torch.equal(parts["photos"], photos * 2) and torch.equal(parts["renders"], renders * 2)
    assert parts["none"].shape == (0, 3, 8, 8)
    per_start = batch.split([batch.images, -batch.images])             # one result per start index
    assert torch.equal(per_start["renders"][1], -renders) and len(per_start["photos"]) == 2
    masks = batch.join(photos=torch.zeros(3, 1, 8, 8), renders=torch.ones(2, 1, 8, 8), none=torch.ones(0, 1, 8, 8))
    assert masks[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1]


def test_batch_refuses_what_it_cannot_split_with_the_sizes():
    from diffnb.part_a import Batch

    batch = Batch(photos=torch.zeros(3, 3, 8, 8), renders=torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"a result of 4 images cannot be split .*'photos': 3, 'renders': 2"):
        batch.split(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match=r"join: each part needs one entry per image .*'renders': 1"):
        batch.join(photos=torch.zeros(3, 1, 8, 8), renders=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"join needs one part per group \['photos', 'renders'\], got \['photos'\]"):
        batch.join(photos=torch.zeros(3, 1, 8, 8))
    with pytest.raises(TypeError, match=r"group 'photos' must be images \(N, C, H, W\), got \(3, 8, 8\)"):
        Batch(photos=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="at least one named group"):
        Batch()


# --------------------------------------------------------------------------- progress of the loops

def test_a_loop_shows_a_bar_when_the_notebook_asked_for_one_and_never_when_told_not_to(stage1, emb, monkeypatch):
    """``progress=None`` follows ``show_loops`` (setup_part_a turns it on); ``progress=False`` always wins
    (the explorers' inner loops, under their own bar); ``True`` always shows one."""
    import diffnb.a.denoise as denoise_module
    from diffnb.core import progress as progress_module

    bars = []

    def recording_bar(iterable, **kwargs):
        bars.append(kwargs["desc"])
        return iterable
    monkeypatch.setattr(denoise_module, "tqdm", recording_bar)
    was = progress_module.loops_shown()
    progress_module.show_loops(False)
    try:
        _check_bars(stage1, emb, bars, progress_module)
    finally:
        progress_module.show_loops(was)


def _check_bars(stage1, emb, bars, progress_module):
    ts = strided_timesteps(stage1, 330)
    c, u = emb["a photo of a caveman"], emb[""]

    def sample(**kw):
        return sample_cfg(stage1, c, u, ts, 7.0, make_generator(0), **kw)

    quiet = sample()
    assert bars == []
    progress_module.show_loops()
    assert progress_module.loops_shown()
    shown = sample()
    assert bars == ["CFG sampling"]
    sample(progress=False)
    assert bars == ["CFG sampling"]
    progress_module.show_loops(False)
    sample(progress=True)
    assert bars == ["CFG sampling", "CFG sampling"]
    assert torch.equal(quiet, shown)                                   # a bar changes nothing in the result
