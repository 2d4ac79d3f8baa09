"""The workspace's guardrails: `journeys/_workspace.yaml`, the settings every journey shares.

    timezone: Europe/London          # contacts without a zone of their own, in journeys without one
    quiet_hours:                     # marketing messages wait (or are skipped) in the contact's night
      sms: {from: "21:00", to: "08:00"}
      push: {from: "22:00", to: "08:00", action: skip}
    frequency_caps:                  # marketing messages per contact, over rolling windows, all journeys
      - {channel: email, max: 1, per: 1d}
      - {channel: email, max: 3, per: 7d}
      - {channel: sms, max: 2, per: 7d}
      - {channel: marketing, max: 5, per: 7d}   # every marketing message, whatever its channel
    frequency_cap_action: defer      # defer (default: sent when the window allows) or skip
    priority_window: 1h              # a more important journey's send due this soon keeps its slot

Without the file, marketing SMS keep quiet from 21:00 to 08:00 in the contact's own zone and there
are no frequency caps. Transactional messages (a receipt, a password reset, a renewal notice the
contract requires) ignore quiet hours and caps. Journeys may override quiet hours and set their
priority (automation.language.journey). `lifecycle validate` checks this file like a journey file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time as clock_time
from pathlib import Path
from typing import Any, Mapping

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from automation.calendar import parse_time_of_day, zone
from automation.durations import HINT as DURATION_HINT
from automation.durations import parse_duration
from automation.errors import CalendarError, DurationError
from automation.expressions import did_you_mean
from automation.language.diagnostics import Diagnostic
from automation.language.sourcemap import Report, display_path, pos, read_yaml

FILE_NAME = "_workspace.yaml"
#: The cap channel that counts every marketing message, whatever its channel.
ALL_MARKETING = "marketing"
MESSAGE_TYPES = ("marketing", "transactional")
QUIET_ACTIONS = ("hold", "skip")
CAP_ACTIONS = ("defer", "skip")
KEYS = ("timezone", "quiet_hours", "frequency_caps", "frequency_cap_action", "priority_window")


@dataclass(frozen=True)
class QuietHours:
    """A daily window in the contact's own zone when marketing on a channel keeps quiet."""

    start: clock_time
    end: clock_time
    action: str = "hold"        # hold: sent when the window ends; skip: not sent


@dataclass(frozen=True)
class Cap:
    """At most `limit` marketing messages on `channel` (or ALL_MARKETING) per `window` seconds."""

    channel: str
    limit: int
    window: float


@dataclass(frozen=True)
class Workspace:
    path: str = ""
    timezone: str = "UTC"
    quiet_hours: Mapping[str, QuietHours] = field(default_factory=dict)
    caps: tuple[Cap, ...] = ()
    cap_action: str = "defer"
    priority_window: float = 3600.0

    def caps_for(self, channel: str) -> tuple[Cap, ...]:
        """The caps a marketing message on `channel` counts against."""
        return tuple(cap for cap in self.caps if cap.channel in (channel, ALL_MARKETING))


#: No marketing SMS at night: in several countries texting people late is a legal matter, not taste
#: (the US TCPA and many state laws: 8:00 to 21:00 local), and everywhere it costs opt-outs.
DEFAULT_QUIET_HOURS = {"sms": QuietHours(clock_time(21, 0), clock_time(8, 0))}
DEFAULT = Workspace(quiet_hours=DEFAULT_QUIET_HOURS)


def load_workspace(journeys_dir: Path) -> tuple[Workspace, list[Diagnostic]]:
    """The workspace file of a journeys folder, or the defaults (and no diagnostics) without one."""
    path = Path(journeys_dir) / FILE_NAME
    if not path.is_file():
        return DEFAULT, []
    report = Report(display_path(path))
    doc = read_yaml(path, report)
    if report.items:
        return DEFAULT, report.items
    if doc is None:
        return Workspace(path=report.path, quiet_hours=DEFAULT_QUIET_HOURS), []
    if not isinstance(doc, CommentedMap):
        report.add((1, 1), f"{FILE_NAME} is a mapping of settings", f"allowed keys: {', '.join(KEYS)}")
        return DEFAULT, report.items
    for key in doc:
        if key not in KEYS:
            report.add(pos(doc, key, of_key=True), f"unknown key {key!r} in {FILE_NAME}",
                       did_you_mean(str(key), KEYS) or f"allowed keys: {', '.join(KEYS)}")
    workspace = Workspace(
        path=report.path,
        timezone=_timezone(doc, report),
        quiet_hours=quiet_hours_of(doc, "quiet_hours", report) if "quiet_hours" in doc else DEFAULT_QUIET_HOURS,
        caps=_caps(doc, report),
        cap_action=_choice(doc, "frequency_cap_action", CAP_ACTIONS, "defer", report),
        priority_window=_duration(doc, "priority_window", 3600.0, report),
    )
    return workspace, report.items


def quiet_hours_of(node: CommentedMap, key: str, report: Report) -> dict[str, QuietHours]:
    """`quiet_hours:` as a mapping channel -> window; `none` (or `{}`) for a channel: no quiet hours."""
    value = node.get(key)
    if value in (None, "none", False):
        return {}
    if not isinstance(value, CommentedMap):
        report.add(pos(node, key), "quiet_hours is a mapping of channels",
                   'e.g. quiet_hours: {sms: {from: "21:00", to: "08:00"}}')
        return {}
    windows: dict[str, QuietHours] = {}
    for channel, window in value.items():
        if window in (None, "none", False):
            continue                    # this channel has none (overrides the workspace's)
        if not isinstance(window, CommentedMap):
            report.add(pos(value, channel), f"quiet hours for {channel} need from: and to:",
                       'e.g. {from: "21:00", to: "08:00"}, or none for no quiet hours')
            continue
        for unknown in [k for k in window if k not in ("from", "to", "action")]:
            report.add(pos(window, unknown, of_key=True), f"unknown key {unknown!r} in quiet hours",
                       did_you_mean(str(unknown), ("from", "to", "action")) or "allowed keys: from, to, action")
        times = []
        for end in ("from", "to"):
            if end not in window:
                report.add(pos(value, channel), f"quiet hours for {channel} need {end}:", 'e.g. "08:00"')
                continue
            try:
                times.append(parse_time_of_day(window[end]))
            except CalendarError as exc:
                report.add(pos(window, end), str(exc), 'write 24-hour time in quotes, e.g. "21:00"')
        action = _choice(window, "action", QUIET_ACTIONS, "hold", report)
        if len(times) == 2:
            if times[0] == times[1]:
                report.add(pos(window, "to"), f"quiet hours for {channel} start and end at the same time",
                           "give a window, e.g. from 21:00 to 08:00")
            else:
                windows[str(channel)] = QuietHours(times[0], times[1], action)
    return windows


def _caps(doc: CommentedMap, report: Report) -> tuple[Cap, ...]:
    value = doc.get("frequency_caps")
    if value is None:
        return ()
    if not isinstance(value, CommentedSeq):
        report.add(pos(doc, "frequency_caps"), "frequency_caps is a list",
                   "e.g. - {channel: email, max: 1, per: 1d}")
        return ()
    caps = []
    for index, item in enumerate(value):
        if not isinstance(item, CommentedMap):
            report.add(pos(value, index), "a frequency cap is a mapping", "e.g. {channel: email, max: 1, per: 1d}")
            continue
        for unknown in [k for k in item if k not in ("channel", "max", "per")]:
            report.add(pos(item, unknown, of_key=True), f"unknown key {unknown!r} in a frequency cap",
                       did_you_mean(str(unknown), ("channel", "max", "per")) or "allowed keys: channel, max, per")
        channel = item.get("channel")
        if not isinstance(channel, str) or not channel:
            report.add(pos(item, "channel") if "channel" in item else pos(value, index),
                       "a frequency cap needs a channel", f"a channel such as email or sms, or {ALL_MARKETING} "
                       "for every marketing message")
            continue
        limit = item.get("max")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            report.add(pos(item, "max") if "max" in item else pos(value, index),
                       "a frequency cap needs max: a whole number of messages, 1 or more", "e.g. max: 3")
            continue
        if "per" not in item:
            report.add(pos(value, index), "a frequency cap needs per: the window it counts over", "e.g. per: 7d")
            continue
        window = _duration(item, "per", 0.0, report)
        if window <= 0:
            continue
        caps.append(Cap(channel, limit, window))
    return tuple(caps)


def _timezone(doc: CommentedMap, report: Report) -> str:
    value = doc.get("timezone", "UTC")
    if not isinstance(value, str) or (zone(value, default="").key != value and value != "UTC"):
        report.add(pos(doc, "timezone"), f"unknown time zone {value!r}",
                   "use an IANA name such as Europe/Warsaw, Asia/Tehran or America/New_York")
        return "UTC"
    return value


def _choice(node: CommentedMap, key: str, allowed: tuple[str, ...], default: str, report: Report) -> str:
    value = node.get(key, default)
    if value not in allowed:
        report.add(pos(node, key), f"{key} must be {' or '.join(allowed)}, not {value!r}",
                   did_you_mean(str(value), allowed) or f"one of: {', '.join(allowed)}")
        return default
    return str(value)


def _duration(node: Any, key: str, default: float, report: Report) -> float:
    if key not in node:
        return default
    try:
        return parse_duration(node[key])
    except DurationError as exc:
        report.add(pos(node, key), f"bad duration: {exc}", DURATION_HINT)
        return default
