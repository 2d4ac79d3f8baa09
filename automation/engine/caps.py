"""Frequency caps: which caps a marketing message counts against, and when they let it out.

mark.lua counts caps atomically when a message is marked for its provider; `caps_plan` is what it
is given for one message, and `capped_until` is the same arithmetic in Python, for dry runs and
`inspect`, which must say what mark.lua would decide without writing anything.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from automation.engine.runs import START
from automation.language.flow import SendNode
from automation.language.journey import Journey
from automation.language.workspace import ALL_MARKETING, Workspace
from automation.store import fields
from automation.store.contacts import ContactState


def caps_plan(journeys: Mapping[str, Journey], workspace: Workspace, state: ContactState, journey: Journey,
              step: SendNode, now: float) -> list[list[Any]]:
    """The frequency caps this message counts against, `[[field, window, limit, reserve], ...]`, each
    keeping the slots that more important journeys' marketing messages due within the priority
    window will need (their reserve)."""
    caps = workspace.caps_for(step.channel)
    if not caps:
        return []
    needed: Counter[str] = Counter()
    soon = now + workspace.priority_window
    for name, enrollment in state.enrollments.items():
        if name == journey.name or enrollment.step in (None, START) or enrollment.due is None \
                or enrollment.due > soon or enrollment.stage is None:
            continue
        other = journeys.get(name)
        if other is None or other.priority <= journey.priority:
            continue
        flow = other.flow_of(enrollment.stage)
        node = flow.get(enrollment.step) if flow else None
        if isinstance(node, SendNode) and other.type_of(node) == "marketing":
            needed[fields.frequency(node.channel)] += 1
            needed[fields.frequency(None)] += 1
    plan = []
    for cap in caps:
        counted = fields.frequency(None if cap.channel == ALL_MARKETING else cap.channel)
        plan.append([counted, cap.window, cap.limit, needed[counted]])
    return plan


def capped_until(raw: Mapping[str, str], plan: list[list[Any]], now: float) -> float | None:
    """When the caps let one more message out: None if they do now, else the earliest time
    (mark.lua's `capped_until`, over the contact hash's fields)."""
    until: float | None = None
    for field, window, limit, reserve in plan:
        inside = sorted(at for at in fields.decode_frequency(raw.get(field)) if at > now - window)
        over = len(inside) + 1 + reserve - limit
        if over > 0:
            free = (inside[over - 1] if over <= len(inside) else now) + window
            until = free if until is None else max(until, free)
    return until
