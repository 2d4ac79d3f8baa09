"""Which stage of a stage journey a contact is in.

A pure function over a ContactState: no Redis, no clock of its own, so every rule
can be unit tested with plain data. automation.evaluation applies the result.
"""

from __future__ import annotations

from typing import Mapping

from automation.engine.context import rule_context
from automation.expressions import RuleError, TimeTracker
from automation.language.journey import Journey, ScoreDef, Stage
from automation.store.contacts import ContactState


def current_stage(journey: Journey, state: ContactState, tracker: TimeTracker, errors: list[str],
                  scores: Mapping[str, ScoreDef] | None = None) -> Stage | None:
    """The first stage whose rule holds (audience permitting); rule errors count as false.

    Every time-dependent comparison made on the way notes when it would flip in `tracker`,
    which is when the contact must be evaluated again.
    """
    context = rule_context(state, journey, tracker, scores)
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
