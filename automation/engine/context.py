"""The names rules and templates see for one contact (documented in docs/journeys.md)."""

from __future__ import annotations

import json
from typing import Any, Mapping

from automation.engine.scores import scores_view
from automation.expressions import TimeTracker, time_functions, to_datetime
from automation.language.flow import SendNode
from automation.language.journey import RUN, Journey, ScoreDef
from automation.store import fields
from automation.store.contacts import ContactState
from automation.store.coupons import Coupon, parse_compact


def contact_view(state: ContactState) -> dict[str, Any]:
    return {**state.attributes, "id": state.id}


def stages_view(state: ContactState) -> dict[str, str]:
    """`stages['customer-lifecycle']`: the contact's stage in every stage journey."""
    return {name: e.stage for name, e in state.enrollments.items() if e.stage and e.stage != RUN}


def coupons_view(state: ContactState, complete: Mapping[str, Coupon] | None = None) -> dict[str, Any]:
    """`coupons.winback.code`: the contact's coupons by name (`complete`: coupons read from Redis)."""
    found: dict[str, Any] = {}
    for field, raw in state.raw.items():
        kind, name = fields.split(field)
        if kind == fields.COUPON:
            coupon = (complete or {}).get(name) or parse_compact(name, raw)
            if coupon is not None:
                found[name] = coupon.as_template_value()
    return found


def run_vars(journey: Journey, scope: str | None, assignments: Mapping[str, str]) -> dict[str, Any]:
    """`vars.<name>`: the journey's vars, then what the run's split variants set."""
    flow = journey.flow_of(scope) if scope else None
    return {**journey.vars, **(flow.variant_vars(assignments) if flow is not None else {})}


def send_options(journey: Journey, scope: str, node: SendNode, assignments: Mapping[str, str]) -> Mapping[str, Any]:
    """A send step's options, those written `vars.<name>` read from the vars of a run given these split
    variants; None where the run has no value."""
    if not node.options_from_vars:
        return node.options
    values = run_vars(journey, scope, assignments)
    return {**node.options, **{key: values.get(name) for key, name in node.options_from_vars.items()}}


def rule_context(state: ContactState, journey: Journey, tracker: TimeTracker,
                 scores: Mapping[str, ScoreDef] | None = None) -> dict[str, Any]:
    enrollment = state.enrollments.get(journey.name)
    context: dict[str, Any] = dict(journey.vars)
    context.update(
        vars=run_vars(journey, enrollment.stage if enrollment else None,
                      enrollment.assignments if enrollment else {}),
        contact=contact_view(state),
        events=state.events,
        stage=enrollment.stage if enrollment else None,
        stages=stages_view(state),
        scores=scores_view(state.raw, scores or {}, tracker),
        coupons=coupons_view(state),
        journey=journey.name,
        **time_functions(state.events, tracker),
    )
    return context


def step_data(state: ContactState, journey: Journey, stage: str, step: str, now: float,
              scores: Mapping[str, ScoreDef] | None = None) -> dict[str, Any]:
    """What a step without a template sends: webhooks post it, provider templates receive it."""
    return {
        "journey": journey.name, "stage": stage, "step": step, "at": _iso(now),
        "contact": contact_view(state),
        "events": {name: {"count": s.count, "first": _iso(s.first_ts), "last": _iso(s.last_ts)}
                   for name, s in sorted(state.events.items())},
        "stages": stages_view(state),
        "scores": {name: round(float(value), 2) for name, value in scores_view(
            state.raw, scores or {}, TimeTracker(now)).items()},
        "vars": run_vars(journey, stage, _assignments(state, journey)),
    }


def _assignments(state: ContactState, journey: Journey) -> Mapping[str, str]:
    enrollment = state.enrollments.get(journey.name)
    return enrollment.assignments if enrollment else {}


def _iso(timestamp: float | None) -> str | None:
    moment = to_datetime(timestamp)
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def last_events(recent: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The most recent occurrence of each event type: `last.purchase.item`."""
    last: dict[str, dict[str, Any]] = {}
    for item in recent:  # newest first
        if item["event"] not in last:
            last[item["event"]] = {**item["properties"], "at": to_datetime(item["at"])}
    return last


def template_context(state: ContactState, journey: Journey, stage: str, step: str, channel: str,
                     now: float, defaults: Mapping[str, Any], extra: Mapping[str, Any],
                     scores: Mapping[str, ScoreDef] | None = None) -> dict[str, Any]:
    tracker = TimeTracker(now)
    context = rule_context(state, journey, tracker, scores)
    contact = context["contact"]
    context.update(
        now=to_datetime(now),
        first_name=contact.get("first_name") or defaults.get("first_name", "there"),
        last_name=contact.get("last_name") or defaults.get("last_name", ""),
        last=last_events(state.recent),
        recent_events=[{**e, "at": to_datetime(e["at"])} for e in state.recent],
        stage=stage,
        step=step,
        channel=channel,
    )
    context.update(extra)
    return context


def plain_data(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Template extras (coupons, the unsubscribe link) as JSON for steps that send data: times as ISO text."""
    return json.loads(json.dumps(extra, default=lambda value: value.isoformat() if hasattr(value, "isoformat")
                                 else str(value)))
