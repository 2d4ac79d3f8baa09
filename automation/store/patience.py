"""Waiting out a Redis restart instead of failing the work in hand.

redis-py retries a command for a few seconds when its connection fails; a restarting server
(the embedded one started again by its watchdog, a failover, a server loading its append-only
file) can take longer. Calls whose effect must not be lost or repeated blindly (a batch's marks
and outcomes) wait here for Redis to answer again, for up to `redis_patience_seconds`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

import redis

logger = logging.getLogger(__name__)
T = TypeVar("T")
#: What a restarting or unreachable server looks like (BusyLoadingError is a ConnectionError).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def until_redis_answers(call: Callable[[], T], patience: float, what: str) -> T:
    """`call()`, again and again while Redis does not answer, for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            return call()
        except REDIS_DOWN as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("Redis does not answer (%s); %s again in %.1fs", exc, what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
