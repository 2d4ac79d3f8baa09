"""Dramatiq actors: thin wrappers that hand a message to a plain function in automation/."""

from __future__ import annotations

import dramatiq

from automation.engine.dispatch import ACTOR_NAME
from automation.engine.executor import run_batch
from automation.store.timers import Claim

from . import broker, settings
from .process import engine


# Retries only cover crashes of the batch itself (Redis unreachable, a bug); a provider's
# "try later" is rescheduled per step in the timer store. Both paths are idempotent.
@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=settings.queue, max_retries=5, min_backoff=1_000,
                max_backoff=60_000, time_limit=max(60_000, int(settings.lease_seconds * 1000)))
def run_timers(claims: list[list]) -> None:
    """Execute a batch of due timers claimed by the scheduler."""
    run_batch(engine(settings, broker), [Claim.from_wire(item) for item in claims])
