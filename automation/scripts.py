"""The Lua scripts that make multi-key changes atomic (see automation/lua/*.lua)."""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script

NAMES = ("claim", "ack", "record_event", "transition", "mark", "record_step")


class Scripts:
    """Registered scripts of one Redis client; redis-py caches them by SHA and reloads on NOSCRIPT."""

    def __init__(self, client: redis.Redis) -> None:
        lua = resources.files("automation") / "lua"
        for name in NAMES:
            setattr(self, name, client.register_script((lua / f"{name}.lua").read_text()))

    claim: Script
    ack: Script
    record_event: Script
    transition: Script
    mark: Script
    record_step: Script
