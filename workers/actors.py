"""Dramatiq actors: thin wrappers that hand a message to a plain function in automation/."""

from __future__ import annotations

import dramatiq

from automation.engine.dispatch import ACTOR_NAME
from automation.engine.executor import run_batch
from automation.engine.steps import BATCH_TIME_LIMIT
from automation.store.patience import until_redis_answers
from automation.store.timers import Claim

from . import broker, settings
from .process import engine


# Retries only cover crashes of the batch itself (Redis unreachable, a bug); a provider's
# "try later" is rescheduled per step in the timer store. Both paths are idempotent.
@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=settings.queue, max_retries=5, min_backoff=1_000,
                max_backoff=60_000, time_limit=int(max(BATCH_TIME_LIMIT, settings.lease_seconds) * 1000))
def run_timers(claims: list[list]) -> None:
    """Execute a batch of due timers claimed by the scheduler; a restarting Redis is waited for
    (every phase of a batch can run again), not a reason to fail the batch."""
    batch = [Claim.from_wire(item) for item in claims]
    until_redis_answers(lambda: run_batch(engine(settings, broker), batch), settings.redis_patience_seconds,
                        "running the batch")
