"""A worker process's sign of life: how others tell a send in progress from one its worker died in.

Every "sending" mark names the worker that made it (mark.lua), and a mark counts as busy only while
its worker showed life within `liveness_seconds`. A worker shows life with every mark it makes and,
from a thread, every fifth of that interval, however long its provider requests take. So a step
whose worker was killed is taken up again as soon as its message comes back, never after waiting
out a fixed lease. The same beat keeps Dramatiq's own heartbeat fresh (`touch`): Dramatiq only
beats when a worker fetches, and would take a worker whose threads are all in long requests for
dead and hand its messages to others.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from automation.runtime import Runtime

logger = logging.getLogger(__name__)
#: Workers silent for this long are dropped from the liveness set (they are long dead).
FORGET_SECONDS = 86400.0


class Liveness:
    """The heartbeat of one worker process."""

    def __init__(self, runtime: Runtime, worker_id: str, touch: Callable[[], object] | None = None) -> None:
        self.runtime = runtime
        self.worker_id = worker_id
        self.touch = touch
        self.interval = runtime.settings.liveness_seconds / 5
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        key = self.runtime.keys.liveness
        wall = time.time()
        pipe = self.runtime.redis.pipeline(transaction=False)
        pipe.zadd(key, {self.worker_id: wall})
        pipe.zremrangebyscore(key, "-inf", wall - FORGET_SECONDS)
        pipe.execute()
        if self.touch is not None:
            self.touch()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lifecycle-liveness", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except Exception:  # Redis restarting: keep beating, the next one reconnects
                logger.warning("liveness beat failed; retrying", exc_info=True)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and say so: marks this worker left are then in doubt at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
            self._thread = None
        try:
            self.runtime.redis.zrem(self.runtime.keys.liveness, self.worker_id)
        except Exception:  # shutting down with Redis gone: the entry simply ages out
            logger.debug("could not remove the liveness entry", exc_info=True)


def alive_workers(runtime: Runtime) -> int:
    """Workers that showed life within the liveness timeout."""
    return int(runtime.redis.zcount(runtime.keys.liveness, time.time() - runtime.settings.liveness_seconds, "+inf"))


def forget_dead_waves(runtime: Runtime) -> int:
    """Drop the waves in progress of workers that are dead (a worker that dies mid-wave leaves its
    wave's token behind; its marks are in doubt anyway, since their worker is dead)."""
    waves = runtime.redis.hgetall(runtime.keys.waves)
    if not waves:
        return 0
    since = time.time() - runtime.settings.liveness_seconds
    alive = set(runtime.redis.zrangebyscore(runtime.keys.liveness, since, "+inf"))
    dead = [token for token, owner in waves.items() if owner not in alive]
    if dead:
        runtime.redis.hdel(runtime.keys.waves, *dead)
    return len(dead)
