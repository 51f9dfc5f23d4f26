"""Every exercise of the pack, by name (the ``<name>`` of a cell's ``exercise:<name>`` tag), in course order."""
from __future__ import annotations

import functools

from diffnb.exercises.core import Exercise


@functools.cache
def exercises() -> dict[str, Exercise]:
    from diffnb.exercises import part_a, part_a_guidance, part_b, part_b_flow
    out: dict[str, Exercise] = {}
    for ex in [*part_a.EXERCISES, *part_a_guidance.EXERCISES, *part_b.EXERCISES, *part_b_flow.EXERCISES]:
        if ex.name in out:
            raise RuntimeError(f"two exercises are named {ex.name!r}")
        out[ex.name] = ex
    return out


def get(name: str) -> Exercise:
    table = exercises()
    if name not in table:
        raise KeyError(f"no exercise named {name!r}; the pack's exercises are: {', '.join(table)}")
    return table[name]


def of_notebook(notebook: str) -> list[Exercise]:
    """The exercises of one notebook (its stem, e.g. "A1.1_forward"), in course order."""
    return [ex for ex in exercises().values() if ex.notebook == notebook]
