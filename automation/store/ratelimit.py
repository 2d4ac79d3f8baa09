"""Messages per second per provider, shared by every worker through Redis.

A fixed-window counter in Redis (`<ns>:rate:<adapter>:<window>`), taken in bulk: a batch
asks for as many permits as it has messages and sends only what it is granted; the rest
wait in the timer store for the next window instead of blocking a worker thread. Dramatiq's
own rate limiters take one permit per call, which would cost a Redis round trip per message.
"""

from __future__ import annotations

import math
import time
from typing import Mapping

from automation.runtime import Runtime
from automation.store.scripts import Scripts


class RateLimiter:
    def __init__(self, runtime: Runtime, limits: Mapping[str, float], scripts: Scripts | None = None) -> None:
        self.keys = runtime.keys
        self.limits = dict(limits)
        self.scripts = scripts or Scripts(runtime.redis)

    def take(self, name: str, wanted: int, wall: float | None = None) -> tuple[int, float]:
        """(permits granted, seconds until the next window) for `wanted` messages of adapter `name`."""
        rate = self.limits.get(name)
        if not rate or wanted <= 0:
            return wanted, 0.0
        window = 1.0 if rate >= 1 else 1.0 / rate
        per_window = max(1, math.floor(rate * window))
        wall = time.time() if wall is None else wall
        index = math.floor(wall / window)
        granted = self.scripts.call("rate", [self.keys.rate_window(name, index)],
                                    [per_window, wanted, math.ceil(window) + 1])
        return int(granted), (index + 1) * window - wall
