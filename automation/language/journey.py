"""The journey model: what a journey file means once it has been read and checked.

Two kinds of journey, one step language:

- A *stage journey* names lifecycle stages in order. A contact is in the first stage
  whose `when` rule is true (a stage without `when` catches everyone left). Entering a
  stage starts a run of its steps; leaving it ends the run and cancels what is pending.
- A *triggered journey* starts a run of its steps when its trigger fires: an event, a
  stage entered or left, an attribute change, a date, a schedule, or a condition that
  becomes true. Its re-entry policy, goal and exit rules shape each run.

Steps are a tree of nodes (automation.flow). Any journey file may also define lead
scores (points per event, decaying over time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time as clock_time
from typing import Any, Mapping

from automation.expressions import Expression
from automation.language.flow import EMPTY_FLOW, Flow, SendNode
from automation.language.workspace import QuietHours

#: The scope name of a triggered journey's run (a stage journey's runs are named by stage).
RUN = "run"


@dataclass(frozen=True)
class Stage:
    name: str
    rule: Expression | None
    flow: Flow = EMPTY_FLOW
    description: str = ""
    line: int = 0
    goal: "Goal | None" = None

    @property
    def steps(self) -> tuple[SendNode, ...]:
        """The stage's sends, in file order (for reports and tests)."""
        return tuple(sorted(self.flow.sends(), key=lambda node: node.line))


@dataclass(frozen=True)
class Trigger:
    kind: str                           # event, enters, leaves, attribute, date, schedule, broadcast, when
    line: int
    event: str | None = None
    where: Expression | None = None     # a filter on the event, the change, or the contact
    journey: str | None = None          # enters / leaves: the stage journey ...
    stage: str | None = None            # ... and its stage
    attribute: str | None = None
    date: Expression | None = None
    at: clock_time | None = None
    offset_days: int = 0
    yearly: bool = False
    schedule: str | None = None         # cron, in the journey's time zone
    condition: Expression | None = None
    max_age: float = 86400.0            # event: older events (imported history) start nothing

    @property
    def broadcasts(self) -> bool:
        """Whether `lifecycle broadcast` may send the journey (a scheduled or an on-demand broadcast)."""
        return self.kind in ("schedule", "broadcast")


@dataclass(frozen=True)
class ReEntry:
    policy: str = "every_time"          # once, every_time, after (a cooldown since the last start)
    cooldown: float = 0.0


@dataclass(frozen=True)
class Goal:
    event: str
    where: Expression | None = None
    within: float = 30 * 86400.0        # conversions count this long after the run starts
    line: int = 0
    exit: bool = True                   # the conversion ends the run


@dataclass(frozen=True)
class ExitRule:
    line: int
    event: str | None = None
    where: Expression | None = None
    when: Expression | None = None


@dataclass(frozen=True)
class ScoreRule:
    event: str
    points: float
    where: Expression | None = None
    line: int = 0


@dataclass(frozen=True)
class ScoreDef:
    name: str
    half_life: float | None             # seconds; None: points never fade
    rules: tuple[ScoreRule, ...] = ()
    line: int = 0
    column: int = 1


@dataclass(frozen=True)
class Reference:
    """Something a journey names that another file should define, for the cross-journey checks.

    kind: attribute, event, score, journey (read by rules); trigger-event, goal-event, exit-event,
    wait-event, score-event (events the journey waits for); stage-enters / stage-leaves
    ("journey/stage", journey part empty when not given).
    """

    kind: str
    name: str
    line: int
    column: int


@dataclass(frozen=True)
class Journey:
    name: str
    path: str
    stages: tuple[Stage, ...] = ()
    flow: Flow = EMPTY_FLOW
    trigger: Trigger | None = None
    re_entry: ReEntry = field(default_factory=ReEntry)
    goal: Goal | None = None
    exits: tuple[ExitRule, ...] = ()
    audience: Expression | None = None
    locale: str = "en"
    timezone: str = "UTC"
    description: str = ""
    vars: Mapping[str, Any] = field(default_factory=dict)
    max_sms_segments: int = 2
    message_type: str = "marketing"         # its sends' type unless a step says otherwise
    priority: int = 0                       # wins the last slot of a frequency cap over lower ones
    quiet_hours: Mapping[str, QuietHours] | None = None   # None: the workspace's
    scores: tuple[ScoreDef, ...] = ()
    references: tuple[Reference, ...] = ()
    emits: frozenset[str] = frozenset()     # events its `track` steps record
    sets: frozenset[str] = frozenset()      # attributes its `set` steps change
    name_at: tuple[int, int] = (1, 1)       # where `journey:` is written, for cross-journey errors
    version: str = ""                       # the source text's hash (loader.version_of); "" when built by hand

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {stage.name: stage for stage in self.stages})

    @property
    def kind(self) -> str:
        return "stages" if self.stages else "triggered" if self.trigger else "scores"

    def stage(self, name: str) -> Stage | None:
        return self._by_name.get(name)  # type: ignore[attr-defined]

    def flow_of(self, scope: str | None) -> Flow | None:
        """The steps a run in `scope` (a stage name, or RUN) follows."""
        if scope == RUN and self.trigger is not None:
            return self.flow
        stage = self.stage(scope) if scope else None
        return stage.flow if stage else None

    def type_of(self, node: SendNode) -> str:
        """A send's message type: the step's, else the journey's (marketing by default)."""
        return node.message_type or self.message_type

    def goal_of(self, scope: str | None) -> Goal | None:
        stage = self.stage(scope) if scope and scope != RUN else None
        return stage.goal if stage and stage.goal else self.goal
