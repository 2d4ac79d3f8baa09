"""Clocks: what "now" means for journeys.

Timer scores, stage entry times and `days_since()` all use a Clock. Production
uses the system clock. The demo compresses time (one simulated day per real
second) and tests use a manual clock, so a 90-day lapse can be watched in
seconds. Leases are always measured on the wall clock because they guard
against crashed processes, which fail in real time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current time in epoch seconds on this clock."""

    def to_clock_seconds(self, wall_seconds: float) -> float:
        """Convert a real-time interval (a provider's retry-after) into clock seconds."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def to_clock_seconds(self, wall_seconds: float) -> float:
        return wall_seconds


class ScaledClock:
    """Runs `speed` times faster than real time from `origin` (epoch seconds, real time) on, reading
    `start` at `origin` (by default `origin` itself).

    Before `origin` the clock stands still at `start`, so a demo can load its
    population and start its workers first and let time run only once all are up.
    `start` lets a rehearsal begin at a chosen moment (the demo starts at 06:00 UTC,
    so its story happens at the same times of day whenever it runs). Every process
    built from the same settings computes the same time, so a scheduler and separate
    worker processes agree without talking to each other.
    """

    def __init__(self, speed: float, origin: float, start: float | None = None) -> None:
        self.speed = speed
        self.origin = origin
        self.start = origin if start is None else start

    def now(self) -> float:
        return self.start + max(0.0, time.time() - self.origin) * self.speed

    def to_clock_seconds(self, wall_seconds: float) -> float:
        return wall_seconds * self.speed


class ManualClock:
    """A clock that only moves when told to; for tests and simulations in one process."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        self._now = when

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def to_clock_seconds(self, wall_seconds: float) -> float:
        return wall_seconds


def clock_from_settings(speed: float, origin: float | None, start: float | None = None) -> Clock:
    if speed == 1.0 and start is None:
        return SystemClock()
    return ScaledClock(speed, origin if origin is not None else time.time(), start)
