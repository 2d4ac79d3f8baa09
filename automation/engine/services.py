"""Everything a worker needs to execute timers, built once per process."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from automation.channels import ChannelRegistry
from automation.engine.broadcasts import arm_broadcasts
from automation.engine.liveness import Liveness
from automation.engine.migration import Candidate, Versions, follow
from automation.engine.scores import definitions
from automation.language.flow import WaitForNode
from automation.language.journey import Journey, ScoreDef
from automation.language.registry import JourneyRegistry
from automation.messages.templates import Renderer, TemplateCatalog, TemplateCheck
from automation.sandbox import RenderBudget
from automation.runtime import Runtime
from automation.store import versions
from automation.store.contacts import ContactStore
from automation.store.fields import Enrollment
from automation.store.keys import WATCH_PUBLISHED
from automation.store.pauses import ChannelPauses
from automation.store.ratelimit import RateLimiter
from automation.store.scripts import Scripts
from automation.store.timers import TimerStore
from automation.store.versions import DeployedSource

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
    #: Names this process in its "sending" marks; its heartbeat (`liveness`) says it is alive.
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _scores: tuple[int, dict[str, ScoreDef]] = field(default=(0, {}), repr=False)

    def __post_init__(self) -> None:
        self.liveness = Liveness(self.runtime, self.worker_id)
        self.versions = Versions(self.runtime, self.channels.adapters)

    @classmethod
    def create(cls, runtime: Runtime, channels: ChannelRegistry | None = None, publish: bool = True) -> "Engine":
        """The engine of a worker process; `publish=False` for read-only uses (dry runs) that must not
        write what the served journeys watch or arm their broadcasts."""
        settings = runtime.settings
        channels = channels or ChannelRegistry(settings)
        catalog = TemplateCatalog(settings.templates_dir)
        renderer = Renderer(catalog, channels.parts_for, RenderBudget.of(settings))
        # LIFECYCLE_DEPLOY=required: serve what `lifecycle deploy` recorded, not the files as they are.
        deployed = DeployedSource(runtime) if settings.deploy == "required" else None
        journeys = JourneyRegistry(settings.journeys_dir, channels.adapters, TemplateCheck(catalog, renderer),
                                   settings.reload_seconds, deployed)
        if not journeys.journeys:
            logger.warning("no journeys are served: none load from %s", settings.journeys_dir)
        for problem in channels.problems:
            logger.error("channel configuration: %s", problem)
        scripts = Scripts(runtime.redis)
        engine = cls(runtime, journeys, renderer, catalog, channels, ContactStore(runtime), scripts,
                     TimerStore(runtime), ChannelPauses(runtime), RateLimiter(runtime, settings.rate_limits, scripts))
        if not publish:
            return engine
        journeys.on_change.append(engine.publish)
        try:
            engine.publish(journeys.journeys)
        except Exception:  # Redis not reachable yet: the next reload publishes
            logger.exception("could not publish the journeys' watch lists and broadcast timers")
        return engine

    def publish(self, journeys: Mapping[str, Journey]) -> None:
        """Tell the contact store what journeys react to, and arm scheduled broadcasts."""
        events, attributes = watched(journeys.values())
        keys = self.runtime.keys
        pipe = self.runtime.redis.pipeline(transaction=False)
        pipe.sadd(keys.watched_events, WATCH_PUBLISHED, *sorted(events))
        pipe.sadd(keys.watched_attributes, WATCH_PUBLISHED, *sorted(attributes))
        pipe.execute()
        arm_broadcasts(self.runtime, journeys.values())
        if self.runtime.settings.deploy == "auto":
            self.follow(journeys)

    def follow(self, journeys: Mapping[str, Journey]) -> None:
        """Files changed (LIFECYCLE_DEPLOY=auto): record the new versions and move the waiting runs by
        the rules of `lifecycle deploy`, logging the plan (one worker does it; the others find it done)."""
        current = versions.pointers(self.runtime)
        candidates = []
        for journey in journeys.values():
            text = self.journeys.text_of(journey.name)
            if journey.version and current.get(journey.name) != journey.version and text is not None:
                candidates.append(Candidate(journey, text))
        if candidates:
            follow(self.runtime, candidates, self.channels.adapters, f"worker:{self.worker_id}")

    def step_of(self, journey: Journey, enrollment: Enrollment) -> str | None:
        """The step a run waits at, in the version of the journey this process serves: a run written by
        an older (or newer) version is matched step by step (language/diff.py) until a deploy or its
        next step moves it onto this one."""
        step = enrollment.step
        if step is None or not journey.version or not enrollment.version or enrollment.version == journey.version:
            return step
        diff = self.versions.diff(enrollment.version, journey)
        if diff.old is None or enrollment.stage is None:
            return step
        return diff.matches.get(enrollment.stage, {}).get(step) or step

    def scores(self) -> dict[str, ScoreDef]:
        """The lead scores the served journeys define (computed again when the journeys change)."""
        served = self.journeys.journeys
        if self._scores[0] != id(served):
            self._scores = (id(served), definitions(served.values()))
        return self._scores[1]

    def close(self) -> None:
        self.liveness.stop()
        self.channels.close()



def watched(journeys: Iterable[Journey]) -> tuple[set[str], set[str]]:
    """The events and attributes the journeys react to: only these wait in contacts' inboxes."""
    events: set[str] = set()
    attributes: set[str] = set()
    for journey in journeys:
        trigger = journey.trigger
        if trigger is not None and trigger.kind == "event" and trigger.event:
            events.add(trigger.event)
        if trigger is not None and trigger.kind == "attribute" and trigger.attribute:
            attributes.add(trigger.attribute)
        for goal in [journey.goal, *(stage.goal for stage in journey.stages)]:
            if goal is not None:
                events.add(goal.event)
        events.update(rule.event for rule in journey.exits if rule.event)
        events.update(rule.event for score in journey.scores for rule in score.rules)
        for flow in [journey.flow, *(stage.flow for stage in journey.stages)]:
            events.update(node.event for node in flow.nodes.values() if isinstance(node, WaitForNode))
    return events, attributes
