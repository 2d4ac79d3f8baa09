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
    template: str
    condition: Expression | None = None
    line: int = 0


@dataclass(frozen=True)
class Stage:
    name: str
    rule: Expression | None
    steps: tuple[Step, ...] = ()
    description: str = ""
    line: int = 0

    def step_index(self, step_id: str) -> int | None:
        for index, step in enumerate(self.steps):
            if step.id == step_id:
                return index
        return None


@dataclass(frozen=True)
class Journey:
    name: str
    path: str
    stages: tuple[Stage, ...]
    audience: Expression | None = None
    locale: str = "en"
    description: str = ""
    vars: Mapping[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None
