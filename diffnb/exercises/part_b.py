"""Part B's exercises (UNets and flow matching on digits), checked on small UNets and real MNIST digits."""
from __future__ import annotations

from diffnb.exercises.core import Exercise

EXERCISES: list[Exercise] = []
