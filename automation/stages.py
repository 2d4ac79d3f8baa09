"""Which stage a contact is in, and when that could next change by time alone.

Pure functions over a ContactState: no Redis, no clock of their own, so every
rule can be unit tested with plain data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from .contacts import ContactState
from .context import rule_context
from .expressions import RuleError, TimeTracker
from .journey import Journey, Stage, Step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageChange:
    journey: str
    stage: str | None          # None: the contact leaves the journey
    first_step: Step | None
    first_due: float | None
    reason: str


@dataclass
class Evaluation:
    changes: list[StageChange] = field(default_factory=list)
    recheck_at: float | None = None
    errors: list[str] = field(default_factory=list)


def current_stage(journey: Journey, state: ContactState, tracker: TimeTracker,
                  errors: list[str]) -> Stage | None:
    """The first stage whose rule holds (audience permitting); rule errors count as false."""
    context = rule_context(state, journey, tracker)
    if journey.audience is not None:
        try:
            if not journey.audience.evaluate(context):
                return None
        except RuleError as exc:
            errors.append(f"{journey.path}: audience: {exc}")
            return None
    for stage in journey.stages:
        if stage.rule is None:
            return stage
        try:
            if stage.rule.evaluate(context):
                return stage
        except RuleError as exc:
            errors.append(f"{journey.path}:{stage.line}: stage {stage.name!r}: {exc}")
    return None


def evaluate(state: ContactState, journeys: Iterable[Journey], now: float) -> Evaluation:
    """Stage changes for every journey, and the earliest instant a time-based rule could flip."""
    tracker = TimeTracker(now)
    result = Evaluation()
    for journey in journeys:
        stage = current_stage(journey, state, tracker, result.errors)
        enrollment = state.enrollments.get(journey.name)
        before = enrollment.stage if enrollment else None
        after = stage.name if stage else None
        if before == after:
            continue
        if stage is None:
            result.changes.append(StageChange(journey.name, None, None, None, "no stage applies"))
            continue
        first = stage.steps[0] if stage.steps else None
        reason = f"when: {stage.rule.source}" if stage.rule else "no other stage applies"
        result.changes.append(StageChange(journey.name, stage.name, first,
                                          now + first.delay if first else None, reason))
    result.recheck_at = tracker.next_change
    return result
