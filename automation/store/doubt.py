"""Steps a crash left in doubt: sent to the provider, or not, when their worker died mid-request.

The worker that next gets such a step records it "unknown" and keeps its run waiting at it
(automation.engine.steps); the step joins `<ns>:ambiguous`, scored by when it fell into doubt.
It leaves the set when the provider's delivery report confirms it (automation.store.deliveries),
when its time to be confirmed is up and the channel's policy sends it again or fails it
(mark.lua), or, if its run has moved on meanwhile (the contact left the stage), when the
scheduler's sweep here fails it. Nothing stays in doubt.
"""

from __future__ import annotations

import logging

from automation.runtime import Runtime
from automation.store import fields
from automation.store.keys import ACTIVITY_LENGTH
from automation.store.scripts import Scripts

logger = logging.getLogger(__name__)
SWEEP_LIMIT = 200


def in_doubt(runtime: Runtime) -> tuple[int, float | None]:
    """How many steps are in doubt, and since when the oldest is (journey clock)."""
    key = runtime.keys.ambiguous
    pipe = runtime.redis.pipeline(transaction=False)
    pipe.zcard(key)
    pipe.zrange(key, 0, 0, withscores=True)
    count, oldest = pipe.execute()
    return int(count), (float(oldest[0][1]) if oldest else None)


def settle_abandoned(runtime: Runtime, scripts: Scripts | None = None) -> int:
    """Fail the steps in doubt for twice their confirmation window whose runs no longer wait at them."""
    settings = runtime.settings
    now = runtime.clock.now()
    cutoff = now - runtime.clock.to_clock_seconds(2 * settings.reconcile_seconds)
    keys = runtime.keys
    members = runtime.redis.zrangebyscore(keys.ambiguous, "-inf", cutoff, start=0, num=SWEEP_LIMIT)
    scripts = scripts or Scripts(runtime.redis)
    reason = ("a send interrupted by a crash was not confirmed by the provider, and its run moved on; "
              "not sent again")
    calls = []
    for member in members:
        contact_id, _, field = member.partition("|")
        parts = field.split(":")        # journey:scope:occurrence:step (names never hold ':')
        if len(parts) != 4:
            runtime.redis.zrem(keys.ambiguous, member)
            continue
        journey, scope, occurrence, step = parts
        waiting = [fields.run(journey, "st"), scope, fields.run(journey, "oc"), occurrence,
                   fields.run(journey, "sp"), step]
        calls.append(("settle", [keys.ambiguous, keys.ledger(contact_id), keys.contact(contact_id), keys.activity,
                                 keys.stats],
                      [member, field, repr(now), reason, ACTIVITY_LENGTH, contact_id, f"{journey}|{scope}|{step}",
                       *waiting]))
    settled = sum(int(reply) for reply in scripts.run(calls))
    if settled:
        logger.warning("%d step(s) in doubt whose runs had moved on failed as unconfirmed", settled)
    return settled
