"""Exercises: the learner's edition of the pack, its checks and its grader.

In a notebook, below each exercise cell (tag ``exercise:<name>``) a check cell runs::

    forward = exercises.check("forward", forward)

which compares the learner's ``forward`` with diffnb's on a few inputs, prints one line (passed, not
written yet, or what is wrong with the input, the expected and the actual value and a hint) and
returns the function the rest of the lesson uses: the learner's once it passes, diffnb's until then.

``python -m diffnb.exercises build`` writes the learner's edition (``diffnb.exercises.edition``) and
``python -m diffnb.exercises grade`` grades a folder of submissions (``diffnb.exercises.grade``).
The references and the grader's extra (hidden) cases live in this package: the pack is open, so the
edition is for practice and for honest grading, not a secret.
"""
from __future__ import annotations

from diffnb.exercises.core import Exercise, Result, evaluate

__all__ = ["check", "Exercise", "Result", "evaluate"]


def check(name: str, fn=None):
    """Check the learner's ``fn`` for exercise ``name``; print one line; return what the lesson should use."""
    from diffnb.exercises import catalog
    ex = catalog.get(name)
    result = evaluate(ex, fn)
    if result.passed:
        print(f"✅ {name}: passed, {result.message}. The cells below use your {ex.function}.")
        return fn
    mark = "⏳" if result.status == "not written" else "❌"
    print(f"{mark} {name}: {result.message.rstrip('.?!')}{'?' if result.message.endswith('?') else '.'} The cells below use diffnb's {ex.function} until yours passes.")
    return ex.reference()
