"""Runs: a contact going through the steps of a stage or a triggered journey.

A run starts when a contact enters a stage or a trigger fires, walks through its
steps (automation.flow), waits at sends and waits, and ends when the steps run
out, at an `exit`, on a goal or exit rule, or when the contact leaves the stage.

Everything here works on a `Changes`: the changes to one contact's hash, timers,
stats and activity that an evaluation or a worker collects in memory and then
writes in one atomic script (apply.lua, record_step.lua). Reading goes through
it too, so a second step in the same evaluation sees what the first one did.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from automation.calendar import date_instant, next_anniversary, next_time_of_day, zone
from automation.engine.context import rule_context
from automation.expressions import RuleError, TimeTracker
from automation.language.flow import Node, WaitUntilNode, Walk, WalkContext, walk
from automation.language.journey import RUN, Journey, ScoreDef
from automation.store import fields
from automation.store.contacts import ContactState
from automation.store.fields import Enrollment
from automation.store.keys import due as due_text
from automation.store.keys import enter_stat, goal_stat, recheck_member, step_member, step_reason_stat, step_stat

logger = logging.getLogger(__name__)

#: The step id of a run that is armed to start at a time (a date trigger), not yet started.
START = "^start"


@dataclass
class Changes:
    """What happens to one contact, collected before it is written atomically."""

    state: ContactState                 # updated in place as changes are made
    now: float
    scores: dict[str, ScoreDef] = field(default_factory=dict)
    writes: dict[str, str | None] = field(default_factory=dict)       # contact hash fields; None: delete
    timers: dict[str, float | None] = field(default_factory=dict)     # None: remove
    stats: Counter = field(default_factory=Counter)
    activity: list[list[str]] = field(default_factory=list)
    coupons: list[tuple[str, Any]] = field(default_factory=list)      # (run key, CouponSpec)
    emits: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)   # (event, properties, id)
    sets: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    trim: int = 0                       # inbox items processed
    tracker: TimeTracker | None = None
    recheck: float | None = None        # outside evaluations: re-evaluate the contact at this time
    #: The step a run waits at in the served version (Engine.step_of): a run of another version names it
    #: by that version's id. None: as stored.
    step_of: Callable[[Journey, Enrollment], str | None] | None = None

    def __post_init__(self) -> None:
        if self.tracker is None:
            self.tracker = TimeTracker(self.now)

    # -- the contact hash, through the changes ---------------------------------------------------
    def set(self, name: str, value: Any) -> None:
        """Write a contact hash field that is not a run's (jset writes those)."""
        self._write(name, value)

    def _write(self, name: str, value: Any) -> None:
        text = None if value is None else str(value)
        self.writes[name] = text
        if text is None:
            self.state.raw.pop(name, None)
        else:
            self.state.raw[name] = text

    def _reload(self, journey: str) -> None:
        self.state.enrollments[journey] = fields.enrollment_from_hash(self.state.raw, journey)

    def enrollment(self, journey: str) -> Enrollment:
        return self.state.enrollments.get(journey) or Enrollment()

    def jset(self, journey: str, reload: bool = True, **parts: Any) -> None:
        """Write a run's fields; `reload=False` when nothing reads the run's Enrollment after (a step's
        last write), which saves decoding it again."""
        for part, value in parts.items():
            self._write(fields.run(journey, part), value)
        if reload:
            self._reload(journey)     # once for all the parts

    def rules(self, journey: Journey) -> dict[str, Any]:
        return rule_context(self.state, journey, self.tracker, self.scores)

    def holds(self, journey: Journey, expression: Any, extra: dict[str, Any] | None = None,
              where: str = "") -> bool:
        if expression is None:
            return True
        context = self.rules(journey)
        if extra:
            context.update(extra)
        try:
            return expression.evaluate(context)
        except RuleError as exc:
            self.errors.append(f"{journey.path}: {where}{exc}" if where else f"{journey.path}: {exc}")
            return False

    def log(self, kind: str, journey: str, **fields: str) -> None:
        entry = ["k", kind, "j", journey]
        for key, value in fields.items():
            entry += [key, str(value)]
        self.activity.append(entry)

    # -- writing ---------------------------------------------------------------------------------
    def ops(self) -> list[list[Any]]:
        """The changes as ops for apply.lua / record_step.lua (see lua/_ops.lua)."""
        ops: list[list[Any]] = []
        for name, value in self.writes.items():
            ops.append(["d", name] if value is None else ["h", name, value])
        for member, when in self.timers.items():
            ops.append(["zr", member] if when is None else ["z", member, due_text(when)])
        if self.recheck is not None:
            ops.append(["zl", recheck_member(self.state.id), due_text(self.recheck)])
        ops += [["i", stat, str(n)] for stat, n in self.stats.items()]
        ops += [["x", entry] for entry in self.activity]
        if self.trim:
            ops.append(["t", str(self.trim)])
        return ops

    def encoded_ops(self) -> str:
        ops = self.ops()
        return json.dumps(ops, separators=(",", ":"), ensure_ascii=False) if ops else ""


def _version_gone(changes: Changes, journey: str) -> dict[str, None]:
    """Clears the run's version with its step (written only when there is one to clear)."""
    return {"vr": None} if changes.enrollment(journey).version else {}


def run_key(journey: str, scope: str, occurrence: int) -> str:
    """Names one run: ledger entries, coupons and recorded events are idempotent per run."""
    return f"{journey}:{scope}:{occurrence}"


def due_of(changes: Changes, journey: Journey) -> Callable[[Node, float], float | None]:
    """When a wait_until node is due for this contact, in their own time zone."""

    def due(node: Node, base: float) -> float | None:
        assert isinstance(node, WaitUntilNode)
        tz = zone(changes.state.attributes.get("timezone"), journey.timezone)
        if node.date is not None:
            try:
                value = node.date.value(changes.rules(journey))
            except RuleError as exc:
                changes.errors.append(f"{journey.path}:{node.line}: {exc}")
                return None
            if node.yearly:
                return next_anniversary(value, base, tz, node.at, node.offset_days)
            return date_instant(value, tz, node.at, node.offset_days)
        if node.at is None:
            return None
        return next_time_of_day(base, tz, node.at, node.weekdays)

    return due


def advance(changes: Changes, journey: Journey, scope: str, start: str | None, base: float) -> Walk:
    """Walk the run from node `start` and record what it did and where it stops (or that it ended)."""
    flow = journey.flow_of(scope)
    enrollment = changes.enrollment(journey.name)
    context = WalkContext(journey.name, changes.state.id, base, lambda: changes.rules(journey),
                          due_of(changes, journey), enrollment.assignments,
                          done_once=lambda node_id: fields.once_done(enrollment.once, fields.once_tag(scope, node_id)),
                          now=changes.now)
    result = walk(flow, start, context) if flow is not None else Walk(ended="error:no such stage")
    record(changes, journey, scope, result, enrollment.occurrence)
    return result


def record(changes: Changes, journey: Journey, scope: str, result: Walk, occurrence: int) -> None:
    """The effects of a walk: variants, coupons, events, attributes, and where the run waits now."""
    name, member = journey.name, step_member(journey.name, changes.state.id)
    key = run_key(name, scope, occurrence)
    if result.assignments:
        merged = changes.enrollment(name).assignments
        merged.update(result.assignments)
        changes.jset(name, ab=fields.encode_variants(merged))
    changes.stats.update(result.stats)
    if result.once:
        changes.jset(name, on=fields.add_once(changes.enrollment(name).once,
                                              [fields.once_tag(scope, node_id) for node_id in result.once]))
    flow = journey.flow_of(scope)
    for node_id, code, why in result.skipped:
        # Counted as a send step's skip is (steps.record_plan), so status and metrics show them alike.
        node = flow.get(node_id) if flow is not None else None
        channel = getattr(node, "channel", "")
        changes.log("skipped", name, s=scope, p=node_id, ch=channel, d=why)
        for stat in ("skipped", f"skipped:{channel}" if channel else "", f"skipped:{code}",
                     step_stat(name, scope, node_id, "skipped"), step_reason_stat(name, scope, node_id, code)):
            if stat:
                changes.stats[stat] += 1
    changes.coupons += [(key, spec) for spec in result.coupons]
    changes.emits += [(event, properties, f"{key}:{node_id}") for node_id, event, properties in result.emits]
    changes.sets.update(result.sets)
    for note in result.notes:
        changes.errors.append(f"{journey.path}: {note}")
    if result.pending is not None:
        node_id, when = result.pending
        # The version its step ids belong to, written with every step: a deploy may have re-tagged the
        # run since it was read, and the step written here is this version's.
        changes.jset(name, sp=node_id, du=due_text(when), **({"vr": journey.version} if journey.version else {}))
        changes.timers[member] = when
        return
    changes.jset(name, sp=None, du=None, **_version_gone(changes, name))
    changes.timers[member] = None
    reason = result.ended or "finished"
    if reason.startswith("error:"):
        changes.errors.append(f"{journey.path}: run stopped: {reason[6:]}")
        changes.stats[f"run_error:{name}"] += 1
    if scope == RUN:
        changes.jset(name, st=None, en=fields.encode_end(changes.now, reason))
        changes.stats[f"end:{name}:{reason.partition(':')[0]}"] += 1
        if reason != "finished":
            changes.log("end", name, s=scope, d=reason)
        if journey.trigger is not None and journey.trigger.kind == "date":
            changes.recheck = changes.now       # arm the next date (evaluations do it anyway)


def start(changes: Changes, journey: Journey, scope: str, reason: str, base: float | None = None) -> Walk:
    """Start a run of `scope` (a stage being entered, or RUN) and walk it to its first wait."""
    name = journey.name
    enrollment = changes.enrollment(name)
    now = changes.now
    occurrence = enrollment.occurrence + 1
    # The end of the run before is only worth keeping while no run is in progress.
    changes.jset(name, st=scope, oc=occurrence, **{"in": int(now)}, **({"en": None} if enrollment.ended else {}))
    goal = journey.goal_of(scope)
    changes.jset(name, g=fields.encode_goal(now + goal.within, scope) if goal else None, ab=None)
    changes.stats[enter_stat(name, scope)] += 1
    if goal:
        changes.stats[goal_stat(name, scope, "entered")] += 1
    changes.log("enter" if scope != RUN else "start", name, s=scope, d=" ".join(reason.split()))
    flow = journey.flow_of(scope)
    return advance(changes, journey, scope, flow.first if flow else None, now if base is None else base)


def leave(changes: Changes, journey: Journey, reason: str) -> None:
    """End the run in progress (the contact leaves the stage, or an exit rule or goal ends it)."""
    name = journey.name
    enrollment = changes.enrollment(name)
    if enrollment.stage is None:
        return
    if enrollment.step is not None and enrollment.step != START:
        changes.log("cancelled", name, s=enrollment.stage, p=enrollment.step, d=reason)
        changes.stats["cancelled"] += 1
    changes.timers[step_member(name, changes.state.id)] = None
    if enrollment.stage != RUN:
        changes.log("exit", name, s=enrollment.stage)
        changes.stats[f"exit:{name}:{enrollment.stage}"] += 1
        changes.jset(name, st=None, sp=None, du=None, en=fields.encode_end(changes.now, reason),
                     **{"in": None}, **_version_gone(changes, name))
    else:
        changes.log("end", name, s=RUN, d=reason)
        changes.stats[f"end:{name}:{reason.partition(':')[0]}"] += 1
        changes.jset(name, st=None, sp=None, du=None, en=fields.encode_end(changes.now, reason),
                     **_version_gone(changes, name))


def stop_steps(changes: Changes, journey: Journey, reason: str) -> None:
    """A stage's steps end (its goal was reached) while the contact stays in the stage."""
    name = journey.name
    enrollment = changes.enrollment(name)
    if enrollment.step is None:
        return
    changes.log("cancelled", name, s=enrollment.stage or "", p=enrollment.step, d=reason)
    changes.stats["cancelled"] += 1
    changes.timers[step_member(name, changes.state.id)] = None
    changes.jset(name, sp=None, du=None, **_version_gone(changes, name))
