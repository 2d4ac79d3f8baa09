"""The one expression language of journeys: Jinja2 expressions in the sandbox.

Stage rules (`when:`), step conditions (`if:`) and the journey `audience:` are
compiled once with `compile_expression`. Templates use the same sandbox, names
and filters, so a marketer learns one language.

Time-based rules become timers, not scans. A rule never sees a raw clock: it
asks `days_since('purchase')`, which returns a TimeValue. Comparing a TimeValue
with a number gives a plain bool *and* notes the instant at which that
comparison would flip. After evaluating a contact, the engine schedules one
re-evaluation timer at the earliest noted instant. A rule's value can only change
at those instants (or when an event or attribute change re-evaluates the contact
anyway), so "no purchase for 90 days -> lapsed" costs one timer per contact,
rescheduled on each purchase.
"""

from __future__ import annotations

import difflib
import math
import operator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

from jinja2 import TemplateSyntaxError, Undefined, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from automation.errors import ExpressionError, RuleError
from automation.sandbox import BoundedSandbox, Meter, RenderBudget

DAY = 86400.0

#: Names every rule may use. Journey `vars` are added per journey.
RULE_NAMES = frozenset({"contact", "events", "days_since", "hours_since", "stage", "journey", "stages", "scores",
                        "coupons", "vars"})
#: Templates see the rule names plus these.
TEMPLATE_EXTRA_NAMES = frozenset(
    {"now", "first_name", "last_name", "last", "recent_events", "unsubscribe_url", "locale", "dir",
     "channel", "step", "subject", "preheader"}
)


class Missing(Undefined):
    """A missing value in a rule: false, equal only to None, never greater or smaller.

    `contact.lifetime_value > 100` is then simply false for a contact without that
    attribute, instead of an error that would stop the journey for them.
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, Undefined)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = Undefined.__hash__

    def _false(self, other: object) -> bool:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __getattr__(self, name: str) -> "Missing":
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __getitem__(self, name: object) -> "Missing":
        return self


class TimeTracker:
    """Collects the future instants at which a time-dependent comparison flips."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.next_change: float | None = None

    def note(self, instant: float) -> None:
        if not math.isfinite(instant) or instant <= self.now:
            return
        if self.next_change is None or instant < self.next_change:
            self.next_change = instant


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
}


class ComparesThrough:
    """Rich comparisons routed through `_compare(other, "lt" | "le" | ...)`: values that note when a
    comparison will flip (time-dependent numbers, fading scores)."""

    __slots__ = ()

    def _compare(self, other: object, name: str) -> bool:
        raise NotImplementedError

    def __lt__(self, other: object) -> bool:
        return self._compare(other, "lt")

    def __le__(self, other: object) -> bool:
        return self._compare(other, "le")

    def __gt__(self, other: object) -> bool:
        return self._compare(other, "gt")

    def __ge__(self, other: object) -> bool:
        return self._compare(other, "ge")

    def __eq__(self, other: object) -> bool:  # type: ignore[override]
        return self._compare(other, "eq")

    def __ne__(self, other: object) -> bool:  # type: ignore[override]
        return self._compare(other, "ne")

    __hash__ = None  # type: ignore[assignment]


class TimeValue(ComparesThrough):
    """A number that changes linearly with time: value(t) = value + rate * (t - now).

    Arithmetic with plain numbers keeps the time dependence (`days_since('x') / 7`);
    comparisons return bools and note when they flip.
    """

    __slots__ = ("value", "rate", "tracker")

    def __init__(self, value: float, rate: float, tracker: TimeTracker) -> None:
        self.value = value
        self.rate = rate
        self.tracker = tracker

    @staticmethod
    def _linear(other: object) -> tuple[float, float] | None:
        if isinstance(other, TimeValue):
            return other.value, other.rate
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return float(other), 0.0
        return None

    def _compare(self, other: object, name: str) -> bool:
        lin = self._linear(other)
        if lin is None:
            return False if name not in ("ne",) else True
        other_value, other_rate = lin
        rate = self.rate - other_rate
        if rate != 0 and math.isfinite(self.value) and math.isfinite(other_value):
            # +1 ms so that the re-evaluation lands just after a strict boundary.
            self.tracker.note(self.tracker.now + (other_value - self.value) / rate + 0.001)
        return _COMPARISONS[name](self.value, other_value)

    def _combine(self, other: object, sign: float) -> "TimeValue":
        lin = self._linear(other)
        if lin is None:
            return NotImplemented
        return TimeValue(self.value + sign * lin[0], self.rate + sign * lin[1], self.tracker)

    def __add__(self, other: object) -> "TimeValue":
        return self._combine(other, 1.0)

    __radd__ = __add__

    def __sub__(self, other: object) -> "TimeValue":
        return self._combine(other, -1.0)

    def __rsub__(self, other: object) -> "TimeValue":
        return (-self)._combine(other, 1.0)

    def __neg__(self) -> "TimeValue":
        return TimeValue(-self.value, -self.rate, self.tracker)

    def __mul__(self, other: object) -> "TimeValue":
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return TimeValue(self.value * other, self.rate * other, self.tracker)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> "TimeValue":
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other != 0:
            return TimeValue(self.value / other, self.rate / other, self.tracker)
        return NotImplemented

    def __float__(self) -> float:
        return self.value

    def __int__(self) -> int:
        return int(self.value) if math.isfinite(self.value) else 2**62

    def __round__(self, ndigits: int | None = None) -> float:
        return round(self.value, ndigits) if math.isfinite(self.value) else self.value

    def __str__(self) -> str:
        return "never" if math.isinf(self.value) else f"{self.value:.2f}"

    __repr__ = __str__


class EventStats:
    """What a rule or template knows about one event type of a contact.

    Times are kept as epoch seconds and turned into datetimes only when asked for:
    most evaluations only need the count and `days_since()`.
    """

    __slots__ = ("count", "first_ts", "last_ts")

    def __init__(self, count: int = 0, first_ts: float | None = None, last_ts: float | None = None) -> None:
        self.count = count
        self.first_ts = first_ts
        self.last_ts = last_ts

    @property
    def first(self) -> datetime | None:
        return to_datetime(self.first_ts)

    @property
    def last(self) -> datetime | None:
        return to_datetime(self.last_ts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventStats) and (self.count, self.first_ts, self.last_ts) == (
            other.count, other.first_ts, other.last_ts)

    def __repr__(self) -> str:
        return f"EventStats(count={self.count}, first_ts={self.first_ts}, last_ts={self.last_ts})"


class EventsView(dict):
    """`events.purchase.count`: unknown events read as never happened (count 0)."""

    def __missing__(self, name: str) -> EventStats:
        return EventStats()


def to_datetime(timestamp: float | None) -> datetime | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def to_timestamp(value: object) -> float | None:
    """Epoch seconds from a number, datetime or ISO 8601 string; None if not a time."""
    if isinstance(value, bool) or value is None or isinstance(value, Undefined):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 10 and text[4:5] == "-" and text[:4].isdigit():
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return parsed.timestamp()
    return None


def _since(unit: float, events: Mapping[str, EventStats], tracker: TimeTracker) -> Callable[[Any], TimeValue]:
    def since(what: Any) -> TimeValue:
        """Time since an event's last occurrence (by name) or since a date value.

        Never happened (or no such date) counts as infinitely long ago.
        """
        timestamp = to_timestamp(what)
        if timestamp is None and isinstance(what, str):
            timestamp = events[what].last_ts
        if timestamp is None:
            return TimeValue(math.inf, 1.0 / unit, tracker)
        return TimeValue((tracker.now - timestamp) / unit, 1.0 / unit, tracker)

    return since


def time_functions(events: Mapping[str, EventStats], tracker: TimeTracker) -> dict[str, Any]:
    return {"days_since": _since(DAY, events, tracker), "hours_since": _since(3600.0, events, tracker)}


# -- the environment ---------------------------------------------------------------------------


def _date_filter(value: Any, fmt: str = "%Y-%m-%d", tz: str | None = None) -> str:
    timestamp = to_timestamp(value)
    if timestamp is None:
        return ""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    if tz:
        try:
            moment = moment.astimezone(ZoneInfo(tz))
        except Exception:  # an unknown zone formats in UTC rather than failing the message
            pass
    return moment.strftime(fmt)


def configure(env: SandboxedEnvironment) -> SandboxedEnvironment:
    """Filters shared by rules and templates."""
    env.filters["date"] = _date_filter
    return env


RULE_ENV = configure(BoundedSandbox(undefined=Missing))
#: What one evaluation of a rule may cost (CPU time, and what `*` may make): a rule that spins is a
#: rule error for that contact (the engine records it and goes on), not a stuck worker thread.
RULE_BUDGET = RenderBudget(time_ms=100)


@dataclass(frozen=True)
class Expression:
    source: str
    evaluate_fn: Callable[..., Any] = field(repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        try:
            with Meter(RULE_BUDGET, "rule"):
                return bool(self.evaluate_fn(**context))
        except Exception as exc:  # any failure inside marketer code is reported, not raised raw
            raise RuleError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc

    def value(self, context: Mapping[str, Any]) -> Any:
        """The expression's value rather than its truth (a date attribute, say); None when missing."""
        try:
            with Meter(RULE_BUDGET, "rule"):
                result = self.evaluate_fn(**context)
        except Exception as exc:
            raise RuleError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
        return None if isinstance(result, Undefined) else result


def unknown_names(source: str, known: Iterable[str]) -> set[str]:
    ast = RULE_ENV.parse("{{ (" + source + ") }}")
    return set(meta.find_undeclared_variables(ast)) - set(known)


@dataclass(frozen=True)
class References:
    """What a rule reads, for the cross-journey checks of `lifecycle validate`."""

    attributes: frozenset[str] = frozenset()    # contact.<name> (the first part of a dotted path)
    events: frozenset[str] = frozenset()        # events.<name>, days_since('<name>'), hours_since('<name>')
    scores: frozenset[str] = frozenset()        # scores.<name>
    journeys: frozenset[str] = frozenset()      # stages['<journey>']
    vars: frozenset[str] = frozenset()          # vars.<name>


def references(source: str) -> References:
    """The contact attributes, events, scores and journeys an expression names."""
    try:
        ast = RULE_ENV.parse("{{ (" + source + ") }}")
    except TemplateSyntaxError:
        return References()
    found: dict[str, set[str]] = {"contact": set(), "events": set(), "scores": set(), "stages": set(),
                                  "vars": set()}

    def key_of(node: Any) -> str | None:
        if isinstance(node, nodes.Getattr):
            return node.attr
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            return node.arg.value
        return None

    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if isinstance(base, nodes.Name) and base.name in found:
            key = key_of(node)
            if key is not None:
                found[base.name].add(key)
    for call in ast.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name in ("days_since", "hours_since") and call.args:
            first = call.args[0]
            if isinstance(first, nodes.Const) and isinstance(first.value, str) and to_timestamp(first.value) is None:
                found["events"].add(first.value)
    return References(frozenset(found["contact"]), frozenset(found["events"]), frozenset(found["scores"]),
                      frozenset(found["stages"]), frozenset(found["vars"]))


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def compile_rule(source: str, extra_names: Iterable[str] = ()) -> Expression:
    """Compile a rule or raise ExpressionError with a marketer-readable message and hint."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("expression is empty", "write a condition such as events.purchase.count > 0")
    try:
        compiled = RULE_ENV.compile_expression(source, undefined_to_none=False)
        unknown = unknown_names(source, RULE_NAMES | set(extra_names))
    except TemplateSyntaxError as exc:
        raise ExpressionError(
            f"expression does not compile: {exc.message}",
            "rules are Jinja2 expressions, e.g. events.purchase.count > 0 and days_since('purchase') >= 90",
        ) from None
    if "now" in unknown:
        raise ExpressionError(
            "rules cannot use 'now'",
            "use days_since('event') or hours_since(contact.some_date) so the engine can schedule the change",
        )
    if unknown:
        name = sorted(unknown)[0]
        known = sorted(RULE_NAMES | set(extra_names))
        raise ExpressionError(
            f"unknown name {name!r} in expression",
            did_you_mean(name, known) or f"names you can use: {', '.join(known)}",
        )
    return Expression(source, compiled)
