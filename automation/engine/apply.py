"""Writing what happened to contacts: one plan per contact, applied atomically by apply.lua.

Evaluations, waits that ended and sent steps all end here. A `Plan` is the contact's
`Changes` (automation.engine.runs) plus what must hold for them to apply: the contact's
version as it was read (an evaluation), or the values of some fields (a run that moved on).
A step's outcome (ledger entry, activity, counters) is written whatever the guard says:
the message went out even if the contact moved on meanwhile. This module is the one place
that builds apply.lua's arguments.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from automation.engine.runs import Changes
from automation.engine.services import Engine
from automation.events import Event
from automation.store.coupons import CouponError
from automation.store.keys import ACTIVITY_LENGTH, seconds
from automation.store.patience import until_redis_answers
from automation.store.timers import Claim

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    """The writes for one contact, and what must still hold for them to apply."""

    claim: Claim | None             # the timer whose lease is released with the write
    changes: Changes
    version: str = ""               # the contact's version as read ("" = not checked)
    guards: list[list[Any]] = field(default_factory=list)   # [[field, value or False (absent)], ...]
    recheck: str = ""               # a stale evaluation's timer, due again at once
    always: list[list[Any]] = field(default_factory=list)   # ops applied whatever the guards say

    def encode(self) -> str:
        claim = self.claim
        plan: dict[str, Any] = {"c": self.changes.state.id, "v": self.version, "ops": self.changes.ops(),
                                "lease": repr(claim.lease) if claim is not None and claim.lease is not None
                                else "", "lm": claim.member if claim is not None else ""}
        if self.guards:
            plan["g"] = self.guards
        if self.recheck:
            plan["r"] = self.recheck
        if self.always:
            plan["pre"] = self.always
        return json.dumps(plan, separators=(",", ":"), ensure_ascii=False)


def apply_plans(engine: Engine, plans: list[Plan]) -> list[bool]:
    """Write the plans (apply.lua), each only if its guards hold; True for each applied.

    Coupons the runs asked for are issued first, so the messages that show them find them; what
    the applied runs did through the contact store (attributes set, events recorded) follows.
    """
    if not plans:
        return []
    keys = engine.runtime.keys
    issue_coupons(engine, [plan.changes for plan in plans])
    script_keys: list[str] = [keys.activity, keys.stats, keys.ambiguous, keys.waves]
    args: list[Any] = [seconds(engine.runtime.clock.now()), ACTIVITY_LENGTH]
    for plan in plans:
        cid = plan.changes.state.id
        script_keys += [keys.contact(cid), keys.timers_for(cid), keys.leases_for(cid), keys.ledger(cid),
                        keys.inbox(cid), keys.lease_tokens_for(cid)]
        args.append(plan.encode())
    # Patient: outcomes of sends that went out must be written. A repeated call whose first reply
    # was lost writes the same outcomes again; its guarded moves no longer apply.
    replies = until_redis_answers(lambda: engine.scripts.call("apply", script_keys, args),
                                  engine.runtime.settings.redis_patience_seconds, "writing the outcomes")
    applied = [bool(reply) for reply in replies]
    after_apply(engine, [plan.changes for plan, ok in zip(plans, applied, strict=True) if ok])
    return applied


def issue_coupons(engine: Engine, all_changes: Iterable[Changes]) -> None:
    for changes in all_changes:
        for run, spec in changes.coupons:
            try:
                engine.store.coupons.issue(changes.state.id, spec, run, changes.now)
            except (CouponError, LookupError) as exc:
                logger.error("coupon %s for %s: %s", spec.name, changes.state.id, exc)
                engine.runtime.redis.hincrby(engine.runtime.keys.stats, f"coupon:{spec.name}:failed", 1)


def after_apply(engine: Engine, all_changes: Iterable[Changes]) -> None:
    """What runs did that goes through the contact store: attributes set, events recorded."""
    for changes in all_changes:
        if changes.sets:
            engine.store.identify(changes.state.id, changes.sets)
        if changes.emits:
            engine.store.track_many(Event(changes.state.id, name, changes.now, properties, event_id)
                                    for name, properties, event_id in changes.emits)


_rule_errors_logged: dict[str, float] = {}


def log_rule_errors(contact_id: str, errors: Iterable[str]) -> None:
    """Log each distinct rule error at most once a minute: one broken rule must not flood the logs."""
    for error in errors:
        now = time.monotonic()
        if now - _rule_errors_logged.get(error, -60.0) >= 60.0:
            if len(_rule_errors_logged) > 1000:
                _rule_errors_logged.clear()
            _rule_errors_logged[error] = now
            logger.warning("rule error treated as false (contact %s; repeats for a minute are not logged): %s",
                           contact_id, error)
