"""The one training loop: it learns, checkpoints atomically, resumes to the same run."""
import importlib

import pytest
import torch
from safetensors.torch import load_file

from diffnb import profiles
from diffnb.b.train import TrainConfig, load_history, load_model, train


def _toy_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 1, 28, 28)
    for i, c in enumerate(labels.tolist()):          # a bar whose position depends on the class
        images[i, 0, 4 + 2 * c: 6 + 2 * c, 6:22] = 1.0
    images += 0.05 * torch.rand(images.shape, generator=g)
    return images.clamp(0, 1), labels


def _config(**kw):
    base = dict(name="toy", objective="class_fm", num_hiddens=4, batch_size=16, lr=1e-2, epochs=3,
                lr_decay=True, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir, epoch):
    return load_file(str(run_dir / f"epoch_{epoch:03d}.safetensors"))


def test_resumed_run_equals_uninterrupted(tmp_path):
    images, labels = _toy_data()
    cfg = _config()
    full = train(cfg, images, labels, device="cpu", run_dir=tmp_path / "full", progress=False)
    part = train(cfg, images, labels, device="cpu", run_dir=tmp_path / "part", progress=False, stop_after_epoch=1)
    assert part.trained_epochs == [1]
    assert not (tmp_path / "part" / "epoch_002.safetensors").exists()
    resumed = train(cfg, images, labels, device="cpu", run_dir=tmp_path / "part", progress=False)
    assert resumed.trained_epochs == [2, 3]
    assert resumed.losses == full.losses                     # same noise, t, masks and shuffles
    for epoch in (1, 2, 3):
        a, b = _weights(tmp_path / "full", epoch), _weights(tmp_path / "part", epoch)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (epoch, k)
    # a finished run is loaded, not retrained
    again = train(cfg, images, labels, device="cpu", run_dir=tmp_path / "full", progress=False)
    assert again.trained_epochs == [] and again.losses == full.losses


def test_loss_goes_down_and_lr_decays_by_ten(tmp_path):
    images, labels = _toy_data(160)
    cfg = _config(objective="denoise", epochs=4, lr=3e-3, batch_size=16, num_hiddens=8)
    res = train(cfg, images, labels, device="cpu", run_dir=tmp_path, progress=False)
    first, last = res.losses[:5], res.losses[-5:]
    assert sum(last) < 0.5 * sum(first)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    # ExponentialLR with gamma = 0.1 ** (1 / epochs): lr falls by 10x over the run
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(3e-4)
    assert res.epoch_ends == [10, 20, 30, 40]


def test_checkpoints_are_written_atomically_and_load_safely(tmp_path):
    images, labels = _toy_data()
    cfg = _config(epochs=2)
    train(cfg, images, labels, device="cpu", run_dir=tmp_path, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".lock", "checksums.json", "epoch_001.safetensors", "epoch_002.safetensors",
                     "state.pt"]                       # no temp files left
    model = load_model(cfg, 1, run_dir=tmp_path)
    assert not model.training
    losses, ends = load_history(cfg, run_dir=tmp_path)
    assert ends == [6, 12] and len(losses) == 12


def test_interrupted_epoch_keeps_what_was_done(tmp_path, monkeypatch):
    images, labels = _toy_data()
    cfg = _config(epochs=3)
    calls = {"n": 0}
    tr = importlib.import_module("diffnb.b.train")   # the module: diffnb.b.train is also the function
    real = tr.OBJECTIVES["class_fm"]

    def flaky(model, x, y, g, c):
        calls["n"] += 1
        if calls["n"] == 9:                                   # in the middle of epoch 2
            raise KeyboardInterrupt
        return real[0](model, x, y, g, c)

    monkeypatch.setitem(tr.OBJECTIVES, "class_fm", (flaky, real[1]))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, images, labels, device="cpu", run_dir=tmp_path / "a", progress=False)
    monkeypatch.setitem(tr.OBJECTIVES, "class_fm", real)
    assert (tmp_path / "a" / "epoch_001.safetensors").exists()
    resumed = train(cfg, images, labels, device="cpu", run_dir=tmp_path / "a", progress=False)
    assert resumed.trained_epochs == [2, 3]
    full = train(cfg, images, labels, device="cpu", run_dir=tmp_path / "b", progress=False)
    assert resumed.losses == full.losses


def test_accelerate_single_process_matches_plain_loop(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    images, labels = _toy_data()
    cfg = _config(epochs=2)
    plain = train(cfg, images, labels, device="cpu", run_dir=tmp_path / "plain", progress=False)
    acc = train(cfg, images, labels, run_dir=tmp_path / "acc", progress=False,
                accelerator=accelerate.Accelerator(cpu=True))
    assert acc.losses == pytest.approx(plain.losses, rel=1e-5)


def test_missing_checkpoint_names_the_notebook(tmp_path):
    cfg = profiles.part_b_config("time_fm", "quick")
    with pytest.raises(FileNotFoundError, match="B2.2_train_time_conditioned.ipynb"):
        load_model(cfg, 5, run_dir=tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"epoch must lie in 1\.\.10"):
        load_model(cfg, 11, run_dir=tmp_path)


def test_changed_settings_do_not_resume_a_foreign_run(tmp_path):
    images, labels = _toy_data()
    train(_config(epochs=1), images, labels, device="cpu", run_dir=tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="other settings"):
        train(_config(epochs=1, lr=1e-3), images, labels, device="cpu", run_dir=tmp_path, progress=False)
    assert _config().key() != _config(lr=1e-3).key()
    assert _config().key() == _config(notebook="x.ipynb").key()


@pytest.mark.parametrize("kw, match", [
    (dict(objective="diffusion"), "unknown objective"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=-1.0), "lr must be positive"),
    (dict(data="cifar"), "data must be"),
    (dict(train_limit=8), "smaller than one batch"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


def test_profiles_hold_the_write_up_settings():
    den = profiles.part_b_config("denoiser", "seed")
    assert (den.num_hiddens, den.batch_size, den.lr, den.epochs, den.sigma, den.lr_decay) == (128, 256, 1e-4, 5, 0.5, False)
    assert den.data == "mnist" and den.train_limit is None
    for run in ("time_fm", "class_fm"):
        fm = profiles.part_b_config(run, "seed")
        assert (fm.num_hiddens, fm.batch_size, fm.lr, fm.epochs, fm.lr_decay) == (64, 64, 1e-2, 10, True)
    assert profiles.part_b_config("class_fm", "seed").p_uncond == 0.1
    const = profiles.part_b_config("class_fm_constant_lr", "seed")
    assert (const.lr, const.lr_decay, const.epochs) == (1e-3, False, 10)
    assert profiles.part_b_sampling("seed").guidance_scale == 5.0
    assert profiles.part_b_config("time_fm", "quick", lr=3e-3, epochs=None).lr == 3e-3
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.part_b_config("time_fm", "fast")
    with pytest.raises(ValueError, match="unknown setting"):
        profiles.part_b_config("time_fm", "quick", learning_rate=1.0)


def test_cuda_graph_needs_cuda(tmp_path):
    images, labels = _toy_data()
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        train(_config(), images, labels, device="cpu", run_dir=tmp_path, progress=False, cuda_graph=True)


def test_checkpointed_optimizer_state_resumes_on_any_device():
    """A CUDA-graph run keeps Adam's learning rate as a tensor and capturable=True; its checkpoint
    stores neither, so an ordinary optimizer (say, on this CPU) loads it and steps."""
    from diffnb.core.cudagraph import portable_state

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=1e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    w.grad = torch.ones(3)
    opt.step()
    for group in opt.param_groups:                      # what make_capturable does to the groups
        group["capturable"], group["lr"] = True, torch.tensor(float(group["lr"]))
    sched.step()
    opt_state, sched_state = portable_state(opt.state_dict(), sched.state_dict())
    group = opt_state["param_groups"][0]
    assert type(group["lr"]) is float and group["lr"] == pytest.approx(5e-3) and group["capturable"] is False
    assert all(type(x) is float for x in sched_state["_last_lr"] + sched_state["base_lrs"])

    w2 = torch.nn.Parameter(torch.ones(3))
    opt2 = torch.optim.Adam([w2], lr=1.0)
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, gamma=0.5)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    w2.grad = torch.ones(3)
    opt2.step()                                        # would raise if capturable=True came back on a CPU
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(2.5e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_run_learns_like_the_eager_run(tmp_path):
    import warnings

    images, labels = _toy_data(160)
    cfg = _config(objective="class_fm", epochs=4, num_hiddens=8)
    eager = train(cfg, images, labels, device="cuda", run_dir=tmp_path / "eager", progress=False, cuda_graph=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # a failed recording would warn and fall back
        part = train(cfg, images, labels, device="cuda", run_dir=tmp_path / "graph", progress=False,
                     stop_after_epoch=2)
        graphed = train(cfg, images, labels, device="cuda", run_dir=tmp_path / "graph", progress=False)
    assert graphed.trained_epochs == [3, 4] and len(graphed.losses) == len(eager.losses)
    # the first steps run eagerly from the same state: same draws, same losses
    assert graphed.losses[:3] == pytest.approx(eager.losses[:3], rel=1e-4)
    # then fresh draws each replay (not one batch of noise over and over) and the same learning
    assert len(set(graphed.losses[10:20])) == 10
    mean = lambda xs: sum(xs) / len(xs)
    assert mean(graphed.losses[-10:]) == pytest.approx(mean(eager.losses[-10:]), rel=0.25)
    assert mean(graphed.losses[-10:]) < 0.7 * mean(graphed.losses[:10])
    state = torch.load(tmp_path / "graph" / "state.pt", weights_only=True)
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(1e-3, rel=1e-5)
    assert state["optimizer"]["param_groups"][0]["capturable"] is False

    # the learning rate the recorded graph reads is the tensor that the epoch's scheduler step updates
    from diffnb.core.cudagraph import CudaGraphStep, make_capturable, set_lrs
    from diffnb.b.train import OBJECTIVES, build_model
    model = build_model(cfg).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    lrs = make_capturable(opt, torch.device("cuda"))
    x, y, gen = images.cuda(), labels.cuda(), torch.Generator(device="cuda").manual_seed(0)

    def one_step(idx):
        opt.zero_grad(set_to_none=True)
        loss = OBJECTIVES[cfg.objective][0](model, x[idx], y[idx], gen, cfg)
        loss.backward()
        opt.step()
        return loss.detach()

    step = CudaGraphStep(one_step, torch.zeros(cfg.batch_size, dtype=torch.long, device="cuda"), generator=gen)
    for _ in range(5):
        step(torch.arange(cfg.batch_size, device="cuda"))
    assert step.graph is not None
    sched.step()
    set_lrs(opt, lrs)
    assert opt.param_groups[0]["lr"] is lrs[0] and float(lrs[0]) == pytest.approx(cfg.lr / 2)


def test_a_cuda_graph_step_needs_cuda_tensors_and_learning_rates_are_written_in_place():
    from diffnb.core.cudagraph import CudaGraphStep, set_lrs
    with pytest.raises(ValueError, match="one CUDA tensor per input"):
        CudaGraphStep(lambda x: x, torch.zeros(3))
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([w], lr=0.1)
    lrs = [torch.tensor(0.1)]
    set_lrs(opt, lrs, [0.05])
    assert opt.param_groups[0]["lr"] is lrs[0] and float(lrs[0]) == pytest.approx(0.05)
