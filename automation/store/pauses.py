"""Paused channels: a provider refused our credentials (401/403), so nobody gets messages on
that channel until ops fix the configuration. Steps wait in the timer store, nothing is lost.

A pause lasts `LIFECYCLE_PAUSE_SECONDS` (wall clock); the first step after it is a probe: if
the provider still refuses, the pause starts again. `lifecycle resume CHANNEL` ends it at once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from automation.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pause:
    channel: str
    reason: str
    since: float
    until: float


class ChannelPauses:
    def __init__(self, runtime: Runtime) -> None:
        self.redis = runtime.redis
        self.key = runtime.keys.paused
        self.seconds = runtime.settings.pause_seconds

    def active(self, wall: float | None = None) -> dict[str, Pause]:
        wall = time.time() if wall is None else wall
        pauses = {}
        for channel, raw in self.redis.hgetall(self.key).items():
            data = json.loads(raw)
            pause = Pause(channel, data["reason"], data["since"], data["until"])
            if pause.until > wall:
                pauses[channel] = pause
        return pauses

    def pause(self, channel: str, reason: str) -> Pause:
        now = time.time()
        pause = Pause(channel, reason, now, now + self.seconds)
        self.redis.hset(self.key, channel, json.dumps({"reason": reason, "since": now, "until": pause.until}))
        logger.error("channel %s paused for %.0fs: %s (steps wait; `lifecycle resume %s` after fixing it)",
                     channel, self.seconds, reason, channel)
        return pause

    def resume(self, channel: str) -> bool:
        return bool(self.redis.hdel(self.key, channel))

    def all(self) -> dict[str, Pause]:
        """Every recorded pause, including ones that have run out (for `lifecycle status`)."""
        return {channel: Pause(channel, **json.loads(raw)) for channel, raw in self.redis.hgetall(self.key).items()}
