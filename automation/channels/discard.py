"""The discard adapter: the whole pipeline runs, nothing leaves the building.

Templates are rendered, consent and addresses checked, outcomes recorded, but
the message is dropped. For dry runs of a journey in staging, load tests, and
the throughput benchmark (bench/), where it measures the engine, not a provider.
"""

from __future__ import annotations

from typing import Sequence

from automation.channels.base import Channel, Check, Delivery, Result, Sent


class DiscardChannel(Channel):
    name = "discard"
    channels = ("email", "sms", "push")
    idempotent = True

    def requests(self, deliveries: Sequence[Delivery]) -> list[list[int]]:
        # Local and idempotent: a batch is one "request", and one that a crash interrupts is simply
        # written again (an existing message is never written twice).
        return [list(range(len(deliveries)))] if deliveries else []

    def check(self) -> list[Check]:
        return [Check("warning", "discard: messages are rendered and recorded but not sent")]

    def send(self, delivery: Delivery) -> Result:
        return Sent(provider_id="discarded")

    def send_many(self, deliveries):  # type: ignore[override]
        return [Sent(provider_id="discarded")] * len(deliveries)
