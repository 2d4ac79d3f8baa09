"""The lift of an A/B split over its holdout, with a 95% confidence interval, in plain words.

The interval of a difference of two proportions is Newcombe's hybrid score interval (method 10
of Newcombe 1998, "Interval estimation for the difference between independent proportions",
Statistics in Medicine 17: 873-890), built on each proportion's Wilson score interval without
continuity correction. It stays inside [-1, 1] and behaves at 0 or 100% conversions and small
groups, where the textbook normal approximation does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
#: Below this many contacts in a group, or conversions plus non-conversions under MIN_EVENTS, a
#: difference is called "n too small" rather than "no difference".
MIN_GROUP, MIN_EVENTS = 100, 10


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (no continuity correction)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """(difference p1 - p2, lower, upper): Newcombe's method 10 interval for the difference."""
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    difference = p1 - p2
    lower = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return difference, lower, upper


@dataclass(frozen=True)
class Lift:
    variant: str
    converted: int
    entered: int
    holdout_converted: int
    holdout_entered: int
    difference: float
    lower: float
    upper: float

    @property
    def verdict(self) -> str:
        if not self.entered or not self.holdout_entered:
            return "no data yet"
        if self.lower > 0:
            return "significant: converts better than the holdout"
        if self.upper < 0:
            return "significant: converts worse than the holdout"
        small = min(self.entered, self.holdout_entered) < MIN_GROUP or \
            min(self.converted + self.holdout_converted,
                self.entered + self.holdout_entered - self.converted - self.holdout_converted) < MIN_EVENTS
        return "not yet significant: n too small" if small else "no significant difference"


def lift(variant: str, converted: int, entered: int, holdout_converted: int, holdout_entered: int) -> Lift:
    """A variant's conversion rate minus the holdout's, with Newcombe's 95% interval and a verdict."""
    difference, lower, upper = newcombe(converted, entered, holdout_converted, holdout_entered)
    return Lift(variant, converted, entered, holdout_converted, holdout_entered, difference, lower, upper)
