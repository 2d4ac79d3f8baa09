"""Evaluate one contact: what their new events, changes and the passing of time mean for every journey.

A contact is evaluated when something about them changed (an event, an attribute, a
broadcast reaching them) or when a time-based rule may have flipped. One evaluation,
in this order:

1. scores earn the points of the new events;
2. each new inbox item, oldest first: goals convert (and end their runs), exit rules end
   runs, runs waiting for the event move on, event, attribute and broadcast triggers
   start runs;
3. stage journeys: the contact moves to the first stage whose rule holds, which ends the
   old stage's run and starts the new one's;
4. triggers on entering or leaving those stages start runs;
5. `when` triggers whose rule has just become true start runs; `when` exit rules end runs;
6. date triggers are armed for their next date.

It is a pure function of the contact (with their inbox), the journeys and the time:
the result is a `Changes`, written atomically by the engine.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from typing import Any, Callable, Iterable, Mapping

from automation.calendar import CalendarError, date_instant, local_moment, next_anniversary, parse_time_of_day, zone
from automation.engine import runs
from automation.engine.runs import START, Changes
from automation.engine.scores import add_points
from automation.engine.stages import current_stage
from automation.expressions import RuleError, to_datetime
from automation.language.flow import WaitForNode
from automation.language.journey import RUN, Journey, ScoreDef
from automation.store import fields
from automation.store.contacts import ContactState
from automation.store.fields import Enrollment
from automation.store.keys import due as due_text
from automation.store.keys import goal_stat, split_stat, step_member

logger = logging.getLogger(__name__)

#: A date trigger whose moment passed more than this long ago (the contact arrived late) does not fire.
DATE_GRACE = 86400.0


def parse_inbox(items: Iterable[str]) -> list[tuple[str, list[Any]]]:
    parsed = []
    for item in items:
        try:
            parsed.append((item[0], json.loads(item[1:])))
        except (ValueError, IndexError):
            logger.error("unreadable inbox item skipped: %r", item[:200])
    return parsed


def evaluate(state: ContactState, journeys: Mapping[str, Journey], now: float,
             scores: Mapping[str, ScoreDef] | None = None,
             step_of: Callable[[Journey, Enrollment], str | None] | None = None) -> Changes:
    changes = Changes(state, now, dict(scores or {}), step_of=step_of)
    ordered = [journeys[name] for name in sorted(journeys)]
    items = parse_inbox(state.inbox)
    changes.trim = len(state.inbox)
    _score(changes, items)
    for kind, payload in items:
        if kind == "e" and len(payload) >= 2:
            _event(changes, ordered, str(payload[0]), float(payload[1]), payload[2] if len(payload) > 2 else {})
        elif kind == "a" and len(payload) == 3:
            _attribute(changes, ordered, str(payload[0]), payload[1], payload[2])
        elif kind == "b" and len(payload) in (2, 3):
            journey = journeys.get(str(payload[0]))
            if journey is not None:
                offer_broadcast(changes, journey, str(payload[1]), payload[2] if len(payload) == 3 else None)
    moves = _stages(changes, ordered)
    _stage_triggers(changes, ordered, moves)
    _conditions(changes, ordered)
    _dates(changes, ordered)
    return changes


# -- 1. scores ------------------------------------------------------------------------------------

def _score(changes: Changes, items: list[tuple[str, list[Any]]]) -> None:
    if not changes.scores:
        return
    for kind, payload in items:
        if kind != "e" or len(payload) < 2:
            continue
        name, at, properties = str(payload[0]), float(payload[1]), payload[2] if len(payload) > 2 else {}
        for score in changes.scores.values():
            for rule in score.rules:
                if rule.event != name:
                    continue
                if rule.where is not None:
                    try:
                        if not rule.where.evaluate({"event": _event_view(name, at, properties),
                                                    "contact": {**changes.state.attributes}}):
                            continue
                    except RuleError as exc:
                        changes.errors.append(f"score {score.name!r}: {exc}")
                        continue
                field = fields.score(score.name)
                changes.set(field, add_points(changes.state.raw.get(field), rule.points, at, score.half_life))


def _event_view(name: str, at: float, properties: Any) -> dict[str, Any]:
    return {"name": name, "at": to_datetime(at), "properties": properties if isinstance(properties, dict) else {}}


# -- 2. inbox items -------------------------------------------------------------------------------

def _event(changes: Changes, journeys: list[Journey], name: str, at: float, properties: Any) -> None:
    event = {"event": _event_view(name, at, properties)}
    for journey in journeys:
        enrollment = changes.enrollment(journey.name)
        # Goal: a conversion within the window of the latest run counts, even after the run ended.
        if enrollment.goal_deadline is not None:
            deadline, scope = enrollment.goal_deadline
            goal = journey.goal_of(scope)
            if goal is not None and goal.event == name and at <= deadline \
                    and changes.holds(journey, goal.where, event, "goal: "):
                _convert(changes, journey, scope, goal.exit, name)
                enrollment = changes.enrollment(journey.name)
        if enrollment.stage == RUN:
            for rule in journey.exits:
                if rule.event == name and changes.holds(journey, rule.where, event, "exit_on: "):
                    runs.leave(changes, journey, f"exit:{name}")
                    enrollment = changes.enrollment(journey.name)
                    break
        if enrollment.stage is not None and enrollment.step not in (None, START):
            flow = journey.flow_of(enrollment.stage)
            step = changes.step_of(journey, enrollment) if changes.step_of else enrollment.step
            node = flow.get(step or "") if flow else None
            if isinstance(node, WaitForNode) and node.event == name \
                    and changes.holds(journey, node.where, event, f"wait_for (line {node.line}): "):
                changes.log("resumed", journey.name, s=enrollment.stage, p=node.id, d=f"event {name}")
                runs.advance(changes, journey, enrollment.stage,
                             node.on_event if node.on_event is not None else node.next, changes.now)
        trigger = journey.trigger
        if trigger is not None and trigger.kind == "event" and trigger.event == name \
                and changes.now - at <= trigger.max_age and changes.holds(journey, trigger.where, event, "trigger: "):
            _try_start(changes, journey, f"event {name}")


def _convert(changes: Changes, journey: Journey, scope: str, ends_run: bool, event: str) -> None:
    name = journey.name
    enrollment = changes.enrollment(name)
    changes.stats[goal_stat(name, scope, "converted")] += 1
    for split, variant in enrollment.assignments.items():
        changes.stats[split_stat(name, split, variant, "converted")] += 1
    changes.log("converted", name, s=scope, d=f"goal {event}")
    changes.jset(name, g=None)
    if ends_run and enrollment.stage == scope:
        if scope == RUN:
            runs.leave(changes, journey, "goal")
        else:
            runs.stop_steps(changes, journey, "goal reached")


def _attribute(changes: Changes, journeys: list[Journey], name: str, old: Any, new: Any) -> None:
    change = {"change": {"name": name, "old": old, "new": new}}
    for journey in journeys:
        trigger = journey.trigger
        if trigger is None or trigger.kind != "attribute" or trigger.attribute is None:
            continue
        if name == trigger.attribute or name.startswith(trigger.attribute + "."):
            if changes.holds(journey, trigger.where, change, "trigger: "):
                _try_start(changes, journey, f"{name} changed")


def offer_broadcast(changes: Changes, journey: Journey, occurrence: str,
                    spec: Mapping[str, Any] | None = None) -> str:
    """A broadcast reaches the contact: start a run now, or arm one for a local time (`spec`:
    {"local": "10:00", "day": "2026-12-24" or None, "after": when the broadcast began}).

    Returns "" if a run started or was armed, else why not (for dry runs).
    """
    trigger = journey.trigger
    if trigger is None or not trigger.broadcasts:
        return "not a broadcast"
    if changes.enrollment(journey.name).broadcast == occurrence:
        return "already reached"            # a redelivered broadcast chunk
    changes.jset(journey.name, bt=occurrence)
    if not changes.holds(journey, trigger.where, None, "trigger: "):
        return "where"
    why = _why_not_start(changes, journey)
    if why:
        return why
    start = _local_start(changes, journey, spec) if spec else None
    if start is None or start <= changes.now + 0.001:
        runs.start(changes, journey, RUN, "broadcast")
        return ""
    # Armed like a date trigger: a run waiting at START, started (and checked again) when the time comes.
    changes.jset(journey.name, sp=START, du=due_text(start))
    changes.timers[step_member(journey.name, changes.state.id)] = start
    return ""


def _local_start(changes: Changes, journey: Journey, spec: Mapping[str, Any]) -> float | None:
    """When a local-time broadcast starts for this contact: that time in their own zone."""
    try:
        at = parse_time_of_day(str(spec["local"]))
        day = date.fromisoformat(str(spec["day"])) if spec.get("day") else None
        after = float(spec.get("after") or changes.now)
    except (CalendarError, KeyError, TypeError, ValueError):
        logger.error("unreadable broadcast item for %s: %r", journey.name, spec)
        return None
    return local_moment(after, zone(changes.state.attributes.get("timezone"), journey.timezone), at, day)


def start_armed(changes: Changes, journey: Journey, due: float) -> bool:
    """Start a run armed for this moment (a date trigger's, a local-time broadcast's), checking
    again that the contact takes part: they may have changed since it was armed."""
    trigger = journey.trigger
    if trigger is None:
        return False
    if trigger.kind == "date":
        if not date_may_start(changes, journey):
            return False
        runs.start(changes, journey, RUN, "date", base=due)
        return True
    if trigger.broadcasts and changes.holds(journey, trigger.where, None, "trigger: "):
        return _try_start(changes, journey, "broadcast at local time", base=due)
    return False


def _why_not_start(changes: Changes, journey: Journey) -> str:
    """Why a run of a triggered journey may not start now ("" if it may): the contact is in a run
    already, the re-entry policy, or the audience."""
    enrollment = changes.enrollment(journey.name)
    if enrollment.stage is not None:
        return "in a run"                   # triggers do not restart a run
    policy = journey.re_entry
    if enrollment.occurrence and policy.policy == "once":
        return "re_entry"
    if policy.policy == "after" and enrollment.entered_at is not None \
            and changes.now - enrollment.entered_at < policy.cooldown:
        return "re_entry"
    if journey.audience is not None and not changes.holds(journey, journey.audience, None, "audience: "):
        return "audience"
    return ""


def _try_start(changes: Changes, journey: Journey, reason: str, base: float | None = None) -> bool:
    """Start a run of a triggered journey if the audience and the re-entry policy allow it."""
    if _why_not_start(changes, journey):
        return False
    runs.start(changes, journey, RUN, reason, base=base)
    return True


# -- 3. stages ------------------------------------------------------------------------------------

def _stages(changes: Changes, journeys: list[Journey]) -> list[tuple[str, str | None, str | None]]:
    moves = []
    for journey in journeys:
        if not journey.stages:
            continue
        errors: list[str] = []
        stage = current_stage(journey, changes.state, changes.tracker, errors, changes.scores)
        changes.errors += errors
        before = changes.enrollment(journey.name).stage
        after = stage.name if stage else None
        if before == after:
            continue
        runs.leave(changes, journey, "left the stage")
        if stage is not None:
            reason = f"when: {stage.rule.source}" if stage.rule else "no other stage applies"
            runs.start(changes, journey, stage.name, reason)
        moves.append((journey.name, before, after))
    return moves


def _stage_triggers(changes: Changes, journeys: list[Journey],
                    moves: list[tuple[str, str | None, str | None]]) -> None:
    for journey in journeys:
        trigger = journey.trigger
        if trigger is None or trigger.kind not in ("enters", "leaves"):
            continue
        for name, before, after in moves:
            if trigger.journey not in (None, name):
                continue
            hit = after == trigger.stage if trigger.kind == "enters" else before == trigger.stage
            if hit and changes.holds(journey, trigger.where, None, "trigger: "):
                _try_start(changes, journey, f"{trigger.kind} {name}/{trigger.stage}")


# -- 5. rules that become true --------------------------------------------------------------------

def _conditions(changes: Changes, journeys: list[Journey]) -> None:
    for journey in journeys:
        trigger = journey.trigger
        if trigger is not None and trigger.kind == "when":
            holds = changes.holds(journey, trigger.condition, None, "trigger: ")
            was = changes.enrollment(journey.name).condition
            if holds and not was:
                changes.jset(journey.name, cw="1")
                if changes.holds(journey, trigger.where, None, "trigger: "):
                    _try_start(changes, journey, f"when: {trigger.condition.source if trigger.condition else ''}")
            elif was and not holds:
                changes.jset(journey.name, cw=None)
        if changes.enrollment(journey.name).stage == RUN:
            for rule in journey.exits:
                if rule.when is not None and changes.holds(journey, rule.when, None, "exit_on: "):
                    runs.leave(changes, journey, f"exit:when {rule.when.source}")
                    break


# -- 6. dates -------------------------------------------------------------------------------------

def next_date(changes: Changes, journey: Journey) -> float | None:
    """When the date trigger of `journey` next fires for this contact (None: not at all)."""
    trigger = journey.trigger
    assert trigger is not None and trigger.date is not None
    try:
        value = trigger.date.value(changes.rules(journey))
    except RuleError as exc:
        changes.errors.append(f"{journey.path}: trigger: {exc}")
        return None
    tz = zone(changes.state.attributes.get("timezone"), journey.timezone)
    enrollment = changes.enrollment(journey.name)
    last = enrollment.entered_at
    policy = journey.re_entry
    if policy.policy == "once" and enrollment.occurrence:
        return None
    # The earliest moment a new run may start: after the last one, and its cooldown.
    earliest = changes.now - DATE_GRACE
    if last is not None:
        earliest = max(earliest, last + max(1.0, policy.cooldown if policy.policy == "after" else 0.0))
    if trigger.yearly:
        return next_anniversary(value, earliest, tz, trigger.at, trigger.offset_days)
    when = date_instant(value, tz, trigger.at, trigger.offset_days)
    if when is None or when < earliest:
        return None
    return when


def date_may_start(changes: Changes, journey: Journey) -> bool:
    """Whether the contact takes part in a date journey: its audience and the trigger's `where`."""
    trigger = journey.trigger
    if journey.audience is not None and not changes.holds(journey, journey.audience, None, "audience: "):
        return False
    return trigger is None or trigger.where is None or changes.holds(journey, trigger.where, None, "trigger: ")


def _dates(changes: Changes, journeys: list[Journey]) -> None:
    for journey in journeys:
        trigger = journey.trigger
        if trigger is None or trigger.kind != "date" or trigger.date is None:
            continue
        enrollment = changes.enrollment(journey.name)
        if enrollment.stage is not None:
            continue                        # in a run: armed again when it ends
        when = next_date(changes, journey)
        armed = enrollment.step == START
        member = step_member(journey.name, changes.state.id)
        if when is None or not date_may_start(changes, journey):
            if armed:
                changes.jset(journey.name, sp=None, du=None)
                changes.timers[member] = None
            continue
        if not armed or enrollment.due is None or abs(enrollment.due - when) > 0.001:
            changes.jset(journey.name, sp=START, du=due_text(when))
            changes.timers[member] = when


__all__ = ["evaluate", "parse_inbox", "next_date", "date_may_start", "offer_broadcast", "start_armed"]
