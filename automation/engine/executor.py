"""Execute a batch of claimed timers: what a Dramatiq message does (workers/actors.py wraps it).

A batch holds up to `batch_size` due timers of three kinds (automation.store.keys):
re-evaluations of contacts (`r|`), due steps of runs (`s|`, automation.engine.steps) and
chunks of scheduled broadcasts (`b|`, automation.engine.broadcasts). It is batch-shaped on
purpose: contacts are loaded with one pipelined round trip and their changes written with
one script call.
"""

from __future__ import annotations

import logging
from typing import Iterable

from automation.engine.apply import Plan, apply_plans, log_rule_errors
from automation.engine.broadcasts import run_broadcasts
from automation.engine.evaluation import evaluate
from automation.engine.runs import Changes
from automation.engine.services import Engine
from automation.engine.steps import JOURNEY_RETRY_SECONDS, execute_steps
from automation.store.keys import BROADCAST, RECHECK, STEP, parse_member, recheck_member
from automation.store.timers import Claim

logger = logging.getLogger(__name__)


def run_batch(engine: Engine, claims: Iterable[Claim]) -> None:
    by_kind: dict[str, list[Claim]] = {RECHECK: [], STEP: [], BROADCAST: []}
    stale = []
    for claim in claims:
        kind, _, _ = parse_member(claim.member)
        by_kind.get(kind, stale).append(claim)
    if stale:
        logger.error("unknown timer kind(s): %s", [c.member for c in stale])
        engine.timers.ack(stale)
    if by_kind[RECHECK]:
        reevaluate(engine, by_kind[RECHECK])
    if by_kind[STEP]:
        execute_steps(engine, by_kind[STEP])
    if by_kind[BROADCAST]:
        run_broadcasts(engine.runtime, engine.journeys.journeys, engine.timers, by_kind[BROADCAST])


def reevaluate(engine: Engine, claims: list[Claim]) -> None:
    """Evaluate the contacts in `claims` (automation.engine.evaluation) and apply what changed."""
    ids = [parse_member(claim.member)[2] for claim in claims]
    states = engine.store.load_many(ids, inbox=True)
    served = engine.journeys.journeys
    scores = engine.scores()
    now = engine.runtime.clock.now()
    # While a journey file fails to load, contacts in its stages keep being re-checked, so its
    # time-based changes are not lost; they happen once the file is fixed.
    retry_at = now + engine.runtime.clock.to_clock_seconds(JOURNEY_RETRY_SECONDS)
    unloaded = bool(engine.journeys.failed_files)
    plans: list[Plan] = []
    missing = []
    rule_errors = 0
    for claim, contact_id in zip(claims, ids, strict=True):
        state = states[contact_id]
        if not state.exists:
            missing.append(claim)  # deleted meanwhile: evaluating would recreate it
            continue
        changes: Changes = evaluate(state, served, now, scores, engine.step_of)
        log_rule_errors(contact_id, changes.errors)
        rule_errors += len(changes.errors)
        recheck_at = changes.tracker.next_change if changes.tracker else None
        if unloaded and any(e.stage and name not in served for name, e in state.enrollments.items()):
            recheck_at = min(recheck_at or retry_at, retry_at)
        member = recheck_member(contact_id)
        changes.timers[member] = recheck_at
        # Applied only if the contact is as it was read; if not, the evaluation is simply due again.
        plans.append(Plan(claim, changes, version=changes.state.version, recheck=member))
    apply_plans(engine, plans)
    if rule_errors:
        engine.runtime.redis.hincrby(engine.runtime.keys.stats, "rule_errors", rule_errors)
    if missing:
        engine.timers.ack(missing)
