"""The machinery of a check: run a learner's function beside diffnb's reference on a few inputs and say,
in one line a learner understands, whether it passed or what is wrong.

Conventions (stated once):
  * An **exercise** is one function (or ``nn.Module`` class) a learner writes in a notebook's exercise
    cell (cell tag ``exercise:<name>``).  Its ``Exercise`` record names the notebook, the function the
    cell defines, diffnb's reference (what the lesson uses until the learner's passes) and ``run``, the
    check itself: ``run(fn, hidden)`` calls ``fn`` on each case through ``Probe`` and raises ``Mismatch``
    at the first wrong one.  ``hidden=True`` adds the grader's extra cases (the hidden tests).
  * A check compares against diffnb's reference on the offline models and data; it never mutates the
    inputs it hands over (each call gets fresh clones, and a learner's function that changes them in
    place fails), and it never passes a function that returns its input unchanged or zeros.
  * A learner's function may not call the diffnb function it is asked to write, nor carry it in by
    import: while the learner's code runs, each forbidden reference is replaced by a tripwire in every
    loaded ``diffnb`` module, and the function's global and closure names are looked up beforehand.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import types
from typing import Any, Callable, Iterable, Sequence

import torch


class Mismatch(Exception):
    """A wrong answer: ``str(e)`` is the one line the learner reads (input, expected, actual, a hint)."""


class NotWritten(Exception):
    """The learner's function is still the stub (it raised ``NotImplementedError``)."""


class UsedReference(Exception):
    """The learner's function called (or imported) the diffnb function it is asked to write."""


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise: see the module docstring.  ``run(fn, hidden)`` raises ``Mismatch`` / ``NotWritten`` /
    ``UsedReference`` or returns the number of cases that passed."""
    name: str                                   # the tag's <name>: exercise:<name>
    notebook: str                               # "A1.1_forward" (no .ipynb)
    function: str                               # the name the exercise cell defines
    reference: Callable[[], Any]                # () -> diffnb's object (imported lazily)
    run: Callable[[Any, bool], int]             # (learner's fn, hidden) -> cases passed
    forbidden: Callable[[], Sequence[Any]] = lambda: ()   # () -> diffnb objects the learner may not use
    summary: str = ""                           # what it asks, in a few words (the grader's HTML)
    points: int = 1
    seconds: float = 60.0                       # the grader's time limit for this exercise


# --------------------------------------------------------------------------- forbidding the reference

class Tripwire:
    """Stands in for a forbidden diffnb function while a learner's code runs."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise UsedReference(self.name)

    def __getattr__(self, item):            # e.g. a class's classmethod: still the reference
        raise UsedReference(self.name)


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _functions_of(obj) -> list:
    """The Python functions behind a learner's answer: the function itself, or a class's methods."""
    if isinstance(obj, types.FunctionType):
        return [obj]
    if isinstance(obj, type):
        return [v for k, v in vars(obj).items() if isinstance(v, types.FunctionType)]
    return []


def imported_reference(obj, forbidden: Sequence[Any]) -> str | None:
    """The name under which ``obj`` reaches a forbidden object directly (it is one, subclasses one, or names
    one among its globals or closure), or None."""
    ids = {id(f) for f in forbidden}
    if id(obj) in ids:
        return _qualname(obj)
    if isinstance(obj, type) and any(id(b) in ids for b in obj.__mro__[1:]):
        return next(b.__name__ for b in obj.__mro__[1:] if id(b) in ids)
    for fn in _functions_of(obj):
        for name in _code_names(fn.__code__):
            if id(fn.__globals__.get(name)) in ids:
                return _qualname(fn.__globals__[name])
        for cell in fn.__closure__ or ():
            with contextlib.suppress(ValueError):
                if id(cell.cell_contents) in ids:
                    return _qualname(cell.cell_contents)
    return None


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', 'diffnb')}.{getattr(obj, '__name__', type(obj).__name__)}"


@contextlib.contextmanager
def tripwires(forbidden: Sequence[Any]):
    """Replace every forbidden object in every loaded ``diffnb`` module by a ``Tripwire`` (restored after)."""
    ids = {id(f): f for f in forbidden}
    swapped = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "diffnb" or mod_name.startswith("diffnb.")):
            continue
        for attr, value in list(vars(mod).items()):
            if id(value) in ids:
                swapped.append((mod, attr, value))
                setattr(mod, attr, Tripwire(f"{mod_name}.{attr}"))
    try:
        yield
    finally:
        for mod, attr, value in swapped:
            setattr(mod, attr, value)


# --------------------------------------------------------------------------- calling the learner's code

def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _changed(before, after) -> bool:
    if isinstance(before, torch.Tensor):
        return not (before.shape == after.shape and torch.equal(before, after))
    if isinstance(before, (list, tuple)):
        return any(_changed(b, a) for b, a in zip(before, after))
    if isinstance(before, dict):
        return any(_changed(before[k], after[k]) for k in before)
    return False


def describe(value) -> str:
    """A short, readable form of a value for a message: shapes for tensors, reprs for the rest."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return f"{value.item():.4g}"
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


class Probe:
    """Calls a learner's function for one exercise with every safeguard: fresh copies of the inputs, the
    tripwires on the forbidden references, the stub detected, an exception turned into one line."""

    def __init__(self, fn, name: str, forbidden: Sequence[Any] = ()):
        self.fn, self.name, self.forbidden = fn, name, list(forbidden)
        if fn is None:
            raise NotWritten(name)
        via = imported_reference(fn, self.forbidden)
        if via is not None:
            raise UsedReference(via)

    def call(self, where: str, *args, **kwargs):
        """``fn(*args, **kwargs)`` on clones; ``where`` names the input in messages ("t = 500, batch 2")."""
        args_in, kwargs_in = _clone(list(args)), _clone(dict(kwargs))
        try:
            with tripwires(self.forbidden):
                out = self.fn(*args_in, **kwargs_in)
        except NotImplementedError:
            raise NotWritten(self.name) from None
        except (UsedReference, Mismatch, NotWritten):
            raise
        except Exception as e:                                   # the learner's bug, in one line
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise Mismatch(f"at {where}: your {self.name} raised {type(e).__name__}"
                           f"{': ' + msg[:300] if msg else ''}") from None
        for k, (b, a) in enumerate(zip(list(args), args_in)):
            if _changed(b, a):
                raise Mismatch(f"at {where}: your {self.name} changed its input (argument {k + 1}) in place; "
                               "compute a new tensor instead (e.g. x = x + ... rather than x += ...)")
        for k in kwargs:
            if _changed(kwargs[k], kwargs_in[k]):
                raise Mismatch(f"at {where}: your {self.name} changed its input {k} in place; compute a new "
                               "tensor instead")
        return out


def expect_tensor(out, expected: torch.Tensor, what: str, where: str, *, inputs: Iterable[torch.Tensor] = (),
                  atol: float = 1e-4, rtol: float = 1e-4, hints: Sequence[Callable[[torch.Tensor], str | None]] = ()):
    """Compare a learner's tensor with the reference's; raise ``Mismatch`` with the first message that fits:
    not a tensor, the wrong shape, NaN, the input unchanged, zeros, a hint's diagnosis, then the plain
    difference (expected and actual values at the worst element)."""
    if out is None:
        raise Mismatch(f"at {where}: your {what} is None; did you forget the return statement?")
    if isinstance(out, tuple) and len(out) and isinstance(out[0], torch.Tensor) and not isinstance(expected, tuple):
        raise Mismatch(f"at {where}: your {what} is a tuple of {len(out)}; return one tensor of shape "
                       f"{tuple(expected.shape)}")
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"at {where}: your {what} is a {type(out).__name__}; expected a tensor of shape "
                       f"{tuple(expected.shape)}")
    if tuple(out.shape) != tuple(expected.shape):
        raise Mismatch(f"at {where}: your {what} has shape {tuple(out.shape)}; expected {tuple(expected.shape)}")
    out = out.detach().to(expected.device, expected.dtype)
    if not bool(torch.isfinite(out).all()):
        raise Mismatch(f"at {where}: your {what} holds {int((~torch.isfinite(out)).sum())} NaN or inf values; "
                       "look for a division by zero or the square root of a negative number")
    close = torch.allclose(out, expected, atol=atol, rtol=rtol)
    if close:
        return
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.shape == out.shape and torch.equal(out, x.to(out.dtype)):
            raise Mismatch(f"at {where}: your {what} is its input, unchanged; it should be {_value_at(expected)}")
    if not bool(out.any()):
        raise Mismatch(f"at {where}: your {what} is all zeros; expected values such as {_value_at(expected)}")
    for hint in hints:
        msg = hint(out)
        if msg:
            raise Mismatch(f"at {where}: {msg}")
    diff = (out - expected).abs()
    i = int(diff.flatten().argmax())
    raise Mismatch(f"at {where}: your {what} differs from diffnb's by up to {float(diff.max()):.3g} "
                   f"(element {list(torch.unravel_index(torch.tensor(i), out.shape)) if out.dim() else []}: "
                   f"expected {float(expected.flatten()[i]):.4f}, got {float(out.flatten()[i]):.4f})")


def _value_at(t: torch.Tensor) -> str:
    return f"mean {float(t.float().mean()):.3f}, std {float(t.float().std()) if t.numel() > 1 else 0:.3f}"


# --------------------------------------------------------------------------- diagnoses
def near(a: float, b: float, tol: float = 0.02) -> bool:
    """a within a relative ``tol`` of b (b below 0.05 counts as 0.05)."""
    return abs(a - b) <= tol * max(abs(b), 0.05)


def fit_weights(out: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor):
    """Least squares ``out ~ a x0 + b eps``: returns (a, b, relative residual)."""
    A = torch.stack([x0.flatten(), eps.flatten()], 1).double()
    y = out.flatten().double()
    sol = torch.linalg.lstsq(A, y[:, None]).solution.flatten()
    resid = (y - A @ sol).norm() / y.norm().clamp_min(1e-12)
    return float(sol[0]), float(sol[1]), float(resid)



# --------------------------------------------------------------------------- one exercise, one line

@dataclasses.dataclass
class Result:
    """What a check found: ``status`` is "passed", "not written", "wrong" or "used reference"."""
    name: str
    status: str
    message: str
    cases: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def evaluate(ex: Exercise, fn, hidden: bool = False) -> Result:
    """Run ``ex``'s check on ``fn`` and say what happened (never raises for the learner's mistakes)."""
    start = time.perf_counter()
    try:
        n = ex.run(fn, hidden)
    except NotWritten:
        return Result(ex.name, "not written", f"{ex.function} is not written yet (it raises NotImplementedError)",
                      0, time.perf_counter() - start)
    except UsedReference as e:
        return Result(ex.name, "used reference",
                      f"your {ex.function} uses diffnb's own {e} (the function this exercise asks you to write); "
                      "write it from the formula, without calling or importing it",
                      0, time.perf_counter() - start)
    except Mismatch as e:
        return Result(ex.name, "wrong", str(e), 0, time.perf_counter() - start)
    return Result(ex.name, "passed", f"{ex.function} matches diffnb's on {n} inputs", n,
                  time.perf_counter() - start)
