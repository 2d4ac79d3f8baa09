"""Durations in journey files: `30m`, `2h`, `3d`, `2w`, `1mo`, `1y`, `1d12h`, `P3D`.

A month is 30 days and a year 365 days: waits are intervals, not calendar dates
(waits until a calendar time are a separate construct).
"""

from __future__ import annotations

import re

from automation.errors import DurationError

UNITS: dict[str, float] = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 7 * 86400, "week": 7 * 86400, "weeks": 7 * 86400,
    "mo": 30 * 86400, "month": 30 * 86400, "months": 30 * 86400,
    "y": 365 * 86400, "year": 365 * 86400, "years": 365 * 86400,
}

_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", re.IGNORECASE)
_ISO = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)

HINT = "write a number and a unit, e.g. 30m, 2h, 3d, 2w, 1mo (30 days), 1y; combine as 1d12h"


def parse_duration(value: object) -> float:
    """Seconds in a duration; a bare number means seconds. Raises DurationError."""
    if isinstance(value, bool):
        raise DurationError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise DurationError(f"duration {value} is negative")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise DurationError(f"{value!r} is not a duration")
    text = value.strip()
    iso = _ISO.match(text.upper())
    if iso and any(iso.groupdict().values()):
        parts = {k: int(v) for k, v in iso.groupdict().items() if v}
        scale = {"y": UNITS["y"], "mo": UNITS["mo"], "w": UNITS["w"], "d": UNITS["d"],
                 "h": UNITS["h"], "m": UNITS["m"], "s": 1}
        return float(sum(scale[k] * v for k, v in parts.items()))
    if text == "0":
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            raise DurationError(f"cannot read duration {value!r}")
        unit = match.group(2).lower()
        if unit not in UNITS:
            raise DurationError(f"unknown unit {match.group(2)!r} in duration {value!r}")
        total += float(match.group(1)) * UNITS[unit]
        pos = match.end()
    return total


def format_duration(seconds: float) -> str:
    """Short human form, used in timelines and messages."""
    for unit, size in (("y", UNITS["y"]), ("d", UNITS["d"]), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:g}s"
