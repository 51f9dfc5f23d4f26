"""The mini model: the hybrid loss against closed forms and diffusers, the prompt encoder, resumable training."""
import dataclasses
import json
import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffnb.mini import model as mini, world
from diffnb.a.models import IF_SCHEDULER_CONFIG, check_bundle, load_stage1, model_dir


@pytest.fixture(scope="module")
def sched():
    s = DDPMScheduler(**IF_SCHEDULER_CONFIG)
    return s, mini._schedule(s, "cpu")


def test_learned_variance_is_what_the_diffusers_sampler_reads(sched):
    """The training loss and DDPMScheduler(variance_type="learned_range") must agree on what the
    variance channels mean, or the sampler would use variances the model never learnt."""
    s, table = sched
    s.set_timesteps(1000)                                     # unstrided: previous t = t - 1
    v = torch.rand(3, 1, 1, 1) * 2 - 1
    for t in (1, 10, 500, 999):
        ours = mini.learned_log_variance(v, torch.full((3,), t), table)
        theirs = torch.stack([s._get_variance(t, v[k]) for k in range(3)])
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def _noised_batch(s, seed, t):
    """Four seeded 8x8 images in [-1, 1], their noise and x_t at timesteps ``t``, and the generator."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor(t)
    return x0, noise, t, s.add_noise(x0, noise, t), g


def test_hybrid_loss_against_closed_forms(sched):
    s, table = sched
    x0, noise, t, xt, g = _noised_batch(s, 0, [1, 100, 500, 999])
    # exact noise and v = -1 (the true posterior variance): both terms vanish
    loss, mse, vlb = mini.hybrid_loss(torch.cat([noise, -torch.ones_like(noise)], 1), x0, xt, t, noise, table)
    assert mse == 0 and abs(float(vlb)) < 1e-6
    # wrong noise, some variance: vlb is KL(q || p) per pixel in bits, computed here with torch.distributions
    eps = noise + 0.3 * torch.randn(x0.shape, generator=g)
    v = torch.rand(x0.shape, generator=g) * 2 - 1
    _, mse, vlb = mini.hybrid_loss(torch.cat([eps, v], 1), x0, xt, t, noise, table)
    abar = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    abar_prev = s.alphas_cumprod[t - 1].view(-1, 1, 1, 1)
    beta = 1 - abar / abar_prev
    mean = lambda x0_: (beta * abar_prev.sqrt() * x0_ + (1 - abar_prev) * (1 - beta).sqrt() * xt) / (1 - abar)  # noqa: E731
    x0_hat = (xt - (1 - abar).sqrt() * eps) / abar.sqrt()
    post_var = beta * (1 - abar_prev) / (1 - abar)
    frac = (v + 1) / 2
    model_var = torch.exp(frac * beta.log() + (1 - frac) * post_var.log())
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mean(x0), post_var.sqrt()),
                                           torch.distributions.Normal(mean(x0_hat), model_var.sqrt()))
    torch.testing.assert_close(vlb, kl.mean() / math.log(2), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(mse, ((eps - noise) ** 2).mean())


def test_the_variance_term_trains_only_the_variance_channels(sched):
    """Improved DDPM stops the gradient of L_vlb into the mean: the noise channels learn from the MSE
    alone, the variance channels from L_vlb alone."""
    s, table = sched
    x0 = torch.zeros(2, 3, 4, 4)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([5, 600])
    xt = s.add_noise(x0, noise, t)
    out = torch.cat([noise + 0.5, torch.zeros_like(noise)], 1).requires_grad_()
    loss, _, _ = mini.hybrid_loss(out, x0, xt, t, noise, table)
    loss.backward()
    torch.testing.assert_close(out.grad[:, :3], 2 * 0.5 * torch.ones_like(noise) / noise.numel())
    assert out.grad[:, 3:].abs().sum() > 0


def test_prompt_encoder_words_and_round_trip(tmp_path):
    _, enc = mini.new_models(0)
    ids = enc.token_ids(["a photo of the digit 7", ""])
    assert ids.shape == (2, mini.MAX_WORDS) and (ids[1] == 0).all() and (ids[0, :6] > 0).all()
    with pytest.raises(ValueError, match="does not know"):
        enc.token_ids(["a photo of a cat"])
    with pytest.raises(ValueError, match="at most 16"):
        enc.token_ids([" ".join(["the"] * 17)])
    e = enc.encode(["a pencil sketch of a 2"])
    assert e.shape == (1, mini.MAX_WORDS, mini.EMBED_DIM)
    enc.save(tmp_path / "enc")
    again = mini.PromptEncoder.load(tmp_path / "enc")
    torch.testing.assert_close(again.encode(["a pencil sketch of a 2"]), e)
    prompts = mini.MiniPrompts(again)
    assert "a photo of the digit 7" in prompts and "a photo of a cat" not in prompts
    assert prompts.get("").shape == (1, mini.MAX_WORDS, mini.EMBED_DIM)


def test_drawn_prompts_never_name_the_wrong_digit_or_style():
    g = torch.Generator().manual_seed(0)
    d = torch.randint(0, 10, (4000,), generator=g)
    s = torch.randint(0, 3, (4000,), generator=g)
    prompts = mini.draw_prompts(d, s, g, p_uncond=0.1)
    empty = sum(p == "" for p in prompts) / len(prompts)
    assert 0.08 < empty < 0.12
    for p, dd, ss in zip(prompts, d.tolist(), s.tolist()):
        pd, ps = world.parse_prompt(p)
        assert pd in (None, dd) and ps in (None, ss)
    named_both = sum(world.parse_prompt(p) == (dd, ss) for p, dd, ss in zip(prompts, d.tolist(), s.tolist()))
    assert 0.45 < named_both / len(prompts) < 0.55                  # 0.55 of the 0.9 that are not dropped


def test_resumed_training_equals_an_uninterrupted_run(tmp_path, one_thread):
    cfg = mini.MiniConfig(steps=4, batch_size=4, n_images=16, warmup=2, save_every=2)
    a = mini.train_mini(cfg, out=tmp_path / "a", run_dir=tmp_path / "run_a", progress=False)
    part = mini.train_mini(cfg, out=tmp_path / "b", run_dir=tmp_path / "run_b", progress=False, stop_after=2)
    assert part["step"] == 2 and "out" not in part and not (tmp_path / "b").exists()
    b = mini.train_mini(cfg, out=tmp_path / "b", run_dir=tmp_path / "run_b", progress=False)
    assert a["step"] == b["step"] == 4
    from safetensors.torch import load_file
    wa = load_file(str(tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ea = mini.PromptEncoder.load(tmp_path / "a" / "prompt_encoder").encode(["a 5"])
    eb = mini.PromptEncoder.load(tmp_path / "b" / "prompt_encoder").encode(["a 5"])
    assert torch.equal(ea, eb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("low_res_steps", [0, 6])
def test_a_cuda_graph_run_follows_the_eager_run_and_resumes_on_the_cpu(tmp_path, low_res_steps):
    # with low_res_steps=6 each image size gets its own graph: steps 0-2 eager, 3 recorded, 4-5 replayed
    # at 16x16, then the same at 32x32 for steps 6-11
    import warnings
    cfg = mini.MiniConfig(steps=16, batch_size=8, n_images=32, warmup=2, save_every=6, low_res_steps=low_res_steps)
    mini.train_mini(cfg, out=tmp_path / "e", run_dir=tmp_path / "run_e", progress=False, device="cuda",
                    cuda_graph=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)      # a failed recording would warn and fall back
        part = mini.train_mini(cfg, run_dir=tmp_path / "run_g", progress=False, device="cuda", stop_after=12)
    assert part["step"] == 12
    he = torch.load(tmp_path / "run_e" / "state.pt", weights_only=True)["history"]
    hg = torch.load(tmp_path / "run_g" / "state.pt", weights_only=True)["history"]
    # the same draws: the first (eager) steps agree closely, the recorded ones stay close
    assert hg[0] == pytest.approx(he[0], rel=1e-4) and hg[2] == pytest.approx(he[2], rel=1e-3)
    assert hg[5][0] == pytest.approx(he[5][0], rel=0.05) and hg[11][0] == pytest.approx(he[11][0], rel=0.05)
    done = mini.train_mini(cfg, out=tmp_path / "g", run_dir=tmp_path / "run_g", progress=False, device="cpu")
    assert done["step"] == 16 and (tmp_path / "g" / "unet").is_dir()


def test_bad_training_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_images >= batch_size"):
        mini.train_mini(mini.MiniConfig(n_images=4, batch_size=8), run_dir=tmp_path)
    with pytest.raises(TypeError, match="MiniConfig"):
        mini.train_mini(dict(steps=3), run_dir=tmp_path)
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        mini.train_mini(mini.MiniConfig(steps=2, batch_size=2, n_images=8), run_dir=tmp_path, cuda_graph=True)


def test_the_shipped_mini_model_loads_through_the_common_path():
    pipe = load_stage1("mini", device="cpu")
    check_bundle(pipe)
    cfg = pipe.unet.config
    assert (cfg.in_channels, cfg.out_channels, cfg.sample_size) == (3, 6, 32)
    size = sum(f.stat().st_size for f in model_dir("mini").rglob("*") if f.is_file())
    assert size < 20e6
    prompts = mini.load_mini_prompts()
    e = prompts.get("a crayon drawing of the number three")
    out = pipe.unet(torch.zeros(1, 3, 32, 32), 500, encoder_hidden_states=e).sample
    assert out.shape == (1, 6, 32, 32) and out.isfinite().all()


def test_a_run_stopped_early_exports_its_ema_weights_as_the_finished_run_does(tmp_path, one_thread):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    cfg = mini.MiniConfig(steps=4, batch_size=4, n_images=16, warmup=1, save_every=1)
    # the recipe's way: stop at a step, then export the EMA weights of the checkpoint
    part = mini.train_mini(cfg, run_dir=tmp_path / "run", progress=False, stop_at=2)
    assert part["step"] == 2 and "out" not in part
    mini.export_run(cfg, tmp_path / "run", tmp_path / "early")
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "early" / "unet")
    enc = mini.PromptEncoder.load(tmp_path / "early" / "prompt_encoder")
    for p, e in zip(list(unet.parameters()) + list(enc.parameters()), state["ema"]):
        assert torch.equal(p, e)
    assert json.loads((tmp_path / "early" / "training.json").read_text())["steps_trained"] == 2
    # at the end of the schedule, export_run writes what train_mini's own export wrote
    mini.train_mini(cfg, out=tmp_path / "end", run_dir=tmp_path / "run", progress=False)
    mini.export_run(cfg, tmp_path / "run", tmp_path / "end2")
    for sub in ("unet/diffusion_pytorch_model.safetensors", "prompt_encoder/model.safetensors"):
        wa, wb = load_file(str(tmp_path / "end" / sub)), load_file(str(tmp_path / "end2" / sub))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(FileNotFoundError, match="python -m diffnb.mini.model train"):
        mini.export_run(mini.MiniConfig(seed=5), tmp_path / "nothing")


def test_the_shipped_model_is_the_recipes_export():
    info = json.loads((model_dir("mini") / "training.json").read_text())
    assert info["config"] == mini.RECIPE.record()
    assert len(info["mse_per_100_steps"]) * 100 >= mini.RECIPE.steps > (len(info["mse_per_100_steps"]) - 1) * 100


def test_a_run_can_start_from_another_runs_ema_snapshot(tmp_path, one_thread, monkeypatch):
    from safetensors.torch import load_file
    monkeypatch.setenv("DIFFNB_BUILD", str(tmp_path / "build"))
    assert mini.MiniConfig().key() == "25a32bc749"          # runs from scratch keep their folder names
    first = mini.MiniConfig(steps=4, batch_size=4, n_images=16, warmup=1, save_every=1)
    second = mini.MiniConfig(steps=2, batch_size=4, n_images=16, warmup=1, save_every=1, init_from=f"{first.key()}@2")
    assert second.key() != first.key()
    with pytest.raises(FileNotFoundError, match="snapshot"):          # the snapshot is not there yet
        mini.train_mini(second, progress=False)
    mini.train_mini(first, progress=False, stop_at=2)
    with pytest.raises(ValueError, match="not 3"):
        mini.snapshot(first, 3)
    snap = mini.snapshot(first, 2)
    # the second run starts from exactly the first run's EMA weights at step 2
    unet, enc = mini.new_models(second.seed, second.pooled_text)
    mini._load_init(second, unet, enc)
    _, _, state = mini.ema_models(first)
    for p, e in zip(list(unet.parameters()) + list(enc.parameters()), state["ema"]):
        assert torch.equal(p, e)
    out = mini.train_mini(second, out=tmp_path / "second", progress=False)
    info = json.loads((tmp_path / "second" / "training.json").read_text())
    assert info["steps_trained"] == 2 and info["started_from"]["steps_trained"] == 2
    assert info["started_from"]["config"] == first.record() and info["config"] == second.record()
    w2 = load_file(str(tmp_path / "second" / "unet" / "diffusion_pytorch_model.safetensors"))
    w1 = load_file(str(snap / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1) and out["step"] == 2      # and it trained on
    with pytest.raises(ValueError, match="init_from must be"):
        mini.MiniConfig(init_from="last run")


def test_min_snr_weights_the_noise_mse_per_image(sched):
    """min(SNR_t, gamma) / SNR_t on each image's noise MSE in the loss; the logged mse stays the plain mean."""
    s, table = sched
    x0, noise, t, xt, g = _noised_batch(s, 2, [0, 50, 400, 999])
    eps = noise + 0.2 * torch.randn(x0.shape, generator=g)
    out = torch.cat([eps, torch.zeros_like(eps)], 1)
    snr = s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t])
    w = torch.where(snr > 5, 5 / snr, torch.ones_like(snr))
    torch.testing.assert_close(mini.min_snr_weight(t, table, 5.0), w.float(), rtol=1e-4, atol=0)
    assert w[0] < 1e-3 and w[-1] == 1                      # nearly clean images weigh little, noisy ones fully
    plain, mse0, vlb0 = mini.hybrid_loss(out, x0, xt, t, noise, table)
    weighted, mse5, vlb5 = mini.hybrid_loss(out, x0, xt, t, noise, table, snr_gamma=5.0)
    per_image = ((eps - noise) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(plain - vlb0, per_image.mean())
    torch.testing.assert_close(weighted - vlb5, (w.float() * per_image).mean(), rtol=1e-4, atol=1e-7)
    assert mse5 == mse0 and vlb5 == vlb0
    assert mini.MiniConfig(snr_gamma=5.0).key() != mini.MiniConfig().key()
    assert "snr_gamma" not in mini.MiniConfig().record() and mini.MiniConfig(snr_gamma=5.0).record()["snr_gamma"] == 5.0
    with pytest.raises(ValueError, match="snr_gamma"):
        mini.MiniConfig(snr_gamma=-1.0)


def test_a_low_res_first_phase_trains_on_half_size_images_and_resumes_across_the_switch(tmp_path, one_thread,
                                                                                        monkeypatch):
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    half = mini.low_res(x)
    assert half.shape == (2, 3, 2, 2)
    assert half[1, 2, 0, 1] == x[1, 2, 0:2, 2:4].mean()                  # each pixel the mean of a 2x2 block
    with pytest.raises(ValueError, match="even H and W"):
        mini.low_res(torch.zeros(1, 3, 5, 5))
    seen = []
    real_loss = mini.hybrid_loss

    def spy(pred, x0, *args, **kwargs):
        seen.append(tuple(x0.shape[-2:]))
        return real_loss(pred, x0, *args, **kwargs)

    monkeypatch.setattr(mini, "hybrid_loss", spy)
    cfg = mini.MiniConfig(steps=4, batch_size=4, n_images=16, warmup=1, save_every=1, low_res_steps=2)
    whole = mini.train_mini(cfg, out=tmp_path / "a", run_dir=tmp_path / "run_a", progress=False)
    half_size, full_size = (world.SIZE // 2,) * 2, (world.SIZE,) * 2
    assert seen == [half_size, half_size, full_size, full_size]
    seen.clear()
    mini.train_mini(cfg, run_dir=tmp_path / "run_b", progress=False, stop_at=1)      # stopped inside the first phase
    mini.train_mini(cfg, out=tmp_path / "b", run_dir=tmp_path / "run_b", progress=False)
    assert seen == [half_size, half_size, full_size, full_size] and whole["step"] == 4
    ha = torch.load(tmp_path / "run_a" / "state.pt", weights_only=True)["history"]
    hb = torch.load(tmp_path / "run_b" / "state.pt", weights_only=True)["history"]
    assert ha == hb                                      # resumed across the switch = uninterrupted
    seen.clear()
    mini.train_mini(dataclasses.replace(cfg, low_res_steps=0), out=tmp_path / "c", run_dir=tmp_path / "run_c",
                    progress=False)
    assert seen == [full_size] * 4
    assert torch.load(tmp_path / "run_c" / "state.pt", weights_only=True)["history"][0] != ha[0]
    assert "low_res_steps" not in mini.MiniConfig().record() and cfg.record()["low_res_steps"] == 2
    assert cfg.key() != dataclasses.replace(cfg, low_res_steps=0).key()
    for bad, error in ((-1, ValueError), (5, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="low_res_steps"):
            mini.MiniConfig(steps=4, low_res_steps=bad)
