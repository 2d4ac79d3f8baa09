"""The baseline: a bare Dramatiq no-op actor on the same Redis (`dramatiq bench.noop`)."""

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ.get("BENCH_NAMESPACE", "bench-noop"))
dramatiq.set_broker(broker)
_redis = broker.client


@dramatiq.actor(queue_name="noop", max_retries=0)
def noop() -> None:
    """Does nothing: measures Dramatiq's own cost per message."""


@dramatiq.actor(queue_name="noop", max_retries=0)
def stamp(key: str, due: float) -> None:
    """Records how late a delayed message ran (for the delay= comparison)."""
    _redis.hset(key, str(due), repr(time.time() - due))
