"""Everything a worker needs to execute timers, built once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .channels import ChannelRegistry
from .contacts import ContactStore
from .loader import TemplateCheck
from .pauses import ChannelPauses
from .ratelimit import RateLimiter
from .registry import JourneyRegistry
from .runtime import Runtime
from .scripts import Scripts
from .templates import Renderer, TemplateCatalog
from .timers import TimerStore

logger = logging.getLogger(__name__)


@dataclass
class Engine:
    runtime: Runtime
    journeys: JourneyRegistry
    renderer: Renderer
    catalog: TemplateCatalog
    channels: ChannelRegistry
    store: ContactStore
    scripts: Scripts
    timers: TimerStore
    pauses: ChannelPauses
    limiter: RateLimiter

    @classmethod
    def create(cls, runtime: Runtime, channels: ChannelRegistry | None = None) -> "Engine":
        settings = runtime.settings
        channels = channels or ChannelRegistry(settings)
        catalog = TemplateCatalog(settings.templates_dir)
        renderer = Renderer(catalog, channels.parts_for)
        journeys = JourneyRegistry(settings.journeys_dir, channels.adapters, TemplateCheck(catalog, renderer),
                                   settings.reload_seconds)
        if not journeys.journeys:
            logger.warning("no journeys are served: none load from %s", settings.journeys_dir)
        for problem in channels.problems:
            logger.error("channel configuration: %s", problem)
        scripts = Scripts(runtime.redis)
        return cls(runtime, journeys, renderer, catalog, channels, ContactStore(runtime), scripts,
                   TimerStore(runtime), ChannelPauses(runtime), RateLimiter(runtime, settings.rate_limits, scripts))

    def close(self) -> None:
        self.channels.close()

