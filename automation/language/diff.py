"""What changes between two versions of a journey, step by step (pure: no Redis).

Steps are matched across versions by identity, in this order:
1. the same id, for a step of the same kind (an explicit `id:`, or a derived one that did not
   change: the template of a send, `wait-3d` ...);
2. `replaces:` on a new step, or the journey's `migrate: {old: new}`, for a step that was removed;
3. the same place (position path and kind, e.g. the 2nd step of the stage, a send) for steps whose
   derived id changed with their content (a new template, a new wait length). Steps with an
   explicit `id:` are never matched by place: a new id is a new step.

Old steps left unmatched were removed; new ones left unmatched were added. What happens to a
contact waiting at an old step follows from the match (`fate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import time as clock_time
from typing import Any, Mapping

from automation.durations import format_duration
from automation.expressions import Expression
from automation.language.flow import EMPTY_FLOW, Flow, Node, SendNode, WaitForNode, WaitNode
from automation.language.journey import RUN, Journey

#: Node fields that are structure (where the run goes), not content.
_STRUCTURE = {"id", "next", "line", "on_event", "on_timeout"}
#: Node fields as a marketer names them.
_LABELS = {"delay": "wait", "seconds": "wait", "condition": "if", "message_type": "type", "at": "time"}
#: Float fields that are durations (others, a weight or a percent, are plain numbers).
DURATIONS = {"delay", "seconds", "timeout", "expires"}
#: Fields whose values may be read from the run's vars -> the field that says which (shown within the value).
_FROM_VARS = {"options": "options_from_vars", "spec": "from_vars"}


@dataclass(frozen=True)
class StepChange:
    scope: str                  # the stage, or RUN
    kind: str                   # changed, moved, removed, replaced, added
    old: str | None             # the old step's id (None: added)
    new: str | None             # the step its contacts are at now (None: removed)
    what: tuple[str, ...] = ()  # what changed, for people: "template welcome -> welcome-v2"


@dataclass(frozen=True)
class Fate:
    """What happens to a run waiting at an old step."""

    action: str                 # stay, continue, exit
    step: str | None            # where it waits now
    due: float | None           # when that is due
    why: str                    # for people: "stay", "continue now (waited long enough)", ...


@dataclass
class JourneyDiff:
    journey: str
    old: Journey | None
    new: Journey
    matches: dict[str, dict[str, str | None]] = field(default_factory=dict)   # scope -> old id -> new id
    steps: list[StepChange] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)      # stage rule changes, for people
    _routes: dict[tuple[str | None, str], tuple[str, str | None, tuple[float, float] | None, str]] = \
        field(default_factory=dict, repr=False)
    _affected: dict[tuple[str, str | None], StepChange] | None = field(default=None, repr=False)

    @property
    def changed(self) -> bool:
        return bool(self.steps or self.stages)

    def affected(self, scope: str, step: str) -> StepChange | None:
        if self._affected is None:
            self._affected = {(c.scope, c.old): c for c in self.steps if c.old is not None}
        return self._affected.get((scope, step))

    def fate(self, scope: str | None, step: str, due: float, now: float) -> Fate:
        """Where a run of `scope` waiting at old step `step`, due at `due`, waits in the new version."""
        key = (scope, step)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._route(scope, step)
        action, target, lengths, why = route
        if lengths is None:
            return Fate(action, target, due if target is not None else None, why)
        before, after = lengths
        started = due - before
        if started + after <= now:     # a due time past is due at once
            return Fate("stay", target, started + after, "continue now (waited long enough)")
        return Fate("stay", target, started + after,
                    f"stay, due {format_duration(abs(after - before))} {'later' if after > before else 'sooner'}")

    def _route(self, scope: str | None, step: str) -> tuple[str, str | None, tuple[float, float] | None, str]:
        """(action, new step, (old length, new length) when the wait changed, why) for a step."""
        new_flow = self.new.flow_of(scope) if scope else None
        old_flow = (self.old.flow_of(scope) if self.old and scope else None) or EMPTY_FLOW
        if new_flow is None:
            return "exit", None, None, f"exit: {'stage' if scope != RUN else 'journey'} removed"
        scope_matches = self.matches.get(scope or "")
        if scope_matches is None or step not in scope_matches:
            # A step the old version does not know (a run on another version): by id alone.
            target: str | None = step if step in new_flow.nodes else new_flow.aliases.get(step)
        else:
            target = scope_matches[step]
        if target is None:
            return "exit", None, None, "exit: step removed"
        if target != step and step not in new_flow.nodes and new_flow.aliases.get(step) == target:
            return "continue", target, None, f"continue at {target}"
        before, after = _length(old_flow.get(step)), _length(new_flow.nodes[target])
        if before is None or after is None or before == after:
            return "stay", target, None, "stay" if target == step else f"stay (now step {target})"
        return "stay", target, (before, after), ""


def _length(node: Node | None) -> float | None:
    """How long a run waits at a node from the moment it got there (None: not a wait of fixed length)."""
    if isinstance(node, SendNode):
        return node.delay
    if isinstance(node, WaitNode):
        return node.seconds
    if isinstance(node, WaitForNode):
        return node.timeout
    return None


def _text(value: Any, name: str = "") -> str:
    """`value` as a marketer writes it; `name` is its field's (a float is a duration only in DURATIONS)."""
    if value is None:
        return "-"
    if isinstance(value, Expression):
        return value.source
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return (format_duration(value) if value else "0") if name in DURATIONS else f"{value:g}"
    if isinstance(value, clock_time):
        return value.strftime("%H:%M")
    if isinstance(value, (tuple, list, frozenset, set)):
        items = sorted(value) if isinstance(value, (frozenset, set)) else value
        return "[" + ", ".join(_text(item) for item in items) + "]"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if hasattr(value, "__dataclass_fields__"):
        return "(" + ", ".join(f"{f.name} {_text(getattr(value, f.name), f.name)}" for f in fields(value)
                               if f.name not in ("first", "line")) + ")"
    return str(value)


def describe(node: Node) -> dict[str, str]:
    """A node's content, field by field, as text (structure left out)."""
    return {_LABELS.get(f.name, f.name): _written(node, f.name) for f in fields(node)
            if f.name not in _STRUCTURE and f.name not in _FROM_VARS.values()}


def _written(node: Node, name: str) -> str:
    """A field as the journey file writes it: a value read from the run's vars as `vars.<name>`, not as the
    stand-in the loader keeps (so changing a variant's value is not a change of the step)."""
    value = getattr(node, name)
    written = {key: f"vars.{var}" for key, var in getattr(node, _FROM_VARS.get(name, ""), {}).items()}
    if not written:
        return _text(value, name)
    if isinstance(value, Mapping):
        return _text({**value, **written})
    return "(" + ", ".join(f"{f.name} {written.get(f.name) or _text(getattr(value, f.name), f.name)}"
                           for f in fields(value)) + ")"


def match_flows(old: Flow, new: Flow) -> dict[str, str | None]:
    """Old node id -> the new node that is the same step (None: removed)."""
    result: dict[str, str | None] = {}
    used: set[str] = set()
    for old_id, node in old.nodes.items():
        found = new.nodes.get(old_id)
        if found is not None and type(found) is type(node):
            result[old_id] = old_id
            used.add(old_id)
    for old_id in old.nodes:
        if old_id not in result and old_id in new.aliases:
            result[old_id] = new.aliases[old_id]
    by_place = {place: node_id for node_id, place in new.positions.items()
                if node_id not in used and node_id not in new.explicit}
    for old_id, node in old.nodes.items():
        if old_id in result or old_id in old.explicit:
            continue
        candidate = by_place.get(old.positions.get(old_id, ""))
        if candidate is not None and candidate not in used and type(new.nodes[candidate]) is type(node):
            result[old_id] = candidate
            used.add(candidate)
    for old_id in old.nodes:
        result.setdefault(old_id, None)
    return result


def _flow_changes(scope: str, old: Flow, new: Flow, matches: dict[str, str | None]) -> list[StepChange]:
    changes: list[StepChange] = []
    for old_id, new_id in matches.items():
        if new_id is None:
            changes.append(StepChange(scope, "removed", old_id, None))
            continue
        if new_id not in new.nodes:
            continue
        if old_id not in new.nodes and new.aliases.get(old_id) == new_id:
            changes.append(StepChange(scope, "replaced", old_id, new_id, (f"removed; continues at {new_id}",)))
            continue
        before, after = describe(old.nodes[old_id]), describe(new.nodes[new_id])
        what = [f"id {old_id} -> {new_id}"] if new_id != old_id else []
        what += [f"{key} {before.get(key, '-')} -> {after.get(key, '-')}" for key in after
                 if before.get(key) != after.get(key)]
        place_before, place_after = old.positions.get(old_id), new.positions.get(new_id)
        moved = place_before and place_after and place_before != place_after
        if moved:
            what.append(f"moved from {place_before.partition(':')[0]} to {place_after.partition(':')[0]}")
        if what:
            changes.append(StepChange(scope, "changed" if len(what) > int(bool(moved)) else "moved", old_id,
                                      new_id, tuple(what)))
    matched = {new_id for new_id in matches.values() if new_id is not None}
    for new_id in new.nodes:
        if new_id not in matched:
            changes.append(StepChange(scope, "added", None, new_id))

    def order(change: StepChange) -> list[tuple[int, str]]:
        place = old.positions.get(change.old or "") or new.positions.get(change.new or "") or ""
        return [(int(part), "") if part.isdigit() else (0, part) for part in place.partition(":")[0].split(".")]

    return sorted(changes, key=order)


def _stage_changes(old: Journey, new: Journey) -> list[str]:
    notes: list[str] = []
    audience = (_text(old.audience), _text(new.audience))
    if audience[0] != audience[1]:
        notes.append(f"audience {audience[0]} -> {audience[1]}")
    old_rules = {stage.name: _text(stage.rule) for stage in old.stages}
    new_rules = {stage.name: _text(stage.rule) for stage in new.stages}
    for name, rule in new_rules.items():
        if name not in old_rules:
            notes.append(f"stage {name} added (when {rule})")
        elif old_rules[name] != rule:
            notes.append(f"stage {name}: when {old_rules[name]} -> {rule}")
    notes += [f"stage {name} removed" for name in old_rules if name not in new_rules]
    kept_old = [name for name in old_rules if name in new_rules]
    kept_new = [name for name in new_rules if name in old_rules]
    if kept_old != kept_new:
        notes.append("stage order " + ", ".join(kept_old) + " -> " + ", ".join(kept_new))
    return notes


def diff_journeys(old: Journey | None, new: Journey) -> JourneyDiff:
    """Step by step, what the new version of a journey changes for runs of the old one."""
    diff = JourneyDiff(new.name, old, new)
    old_scopes = _scopes(old) if old is not None else {}
    for scope, new_flow in _scopes(new).items():
        old_flow = old_scopes.get(scope, EMPTY_FLOW)
        matches = match_flows(old_flow, new_flow)
        diff.matches[scope] = matches
        diff.steps += _flow_changes(scope, old_flow, new_flow, matches)
    for scope, old_flow in old_scopes.items():
        if scope not in diff.matches:
            diff.matches[scope] = {old_id: None for old_id in old_flow.nodes}
            diff.steps += [StepChange(scope, "removed", old_id, None) for old_id in old_flow.nodes]
    if old is not None and (old.stages or new.stages):
        diff.stages = _stage_changes(old, new)
    return diff


def _scopes(journey: Journey) -> dict[str, Flow]:
    flows = {stage.name: stage.flow for stage in journey.stages}
    if journey.trigger is not None:
        flows[RUN] = journey.flow
    return flows
