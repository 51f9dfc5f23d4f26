"""Part B's ODE/SDE solvers (``diffnb.b.solvers``) and the 2D lab (``diffnb.b.toy2d``).

Solvers are tested by their order of convergence on fields with a closed-form flow, the SDE by its
marginals on a Gaussian problem whose velocity and score are known in closed form, the NFE by an
independent counter, and the course's Euler (``diffnb.b.flow.euler_integrate``) stays the reference
the "euler" solver must reproduce.
"""
import math

import pytest
import torch

from diffnb import profiles
from diffnb.b import flow, solvers, toy2d
from diffnb.core.counting import CallCounter
from diffnb.core.numerics import agreement, formula_bound

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: the order each fixed-grid method must show (written here, not read from the module under test)
EXPECTED_ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
#: h = 1/N for these N: past the pre-asymptotic first steps, above float64 rounding for rk4
ORDER_STEPS = (16, 32, 64, 128)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------ closed-form flows
def _square_field():
    """dx/dt = x^2 (elementwise, autonomous, non-linear): x(1) = x0 / (1 - x0), for |x0| < 0.6."""
    x0 = 0.6 * torch.tanh(torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return (lambda x, t: x ** 2), x0, x0 / (1 - x0)


def _rotation_field():
    """dx/dt = (1 + 2t) J x, J the quarter turn (time-dependent, linear): x(1) = R(theta) x0 with
    theta = int_0^1 (1 + 2t) dt = 2."""
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c, s = math.cos(2.0), math.sin(2.0)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)

    def v(x, t):
        return (1 + 2 * t)[:, None] * torch.stack([-x[:, 1], x[:, 0]], 1)
    return v, x0, x0 @ rot.T


FIELDS = {"square": _square_field, "rotation": _rotation_field}


class Gaussian:
    """Data N(mu, s^2 I) on the linear path x_t = (1 - t) x_0 + t x_1, x_0 ~ N(0, I), in closed form:

    x_t ~ N(t mu, var_t I) with var_t = (1 - t)^2 + t^2 s^2;
    velocity v(x, t) = E[x_1 - x_0 | x_t = x] = mu + (t s^2 - (1 - t)) / var_t (x - t mu)
        (Gaussian conditioning: Cov(x_1, x_t) = t s^2, Cov(x_0, x_t) = 1 - t);
    score(x, t) = -(x - t mu) / var_t;
    the ODE's flow is x_t = t mu + sqrt(var_t) x_0, so x_1 = mu + s x_0.
    """

    def __init__(self, mu=(1.0, -0.5), s=0.5, dtype=torch.float32):
        self.mu, self.s = torch.tensor(mu, dtype=dtype), s

    def var(self, t):
        return (1 - t) ** 2 + t ** 2 * self.s ** 2

    def velocity(self, x, t):
        t = t[:, None]
        return self.mu + (t * self.s ** 2 - (1 - t)) / self.var(t) * (x - t * self.mu)

    def score(self, x, t):
        t = t[:, None]
        return -(x - t * self.mu) / self.var(t)


def _errors(solver, field, spacing):
    v, x0, exact = FIELDS[field]()
    return [float((solvers.sample_ode(v, x0, solver, grid=solvers.time_grid(n, spacing)).x - exact).abs().max())
            for n in ORDER_STEPS]


# ------------------------------------------------------------------------------ order of convergence
@pytest.mark.parametrize("spacing", ["uniform", "power"])
@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("solver", list(EXPECTED_ORDER))
def test_each_solver_converges_at_its_order(solver, field, spacing):
    """Halving the step divides the error at t = 1 by about 2^p: 2 (euler), 4 (midpoint, heun), 16 (rk4);
    on the non-uniform grid t_i = 1 - (1 - i/N)^2 too (it is refined by doubling N)."""
    errors = _errors(solver, field, spacing)
    order = solvers.measured_order(ORDER_STEPS, errors)
    want = EXPECTED_ORDER[solver]
    assert abs(order - want) < 0.25, (f"{solver} on the {field} field ({spacing} grid): measured order "
                                      f"{order:.2f}, expected {want}; errors {errors}")


def test_the_order_test_can_fail():
    """A first-order method does not pass for a second-order one: Euler's measured order is far from 2."""
    assert abs(solvers.measured_order(ORDER_STEPS, _errors("euler", "rotation", "uniform")) - 2) > 0.7


def test_measured_order_is_the_log_log_slope():
    assert solvers.measured_order([10, 20, 40], [1e-2, 2.5e-3, 6.25e-4]) == pytest.approx(2.0)
    assert solvers.measured_order([10, 20, 40, 80], [1e-2, 5e-3, 2.5e-3, 1e-20], floor=1e-12) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two errors above floor"):
        solvers.measured_order([10, 20], [1e-20, 1e-21], floor=1e-12)


@pytest.mark.parametrize("field", list(FIELDS))
def test_dopri5_reaches_its_tolerance(field):
    """The adaptive solver's error at t = 1 stays within a small multiple of its tolerance (rtol = atol), and a
    tighter tolerance costs more evaluations and gives a smaller error."""
    v, x0, exact = FIELDS[field]()
    runs = {tol: solvers.sample_ode(v, x0, "dopri5", rtol=tol, atol=tol) for tol in (1e-4, 1e-6, 1e-8)}
    errors = {tol: float((sol.x - exact).abs().max()) for tol, sol in runs.items()}
    for tol, err in errors.items():
        assert err < 20 * tol, f"dopri5 at rtol = atol = {tol:g}: error {err:.2e}"
    assert runs[1e-4].nfe < runs[1e-6].nfe < runs[1e-8].nfe
    assert errors[1e-8] < errors[1e-4] / 100


def test_dopri5_trajectory_lies_on_the_solution():
    g = Gaussian(dtype=torch.float64)
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sol = solvers.sample_ode(g.velocity, x0, "dopri5", rtol=1e-8, atol=1e-8, trajectory=True)
    assert sol.times[0] == 0 and sol.times[-1] == 1 and (sol.times[1:] > sol.times[:-1]).all()
    assert sol.trajectory.shape == (len(sol.times), 50, 2)
    for t, x in zip(sol.times.tolist(), sol.trajectory):                     # x_t = t mu + sqrt(var_t) x0
        torch.testing.assert_close(x, t * g.mu + math.sqrt(g.var(t)) * x0, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ the course's Euler
@pytest.mark.parametrize("num_ts", [1, 3, 7, 50, 333])
def test_euler_through_torchdiffeq_is_the_courses_euler(num_ts):
    """``sample_ode(..., "euler")`` (torchdiffeq) gives ``flow.euler_integrate``'s samples on the same network
    and noise, to float32 rounding (a budget of 3 roundings per step on values of the samples' size; on
    this machine they are equal to the bit)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))

    def velocity(x, t):
        return net(torch.cat([x, t[:, None]], 1))
    x0 = solvers.initial_noise((100, 2), seed=1)
    with torch.no_grad():
        ours = solvers.sample_ode(velocity, x0, "euler", steps=num_ts)
        course = flow.euler_integrate(velocity, x0, num_ts, progress=False)
    budget = formula_bound(float(course.abs().max()) + 1.0, 3 * num_ts)
    assert agreement(ours.x, course, budget), agreement(ours.x, course, budget)
    assert ours.nfe == num_ts


def test_the_euler_parity_can_fail():
    """Evaluating at the step's end (t_{i+1}) instead of its start is caught far outside the budget."""
    def velocity(x, t):
        return torch.sin(3 * t)[:, None] + x
    x0 = solvers.initial_noise((10, 2), seed=0)
    shifted = flow.euler_integrate(lambda x, t: velocity(x, t + 0.1), x0, 10, progress=False)
    ours = solvers.sample_ode(velocity, x0, "euler", steps=10).x
    assert not agreement(ours, shifted, formula_bound(float(shifted.abs().max()) + 1.0, 30))


# ------------------------------------------------------------------------------ the SDE
@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 0.95])
def test_the_score_from_the_velocity_is_the_gaussian_score(t):
    g = Gaussian(dtype=torch.float64)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    tt = torch.full((200,), t, dtype=torch.float64)
    got = solvers.score_from_velocity(g.velocity(x, tt), x, tt)
    torch.testing.assert_close(got, g.score(x, tt), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(solvers.score_from_velocity(g.velocity(x, tt), x, t), got)   # t as a number


def test_the_gaussian_velocity_carries_noise_to_the_data():
    """The closed form the SDE test relies on: its ODE flow sends x0 to mu + s x0."""
    g = Gaussian(dtype=torch.float64)
    x0 = torch.randn(100, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sol = solvers.sample_ode(g.velocity, x0, "rk4", steps=64)
    torch.testing.assert_close(sol.x, g.mu + g.s * x0, atol=1e-8, rtol=0)


#: samples per SDE run, and the standard errors of the sample mean and variance of N(mu, s^2) with it
SDE_SAMPLES, SDE_STEPS = 40_000, 200


def _sde_marginal_misfit(sigma, seed=1):
    """(mean error, variance error) at t = 0.5 and t = 1 in standard errors, the worst over both coordinates."""
    g = Gaussian()
    x0 = solvers.initial_noise((SDE_SAMPLES, 2), seed=0)
    sol = solvers.sample_sde(g.velocity, x0, steps=SDE_STEPS, sigma=sigma, seed=seed, trajectory=True)
    misfits = []
    for i, t in ((SDE_STEPS // 2, 0.5), (SDE_STEPS, 1.0)):
        x = sol.trajectory[i].double()
        var = g.var(t)                                                        # x_t ~ N(t mu, var_t I)
        se_mean, se_var = math.sqrt(var / SDE_SAMPLES), var * math.sqrt(2 / (SDE_SAMPLES - 1))
        misfits.append((float((x.mean(0) - t * g.mu.double()).abs().max()) / se_mean,
                        float((x.var(0) - var).abs().max()) / se_var))
    return max(m for m, _ in misfits), max(v for _, v in misfits)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_the_sde_keeps_the_paths_marginals(sigma):
    """With the exact velocity of N(mu, s^2 I) data, Euler-Maruyama's samples at t = 0.5 and t = 1 have the
    path's mean t mu and variance (1 - t)^2 + t^2 s^2 within 5 standard errors (40,000 samples: the
    standard error of the mean is sqrt(var / n), of the variance var sqrt(2 / (n - 1))).  The step's own
    bias at 200 steps is about 1 standard error (the sigma = 0 run, which has no noise of its own, shows it)."""
    mean_err, var_err = _sde_marginal_misfit(sigma)
    assert mean_err < 5 and var_err < 5, (f"sigma = {sigma}: mean off by {mean_err:.1f}, variance by "
                                          f"{var_err:.1f} standard errors")


def test_the_sde_marginal_test_can_fail(monkeypatch):
    """A score with the wrong sign (drift v - g^2/2 score) spreads the samples: caught by many standard errors."""
    monkeypatch.setattr(solvers, "score_from_velocity", lambda v, x, t: -((t * v - x) / (1 - t)))
    mean_err, var_err = _sde_marginal_misfit(1.0)
    assert var_err > 20


def test_the_sde_at_sigma_zero_is_euler():
    g = Gaussian()
    x0 = solvers.initial_noise((500, 2), seed=2)
    for grid in (solvers.time_grid(10), solvers.time_grid(7, "power", 2.0)):
        sde = solvers.sample_sde(g.velocity, x0, grid=grid, sigma=0.0, seed=9)
        ode = solvers.sample_ode(g.velocity, x0, "euler", grid=grid)
        assert torch.equal(sde.x, ode.x)


def test_sde_diffusion_vanishes_at_the_data():
    assert solvers.sde_diffusion(0.0, 1.5) == 1.5 and solvers.sde_diffusion(1.0, 1.5) == 0.0


# ------------------------------------------------------------------------------ counting and seeds
@pytest.mark.parametrize("solver, per_step", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
@pytest.mark.parametrize("steps", [1, 5, 12])
def test_nfe_is_counted(solver, per_step, steps):
    g = Gaussian()
    outside = CallCounter(g.velocity)                                         # an independent count
    sol = solvers.sample_ode(outside, solvers.initial_noise((8, 2)), solver, steps=steps, trajectory=True)
    assert sol.nfe == outside.nfe == per_step * steps
    assert outside.calls == [8] * sol.nfe                                     # one batched call per evaluation
    assert sol.trajectory.shape == (steps + 1, 8, 2) and len(sol.times) == steps + 1


def test_nfe_of_dopri5_and_the_sde_are_counted():
    g = Gaussian()
    x0 = solvers.initial_noise((8, 2))
    outside = CallCounter(g.velocity)
    sol = solvers.sample_ode(outside, x0, "dopri5", rtol=1e-5, atol=1e-5)
    assert sol.nfe == outside.nfe > 6
    outside = CallCounter(g.velocity)
    assert solvers.sample_sde(outside, x0, steps=13).nfe == outside.nfe == 13


def test_the_same_seed_gives_the_same_samples():
    g = Gaussian()
    assert torch.equal(solvers.initial_noise((5, 2), seed=3), solvers.initial_noise((5, 2), seed=3))
    assert not torch.equal(solvers.initial_noise((5, 2), seed=3), solvers.initial_noise((5, 2), seed=4))
    x0 = solvers.initial_noise((64, 2), seed=0)
    a = solvers.sample_sde(g.velocity, x0, steps=20, seed=7).x
    assert torch.equal(a, solvers.sample_sde(g.velocity, x0, steps=20, seed=7).x)
    assert torch.equal(a, solvers.sample_sde(g.velocity, x0, steps=20, generator=torch.Generator().manual_seed(7)).x)
    assert not torch.equal(a, solvers.sample_sde(g.velocity, x0, steps=20, seed=8).x)
    for solver in solvers.SOLVERS:
        kw = {} if solver == "dopri5" else {"steps": 6}
        assert torch.equal(solvers.sample_ode(g.velocity, x0, solver, **kw).x,
                           solvers.sample_ode(g.velocity, x0, solver, **kw).x)


def test_time_grids():
    torch.testing.assert_close(solvers.time_grid(4), torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    power = solvers.time_grid(4, "power", 2.0)                                # t_i = 1 - (1 - i/4)^2
    torch.testing.assert_close(power, torch.tensor([0, 7 / 16, 3 / 4, 15 / 16, 1], dtype=torch.float64))
    assert (power[1:] - power[:-1]).diff().lt(0).all()                        # steps shrink towards t = 1
    torch.testing.assert_close(solvers.time_grid(5, "power", 1.0), solvers.time_grid(5))


# ------------------------------------------------------------------------------ bad inputs
def _v(x, t):
    return -x


X0 = torch.zeros(4, 2)


@pytest.mark.parametrize("call, error, words", [
    (lambda: solvers.sample_ode(_v, X0, "euler", steps=0), ValueError, r"^steps must be a positive integer.*got 0"),
    (lambda: solvers.sample_ode(_v, X0, "euler", steps=2.5), ValueError, r"^steps must be a positive integer"),
    (lambda: solvers.sample_ode(_v, X0, "euler", steps=True), ValueError, r"^steps must be a positive integer"),
    (lambda: solvers.sample_sde(_v, X0, steps=-1), ValueError, r"^steps must be a positive integer"),
    (lambda: solvers.time_grid(0), ValueError, r"^steps must be a positive integer"),
    (lambda: solvers.sample_ode(_v, X0, "rk45", steps=4), ValueError,
     r"unknown solver 'rk45'; the solvers are \['euler', 'midpoint', 'heun', 'rk4', 'dopri5'\]"),
    (lambda: solvers.sample_ode(_v, X0, "dopri5", rtol=float("nan")), ValueError, r"^rtol must be a finite number, got nan; pass e\.g\. rtol=1e-5"),
    (lambda: solvers.sample_ode(_v, X0, "dopri5", atol=float("inf")), ValueError, r"^atol must be a finite number"),
    (lambda: solvers.sample_ode(_v, X0, "dopri5", rtol=0.0), ValueError, r"^rtol must be > 0, got 0"),
    (lambda: solvers.sample_ode(_v, X0, "dopri5", atol=-1e-5), ValueError, r"^atol must be > 0"),
    (lambda: solvers.sample_ode(_v, X0, "dopri5", rtol="1e-5"), TypeError, r"^rtol must be a number"),
    (lambda: solvers.sample_ode(_v, X0, "dopri5", steps=10), ValueError, r"dopri5 chooses its own steps"),
    (lambda: solvers.sample_ode(_v, X0, "rk4", steps=10, rtol=1e-5), ValueError, r"rtol and atol are dopri5's"),
    (lambda: solvers.sample_ode(_v, X0, "euler"), ValueError, r"pass steps=N .* or grid="),
    (lambda: solvers.sample_ode(_v, X0, "euler", steps=4, grid=[0, 1]), ValueError, r"not both"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid=[0, 0.5, 0.4, 1]), ValueError,
     r"^grid must increase strictly from 0 to 1, but t\[1\] = 0\.5 is followed by t\[2\] = 0\.4"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid=[0, 0.5, 0.5, 1]), ValueError, r"^grid must increase strictly"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid=[0.1, 0.5, 1]), ValueError, r"^grid must start at t = 0 .* end at t = 1"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid=[0, 0.5, 0.9]), ValueError, r"^grid must start at t = 0"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid=[1, 0.5, 0]), ValueError, r"^grid must start at t = 0"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid=[0, float("nan"), 1]), ValueError, r"^grid holds a non-finite"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid=[[0, 1]]), ValueError, r"^grid must be 1-D"),
    (lambda: solvers.sample_ode(_v, X0, "euler", grid="0 to 1"), TypeError, r"^grid must be a 1-D tensor or list"),
    (lambda: solvers.sample_ode(_v, [0.0, 1.0], "euler", steps=2), TypeError, r"^x0 must be a floating-point tensor"),
    (lambda: solvers.sample_ode(_v, torch.zeros(4, 2, dtype=torch.long), "euler", steps=2), TypeError, r"^x0 must be"),
    (lambda: solvers.sample_ode(lambda x, t: x[:, :1], X0, "euler", steps=2), ValueError,
     r"velocity\(x, t\) returned \(4, 1\) for x of shape \(4, 2\)"),
    (lambda: solvers.sample_sde(_v, X0, steps=4, sigma=float("nan")), ValueError, r"^sigma must be a finite number"),
    (lambda: solvers.sample_sde(_v, X0, steps=4, sigma=-1.0), ValueError, r"^sigma must be >= 0"),
    (lambda: solvers.sample_sde(_v, X0, steps=4, seed="7"), TypeError, r"^seed must be an int"),
    (lambda: solvers.sample_sde(_v, X0, steps=4, generator=7), TypeError, r"^generator must be a torch\.Generator"),
    (lambda: solvers.time_grid(4, "cosine"), ValueError, r"^spacing must be one of \['uniform', 'power'\]"),
    (lambda: solvers.time_grid(4, "power", float("nan")), ValueError, r"^power must be a finite number"),
    (lambda: solvers.initial_noise((0, 2)), ValueError, r"^shape must be a tuple of positive ints"),
])
def test_bad_inputs_are_refused_with_the_argument_and_the_fix(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_a_tolerance_float32_cannot_reach_is_a_clear_error():
    with pytest.raises(RuntimeError, match="dopri5 could not reach rtol=1e-30"):
        solvers.sample_ode(lambda x, t: torch.sin(20 * x) + 3 * t[:, None], X0 + 0.3, "dopri5", rtol=1e-30, atol=1e-30)


# ------------------------------------------------------------------------------ the 2D lab
def test_sliced_w2_against_closed_forms():
    a = toy2d.sample_data("moons", 3000, seed=0)
    assert toy2d.sliced_w2(a, a) == 0.0
    c = torch.tensor([0.6, -0.8])                                             # |c| = 1
    # a shift by c moves every projection by theta . c; the mean of (theta . c)^2 over directions is |c|^2 / 2
    assert toy2d.sliced_w2(a, a + c, projections=2000) == pytest.approx(1 / math.sqrt(2), rel=0.03)
    assert toy2d.sliced_w2(a, a[:1000] + c, projections=2000) == pytest.approx(1 / math.sqrt(2), rel=0.05)
    assert toy2d.sliced_w2(a, 2 * a) > toy2d.sliced_w2(a, 1.1 * a) > 0


@pytest.mark.parametrize("name", toy2d.DATASETS)
def test_toy_data_is_seeded_and_in_the_box(name):
    a = toy2d.sample_data(name, 500, seed=1)
    assert a.shape == (500, 2) and a.dtype == torch.float32 and a.abs().max() < toy2d.BOX
    assert torch.equal(a, toy2d.sample_data(name, 500, seed=1))
    assert not torch.equal(a, toy2d.sample_data(name, 500, seed=2))
    profiles.check_parameter("toy_data", name)                               # the notebook parameter's rule knows it


def test_checkerboard_fills_only_the_dark_squares():
    a = toy2d.checkerboard(4000, torch.Generator().manual_seed(0))
    assert ((torch.floor(a[:, 0]) + torch.floor(a[:, 1])).long() % 2 == 0).all()


def test_a_short_2d_training_is_seeded_and_learns():
    data = toy2d.sample_data("mixture", 2000, seed=0)
    m1, losses = toy2d.train_flow_2d(data, steps=150, seed=3)
    m2, _ = toy2d.train_flow_2d(data, steps=150, seed=3)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert sum(losses[-20:]) / 20 < 0.8 * sum(losses[:20]) / 20
    a = toy2d.sample_2d(m1, 300, "sde", steps=8, seed=5, trajectory=True)
    assert torch.equal(a.x, toy2d.sample_2d(m1, 300, "sde", steps=8, seed=5).x) and a.nfe == 8
    assert a.trajectory.shape == (9, 300, 2)
    assert toy2d.sample_2d(m1, 300, "rk4", steps=2, seed=5).nfe == 8


@pytest.mark.parametrize("sampler, nfe, steps", [("euler", 8, 8), ("midpoint", 8, 4), ("heun", 8, 4),
                                                   ("rk4", 8, 2), ("sde", 8, 8)])
def test_steps_for_an_nfe_budget(sampler, nfe, steps):
    assert toy2d.steps_for(sampler, nfe) == steps


def test_steps_for_refuses_a_budget_the_solver_cannot_spend():
    with pytest.raises(ValueError, match="rk4 spends 4 evaluations per step, so nfe must be a positive multiple of 4"):
        toy2d.steps_for("rk4", 6)
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        toy2d.steps_for("ddim", 8)
