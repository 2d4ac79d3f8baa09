"""Channel adapters, discovered through the `lifecycle.channels` entry-point group.

A journey step says `send: email`; settings route each journey channel to an
adapter (`LIFECYCLE_CHANNEL_EMAIL=outbox` by default). A plugin package adds an
adapter by declaring an entry point in that group; see docs/adapters.md.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Mapping

from automation.channels.base import (
    Channel,
    Check,
    Delivery,
    Failed,
    Misconfigured,
    Remove,
    Result,
    Retry,
    Sent,
    retry_after,
)
from automation.channels.outbox import OutboxChannel
from automation.config import Settings
from automation.messages.templates import MESSAGE_PARTS

logger = logging.getLogger(__name__)
GROUP = "lifecycle.channels"

__all__ = ["Channel", "Check", "Delivery", "Failed", "Misconfigured", "Remove", "Result", "Retry", "Sent",
           "ChannelRegistry", "available_adapters", "retry_after"]


def available_adapters() -> dict[str, type[Channel]]:
    """Adapter classes by name, from installed entry points (the built-in outbox always)."""
    found: dict[str, type[Channel]] = {OutboxChannel.name: OutboxChannel}
    for entry in entry_points(group=GROUP):
        try:
            adapter = entry.load()
        except Exception as exc:  # a broken plugin must not take the other channels down
            logger.error("channel adapter %r (%s) failed to load: %s", entry.name, entry.value, exc)
            continue
        if not (isinstance(adapter, type) and issubclass(adapter, Channel)):
            logger.error("entry point %r does not name a Channel subclass", entry.name)
            continue
        found[entry.name] = adapter
    return found


class ChannelRegistry:
    """The adapter instance serving each journey channel in this process."""

    def __init__(self, settings: Settings, adapters: Mapping[str, type[Channel]] | None = None,
                 instances: Mapping[str, Channel] | None = None) -> None:
        self.settings = settings
        classes = dict(adapters or available_adapters())
        self._by_channel: dict[str, Channel] = {}
        self.problems: list[str] = []
        shared: dict[str, Channel] = {}
        for channel, adapter_name in settings.channels.items():
            if instances and channel in instances:
                self._by_channel[channel] = instances[channel]
                continue
            cls = classes.get(adapter_name)
            if cls is None:
                self.problems.append(f"channel {channel!r}: no adapter named {adapter_name!r} "
                                     f"(installed: {', '.join(sorted(classes))})")
                continue
            if channel not in cls.channels:
                self.problems.append(f"channel {channel!r}: adapter {adapter_name!r} only serves "
                                     f"{', '.join(cls.channels)}")
                continue
            if adapter_name not in shared:
                shared[adapter_name] = cls(settings)
            self._by_channel[channel] = shared[adapter_name]

    @property
    def names(self) -> list[str]:
        return sorted(self._by_channel)

    @property
    def adapters(self) -> dict[str, Channel]:
        """The adapter serving each journey channel."""
        return dict(self._by_channel)

    def get(self, channel: str) -> Channel | None:
        return self._by_channel.get(channel)

    def parts_for(self, channel: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        adapter = self._by_channel.get(channel)
        if adapter is not None and channel in adapter.parts:
            return adapter.parts[channel]
        return MESSAGE_PARTS.get(channel, (("body",), ()))

    def close(self) -> None:
        for adapter in {id(a): a for a in self._by_channel.values()}.values():
            adapter.close()
