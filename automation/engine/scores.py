"""Lead scores: points per event, fading with a half-life.

A score is kept on the contact as one field (automation.store.fields.score): its value
at a moment (whole epoch seconds). Its value later is value * 2^(-(t - at) / half_life),
so nothing needs to run for it to fade. Each matching event first lets the score fade
to the event's time, then adds its points.

Rules read a score as a ScoreValue: comparing it with a number gives a plain bool *and*
notes when that comparison will flip as the score fades, the same way `days_since()`
does, so "score >= 50" turning false after two quiet weeks is a timer, not a scan.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from automation.expressions import ComparesThrough, TimeTracker
from automation.language.journey import ScoreDef
from automation.store import fields


def decayed(value: float, since: float, now: float, half_life: float | None) -> float:
    """The value `value` had at `since`, faded to `now`."""
    if not half_life or now <= since or value == 0:
        return value
    return value * 2.0 ** (-(now - since) / half_life)


def add_points(raw: str | None, points: float, at: float, half_life: float | None) -> str:
    """The field after an event at `at` earned `points` (an event older than the score's time is
    faded to that time instead, so events arriving out of order count the same)."""
    value, since = fields.decode_score(raw)
    if at >= since:
        return fields.encode_score(decayed(value, since, at, half_life) + points, at)
    return fields.encode_score(value + decayed(points, at, since, half_life), since)


class ScoreValue(ComparesThrough):
    """A score as rules see it: compares as a number, noting when the comparison flips as it fades."""

    __slots__ = ("value", "since", "half_life", "tracker")

    def __init__(self, value: float, since: float, half_life: float | None, tracker: TimeTracker) -> None:
        self.value, self.since, self.half_life, self.tracker = value, since, half_life, tracker

    def now(self) -> float:
        return decayed(self.value, self.since, self.tracker.now, self.half_life)

    def _flip(self, threshold: float) -> None:
        # A fading positive score crosses a smaller positive threshold once, at a known instant.
        if self.half_life and self.value > 0 and 0 < threshold < self.now():
            self.tracker.note(self.since + self.half_life * math.log2(self.value / threshold) + 0.001)

    def _compare(self, other: object, op: str) -> bool:
        if isinstance(other, ScoreValue):
            other = other.now()
        if not isinstance(other, (int, float)) or isinstance(other, bool):
            return op == "ne"
        self._flip(float(other))
        current = self.now()
        return {"lt": current < other, "le": current <= other, "gt": current > other, "ge": current >= other,
                "eq": current == other, "ne": current != other}[op]

    # Arithmetic gives the value now: "scores.lead + 10 >= 50" is exact only until it fades.
    def __float__(self) -> float:
        return self.now()

    def __int__(self) -> int:
        return int(self.now())

    def __round__(self, ndigits: int | None = None) -> float:
        return round(self.now(), ndigits)

    def __add__(self, other: Any) -> float:
        return self.now() + other

    __radd__ = __add__

    def __sub__(self, other: Any) -> float:
        return self.now() - other

    def __rsub__(self, other: Any) -> float:
        return other - self.now()

    def __mul__(self, other: Any) -> float:
        return self.now() * other

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> float:
        return self.now() / other

    def __bool__(self) -> bool:
        return self.now() > 0

    def __str__(self) -> str:
        return f"{self.now():.1f}"

    __repr__ = __str__


class ScoresView(dict):
    """`scores.lead`: a score a contact has never earned is 0."""

    def __init__(self, values: Mapping[str, ScoreValue], tracker: TimeTracker) -> None:
        super().__init__(values)
        self.tracker = tracker

    def __missing__(self, name: str) -> ScoreValue:
        return ScoreValue(0.0, 0.0, None, self.tracker)


def scores_view(raw: Mapping[str, str], definitions: Mapping[str, ScoreDef], tracker: TimeTracker) -> ScoresView:
    """The rule view of a contact's scores, from their fields in the contact hash."""
    values = {}
    for name, definition in definitions.items():
        value, since = fields.decode_score(raw.get(fields.score(name)))
        values[name] = ScoreValue(value, since, definition.half_life, tracker)
    return ScoresView(values, tracker)


def definitions(journeys: Iterable[Any]) -> dict[str, ScoreDef]:
    """Every score defined by the served journeys, by name (the first definition wins)."""
    found: dict[str, ScoreDef] = {}
    for journey in journeys:
        for score in journey.scores:
            found.setdefault(score.name, score)
    return found
