"""The journey model: what a journey file means once it has been read and checked.

A journey names lifecycle stages in order. A contact is in the first stage whose
`when` rule is true (a stage without `when` catches everyone left). Entering a
stage schedules its steps one after another: each step waits its `delay` after
the previous one (the first after entering), then sends a template on a channel
if its condition holds. Leaving the stage cancels whatever is still pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .expressions import Expression


@dataclass(frozen=True)
class Step:
    id: str
    delay: float
    channel: str
    template: str                       # "" when the channel needs none (webhook, provider template)
    condition: Expression | None = None
    line: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    max_segments: int | None = None     # SMS: warn in `validate` above this many segments


@dataclass(frozen=True)
class Stage:
    name: str
    rule: Expression | None
    steps: tuple[Step, ...] = ()
    description: str = ""
    line: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {step.id: i for i, step in enumerate(self.steps)})

    def step_index(self, step_id: str) -> int | None:
        return self._index.get(step_id)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Journey:
    name: str
    path: str
    stages: tuple[Stage, ...]
    audience: Expression | None = None
    locale: str = "en"
    description: str = ""
    vars: Mapping[str, Any] = field(default_factory=dict)
    max_sms_segments: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {stage.name: stage for stage in self.stages})

    def stage(self, name: str) -> Stage | None:
        return self._by_name.get(name)  # type: ignore[attr-defined]
