"""Hand-off to Dramatiq: the broker of this deployment and how the scheduler sends batches.

Messages are plain (no `delay=`): a timer reaches Dramatiq only once it is due.
The message names the actor `run_timers` (workers/actors.py); building it here
keeps schedulers free of the workers' global broker.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from automation.config import Settings
from automation.store.timers import Claim

ACTOR_NAME = "run_timers"


def broker_namespace(settings: Settings) -> str:
    return f"{settings.namespace}:dramatiq"


def queue_key(settings: Settings) -> str:
    """The Redis list of messages waiting in our queue."""
    return f"{broker_namespace(settings)}:{settings.queue}"


def make_broker(settings: Settings) -> RedisBroker:
    if not settings.redis_url:
        raise RuntimeError(
            "REDIS_URL is not set. Start workers with `lifecycle worker` (which starts the embedded "
            "Redis when REDIS_URL is unset) or set REDIS_URL=redis://host:6379/0."
        )
    # A worker silent for heartbeat_timeout is dead and its messages go back to the queue at
    # Dramatiq's next maintenance; maintenance runs often enough for that to take seconds, not
    # minutes (its default chance is 1 in 1,000 commands).
    return RedisBroker(url=settings.redis_url, namespace=broker_namespace(settings),
                       heartbeat_timeout=settings.heartbeat_timeout_ms,
                       maintenance_chance=settings.broker_maintenance)


class DramatiqDispatcher:
    """The scheduler's `dispatch` and `queue_depth` for a Dramatiq queue on Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = make_broker(settings)
        self.broker.declare_queue(settings.queue)
        self._queue_key = queue_key(settings)

    def __call__(self, claims: list[Claim]) -> None:
        message = dramatiq.Message(queue_name=self.settings.queue, actor_name=ACTOR_NAME,
                                   args=([claim.to_wire() for claim in claims],), kwargs={}, options={})
        self.broker.enqueue(message)

    def queue_depth(self) -> int:
        return int(self.broker.client.llen(self._queue_key))

    def close(self) -> None:
        self.broker.close()
        # Dramatiq's close leaves the broker's connection pool open: an embedded Redis would count
        # this process as still using it and stay up after `lifecycle run` stops.
        self.broker.client.connection_pool.disconnect()
