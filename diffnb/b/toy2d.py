"""Flow matching in 2D (notebook B2.1a): toy data, a small MLP velocity, samplers, a quality number, pictures.

Conventions (those of ``diffnb.b.flow``): points are ``(N, 2)`` float32; flow time t = 0 is noise
``x_0 ~ N(0, I)``, t = 1 is data; the path is ``x_t = (1 - t) x_0 + t x_1`` and the network learns the
velocity ``u(x, t) ~ x_1 - x_0``.  Every random draw takes a seed or a ``torch.Generator``; the data sets
are scaled to lie within about [-2.5, 2.5]^2, the box every figure shows.

``sample_2d`` runs any of ``SAMPLERS``: the ODE solvers of ``diffnb.b.solvers`` and "sde" (its
Euler-Maruyama sampler).  Quality is the sliced Wasserstein-2 distance to held-out points
(``sliced_w2``, written here: POT is not a dependency of the pack).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnb.b.flow import fm_interpolate
from diffnb.b.solvers import EVALS_PER_STEP, SOLVERS, Solution, initial_noise, sample_ode, sample_sde
from diffnb.core.checks import check_number, is_int
from diffnb.core.devices import choose_threads, get_device
from diffnb.core.explore import Explorer

#: the toy data sets
DATASETS = ("moons", "mixture", "checkerboard")
#: the samplers ``sample_2d`` runs: the ODE solvers, then the SDE
SAMPLERS = SOLVERS + ("sde",)
#: the half-width of the square every figure shows
BOX = 3.0


# ------------------------------------------------------------------------------------ setup
def setup(profile: str, device: str, seed: int) -> torch.device:
    """A 2D notebook's setup: resolve ``device``, set the CPU threads, seed torch; print what this run uses.
    (The parameters themselves are checked by ``diffnb.profiles.check_parameters`` before.)"""
    dev = get_device(device)
    threads = choose_threads(dev, profile)
    torch.manual_seed(seed)
    cpu_threads = f" ({threads} thread{'s' if threads > 1 else ''})" if dev.type == "cpu" else ""
    print(f"profile: {profile} | device: {dev}{cpu_threads} | seed: {seed}")
    return dev


# ------------------------------------------------------------------------------------ data
def two_moons(n: int, noise: float = 0.08, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved half circles, ``(n, 2)``: the upper (cos a, sin a) and the lower (1 - cos a, 1/2 - sin a)
    for a ~ U[0, pi], plus N(0, noise^2) jitter, then centred and scaled by 1.6 (as scikit-learn's
    ``make_moons``, written out: scikit-learn is not a dependency)."""
    a = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(a), 1 - torch.cos(a))
    y = torch.where(upper, torch.sin(a), 0.5 - torch.sin(a))
    pts = torch.stack([x, y], 1) + noise * torch.randn(n, 2, generator=generator)
    return (pts - torch.tensor([0.5, 0.25])) * 1.6


def gaussian_mixture(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.15,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``modes`` equal Gaussians N(c_k, std^2 I) with centres c_k on a circle of ``radius``, ``(n, 2)``."""
    k = torch.randint(modes, (n,), generator=generator).float()
    angle = 2 * math.pi * k / modes
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + std * torch.randn(n, 2, generator=generator)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the 8 dark squares of a 4 x 4 board over [-2, 2]^2 (those whose floor(x) + floor(y) is
    even), ``(n, 2)``."""
    x = 4 * torch.rand(n, generator=generator) - 2                          # column: floor(x) in -2..1
    row = 2 * torch.randint(2, (n,), generator=generator) + (torch.floor(x).long() % 2)   # parity matches
    y = row - 2 + torch.rand(n, generator=generator)
    return torch.stack([x, y], 1)


def sample_data(name: str, n: int, seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points ``(n, 2)`` of the toy data set ``name`` (one of ``DATASETS``), from ``generator`` or ``seed``."""
    if name not in DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; the data sets are {list(DATASETS)}")
    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int (the number of points), got {n!r}")
    if generator is None:
        if not is_int(seed):
            raise TypeError(f"seed must be an int, got {seed!r}; pass e.g. seed=0")
        generator = torch.Generator().manual_seed(int(seed))
    make = {"moons": two_moons, "mixture": gaussian_mixture, "checkerboard": checkerboard}[name]
    return make(n, generator=generator)


# ------------------------------------------------------------------------------------ the model
class VelocityMLP(nn.Module):
    """u(x, t): ``x (N, dim)``, ``t (N,)`` -> ``(N, dim)``.  The input is x with t and sin/cos(2 pi k t),
    k = 1..frequencies (so the field can change quickly near t = 1), then ``depth`` SiLU layers of
    ``hidden`` units and a linear head."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, frequencies: int = 4):
        super().__init__()
        self.dim, self.frequencies = dim, frequencies
        self.register_buffer("k", 2 * math.pi * torch.arange(1, frequencies + 1, dtype=torch.float32))
        layers, width = [], dim + 1 + 2 * frequencies
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).to(x.dtype)                                      # (N, 1)
        angles = t * self.k.to(x.dtype)                                       # (N, F)
        h = torch.cat([x, t, torch.sin(angles), torch.cos(angles)], dim=1)   # (N, dim + 1 + 2F)
        return self.net(h)


def fm_loss(model: nn.Module, x_1: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """|| u(x_t, t) - (x_1 - x_0) ||^2 with x_0 ~ N(0, I), t ~ U[0, 1], x_t = (1 - t) x_0 + t x_1 (as
    ``diffnb.b.flow.time_fm_forward``, for points ``(N, 2)``)."""
    x_0 = torch.randn(x_1.shape, generator=generator, device=x_1.device, dtype=x_1.dtype)
    t = torch.rand(x_1.shape[0], generator=generator, device=x_1.device, dtype=x_1.dtype)
    return F.mse_loss(model(fm_interpolate(x_0, x_1, t), t), x_1 - x_0)


def train_flow_2d(data: torch.Tensor, steps: int = 2000, batch_size: int = 256, lr: float = 1e-2,
                  hidden: int = 128, seed: int = 0, device="cpu") -> tuple[VelocityMLP, list[float]]:
    """Train a ``VelocityMLP`` by flow matching on ``data (M, 2)``: ``steps`` Adam steps on batches drawn
    from ``data``, the learning rate decayed to zero on a cosine.  Seeded (weights, batches, x_0, t):
    the same seed gives the same model.  Returns the model (in eval mode) and each step's loss."""
    if not (isinstance(data, torch.Tensor) and data.dim() == 2 and data.shape[0] >= 1):
        raise ValueError(f"data must be points (M, dim), got {getattr(data, 'shape', data)!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("hidden", hidden)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    lr = check_number("lr", lr, low=1e-8, fix="pass e.g. lr=1e-2")
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}; pass e.g. seed=0")
    dev = get_device(device)
    torch.manual_seed(seed)                                                   # the weights
    model = VelocityMLP(data.shape[1], hidden).to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    data = data.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(data.shape[0], (batch_size,), generator=g, device=dev)
        loss = fm_loss(model, data[idx], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    if not math.isfinite(losses[-1]):
        raise FloatingPointError(f"the 2D flow's loss became {losses[-1]}; lower lr (got {lr:g})")
    return model.eval(), losses


# ------------------------------------------------------------------------------------ sampling
def steps_for(sampler: str, nfe: int) -> int:
    """The steps of ``sampler`` that spend ``nfe`` velocity evaluations (the SDE: one per step)."""
    _check_sampler(sampler)
    if sampler == "dopri5":
        raise ValueError("dopri5 picks its own steps (and so its NFE) from rtol and atol")
    per = EVALS_PER_STEP.get(sampler, 1)
    if not is_int(nfe) or nfe < per or nfe % per:
        raise ValueError(f"{sampler} spends {per} evaluations per step, so nfe must be a positive multiple of "
                         f"{per}, got {nfe!r}")
    return nfe // per


@torch.no_grad()
def sample_2d(model: nn.Module, n: int, sampler: str = "euler", steps: int | None = None, grid=None,
              seed: int = 0, sigma: float = 1.0, trajectory: bool = False, rtol: float | None = None,
              atol: float | None = None) -> Solution:
    """``n`` samples of the 2D flow ``model`` with one of ``SAMPLERS`` (see ``diffnb.b.solvers``).

    The starting noise x_0 ``(n, 2)`` and, for "sde", the Brownian increments come from one generator
    seeded with ``seed`` on the model's device, so every sampler starts from the same x_0 and the same seed
    gives the same samples.  ``steps``/``grid`` as ``sample_ode``'s; ``sigma``: the SDE's noise scale;
    ``rtol``/``atol``: dopri5's.  Returns ``diffnb.b.solvers.Solution`` (x, counted nfe, times, trajectory).
    """
    _check_sampler(sampler)
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}; pass e.g. seed=0")
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(int(seed))
    x0 = initial_noise((n, 2), generator=g)
    if sampler == "sde":
        return sample_sde(model, x0, steps, grid, sigma=sigma, generator=g, trajectory=trajectory)
    return sample_ode(model, x0, sampler, steps, grid, rtol=rtol, atol=atol, trajectory=trajectory)


def _check_sampler(sampler) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; the samplers are {list(SAMPLERS)}")


# ------------------------------------------------------------------------------------ quality
def sliced_w2(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """The sliced Wasserstein-2 distance between the point sets ``a (n, d)`` and ``b (m, d)``:

        SW2(a, b) = sqrt( mean over directions theta of W2^2(theta . a, theta . b) ),

    over ``projections`` unit directions drawn from ``seed`` (the same directions for every call with that
    seed, so numbers are comparable).  In 1D, W2 matches the sorted values (quantiles at (i + 1/2)/k,
    k = min(n, m), when the sizes differ).  Zero for identical sets; for a set and its copy shifted by c
    it is |c| / sqrt(d) on average over directions.
    """
    for name, pts in (("a", a), ("b", b)):
        if not (isinstance(pts, torch.Tensor) and pts.dim() == 2 and pts.shape[0] >= 1):
            raise ValueError(f"{name} must be points (N, d), got {getattr(pts, 'shape', pts)!r}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    if not is_int(projections) or projections < 1:
        raise ValueError(f"projections must be a positive int, got {projections!r}")
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)                           # (d, P) unit directions
    pa, pb = (a @ theta).sort(dim=0).values, (b @ theta).sort(dim=0).values   # (n, P), (m, P)
    if pa.shape[0] != pb.shape[0]:
        k = min(pa.shape[0], pb.shape[0])
        q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        pa, pb = torch.quantile(pa, q, dim=0), torch.quantile(pb, q, dim=0)
    return float(((pa - pb) ** 2).mean().sqrt())


# ------------------------------------------------------------------------------------ pictures
def _style(ax, title: str = "") -> None:
    ax.set_xlim(-BOX, BOX)
    ax.set_ylim(-BOX, BOX)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def draw_points(ax, points: torch.Tensor, title: str = "", reference: torch.Tensor | None = None,
                color: str = "C0", size: float = 2.0) -> None:
    """Points ``(N, 2)`` on ``ax`` (the box of every figure), over ``reference`` points in light grey."""
    if reference is not None:
        r = reference.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=size, c="0.82", linewidths=0)
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=size, c=color, linewidths=0)
    _style(ax, title)


def draw_trajectories(ax, trajectory: torch.Tensor, title: str = "", count: int = 60) -> None:
    """The paths ``trajectory (K, N, 2)`` of the first ``count`` samples: grey lines through the states, the
    start (noise) in black, the end in colour."""
    tr = trajectory[:, :count].detach().cpu().numpy()                          # (K, n, 2)
    ax.plot(tr[:, :, 0], tr[:, :, 1], color="0.55", lw=0.6, alpha=0.8)
    ax.scatter(tr[0, :, 0], tr[0, :, 1], s=5, c="k", linewidths=0, zorder=3)
    ax.scatter(tr[-1, :, 0], tr[-1, :, 1], s=7, c="C3", linewidths=0, zorder=3)
    _style(ax, title)


def plot_path(data: torch.Tensor, ts: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), seed: int = 0):
    """The probability path: x_t = (1 - t) x_0 + t x_1 for the points ``data (N, 2)`` and fresh noise, one
    panel per t in ``ts``."""
    import matplotlib.pyplot as plt

    x_0 = torch.randn(data.shape, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(1, len(ts), figsize=(2.2 * len(ts), 2.4))
    for ax, t in zip(np.atleast_1d(axes), ts):
        draw_points(ax, fm_interpolate(x_0, data, torch.full((data.shape[0],), float(t))), f"t = {t:g}")
    fig.suptitle("the probability path: samples of x_t", fontsize=10)
    fig.tight_layout()
    return fig


def plot_solutions(solutions: dict, reference: torch.Tensor | None = None, count: int = 60):
    """Two rows, one column per entry of ``solutions`` (label -> ``Solution`` with a trajectory): the
    paths of the first ``count`` samples, then all final samples over the ``reference`` points."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(solutions), figsize=(2.3 * len(solutions), 4.7), squeeze=False)
    for col, (label, sol) in enumerate(solutions.items()):
        draw_trajectories(axes[0, col], sol.trajectory, f"{label}: NFE {sol.nfe}", count)
        draw_points(axes[1, col], sol.x, "samples", reference)
    fig.tight_layout()
    return fig


def _render(draw, size_px: int = 220) -> torch.Tensor:
    """A one-panel picture drawn by ``draw(ax)``, as ``(1, 3, H, W)`` in [0, 1] (an explorer's frame)."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plt.Figure(figsize=(size_px / 100, size_px / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.96])
    draw(ax)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()               # (H, W, 3) uint8
    plt.close(fig)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def explore_samplers(model: nn.Module, reference: torch.Tensor, samplers: Sequence[str] = SAMPLERS[:4] + ("sde",),
                     nfes: Sequence[int] = (4, 8, 16, 32), n: int = 2000, seed: int = 0, sigma: float = 1.0,
                     count: int = 60) -> Explorer:
    """Sampler x NFE: each setting's paths (the first ``count`` samples) and its ``n`` final samples over the
    ``reference`` points, with the sliced W2 to them in the caption.  The same starting noise everywhere."""
    def render(sampler, nfe):
        sol = sample_2d(model, n, sampler, steps_for(sampler, nfe), seed=seed, sigma=sigma, trajectory=True)
        paths = _render(lambda ax: draw_trajectories(ax, sol.trajectory, count=count))
        points = _render(lambda ax: draw_points(ax, sol.x, reference=reference))
        steps = len(sol.times) - 1
        return (torch.cat([paths, points]),
                f"{sampler}, {steps} step{'s' if steps > 1 else ''}, NFE {sol.nfe}: sliced W2 "
                f"{sliced_w2(sol.x, reference):.3f}")

    samplers, nfes = list(samplers), list(nfes)
    static = [{"sampler": s, "nfe": k} for s in ("euler", "rk4") if s in samplers for k in (nfes[0], nfes[-1])]
    return PanelExplorer(render, {"sampler": samplers, "nfe": nfes}, title="2D flow: sampler × NFE",
                         static=static or None, tile_px=220, desc="sampling")


class PanelExplorer(Explorer):
    """An ``Explorer`` whose frames are a few square panels (paths, samples): its static figure gives each
    panel room (about 2.2 inches) instead of a digit's thumbnail size."""

    def figure(self):
        import matplotlib.pyplot as plt
        from diffnb.core.plotting import to_numpy_image

        frames = [self.frame(**s) for s in self.static]
        width = max(len(f.images) for f in frames)
        fig, axes = plt.subplots(len(frames), width, squeeze=False,
                                 figsize=(2.3 * width, 2.45 * len(frames) + (0.4 if self.title else 0.1)))
        for row, f in zip(axes, frames):
            for col, ax in enumerate(row):
                ax.axis("off")
                if col < len(f.images):
                    ax.imshow(to_numpy_image(f.images[col]), interpolation="lanczos")
            row[0].set_title(f.caption, loc="left", fontsize=8.5)
        if self.title:
            fig.suptitle(self.title, fontsize=10.5)
        fig.tight_layout()
        return fig


# ------------------------------------------------------------------------------------ order
@torch.no_grad()
def convergence(model: nn.Module, n: int = 500, steps: Sequence[int] = (4, 8, 16, 32, 64),
                samplers: Sequence[str] = ("euler", "midpoint", "heun", "rk4"), spacing: str = "uniform",
                reference_steps: int = 1024, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, list[float]]:
    """Each fixed-grid solver's error against a converged solve, per step count: sampler -> errors.

    The error is the RMS distance over ``n`` samples between the solver's x_1 with N steps (on
    ``time_grid(N, spacing)``) and rk4's with ``reference_steps`` uniform steps, from the same noise.  Its
    slope against h = 1/N on log axes is the measured order (``diffnb.b.solvers.measured_order``).  The
    solves run on a copy of ``model`` in ``dtype`` (float64 by default: float32 rounding would set the
    smallest errors, about 1e-6, instead of the method).
    """
    import copy

    from diffnb.b.solvers import time_grid

    field = copy.deepcopy(model).to(dtype)
    dev = next(model.parameters()).device
    x0 = initial_noise((n, 2), generator=torch.Generator(device=dev).manual_seed(seed), dtype=dtype)
    ref = sample_ode(field, x0, "rk4", reference_steps).x
    errors = {}
    for sampler in samplers:
        _check_sampler(sampler)
        errors[sampler] = [float(((sample_ode(field, x0, sampler, grid=time_grid(k, spacing)).x - ref) ** 2)
                                 .sum(1).mean().sqrt()) for k in steps]
    return errors


def plot_convergence(steps: Sequence[int], errors: dict, title: str = "",
                     orders: dict | None = None):
    """Error against the step size h = 1/N on log-log axes, one line per solver (``errors``: name -> errors
    per entry of ``steps``), and a grey guide of slope p through the last point of each solver of
    ``orders`` (name -> expected order; default Euler 1, midpoint and Heun 2, RK4 4): where a solver runs
    parallel to its guide, it converges at its order."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    orders = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4} if orders is None else orders
    h = 1.0 / np.asarray(steps, dtype=float)
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for i, (name, err) in enumerate(errors.items()):
        ax.loglog(h, err, marker="o", color=f"C{i}", label=name)
    drawn = set()
    for name, p in orders.items():
        if name in errors and p not in drawn:
            drawn.add(p)
            guide = errors[name][-1] * (h / h[-1]) ** p
            ax.loglog(h, guide, color="0.55", ls={1: ":", 2: "--"}.get(p, "-."), lw=1.0, label=f"slope {p}")
    ax.set_xticks(h)
    ax.set_xticklabels([f"1/{n}" for n in steps])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step size h = 1/N")
    ax.set_ylabel("RMS error against a converged solve")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="major")
    fig.tight_layout()
    return fig
