"""Part B's ODE and SDE samplers for flow matching, beside the course's Euler (``diffnb.b.flow``).

Conventions (those of ``diffnb.b.flow``, stated once here too):
  * flow time t = 0 is noise, t = 1 is data; the linear path is ``x_t = (1 - t) x_0 + t x_1`` with
    ``x_0 ~ N(0, I)``;
  * a ``velocity`` is any callable ``velocity(x: (N, ...), t: (N,)) -> (N, ...)`` (a trained
    ``u_theta``, a CFG closure, a closed-form field); a solver knows nothing else of the model;
  * a time grid is a float64 tensor ``(K + 1,)`` rising strictly from 0 to 1: the K steps of a
    fixed-grid solver (``time_grid``);
  * the number of network evaluations (NFE) is counted by wrapping ``velocity`` in
    ``diffnb.core.counting.CallCounter``, never worked out from the step count.

The ODE ``dx/dt = v(x, t)`` is solved by torchdiffeq (``torchdiffeq.odeint``), under the names the
field gives the methods:

======== ======================= ================================ ===================== =====
name      torchdiffeq method      one step from t to t + h         NFE per step          order
======== ======================= ================================ ===================== =====
euler     ``euler``               x + h v(x, t)                    1                     1
midpoint  ``midpoint``            x + h v(x + h/2 v, t + h/2)      2                     2
heun      ``heun2``               x + h/2 [v(x, t) + v(x~, t + h)] 2 (one at the step's   2
                                  with x~ = x + h v(x, t)          end, t + h)
rk4       ``rk4``                 Kutta's 3/8 rule (torchdiffeq's  4                     4
                                  ``rk4``: stages at t, t + h/3,
                                  t + 2h/3, t + h)
dopri5    ``dopri5``              Dormand-Prince 5(4), adaptive:   6 per step tried      5
                                  steps chosen for ``rtol``/       (FSAL), + 2 to choose
                                  ``atol``                         the first step
======== ======================= ================================ ===================== =====

torchdiffeq has every one of these, so none is written here by hand; the course's own
``diffnb.b.flow.euler_integrate`` stays the hand-written reference (``sample_ode(..., "euler")`` gives
the same numbers, ``tests/test_solvers.py``).  The order is that of the global error at t = 1 as the
step h halves: 2, 4 and 16 times smaller for orders 1, 2 and 4, on a smooth field.

The SDE sampler (``sample_sde``) is written by hand (torchdiffeq has none): Euler-Maruyama on

    dx = [v(x, t) + g(t)^2 / 2 * score(x, t)] dt + g(t) dW,     g(t) = sigma (1 - t),

whose marginals are those of the ODE for every ``sigma`` (the added drift (g^2/2) score and the noise
g dW cancel in the Fokker-Planck equation).  The score comes from the velocity: see
``score_from_velocity``.  ``g`` vanishes at t = 1, so the last steps add almost no noise.

Every random draw takes a seed or a ``torch.Generator``: ``initial_noise`` for x_0, ``sample_sde`` for
its Brownian increments; the same seed gives the same numbers.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Sequence

import torch

from diffnb.core.checks import check_number, is_int
from diffnb.core.counting import CallCounter

#: the solvers ``sample_ode`` offers, by the field's names
SOLVERS = ("euler", "midpoint", "heun", "rk4", "dopri5")
#: the fixed-grid solvers and their velocity evaluations per step (to choose steps for an NFE budget;
#: the NFE a run reports is counted, ``Solution.nfe``)
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
#: the order of each solver's global error (error ~ h^order)
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "dopri5": 5}
#: time grid spacings ``time_grid`` offers
SPACINGS = ("uniform", "power")
_TORCHDIFFEQ = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "rk4": "rk4", "dopri5": "dopri5"}
_MAX_ADAPTIVE_STEPS = 100_000


class Solution(NamedTuple):
    """What a sampler returns, whatever the solver.

    x: ``(N, ...)`` the samples at t = 1.
    nfe: the velocity's evaluations, counted (``CallCounter``).
    times: ``(K,)`` float64 on the CPU: the times the solver stepped from and to (the grid for fixed-grid
        solvers and the SDE; the accepted steps' ends for dopri5), from 0 to 1.
    trajectory: ``(K, N, ...)`` the states at ``times`` when asked for (``trajectory=True``), else None.
    """
    x: torch.Tensor
    nfe: int
    times: torch.Tensor
    trajectory: torch.Tensor | None


# ------------------------------------------------------------------------------------ time grids
def time_grid(steps: int, spacing: str = "uniform", power: float = 2.0) -> torch.Tensor:
    """The ``steps + 1`` times ``(steps + 1,)`` float64 from 0 to 1 of a fixed-grid solve.

    ``uniform``: t_i = i / N.  ``power``: t_i = 1 - (1 - i/N)^p, with steps shrinking towards t = 1
    (the data end, where a learned field bends most) for p > 1; p = 1 is uniform.
    """
    _check_steps(steps)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {list(SPACINGS)}, got {spacing!r}; pass e.g. spacing='uniform'")
    p = check_number("power", power, low=1e-3, high=100.0, fix="pass e.g. power=2.0 (1.0 is uniform)")
    s = torch.arange(steps + 1, dtype=torch.float64) / steps                 # i / N
    grid = s if spacing == "uniform" else 1.0 - (1.0 - s) ** p               # t_i = 1 - (1 - i/N)^p
    grid[0], grid[-1] = 0.0, 1.0
    return grid


def check_grid(grid) -> torch.Tensor:
    """``grid`` (a sequence or 1-D tensor of times) as a float64 CPU tensor, if it rises strictly from 0 to 1;
    else a ``ValueError`` naming ``grid`` and the fix."""
    fix = "pass e.g. grid=solvers.time_grid(10) (uniform) or time_grid(10, 'power', 2.0)"
    if isinstance(grid, str) or not isinstance(grid, (torch.Tensor, Sequence)):
        raise TypeError(f"grid must be a 1-D tensor or list of times from 0 to 1, got {grid!r}; {fix}")
    try:
        g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"grid must hold numbers (times from 0 to 1), got {grid!r}; {fix}") from err
    if g.dim() != 1 or g.numel() < 2:
        raise ValueError(f"grid must be 1-D with at least 2 times (0 and 1), got shape {tuple(g.shape)}; {fix}")
    if not torch.isfinite(g).all():
        raise ValueError(f"grid holds a non-finite time: {g.tolist()}; {fix}")
    if g[0] != 0.0 or g[-1] != 1.0:
        raise ValueError(f"grid must start at t = 0 (noise) and end at t = 1 (data), got {g[0].item():g} ... "
                         f"{g[-1].item():g}; {fix}")
    if not (g[1:] > g[:-1]).all():
        i = int(torch.nonzero(g[1:] <= g[:-1])[0])
        raise ValueError(f"grid must increase strictly from 0 to 1, but t[{i}] = {g[i].item():g} is followed by "
                         f"t[{i + 1}] = {g[i + 1].item():g}; {fix}")
    return g


# ------------------------------------------------------------------------------------ noise
def initial_noise(shape: Sequence[int], seed: int = 0, generator: torch.Generator | None = None,
                  device="cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x_0 ~ N(0, I) of ``shape``, drawn from ``generator`` when given, else from a generator seeded with
    ``seed`` on ``device``: the same seed gives the same noise."""
    if not (isinstance(shape, (tuple, list, torch.Size)) and len(shape) >= 1
            and all(is_int(n) and n >= 1 for n in shape)):
        raise ValueError(f"shape must be a tuple of positive ints such as (1000, 2), got {shape!r}")
    generator = _generator(seed, generator, device)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)


# ------------------------------------------------------------------------------------ the ODE
class _Field:
    """``velocity`` as torchdiffeq calls it, ``f(t, y)`` with a scalar t, counted."""

    def __init__(self, counter: CallCounter):
        self.counter = counter

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t_batch = t.to(y.dtype).reshape(1).expand(y.shape[0]).contiguous()      # (N,): one t per sample
        v = self.counter(y, t_batch)
        _check_velocity_output(v, y)
        return v


class _AdaptiveField(_Field):
    """A ``_Field`` that records the accepted steps of an adaptive solver (torchdiffeq's
    ``callback_accept_step``): their start times, and their start states when ``keep_states``."""

    def __init__(self, counter: CallCounter, keep_states: bool):
        super().__init__(counter)
        self.keep_states = keep_states
        self.times: list[float] = []
        self.states: list[torch.Tensor] = []

    def callback_accept_step(self, t0, y0, dt):
        self.times.append(float(t0))
        if self.keep_states:
            self.states.append(y0.detach().clone())


def sample_ode(velocity: Callable, x0: torch.Tensor, solver: str = "euler", steps: int | None = None,
               grid=None, *, rtol: float | None = None, atol: float | None = None,
               trajectory: bool = False) -> Solution:
    """Integrate dx/dt = velocity(x, t) from t = 0 (``x0``, the noise) to t = 1 with ``solver``.

    Args:
        velocity: ``velocity(x: (N, ...), t: (N,)) -> (N, ...)``; called inside ``torch.no_grad`` by the
            caller if it is a network (this function does not turn gradients off).
        x0: ``(N, ...)`` floating-point noise at t = 0 (``initial_noise``).
        solver: one of ``SOLVERS``: "euler", "midpoint", "heun", "rk4" (fixed grid) or "dopri5" (adaptive).
        steps: the number of uniform steps of a fixed-grid solver (``time_grid(steps)``); or give
        grid: the times ``(K + 1,)`` from 0 to 1 of its K steps (e.g. ``time_grid(K, "power", 2.0)``).
        rtol, atol: dopri5's relative and absolute tolerances (finite, > 0; default 1e-5 each); only dopri5
            takes them, and it takes no steps or grid (it picks its own).
        trajectory: also return the state at every time of ``Solution.times``.

    Returns ``Solution(x, nfe, times, trajectory)``; ``nfe`` counts the calls of ``velocity``
    (one call = one batched evaluation).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; the solvers are {list(SOLVERS)} "
                         "(heun is Heun's second-order method, rk4 Kutta's fourth-order 3/8 rule)")
    _check_x0(x0)
    if not callable(velocity):
        raise TypeError(f"velocity must be callable as velocity(x, t), got {velocity!r}")
    import torchdiffeq

    counter = CallCounter(velocity)
    if solver == "dopri5":
        field = _AdaptiveField(counter, trajectory)
        if steps is not None or grid is not None:
            raise ValueError("dopri5 chooses its own steps: pass rtol and atol (e.g. rtol=1e-5, atol=1e-5), "
                             f"not steps={steps!r} or a grid")
        rtol = _check_tolerance("rtol", 1e-5 if rtol is None else rtol)
        atol = _check_tolerance("atol", 1e-5 if atol is None else atol)
        t = torch.tensor([0.0, 1.0], dtype=_time_dtype(x0), device=x0.device)
        try:
            out = torchdiffeq.odeint(field, x0, t, method="dopri5", rtol=rtol, atol=atol,
                                     options={"max_num_steps": _MAX_ADAPTIVE_STEPS})
        except AssertionError as err:               # torchdiffeq's 'max_num_steps exceeded', 'underflow in dt'
            raise RuntimeError(f"dopri5 could not reach rtol={rtol:g}, atol={atol:g} ({err}); loosen the "
                               f"tolerances (float32 cannot go much below 1e-6)") from err
        x1 = out[-1]
        times = torch.tensor(field.times + [1.0], dtype=torch.float64)
        traj = torch.stack(field.states + [x1]) if trajectory else None
        return Solution(x1, counter.nfe, times, traj)

    if rtol is not None or atol is not None:
        raise ValueError(f"rtol and atol are dopri5's tolerances; {solver} takes steps or a grid, not "
                         f"rtol={rtol!r}, atol={atol!r}")
    grid = _steps_or_grid(steps, grid)
    t = grid.to(device=x0.device, dtype=_time_dtype(x0))
    out = torchdiffeq.odeint(_Field(counter), x0, t, method=_TORCHDIFFEQ[solver])          # (K + 1, N, ...)
    return Solution(out[-1], counter.nfe, grid, out if trajectory else None)


# ------------------------------------------------------------------------------------ the SDE
def score_from_velocity(v: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    r"""The score grad log p_t(x) of the linear path, from its velocity v = v(x, t), for t < 1:

        score(x, t) = (t v - x) / (1 - t).

    Derivation.  On the path x_t = (1 - t) x_0 + t x_1 with x_0 ~ N(0, I), the velocity the network learns
    is the conditional mean v(x, t) = E[x_1 - x_0 | x_t = x].  Writing x_1 = (x - (1 - t) x_0) / t gives
    v = (x - E[x_0 | x]) / t, so E[x_0 | x] = x - t v.  Given x_1, x_t ~ N(t x_1, (1 - t)^2 I), whose score
    is -(x - t x_1) / (1 - t)^2 = -x_0 / (1 - t); averaging over x_1 given x_t = x (Tweedie's formula)
    gives score(x, t) = -E[x_0 | x] / (1 - t) = (t v - x) / (1 - t).  At t = 0 it is -x, the score of
    N(0, I).  ``t``: a number or a tensor broadcastable against x's batch dimension, ``(N,)``.
    """
    t = _as_batch_time(t, x)
    return (t * v - x) / (1 - t)


def sde_diffusion(t, sigma: float):
    """The SDE's diffusion coefficient g(t) = sigma (1 - t): sigma at t = 0, none at t = 1 (the data)."""
    return sigma * (1 - t)


def sample_sde(velocity: Callable, x0: torch.Tensor, steps: int | None = None, grid=None, *,
               sigma: float = 1.0, seed: int = 0, generator: torch.Generator | None = None,
               trajectory: bool = False) -> Solution:
    """Euler-Maruyama from t = 0 (``x0``) to t = 1 on dx = [v + g^2/2 score] dt + g dW, g = sigma (1 - t).

    One step from t_i to t_{i+1} = t_i + h, with v = velocity(x, t_i) and z ~ N(0, I) from the generator:

        x <- x + h [v + g(t_i)^2 / 2 * score(x, t_i)] + g(t_i) sqrt(h) z
          =  x + h [v + sigma^2 (1 - t_i) (t_i v - x) / 2] + sigma (1 - t_i) sqrt(h) z

    (the second line is the first with ``score_from_velocity`` put in: g^2 cancels the score's 1 / (1 - t),
    so the drift stays finite up to t = 1; no step evaluates at t = 1 itself).  sigma = 0 is the ODE's Euler
    step; sigma > 0 adds noise that the extra drift removes again on average, so the marginals stay the
    path's.  One velocity call per step.

    Args:
        velocity, x0, steps, grid, trajectory: as ``sample_ode``'s (``steps`` uniform steps, or a ``grid``).
        sigma: the noise scale (finite, >= 0).
        seed, generator: the Brownian increments are drawn from ``generator`` when given, else from a
            generator seeded with ``seed`` on x0's device; the same seed gives the same samples.
    Returns ``Solution(x, nfe, times, trajectory)``.
    """
    _check_x0(x0)
    if not callable(velocity):
        raise TypeError(f"velocity must be callable as velocity(x, t), got {velocity!r}")
    sigma = check_number("sigma", sigma, low=0.0, fix="pass e.g. sigma=1.0 (0 is the ODE's Euler sampler)")
    grid = _steps_or_grid(steps, grid)
    generator = _generator(seed, generator, x0.device)
    counter = CallCounter(velocity)
    times = grid.tolist()
    x, states = x0, [x0] if trajectory else None
    for t_i, t_next in zip(times[:-1], times[1:]):
        h = t_next - t_i
        t = torch.full((x.shape[0],), t_i, device=x.device, dtype=x.dtype)
        v = counter(x, t)
        _check_velocity_output(v, x)
        g = sde_diffusion(t_i, sigma)                                            # g(t_i) = sigma (1 - t_i)
        drift = v + (g ** 2 / 2) * score_from_velocity(v, x, t_i)               # v + g^2/2 * score
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + h * drift + (g * math.sqrt(h)) * z                              # Euler-Maruyama
        if trajectory:
            states.append(x)
    return Solution(x, counter.nfe, grid, torch.stack(states) if trajectory else None)


# ------------------------------------------------------------------------------------ the class-conditioned UNet
def class_fm_velocity(unet: torch.nn.Module, c: torch.Tensor, guidance_scale: float = 5.0) -> Callable:
    """The CFG velocity of a class-conditioned flow UNet (B2.4) as a solver's field, for labels ``c: (N,)``:

        u(x, t) = u_uncond + gamma (u_cond - u_uncond),     x: (N, C, H, W), t: (N,)

    with both velocities from ONE call of ``unet`` on a batch of 2N (mask 1 for the first N, 0 for the
    rest), as ``diffnb.b.flow.class_fm_sample`` computes them; one call is one NFE.  ``t`` is clipped to
    [0, 1]: torchdiffeq's dopri5 may try a step that ends past t = 1 and interpolate back to it, and the
    UNet refuses a time outside [0, 1].  Call it under ``torch.no_grad`` with ``unet`` in eval mode.
    """
    from diffnb.b.flow import cfg_velocity

    gamma = check_number("guidance_scale", guidance_scale,
                         fix="pass a number such as 5.0 (1.0 turns guidance off; negative values are allowed)")
    if not isinstance(c, torch.Tensor) or c.dim() != 1 or c.dtype.is_floating_point or c.dtype == torch.bool:
        raise TypeError(f"c must be a 1-D tensor of integer class labels, one per sample, got {c!r}; "
                        "pass e.g. torch.arange(10)")
    n = c.shape[0]
    c2 = torch.cat([c, c])                                                      # (2N,): cond | uncond
    mask = torch.cat([torch.ones(n, device=c.device), torch.zeros(n, device=c.device)])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != n:
            raise ValueError(f"x holds {x.shape[0]} samples but c holds {n} labels; pass one label per sample")
        t = t.clamp(0.0, 1.0)
        u_cond, u_uncond = unet(torch.cat([x, x]), c2, torch.cat([t, t]), mask).chunk(2)    # (N, C, H, W) each
        return cfg_velocity(u_uncond, u_cond, gamma)

    return velocity


@torch.no_grad()
def sample_class_fm(unet: torch.nn.Module, c, solver: str = "euler", steps: int | None = None, grid=None, *,
                    guidance_scale: float = 5.0, seed: int = 0, img_wh: tuple[int, int] = (28, 28),
                    rtol: float | None = None, atol: float | None = None, trajectory: bool = False) -> Solution:
    """``class_fm_sample``'s samples by any of ``SOLVERS``: one image per label of ``c: (N,)``, from the same
    noise (``initial_noise((N, C, H, W), seed)`` on the model's device, C = ``unet.in_channels``, (W, H) =
    ``img_wh``).  ``solver="euler", steps=T`` gives ``diffnb.b.flow.class_fm_sample(unet, c, img_wh, T,
    guidance_scale, seed)``.  ``steps``, ``grid``, ``rtol``, ``atol``, ``trajectory``: as ``sample_ode``'s.
    Returns ``Solution(x: (N, C, H, W), nfe, times, trajectory)``."""
    device = next(unet.parameters()).device
    c = torch.as_tensor(c, device=device).reshape(-1)
    velocity = class_fm_velocity(unet, c, guidance_scale)
    if not (isinstance(img_wh, (tuple, list)) and len(img_wh) == 2 and all(is_int(v) and v > 0 for v in img_wh)):
        raise ValueError(f"img_wh must be (width, height), e.g. (28, 28); got {img_wh!r}")
    x0 = initial_noise((c.shape[0], getattr(unet, "in_channels", 1), int(img_wh[1]), int(img_wh[0])),
                       seed=seed, device=device)
    was_training = unet.training
    unet.eval()
    try:
        return sample_ode(velocity, x0, solver, steps, grid, rtol=rtol, atol=atol, trajectory=trajectory)
    finally:
        unet.train(was_training)


def rms_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """The root-mean-square difference of two batches of samples of the same shape, over every pixel:
    sqrt(mean((x - reference)^2)), the distance of a solve to a converged one from the same noise."""
    if not isinstance(x, torch.Tensor) or not isinstance(reference, torch.Tensor) or x.shape != reference.shape:
        got = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in (x, reference)]
        raise ValueError(f"rms_error compares two tensors of one shape, got {got[0]} and {got[1]}; "
                         "solve from the same noise")
    return float(((x.double() - reference.double()) ** 2).mean().sqrt())


def smallest_nfe(errors: dict, target: float) -> int | None:
    """The smallest NFE of ``errors`` (NFE -> error) whose error is at most ``target``; None if none is."""
    target = check_number("target", target, low=0.0, fix="pass the error to reach, e.g. Euler's at 50 steps")
    hits = [int(k) for k, e in errors.items() if float(e) <= target]
    return min(hits) if hits else None


# ------------------------------------------------------------------------------------ order
def measured_order(steps: Sequence[int], errors: Sequence[float], floor: float = 0.0) -> float:
    """The order p of error ~ C h^p, h = 1 / steps: the least-squares slope of log(error) against
    log(1 / steps), over the pairs whose error is above ``floor`` (below it, float rounding, not the
    method, sets the error).  Halving h divides the error by 2^p: 2, 4, 16 for p = 1, 2, 4."""
    pairs = [(int(n), float(e)) for n, e in zip(steps, errors) if float(e) > floor]
    if len(pairs) < 2:
        raise ValueError(f"measured_order needs at least two errors above floor={floor:g}, got "
                         f"{list(zip(steps, errors))}; use fewer steps or a lower floor")
    log_h = torch.tensor([-math.log(n) for n, _ in pairs], dtype=torch.float64)
    log_e = torch.tensor([math.log(e) for _, e in pairs], dtype=torch.float64)
    dh = log_h - log_h.mean()
    return float((dh * (log_e - log_e.mean())).sum() / (dh ** 2).sum())


# ------------------------------------------------------------------------------------ helpers
def _check_steps(steps) -> None:
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be a positive integer number of solver steps, got {steps!r}; "
                         "pass e.g. steps=8")


def _steps_or_grid(steps, grid) -> torch.Tensor:
    if steps is not None and grid is not None:
        raise ValueError("pass steps (uniform steps) or grid (your own times), not both")
    if grid is not None:
        return check_grid(grid)
    if steps is None:
        raise ValueError("pass steps=N for N uniform steps, or grid=time_grid(N, ...) for a grid of your own")
    return time_grid(steps)


def _check_tolerance(name: str, value) -> float:
    value = check_number(name, value, fix=f"pass e.g. {name}=1e-5 (a positive number)")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value:g}; pass e.g. {name}=1e-5 (a positive number)")
    return value


def _check_x0(x0) -> None:
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.dim() < 1 or x0.shape[0] < 1:
        got = f"{x0.dtype} tensor of shape {tuple(x0.shape)}" if isinstance(x0, torch.Tensor) else repr(x0)
        raise TypeError(f"x0 must be a floating-point tensor (N, ...) of noise at t = 0, got {got}; "
                        "pass e.g. x0=initial_noise((1000, 2), seed=0)")


def _check_velocity_output(v, x) -> None:
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"velocity(x, t) returned {got} for x of shape {tuple(x.shape)}; it must return "
                         "a tensor of x's shape (the velocity of every sample)")


def _time_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64         # mps has no float64


def _as_batch_time(t, x: torch.Tensor):
    if isinstance(t, numbers.Real):
        return float(t)
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, *([1] * (x.dim() - 1))) if t.dim() == 1 else t


def _generator(seed, generator, device) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {generator!r}; or pass seed=0")
        return generator
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}; pass e.g. seed=0")
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))
