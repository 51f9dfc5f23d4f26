"""Part B's flow-matching exercises (sections 2.2 to 2.6): the loss, the Euler sampler, the class-conditioned
UNet's forward pass, the loss with classifier-free dropout and the guided sampler.

Checked against ``diffnb.b.flow`` and ``diffnb.b.unet`` on tiny seeded UNets (D = 4 to 8, 28x28) whose
BatchNorm statistics are calibrated on random batches, so that their outputs depend clearly on x, t and
the class.  A pre-hook records what the learner's code hands the UNet (x_t, t, the class, the mask at each
call), and the diagnoses read it: the x_t of the first call, the times of the Euler steps, the masks, the
step each update takes.  The learner's code gets a fresh copy of the UNet at each call.
"""
from __future__ import annotations

import copy
import functools
import itertools

import torch
import torch.nn.functional as F

from diffnb.exercises import fixtures
from diffnb.exercises.core import Exercise, Mismatch, Probe, UsedReference, expect_tensor

SIDE = 28                                     # the UNets' image size (two stride-2 steps to a 7x7 bottleneck)


# --------------------------------------------------------------------------- shared fixtures

@functools.cache
def _unet(kind: str, num_hiddens: int, seed: int) -> torch.nn.Module:
    """A seeded ``TimeConditionalUNet`` ("time") or ``ClassConditionalUNet`` ("class") in eval mode, its
    BatchNorm statistics averaged over four random training-mode batches (fresh statistics leave an
    untrained UNet's output nearly constant)."""
    import diffnb
    with torch.random.fork_rng(devices=[]):                    # leave the notebook's global RNG as it was
        torch.manual_seed(seed)
        cls = diffnb.TimeConditionalUNet if kind == "time" else diffnb.ClassConditionalUNet
        unet = cls(1, 10, num_hiddens)
        for m in unet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None                              # a plain average over the batches
                m.reset_running_stats()
        unet.train()
        with torch.no_grad():
            for _ in range(4):
                x, t = torch.randn(8, 1, SIDE, SIDE), torch.rand(8)
                if kind == "time":
                    unet(x, t)
                else:
                    unet(x, torch.randint(0, 10, (8,)), t, (torch.rand(8) >= 0.3).float())
    return unet.eval()


def _images(n: int, seed: int) -> torch.Tensor:
    """``n`` clean images ``(n, 1, 28, 28)`` with values in [0, 1]."""
    return torch.rand(n, 1, SIDE, SIDE, generator=fixtures.generator(1000 + seed))


class _Calls:
    """Records the inputs of every call of ``module`` (a forward pre-hook), cloned: ``calls[i][name]``."""

    def __init__(self, module: torch.nn.Module, names: tuple[str, ...]):
        self.names, self.calls = names, []
        module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        bound = dict(zip(self.names, args))
        bound.update(kwargs)
        self.calls.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in bound.items()})


def _recorded(unet: torch.nn.Module, names: tuple[str, ...]):
    """A fresh copy of ``unet`` for the learner's code, and the record of its calls."""
    mine = copy.deepcopy(unet)
    return mine, _Calls(mine, names)


def _vec(v, n: int) -> torch.Tensor | None:
    """A time or mask as given to the UNet, as ``(n,)`` float (a single value is repeated); None stays None."""
    if v is None:
        return None
    v = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
    return v.expand(n) if v.numel() == 1 else v


def _close(a, b, tol: float = 1e-4) -> bool:
    return a is not None and b is not None and tuple(a.shape) == tuple(b.shape) and torch.allclose(
        a.float(), b.float(), atol=tol, rtol=tol)


def _values(v: torch.Tensor, k: int = 4) -> str:
    vals = ", ".join(f"{x:.3g}" for x in v.flatten()[:k].tolist())
    return f"[{vals}{', ...' if v.numel() > k else ''}]"


def _call(probe: Probe, where: str, advice: dict[str, str], *args, **kwargs):
    """``probe.call``, with a hint appended to an exception's line when it holds one of ``advice``'s keys."""
    try:
        return probe.call(where, *args, **kwargs)
    except Mismatch as e:
        msg = str(e)
        for key, hint in advice.items():
            if key in msg:
                raise Mismatch(f"{msg.rstrip('.')}; {hint}") from None
        raise


BROADCAST = {"must match the size of tensor": "did you reshape t to (N, 1, 1, 1) before weighting the images "
                                              "(t.view(-1, 1, 1, 1))?",
             "time values for a batch": "draw one time per image: t = torch.rand(N, generator=generator)"}


# --------------------------------------------------------------------------- the losses' diagnoses

def _draws(x_1: torch.Tensor, seed: int, order: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The draws of a flow-matching loss from ``fixtures.generator(seed)`` in ``order`` ("x_0", "t", "the mask's uniforms")."""
    g, n, out = fixtures.generator(seed), x_1.shape[0], {}
    for name in order:
        out[name] = torch.randn(x_1.shape, generator=g) if name == "x_0" else torch.rand(n, generator=g)
    return out


def _other_order(first: dict, x_1: torch.Tensor, seed: int, order: tuple[str, ...], p: float | None) -> str | None:
    """If the UNet's inputs are diffnb's draws taken in another order, say so."""
    n = x_1.shape[0]
    rec_t, rec_x, rec_m = _vec(first.get("t"), n), first.get("x"), _vec(first.get("mask"), n)
    for perm in itertools.permutations(order):
        if perm == order:
            continue
        d = _draws(x_1, seed, perm)
        tb = d["t"].view(-1, 1, 1, 1)
        if not (_close(rec_t, d["t"], 1e-6) and _close(rec_x, (1 - tb) * d["x_0"] + tb * x_1, 1e-5)):
            continue
        if p is not None and not _close(rec_m, (d["the mask's uniforms"] >= p).float(), 0):
            continue
        return (f"you drew {', then '.join(perm)}; diffnb draws {', then '.join(order)}, in that order, so that "
                "the same generator gives the same numbers")
    return None


def _check_t(first: dict, t: torch.Tensor, x_1: torch.Tensor, seed: int, order: tuple[str, ...],
             p: float | None = None) -> str | None:
    """What is wrong with the times the learner's loss gave the UNet (``first``: its first call), or None."""
    n = x_1.shape[0]
    if first.get("t") is None:
        return "your loss calls the UNet without t: u_θ(x_t, t) is unet(x_t, t)"
    rec_t = _vec(first["t"], n)
    if _close(rec_t, t, 1e-6):
        return None
    if rec_t.shape != t.shape:
        return f"you gave the UNet {rec_t.numel()} times for a batch of {n}; draw one per image: torch.rand(N, ...)"
    if n > 1 and bool((rec_t == rec_t[0]).all()):
        return (f"every image of your batch got the same time t = {float(rec_t[0]):.4f}; draw one time per image: "
                "t = torch.rand(N, generator=generator)")
    if _close(rec_t, 1 - t, 1e-6):
        return f"you gave the UNet 1 − t ({_values(rec_t)}) instead of t ({_values(t)})"
    return _other_order(first, x_1, seed, order, p) or (
        f"the times you gave the UNet, {_values(rec_t)}, are not diffnb's draws {_values(t)}: draw "
        "x_0 = torch.randn(x_1.shape, generator=generator) first, then t = torch.rand(N, generator=generator)")


def _check_x_t(rec_x, x_0: torch.Tensor, x_1: torch.Tensor, t: torch.Tensor) -> str | None:
    """What is wrong with the x_t the learner's loss gave the UNet (its times being right), or None."""
    tb = t.view(-1, 1, 1, 1)
    x_t = (1 - tb) * x_0 + tb * x_1
    if rec_x is None or tuple(rec_x.shape) != tuple(x_t.shape):
        return f"the x_t you gave the UNet has shape {None if rec_x is None else tuple(rec_x.shape)}; " \
               f"expected {tuple(x_t.shape)}"
    if _close(rec_x, x_t, 1e-5):
        return None
    for i in range(x_t.shape[0]):                     # per image: rec ~ a x_0 + b x_1
        A = torch.stack([x_0[i].flatten(), x_1[i].flatten()], 1).double()
        y = rec_x[i].flatten().double()
        a, b = torch.linalg.lstsq(A, y[:, None]).solution.flatten().tolist()
        resid = float((y - A @ torch.tensor([a, b], dtype=torch.float64)).norm() / y.norm().clamp_min(1e-12))
        ti = float(t[i])
        if resid > 1e-3:
            return ("the noise in the x_t you gave the UNet is not diffnb's x_0: draw "
                    "x_0 = torch.randn(x_1.shape, generator=generator) first, and weight it by (1 − t)")
        if abs(a - (1 - ti)) < 1e-3 and abs(b - ti) < 1e-3:
            continue
        if abs(a - ti) < 1e-3 and abs(b - (1 - ti)) < 1e-3:
            return (f"for image {i} (t = {ti:.3f}) your x_t = {a:.3f}·x_0 + {b:.3f}·x_1: x_0 and x_1 are swapped; "
                    "x_t = (1 − t) x_0 + t x_1 is noise at t = 0 and data at t = 1")
        return (f"for image {i} (t = {ti:.3f}) your x_t = {a:.3f}·x_0 + {b:.3f}·x_1; expected "
                f"(1 − t)·x_0 + t·x_1 = {1 - ti:.3f}·x_0 + {ti:.3f}·x_1")
    return None


def _check_loss(out: torch.Tensor, u: torch.Tensor, x_0: torch.Tensor, x_1: torch.Tensor) -> str:
    """The UNet got the right inputs: say what the learner's loss computed from its output ``u``."""
    got = float(out)
    targets = {"x_1 − x_0": x_1 - x_0, "x_0 − x_1": x_0 - x_1, "x_1": x_1, "x_0": x_0}
    reductions = {"mean": lambda d: (d ** 2).mean(), "sum": lambda d: (d ** 2).sum(),
                  "abs": lambda d: d.abs().mean(), "rms": lambda d: (d ** 2).mean().sqrt()}
    expected = float(reductions["mean"](u - targets["x_1 − x_0"]))
    said = {("x_0 − x_1", "mean"): "the target has the wrong sign: the velocity is x_1 − x_0 (from the noise "
                                   "to the data), not x_0 − x_1",
            ("x_1", "mean"): "your target is x_1, the clean image, not the velocity x_1 − x_0",
            ("x_0", "mean"): "your target is x_0, the noise, not the velocity x_1 − x_0",
            ("x_1 − x_0", "sum"): "you summed the squared errors; take their mean (F.mse_loss)",
            ("x_1 − x_0", "abs"): "you averaged absolute errors; the loss squares them (F.mse_loss)",
            ("x_1 − x_0", "rms"): "you took the square root of the mean squared error; the loss is the mean "
                                  "squared error itself"}
    for (target, red), msg in said.items():
        value = float(reductions[red](u - targets[target]))
        if abs(got - value) <= 1e-4 * max(abs(value), 1e-3):
            return f"your loss is {got:.5f}, expected {expected:.5f}: {msg}"
    return (f"the UNet got the right x_t and t, but your loss is {got:.5f}; expected "
            f"mean((u_θ(x_t, t) − (x_1 − x_0))²) = {expected:.5f}")


# --------------------------------------------------------------------------- B2.2 time_fm_forward

def _ref_time_fm_forward():
    from diffnb.b.flow import time_fm_forward
    return time_fm_forward


def _run_time_fm_forward(fn, hidden: bool) -> int:
    ref = _ref_time_fm_forward()
    cases = [(3, 4, 0), (2, 8, 1), (1, 4, 2), (4, 6, 3)]                      # (batch, D, generator seed)
    if hidden:
        cases += [(4, 8, 7), (2, 4, 11), (3, 6, 100), (1, 8, 5)]
    probe = Probe(fn, "time_fm_forward", [ref])
    order = ("x_0", "t")
    for n, d, seed in cases:
        where = f"a batch of {n} images, generator seed {seed}"
        unet, x_1 = _unet("time", d, seed), _images(n, seed)
        with torch.no_grad():
            expected = ref(unet, x_1, fixtures.generator(seed))
        mine, rec = _recorded(unet, ("x", "t"))
        out = _call(probe, where, BROADCAST, mine, x_1, fixtures.generator(seed))

        def hint(out, rec=rec, unet=unet, x_1=x_1, seed=seed):
            if not rec.calls:
                return "your loss never calls the UNet: u_θ(x_t, t) is unet(x_t, t)"
            first, draws = rec.calls[0], _draws(x_1, seed, order)
            x_0, t = draws["x_0"], draws["t"]
            msg = _check_t(first, t, x_1, seed, order) or _check_x_t(first.get("x"), x_0, x_1, t)
            if msg:
                return msg
            with torch.no_grad():
                u = unet(first["x"], t)
            return _check_loss(out, u, x_0, x_1)
        expect_tensor(out, expected, "loss", where, atol=1e-5, rtol=1e-5, hints=[hint])
    return len(cases)


# --------------------------------------------------------------------------- the samplers' diagnoses

def _initial_noise(n: int, seed: int) -> torch.Tensor:
    """diffnb's starting noise for ``n`` samples of the 1-channel 28x28 UNets on the CPU."""
    return torch.randn((n, 1, SIDE, SIDE), generator=fixtures.generator(seed))


def _check_times(ts: list[float], num_ts: int) -> str | None:
    """What is wrong with the times of the Euler steps (one per step, in order), or None."""
    T = num_ts
    want = [i / T for i in range(T)]
    shown = ", ".join(f"{v:.3g}" for v in ts[:5]) + (", ..." if len(ts) > 5 else "")
    if len(ts) != T:
        return (f"your sampler took {len(ts)} Euler steps (UNet evaluations at t = {shown}) for num_ts = {T}; "
                f"take exactly num_ts steps, at t = i / num_ts for i = 0, ..., num_ts − 1")
    if all(abs(a - b) < 1e-6 for a, b in zip(ts, want)):
        return None
    if T > 1 and ts[0] > ts[-1]:
        return (f"your steps run from t = 1 towards 0 (t = {shown}); flow time runs from t = 0 (noise) to t = 1 "
                "(data): evaluate the velocity at t = i / num_ts for i = 0, ..., num_ts − 1")
    if all(abs(a - (i + 1) / T) < 1e-6 for i, a in enumerate(ts)):
        return (f"off by one: your steps evaluate the UNet at t = {shown}; Euler evaluates the velocity at the "
                "start of each step, t = i / num_ts for i = 0, ..., num_ts − 1 (the first at t = 0)")
    if T > 1 and all(abs(a - i / (T - 1)) < 1e-6 for i, a in enumerate(ts)):
        return (f"your steps evaluate the UNet at t = {shown}, i.e. i / (num_ts − 1): the step is 1/num_ts, not "
                "1/(num_ts − 1), so the last one starts at t = (num_ts − 1) / num_ts")
    expected = ", ".join(f"{v:.3g}" for v in want[:5])
    return f"your steps evaluate the UNet at t = {shown}; expected t = i / num_ts: {expected}"


def _check_step(i: int, num_ts: int, delta: torch.Tensor, variants: dict[str, torch.Tensor],
                said: dict[str, str]) -> str | None:
    """Step ``i`` moved x by ``delta``; ``variants`` are candidate velocities, the first diffnb's.  Find the
    one the step followed and the step size it took; return what is wrong, or None."""
    dt = 1.0 / num_ts
    names = list(variants)
    fits = {}
    for name, v in variants.items():
        vv = float((v.double() ** 2).sum())
        s = float((delta.double() * v.double()).sum()) / max(vv, 1e-30)
        resid = float((delta.double() - s * v.double()).norm()) / max(float(delta.double().norm()), 1e-30)
        fits[name] = (s, resid)
    name = min(names, key=lambda k: (fits[k][1] > 1e-3, abs(fits[k][0] - dt) > 1e-4 * dt, names.index(k)))
    s, resid = fits[name]
    if resid > 1e-3:
        return None                                  # no known velocity: leave it to the plain difference
    if name != names[0]:
        return f"at step {i} (t = {i * dt:.3g}) {said[name]}"
    if abs(s - dt) <= 1e-4 * dt:
        return None
    if abs(s + dt) <= 1e-3 * dt:
        return (f"at step {i} your x moves by −Δt·u (Δt = {dt:.4g}): you update x with −dt; Euler from noise to "
                "data adds the velocity, x ← x + Δt·u")
    if num_ts > 1 and abs(s - 1 / (num_ts - 1)) <= 1e-3 * dt:
        return (f"at step {i} your x moves by {s:.4g}·u = u / (num_ts − 1); the step is Δt = 1/num_ts = {dt:.4g}")
    if abs(s - 1) <= 1e-3 and num_ts > 1:
        return f"at step {i} your x moves by the whole velocity u; multiply it by Δt = 1/num_ts = {dt:.4g}"
    return f"at step {i} your x moves by {s:.4g}·u; expected Δt = 1/num_ts = {dt:.4g}"


# --------------------------------------------------------------------------- B2.3 time_fm_sample

def _ref_time_fm_sample():
    from diffnb.b.flow import time_fm_sample
    return time_fm_sample


def _forbidden_time_fm_sample():
    from diffnb.b import flow
    return [flow.time_fm_sample, flow.euler_integrate]


NOISE = ("your first Euler step does not start from diffnb's noise: draw x_0 = torch.randn((N, C, H, W), "
         "generator=torch.Generator(device).manual_seed(seed), device=device) on the model's device, with "
         "C = unet.in_channels and (W, H) = img_wh")


def _run_time_fm_sample(fn, hidden: bool) -> int:
    ref = _ref_time_fm_sample()
    cases = [(3, 4, 4, 0), (2, 8, 3, 1), (1, 6, 1, 2), (4, 4, 6, 3)]          # (samples, D, num_ts, seed)
    if hidden:
        cases += [(2, 8, 8, 7), (4, 6, 2, 11), (1, 4, 5, 100), (3, 8, 7, 5)]
    probe = Probe(fn, "time_fm_sample", _forbidden_time_fm_sample())
    for n, d, T, seed in cases:
        where = f"{n} samples, num_ts = {T}, seed {seed}"
        unet = _unet("time", d, seed)
        expected = ref(unet, (SIDE, SIDE), T, seed, num_samples=n, progress=False)
        mine, rec = _recorded(unet, ("x", "t"))
        out = _call(probe, where, {"time values for a batch": "pass t per sample: torch.full((N,), i / num_ts)"},
                    mine, (SIDE, SIDE), T, seed, num_samples=n)

        def hint(out, rec=rec, unet=unet, n=n, T=T, seed=seed):
            if not rec.calls:
                return "your sampler never calls the UNet: each Euler step evaluates u_θ(x, t) = unet(x, t)"
            if not _close(rec.calls[0]["x"], _initial_noise(n, seed), 1e-6):
                return NOISE
            msg = _check_times([float(_vec(c.get("t"), n)[0]) for c in rec.calls], T)
            if msg:
                return msg
            xs = [c["x"] for c in rec.calls] + [out.detach()]
            for i in range(T):
                with torch.no_grad():
                    u = unet(xs[i], torch.full((n,), i / T))
                msg = _check_step(i, T, xs[i + 1] - xs[i], {"u": u}, {})
                if msg:
                    return msg
            return None
        expect_tensor(out, expected, "samples", where, atol=1e-4, rtol=1e-4, hints=[hint])
    return len(cases)


# --------------------------------------------------------------------------- B2.4 class_conditioning

def _ref_class_unet_forward():
    from diffnb.b.unet import ClassConditionalUNet
    return ClassConditionalUNet.forward


class _ForwardTrap:
    """Stands in for ``ClassConditionalUNet.forward`` while the learner's forward runs."""

    def __call__(self, *args, **kwargs):
        raise UsedReference("ClassConditionalUNet.forward (calling unet(x, c, t, mask) itself)")


class _trapped_forward:
    """``with _trapped_forward(): ...``: calling a ``ClassConditionalUNet`` raises ``UsedReference``."""

    def __enter__(self):
        from diffnb.b.unet import ClassConditionalUNet
        self.saved = ClassConditionalUNet.__dict__["forward"]
        ClassConditionalUNet.forward = _ForwardTrap()

    def __exit__(self, *exc):
        from diffnb.b.unet import ClassConditionalUNet
        ClassConditionalUNet.forward = self.saved


def _class_path(unet, x, onehot, t, combine=lambda c, h, t: c * h + t, where=("bottleneck", "up1"),
                skip_first: bool = True) -> torch.Tensor:
    """The class-conditioned UNet's path with its modulation ``combine(c_k, h, t_k)`` applied at the stages
    ``where`` (first for c_1/t_1, second for c_2/t_2; a stage of None skips it): diffnb's forward by default,
    a mistaken one otherwise."""
    t = t.reshape(-1, 1)
    mods = {where[0]: (unet.fc1_c(onehot), unet.fc1_t(t)), where[1]: (unet.fc2_c(onehot), unet.fc2_t(t))}

    def mod(stage, h):
        if stage not in mods:
            return h
        c_k, t_k = mods[stage]
        return combine(c_k[:, :, None, None], h, t_k[:, :, None, None])

    def cat(skip, h):
        return torch.cat([skip, h] if skip_first else [h, skip], dim=1)
    skip0 = unet.conv_in(x)
    skip1 = unet.down1(skip0)
    skip2 = unet.down2(skip1)
    h = mod("bottleneck", unet.unflatten(mod("flat", unet.flatten(skip2))))
    h = mod("up1", unet.up1(cat(skip2, h)))
    h = mod("up2", unet.up2(cat(skip1, h)))
    return unet.head(unet.conv_out(cat(skip0, h)))


def _class_conditioning_hint(unet, x, c, t, mask):
    """A hint that recognises the usual mistakes of the forward pass by running each one (on demand)."""
    onehot = F.one_hot(c, unet.num_classes).float()
    kept = onehot if mask is None else onehot * mask[:, None]
    variants = []                                       # (kwargs of _class_path for a mistake, what to say)
    if mask is not None and not bool(mask.all()):
        variants += [
            (dict(onehot=onehot), "your output ignores the mask: where mask = 0 the one-hot class vector must be "
             "zeroed (one_hot * mask[:, None]) before fc1_c and fc2_c"),
            (dict(onehot=F.one_hot(c * mask.long(), unet.num_classes).float()),
             "where mask = 0 your UNet saw class 0: zero the one-hot vector (one_hot * mask[:, None]), not the label")]
    variants += [
        (dict(combine=lambda c_, h, t_: t_ * h + c_),
         "c and t play each other's part: the class scales and the time shifts, c_1 ⊙ h + t_1 (not t_1 ⊙ h + c_1)"),
        (dict(combine=lambda c_, h, t_: c_ * h * t_),
         "you multiplied h by both c_1 and t_1; the time is added: c_1 ⊙ h + t_1"),
        (dict(combine=lambda c_, h, t_: h + c_ + t_), "you added c_1 to h; the class scales it: c_1 ⊙ h + t_1"),
        (dict(combine=lambda c_, h, t_: t_ * h),
         "the class is missing from your modulation (t_1 ⊙ h, the time-conditioned UNet's): use c_1 ⊙ h + t_1"),
        (dict(where=("bottleneck", None)), "the second modulation is missing: after up1, h ← c_2 ⊙ h + t_2"),
        (dict(where=(None, "up1")), "the bottleneck modulation is missing: after unflatten, h ← c_1 ⊙ h + t_1"),
        (dict(where=("flat", "up1")),
         "you modulated before unflatten; apply c_1 ⊙ h + t_1 to unflatten's output (the 7x7 bottleneck)"),
        (dict(where=("bottleneck", "up2")),
         "you modulated after up2; the second modulation c_2 ⊙ h + t_2 follows up1"),
        (dict(skip_first=False),
         "the skip connection goes first in each concatenation: torch.cat([skip2, h], dim=1), as in the UNet")]

    def hint(out):
        for kwargs, msg in variants:
            with torch.no_grad():
                kw = dict(kwargs)
                value = _class_path(unet, x, kw.pop("onehot", kept), t, **kw)
            if _close(out, value, 1e-5):
                return msg
        return None
    return hint


CLASS_ADVICE = {"must have the same dtype": "F.one_hot gives integers: convert the one-hot vector with .to(x.dtype)",
                "shapes cannot be multiplied": "an FCBlock got an input of the wrong width: fc1_t and fc2_t take t "
                                               "as (N, 1), fc1_c and fc2_c the one-hot vector (N, num_classes)"}


def _run_class_conditioning(fn, hidden: bool) -> int:
    ref = _ref_class_unet_forward()
    # (batch, D, seed, mask, t: None draws it)
    cases = [(4, 4, 0, [1, 0, 1, 0], None), (2, 8, 1, None, None), (3, 6, 2, [0, 0, 0], None), (1, 4, 3, [1], None)]
    if hidden:
        cases += [(4, 8, 7, [0, 1, 1, 1], None), (2, 4, 11, [1, 1], None), (3, 8, 5, None, [0.0, 1.0, 0.5]),
                  (2, 6, 100, [0, 1], [1.0, 0.0])]
    probe = Probe(fn, "class_unet_forward", [ref])
    for n, d, seed, mask, times in cases:
        where = f"a batch of {n}, mask {mask}" + ("" if times is None else f", t = {times}")
        unet, g = _unet("class", d, seed), fixtures.generator(2000 + seed)
        x = torch.randn(n, 1, SIDE, SIDE, generator=g)
        c = torch.randint(0, 10, (n,), generator=g)
        t = torch.rand(n, generator=g) if times is None else torch.tensor(times)
        m = None if mask is None else torch.tensor(mask, dtype=torch.float32)
        with torch.no_grad():
            expected = ref(unet, x, c, t, m)
        with _trapped_forward(), torch.no_grad():
            out = _call(probe, where, CLASS_ADVICE, copy.deepcopy(unet), x, c, t, m)
        expect_tensor(out, expected, "output", where, inputs=[x], atol=1e-5, rtol=1e-5,
                      hints=[_class_conditioning_hint(unet, x, c, t, m)])
    return len(cases)


# --------------------------------------------------------------------------- B2.5 class_fm_forward

def _ref_class_fm_forward():
    from diffnb.b.flow import class_fm_forward
    return class_fm_forward


def _check_mask(first: dict, c: torch.Tensor, m: torch.Tensor, p: float, x_1, seed: int, order) -> str | None:
    """What is wrong with the mask (and labels) the learner's loss gave the UNet, or None."""
    n = c.shape[0]
    rec_m, rec_c = _vec(first.get("mask"), n), first.get("c")
    ms = _values(m)
    if rec_c is None or tuple(torch.as_tensor(rec_c).shape) != (n,):
        return "give the UNet the labels c, one per image: unet(x_t, c, t, mask)"
    rec_c = torch.as_tensor(rec_c).long()
    if rec_m is None or bool((rec_m == 1).all()):
        if not bool((m == 1).all()):
            if rec_m is None and torch.equal(rec_c, c * m.long()) and not torch.equal(rec_c, c):
                return (f"you zeroed the labels where the class is dropped, which makes them class 0; keep c and "
                        f"pass the mask: unet(x_t, c, t, mask) with mask {ms}")
            seen = None if rec_m is None else _values(rec_m)
            return (f"your loss never drops the class (the UNet saw mask {seen}); pass "
                    f"mask = (torch.rand(N, generator=generator) >= p_uncond), here {ms}, as unet(x_t, c, t, mask)")
    if not torch.equal(rec_c, c):
        return f"you gave the UNet the labels {rec_c.tolist()}; expected c = {c.tolist()}"
    if _close(rec_m, m, 0):
        return None
    if _close(rec_m, 1 - m, 0):
        return (f"your mask {_values(rec_m)} keeps the class with probability p_uncond = {p} instead of dropping it: "
                f"mask = 1 (keep) where rand ≥ p_uncond, 0 (drop) where rand < p_uncond; expected {ms}")
    u = _draws(x_1, seed, order)["the mask's uniforms"]
    if _close(rec_m, (u < 1 - p).float(), 0):
        return (f"your mask {_values(rec_m)} has the right odds but other values: you kept the class where "
                f"rand < 1 − p_uncond (as torch.bernoulli does); diffnb keeps it where rand ≥ p_uncond: "
                f"(torch.rand(N, generator=generator) >= p_uncond), here {ms}")
    msg = _other_order(first, x_1, seed, order, p)
    if msg:
        return msg
    return (f"your mask {_values(rec_m)} is not diffnb's {ms}: draw it after x_0 and t, as "
            "(torch.rand(N, generator=generator) >= p_uncond)")


def _run_class_fm_forward(fn, hidden: bool) -> int:
    ref = _ref_class_fm_forward()
    cases = [(4, 4, 0, 0.75), (3, 8, 1, 0.1), (2, 6, 2, 1.0), (4, 4, 3, 0.0)]  # (batch, D, seed, p_uncond)
    if hidden:
        cases += [(4, 8, 7, 0.3), (2, 4, 11, 0.5), (3, 6, 100, 0.9), (1, 8, 5, 0.1)]
    probe = Probe(fn, "class_fm_forward", [ref])
    order = ("x_0", "t", "the mask's uniforms")
    for n, d, seed, p in cases:
        where = f"a batch of {n}, p_uncond = {p}, generator seed {seed}"
        unet, x_1 = _unet("class", d, seed), _images(n, seed)
        c = torch.randint(0, 10, (n,), generator=fixtures.generator(3100 + seed))
        with torch.no_grad():
            expected = ref(unet, x_1, c, p, fixtures.generator(seed))
        mine, rec = _recorded(unet, ("x", "c", "t", "mask"))
        out = _call(probe, where, BROADCAST, mine, x_1, c, p, fixtures.generator(seed))

        def hint(out, rec=rec, unet=unet, x_1=x_1, c=c, p=p, seed=seed):
            if not rec.calls:
                return "your loss never calls the UNet: u_θ(x_t, t, c) is unet(x_t, c, t, mask)"
            first, draws = rec.calls[0], _draws(x_1, seed, order)
            x_0, t = draws["x_0"], draws["t"]
            m = (draws["the mask's uniforms"] >= p).float()
            msg = (_check_t(first, t, x_1, seed, order, p) or _check_x_t(first.get("x"), x_0, x_1, t)
                   or _check_mask(first, c, m, p, x_1, seed, order))
            if msg:
                return msg
            with torch.no_grad():
                u = unet(first["x"], c, t, m)
            return _check_loss(out, u, x_0, x_1)
        expect_tensor(out, expected, "loss", where, atol=1e-5, rtol=1e-5, hints=[hint])
    return len(cases)


# --------------------------------------------------------------------------- B2.6 class_fm_sample

def _ref_class_fm_sample():
    from diffnb.b.flow import class_fm_sample
    return class_fm_sample


def _forbidden_class_fm_sample():
    from diffnb.b import flow
    return [flow.class_fm_sample, flow.euler_integrate, flow.cfg_velocity]


CFG_SAID = {"swapped": "your velocity is u_cond + γ(u_uncond − u_cond): the two velocities are swapped; "
                       "u = u_uncond + γ(u_cond − u_uncond)",
            "gamma_cond": "you applied guidance to u_cond alone (γ·u_cond); u = u_uncond + γ(u_cond − u_uncond)",
            "plus_one": "your velocity is u_cond + γ(u_cond − u_uncond), which is guidance γ + 1; "
                        "u = u_uncond + γ(u_cond − u_uncond)",
            "cond": "your step follows u_cond alone, without guidance; u = u_uncond + γ(u_cond − u_uncond)",
            "uncond": "your step follows u_uncond alone, without the class; u = u_uncond + γ(u_cond − u_uncond)"}


def _cfg_step_hint(rec_calls: list[dict], out: torch.Tensor, unet, c: torch.Tensor, T: int, gamma: float,
                   seed: int) -> str | None:
    """Diagnose a guided Euler sampler from the UNet calls it made (one or two per step)."""
    n = c.shape[0]
    if not rec_calls:
        return "your sampler never calls the UNet: each Euler step evaluates unet(x, c, t, mask)"
    if len(rec_calls) % T:
        return (f"your sampler called the UNet {len(rec_calls)} times for num_ts = {T}; each of the num_ts steps "
                "needs u_cond (mask 1) and u_uncond (mask 0), in one batched call or two")
    k = len(rec_calls) // T
    steps = [rec_calls[i * k:(i + 1) * k] for i in range(T)]
    if not _close(rec_calls[0]["x"][:n], _initial_noise(n, seed), 1e-6):
        return NOISE
    masks = torch.cat([torch.ones(len(call["x"])) if call.get("mask") is None else _vec(call["mask"], len(call["x"]))
                       for call in steps[0]])
    if bool((masks != 0).all()):
        return ("no unconditional branch: every UNet call of your first step had mask = 1 (or no mask); "
                "u_uncond is unet(x, c, t, mask) with mask = torch.zeros(N)")
    if bool((masks == 0).all()):
        return "no conditional branch: every UNet call of your first step had mask = 0; u_cond needs mask = 1"
    msg = _check_times([float(_vec(step[0].get("t"), len(step[0]["x"]))[0]) for step in steps], T)
    if msg:
        return msg
    xs = [step[0]["x"][:n] for step in steps] + [out.detach()]
    for i in range(T):
        t = torch.full((n,), i / T)
        with torch.no_grad():
            u_cond, u_uncond = unet(xs[i], c, t, torch.ones(n)), unet(xs[i], c, t, torch.zeros(n))
        variants = {"cfg": u_uncond + gamma * (u_cond - u_uncond), "swapped": u_cond + gamma * (u_uncond - u_cond),
                    "gamma_cond": gamma * u_cond, "plus_one": u_cond + gamma * (u_cond - u_uncond),
                    "cond": u_cond, "uncond": u_uncond}
        msg = _check_step(i, T, xs[i + 1] - xs[i], variants, CFG_SAID)
        if msg:
            return msg
    return None


def _run_class_fm_sample(fn, hidden: bool) -> int:
    ref = _ref_class_fm_sample()
    cases = [([0, 3, 7], 4, 3, 5.0, 0), ([2, 2], 8, 4, 2.5, 1), ([9], 6, 1, 1.0, 2),
             ([1, 4, 5, 8], 4, 5, 0.0, 3)]                                  # (labels, D, num_ts, γ, seed)
    if hidden:
        cases += [([6, 0], 8, 6, 3.0, 7), ([3, 3, 3], 4, 2, -1.0, 11), ([5], 8, 7, 5.0, 100),
                  ([0, 1, 2, 3], 6, 3, 10.0, 5)]
    probe = Probe(fn, "class_fm_sample", _forbidden_class_fm_sample())
    for labels, d, T, gamma, seed in cases:
        where = f"labels {labels}, num_ts = {T}, γ = {gamma}, seed {seed}"
        unet, c = _unet("class", d, seed), torch.tensor(labels)
        expected = ref(unet, c, (SIDE, SIDE), T, gamma, seed, progress=False)
        mine, rec = _recorded(unet, ("x", "c", "t", "mask"))
        out = _call(probe, where, {}, mine, c, (SIDE, SIDE), T, gamma, seed)

        def hint(out, rec=rec, unet=unet, c=c, T=T, gamma=gamma, seed=seed):
            return _cfg_step_hint(rec.calls, out, unet, c, T, gamma, seed)
        expect_tensor(out, expected, "samples", where, atol=1e-4, rtol=1e-4, hints=[hint])
    return len(cases)


EXERCISES = [
    Exercise("time_fm_forward", "B2.2_train_time_conditioned", "time_fm_forward", _ref_time_fm_forward,
             _run_time_fm_forward, lambda: [_ref_time_fm_forward()],
             summary="flow-matching loss: x_t = (1−t) x_0 + t x_1, MSE(u_θ(x_t, t), x_1 − x_0)", seconds=30),
    Exercise("time_fm_sample", "B2.3_sample_time_conditioned", "time_fm_sample", _ref_time_fm_sample,
             _run_time_fm_sample, _forbidden_time_fm_sample,
             summary="Euler sampling from t = 0 to 1: x ← x + Δt u_θ(x, t)", seconds=30),
    Exercise("class_conditioning", "B2.4_class_conditioning", "class_unet_forward", _ref_class_unet_forward,
             _run_class_conditioning, lambda: [_ref_class_unet_forward()],
             summary="the class-conditioned UNet's forward: one-hot × mask, c_1 ⊙ h + t_1, c_2 ⊙ h + t_2",
             seconds=30),
    Exercise("class_fm_forward", "B2.5_train_class_conditioned", "class_fm_forward", _ref_class_fm_forward,
             _run_class_fm_forward, lambda: [_ref_class_fm_forward()],
             summary="flow-matching loss with classifier-free dropout of the class (p_uncond)", seconds=30),
    Exercise("class_fm_sample", "B2.6_sample_class_cfg", "class_fm_sample", _ref_class_fm_sample,
             _run_class_fm_sample, _forbidden_class_fm_sample,
             summary="Euler sampling with CFG: u = u_uncond + γ(u_cond − u_uncond)", seconds=30),
]
