"""The scheduler: hands due timers to the workers, in batches, on time.

Each tick claims due timers from every shard in one pipelined round trip and
sends them to Dramatiq as plain messages (no `delay=`) of up to `batch_size`
timers each. A claim's lease is short (`claim_lease_seconds`) until its message
is in Dramatiq's queue, so timers claimed by a scheduler that dies before
queueing them come back within seconds; once queued, the lease is extended to
`lease_seconds`, a safety net: Dramatiq itself hands a dead worker's messages to
the others. When the queue already holds `max_queued_messages` messages the
scheduler waits instead of claiming more, so a backlog stays in Redis (cheap,
durable, reschedulable) rather than in worker memory, and leases do not run out
while messages sit in the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from automation.runtime import Runtime
from automation.engine.liveness import forget_dead_waves
from automation.store.doubt import settle_abandoned
from automation.store.timers import Claim, TimerStore

logger = logging.getLogger(__name__)

Dispatch = Callable[[list[Claim]], None]
#: Seconds between sweeps for steps in doubt whose runs moved on.
SWEEP_SECONDS = 30.0


class Scheduler:
    def __init__(self, runtime: Runtime, dispatch: Dispatch, queue_depth: Callable[[], int] | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.timers = TimerStore(runtime)
        self.dispatch = dispatch
        self.queue_depth = queue_depth or (lambda: 0)
        self.claimed_total = 0
        self.reclaimed_total = 0
        self._swept_at = 0.0
        #: When the loop last came round (monotonic): a health probe tells a stuck scheduler by it.
        self.last_round = time.monotonic()

    def sweep(self) -> None:
        """Now and then: settle steps in doubt whose runs moved on (automation.store.doubt), and
        forget the waves in progress of dead workers."""
        if time.monotonic() - self._swept_at >= SWEEP_SECONDS:
            self._swept_at = time.monotonic()
            settle_abandoned(self.runtime, self.timers.scripts)
            forget_dead_waves(self.runtime)

    def tick(self) -> int:
        """One round: claim what is due and dispatch it; returns the number of timers claimed."""
        if self.queue_depth() >= self.settings.max_queued_messages:
            return 0
        per_shard = max(1, self.settings.claim_limit // self.settings.timer_shards)
        claims, reclaimed = self.timers.claim(per_shard)
        if reclaimed:
            self.reclaimed_total += reclaimed
            logger.warning("%d timer lease(s) expired (a worker died or was too slow); handed out again", reclaimed)
        size = self.settings.batch_size
        queued: list[Claim] = []
        try:
            for start in range(0, len(claims), size):
                batch = claims[start:start + size]
                self.dispatch(batch)
                queued += batch
        finally:
            # Queued: Dramatiq hands a dead worker's messages to others, so the lease can cover
            # waiting and running. Not queued (Redis failed us): the short lease runs out in seconds.
            if queued:
                self.timers.extend(queued, self.settings.lease_seconds)
        self.claimed_total += len(claims)
        return len(claims)

    def run(self, stop: threading.Event) -> None:
        logger.info("scheduler started: %d shards, lease %.0fs, batches of %d",
                    self.settings.timer_shards, self.settings.lease_seconds, self.settings.batch_size)
        while not stop.is_set():
            self.last_round = time.monotonic()
            try:
                claimed = self.tick()
                self.sweep()
            except Exception:  # Redis restarting, network blip: log, back off, keep going
                logger.exception("scheduler tick failed; retrying")
                stop.wait(1.0)
                continue
            if claimed == 0:
                stop.wait(self.settings.poll_interval)
        logger.info("scheduler stopped after claiming %d timers", self.claimed_total)


def run_until_idle(scheduler: Scheduler, timeout: float = 10.0) -> int:
    """Tick until nothing is due (for tests and one-shot tools); returns timers claimed."""
    deadline = time.monotonic() + timeout
    total = 0
    while time.monotonic() < deadline:
        claimed = scheduler.tick()
        total += claimed
        if claimed == 0:
            return total
    return total
