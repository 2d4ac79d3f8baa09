"""A programmable provider for engine tests: records deliveries, answers from a script."""

from __future__ import annotations

from typing import Any

from automation.channels import Channel, Delivery, Sent


class Provider(Channel):
    """Stands in for an external provider behind the adapter interface (not for our own code)."""

    name = "provider"
    channels = ("email", "sms", "push")

    def __init__(self, settings: Any, answers: list | None = None, idempotent: bool = False) -> None:
        super().__init__(settings)
        self.calls: list[Delivery] = []
        self.answers = list(answers or [])
        self.idempotent = idempotent  # type: ignore[misc]

    def send(self, delivery: Delivery):
        self.calls.append(delivery)
        answer = self.answers.pop(0) if self.answers else Sent(f"p-{len(self.calls)}")
        if isinstance(answer, BaseException):
            raise answer
        return answer
