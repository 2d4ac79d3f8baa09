"""Calendar times in a contact's own time zone: "09:00 on weekdays", "7 days before renewal", birthdays, cron.

Everything here is a pure function of its arguments: no Redis, no I/O and no clock. The engine passes "now" in
as `after`, so a test's manual clock or the demo's compressed clock give the same answers as production would.
Instants in and out are epoch seconds (UTC-based floats); zones are IANA names resolved with `zoneinfo`.

Wall-clock rules, shared by every function that turns a local date and time of day into an instant:

* A wall time that does not exist that day (the spring-forward gap, 02:30 when clocks jump 02:00 -> 03:00)
  happens after the gap, shifted by the size of the jump (03:30), as most calendar applications do. This is
  what PEP 495 defines for `fold=0` on a non-existent time: it is read with the offset in force before the jump.
* A wall time that happens twice (the fall-back overlap, 01:30 on the night clocks go 02:00 -> 01:00) is its
  FIRST occurrence (`fold=0`), so a daily message is never sent twice that night.

Cron expressions follow cron's own tradition instead (see `next_cron`), because that is what people who write
cron expect.

Problems a marketer can fix in a journey file raise `CalendarError`; dirty contact data never raises (it gives
None), because one contact's bad birthday must not stop a journey for everyone else.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from automation.errors import CalendarError

__all__ = [
    "CalendarError", "zone", "parse_time_of_day", "parse_weekdays", "next_time_of_day", "date_instant",
    "next_anniversary", "check_cron", "next_cron", "local_moment", "quiet_until",
]

UTC = ZoneInfo("UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DEFAULT_ANNIVERSARY_TIME = time(9, 0)

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAYS = {name: i for i, name in enumerate(WEEKDAY_NAMES)} | {
    name: i for i, name in enumerate(_FULL_WEEKDAY_NAMES)}

_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_TIME_HINT = 'write it as HH:MM in 24-hour time, like "09:00" or "18:30" (seconds optional: "09:00:15")'

_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 or L"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat (0 and 7 are Sunday)"),
)
_CRON_HINT = 'write 5 fields: minute hour day-of-month month day-of-week, like "0 9 * * mon-fri"'
_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# A fixed start for checking that an expression fires at all; 2000 starts a 4-year leap cycle.
_CRON_PROBE_START = datetime(2000, 1, 1, tzinfo=timezone.utc)
# Enough get_next() calls to step past a fall-back repeat of any expression that fires at most once a minute.
_CRON_MAX_STEPS = 200


# -- time zones -------------------------------------------------------------------------------------------------


def _load_zone(name: object) -> ZoneInfo | None:
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # Unknown names, malformed keys ("../x" is a ValueError) and directories ("America") all land here.
        return None


def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The contact's zone if `name` is a valid IANA name, else `default`, else UTC.

    Contacts arrive with missing or misspelt zones ("", "GMT+2", "Europe/Warsw"); a journey must still run for
    them, so this never raises. `default` (usually the journey's or the account's zone) is validated too,
    because it also comes from a file someone typed.
    """
    return _load_zone(name) or _load_zone(default) or UTC


def _tz(tz: str | tzinfo) -> tzinfo:
    """A tz argument as a tzinfo: a ZoneInfo (or any tzinfo) as given, a name through `zone()`."""
    if isinstance(tz, tzinfo):
        return tz
    return zone(tz)


# -- journey-file values ----------------------------------------------------------------------------------------


def parse_time_of_day(text: str) -> time:
    """A wall-clock time from a journey file: "09:00", "9:00", "18:30" or "09:00:15".

    Only 24-hour HH:MM[:SS] is accepted: "9pm" or "9.30" are ambiguous across locales, and an unquoted 9:00 in
    YAML 1.1 reads as the number 540, which is better refused with a hint than sent at 00:09.
    """
    if not isinstance(text, str):
        raise CalendarError(f"time of day {text!r} is not valid: {_TIME_HINT}, in quotes")
    match = _TIME_OF_DAY.fullmatch(text.strip())
    if not match:
        raise CalendarError(f"time of day {text!r} is not valid: {_TIME_HINT}")
    hour, minute, second = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise CalendarError(f"time of day {text!r} is out of range (hours 00-23, minutes and seconds 00-59): "
                            f"{_TIME_HINT}")
    return time(hour, minute, second)


def parse_weekdays(items: Iterable[str]) -> frozenset[int]:
    """Days of the week as Python weekday numbers (Monday 0 .. Sunday 6).

    Accepts "mon".."sun" and full names, in any case; also "mon,wed" written as one string, since that is how
    people type it in YAML. An empty list is refused: it would mean "never", which is always a mistake.
    """
    if isinstance(items, str):
        items = [items]
    days: set[int] = set()
    valid = ", ".join(WEEKDAY_NAMES)
    for item in items:
        if not isinstance(item, str):
            raise CalendarError(f"day of the week {item!r} is not valid: use {valid} (or full names like monday)")
        for word in re.split(r"[,\s]+", item.strip()):
            if not word:
                continue
            if word.lower() not in _WEEKDAYS:
                raise CalendarError(f"unknown day of the week {word!r}: use {valid} (or full names like monday)")
            days.add(_WEEKDAYS[word.lower()])
    if not days:
        raise CalendarError(f"no days of the week given: name at least one of {valid}")
    return frozenset(days)


# -- wall clock -> instant --------------------------------------------------------------------------------------


def _instant(day: date, at: time, tz: tzinfo) -> float:
    """The instant at which the wall clock in `tz` reads `at` on `day`, by the module's DST rules.

    `fold=0` does both rules at once (PEP 495): an ambiguous time is its first occurrence, and a time in a gap
    is read with the offset from before the jump, which lands it after the gap, shifted by the jump.
    """
    wall = datetime.combine(day, at.replace(tzinfo=None, fold=0), tzinfo=tz)
    return wall.timestamp()


def _local(instant: float, tz: tzinfo) -> datetime:
    """The wall-clock reading of an instant in `tz` (arithmetic on UTC, so any year 1-9999 works everywhere)."""
    return (_EPOCH + timedelta(seconds=instant)).astimezone(tz)


def next_time_of_day(after: float, tz: str | ZoneInfo, at: time, weekdays: frozenset[int] | None = None) -> float:
    """The first instant >= `after` at which the wall clock in `tz` reads `at`, on one of `weekdays` (None: any).

    Inclusive, so a contact who arrives at exactly 09:00 for "09:00" goes now rather than tomorrow. Each local
    calendar day maps to exactly one instant (DST rules in the module docstring), so walking day by day never
    repeats an instant and never skips a day. Weekdays are those of the local calendar day.
    """
    if weekdays is not None:
        if not weekdays:
            raise CalendarError("no days of the week given: name at least one of " + ", ".join(WEEKDAY_NAMES))
        if any(not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 6 for d in weekdays):
            raise CalendarError(f"weekdays must be numbers 0 (Monday) to 6 (Sunday), not {sorted(weekdays)!r}")
    zone_ = _tz(tz)
    today = _local(after, zone_).date()
    # Yesterday too: in a zone that once skipped a whole day (Pacific/Apia, 2011-12-30) yesterday's time can be
    # pushed past `after`. Then at most a week ahead to meet the next allowed weekday.
    for delta in range(-1, 9):
        day = today + timedelta(days=delta)
        if weekdays is not None and day.weekday() not in weekdays:
            continue
        instant = _instant(day, at, zone_)
        if instant >= after:
            return instant
    raise AssertionError("unreachable: every week has an allowed day")  # pragma: no cover


def local_moment(after: float, tz: str | ZoneInfo, at: time, day: date | None = None) -> float:
    """Wall time `at` in `tz` on `day` if that is not before `after`; else (or with no day) the first
    instant >= `after` at which the wall clock reads `at`. "10:00 on the 24th in each contact's zone"
    for whoever is reached in time, the next 10:00 for whoever is not."""
    if day is not None:
        instant = _instant(day, at, _tz(tz))
        if instant >= after:
            return instant
    return next_time_of_day(after, tz, at)


def quiet_until(now: float, tz: str | ZoneInfo, start: time, end: time) -> float | None:
    """If `now` falls in the daily quiet hours [start, end) of the wall clock in `tz`, the instant they end;
    else None. A window whose end is earlier than its start spans midnight (21:00 to 08:00).

    The end is the next time the wall clock reads `end` (next_time_of_day), so the DST rules above apply: on the
    night clocks spring forward the quiet hours are an hour shorter, on the night they fall back an hour longer.
    """
    if start == end:
        return None
    local = _local(now, _tz(tz)).time()
    inside = start <= local < end if start < end else (local >= start or local < end)
    return next_time_of_day(now, tz, end) if inside else None


# -- contact dates ----------------------------------------------------------------------------------------------


def _read_date(value: object, tz: tzinfo) -> tuple[date, float | None] | None:
    """A contact attribute as (its calendar day in `tz`, its instant if it has a time of day), or None.

    A bare date is a calendar day as written: a birthday is the same day in every zone. Anything with a time of
    day (datetime, epoch seconds) is an instant, and its day is the local day in `tz`: a renewal at 02:00 UTC
    is the evening before for a contact in New York. A datetime without a zone is read as UTC.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, datetime):
            moment = value if value.tzinfo is not None and value.utcoffset() is not None \
                else value.replace(tzinfo=timezone.utc)
            instant = moment.timestamp()
        elif isinstance(value, date):
            return value, None
        elif isinstance(value, (int, float)):
            if not math.isfinite(value):
                return None
            instant = float(value)
        elif isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            try:
                return date.fromisoformat(text), None
            except ValueError:
                pass
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            instant = moment.timestamp()
        else:
            return None
        return _local(instant, tz).date(), instant
    except (ValueError, OverflowError, OSError):
        return None


def date_instant(value: object, tz: str | ZoneInfo, at: time | None = None, offset_days: int = 0) -> float | None:
    """The instant of a contact's date attribute, shifted by `offset_days`, in the contact's zone.

    With `at`, it is wall time `at` in `tz` on the value's calendar day plus `offset_days` ("7 days before the
    renewal, at 09:00 their time"). Without `at`, a value with a time of day keeps its instant, moved by exactly
    `offset_days` * 24h, and a bare date means 00:00 local. Returns None for a missing or unreadable value
    instead of raising: contact data is dirty, and the engine skips such contacts rather than failing.
    """
    zone_ = _tz(tz)
    read = _read_date(value, zone_)
    if read is None:
        return None
    day, instant = read
    if at is None and instant is not None:
        return instant + offset_days * 86400.0
    try:
        return _instant(day + timedelta(days=offset_days), at if at is not None else time(0, 0), zone_)
    except (OverflowError, ValueError):
        return None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def next_anniversary(value: object, after: float, tz: str | ZoneInfo, at: time | None = None,
                     offset_days: int = 0) -> float | None:
    """The first instant >= `after` of the value's month and day in any year, shifted by `offset_days`.

    For birthdays and sign-up anniversaries. The time is `at` local (09:00 by default, whatever time of day the
    value has: nobody wants "happy birthday" at the minute they signed up). Feb 29 falls on Feb 28 in other
    years, so leap-day birthdays are greeted every year; the shift applies after that. Any year counts,
    including the value's own. None if the value is unreadable.
    """
    zone_ = _tz(tz)
    read = _read_date(value, zone_)
    if read is None:
        return None
    anniversary = read[0]
    at = at if at is not None else DEFAULT_ANNIVERSARY_TIME
    # A shift of more than a year can move an earlier year's date past `after`: start early enough for that.
    span = abs(offset_days) // 365 + 1
    first_year = _local(after, zone_).year - span
    for year in range(first_year, first_year + 2 * span + 3):
        if not 1 <= year <= 9999:
            continue
        day_of_month = 28 if (anniversary.month, anniversary.day) == (2, 29) and not _is_leap(year) \
            else anniversary.day
        try:
            instant = _instant(date(year, anniversary.month, day_of_month) + timedelta(days=offset_days), at, zone_)
        except (OverflowError, ValueError):
            continue
        if instant >= after:
            return instant
    return None


# -- cron -------------------------------------------------------------------------------------------------------


def _cron_error(expression: str) -> Exception | None:
    try:
        croniter(expression, _CRON_PROBE_START)
    except Exception as exc:  # croniter raises several unrelated types (its own, ValueError, KeyError, ...)
        return exc
    return None


def check_cron(expression: str) -> str | None:
    """None if `expression` is a usable 5-field cron expression, else a problem a marketer can act on.

    Only the classic 5 fields are accepted: croniter's optional seconds and year columns would silently shift
    every other field by one if someone pasted a Quartz expression. "@daily"-style names get their 5-field form
    as a hint. An expression that can never fire ("0 9 30 2 *") is refused too.
    """
    if not isinstance(expression, str) or not expression.strip():
        return f"cron expression {expression!r} is empty or not text: {_CRON_HINT}"
    return _cron_problem(expression.strip())


@lru_cache(maxsize=256)
def _cron_problem(text: str) -> str | None:
    """check_cron() for stripped text, cached: next_cron() checks its expression once per contact it schedules."""
    if text.lower() in _CRON_ALIASES:
        return f'cron shortcut {text!r} is not supported: write "{_CRON_ALIASES[text.lower()]}" instead'
    fields = text.split()
    if len(fields) != 5:
        extra = " (seconds and year columns are not supported)" if len(fields) in (6, 7) else ""
        return f"cron expression {text!r} has {len(fields)} fields, not 5{extra}: {_CRON_HINT}"
    for index, (name, allowed) in enumerate(_CRON_FIELDS):
        alone = " ".join(field if i == index else "*" for i, field in enumerate(fields))
        if _cron_error(alone) is not None:
            return f"cron expression {text!r}: the {name} field {fields[index]!r} is not valid ({name} is {allowed})"
    error = _cron_error(text)
    if error is not None:
        return f"cron expression {text!r} is not valid: {error}"
    try:
        croniter(text, _CRON_PROBE_START).get_next(float)
    except Exception:  # CroniterBadDateError: no date matches within croniter's search window
        return f"cron expression {text!r} never fires (no date matches all its fields)"
    return None


def _is_wildcard(field: str) -> bool:
    return "*" in field or "/" in field


def next_cron(expression: str, after: float, tz: str | ZoneInfo) -> float:
    """The first fire time of a 5-field cron expression strictly after `after`, with its fields read in `tz`.

    croniter walks from a zone-aware start, so "0 9 * * *" is 09:00 local on both sides of a DST change. Across
    changes this follows cron's own tradition (Vixie cron, cronie): a fire time inside the spring-forward gap
    fires once, right when the gap ends (02:30 -> 03:00); in the fall-back overlap an expression with a fixed
    minute and hour fires once, at the first occurrence, while one with `*` or a step in its minute or hour
    field keeps firing in real time through the repeated hour. (croniter alone would fire "30 1 * * *" twice.)
    """
    problem = check_cron(expression)
    if problem is not None:
        raise CalendarError(problem)
    text = expression.strip()
    minute, hour = text.split()[:2]
    repeats_in_overlap = _is_wildcard(minute) or _is_wildcard(hour)
    zone_ = _tz(tz)
    schedule = croniter(text, _local(after, zone_))
    for _ in range(_CRON_MAX_STEPS):
        fire = schedule.get_next(datetime)
        instant = fire.timestamp()
        if instant <= after:
            continue
        if not repeats_in_overlap:
            wall = _local(instant, zone_)
            if wall.replace(fold=0).timestamp() != instant:  # the second reading of a repeated wall time
                continue
        return instant
    raise CalendarError(f"cron expression {text!r}: no fire time found after {after}")  # pragma: no cover
