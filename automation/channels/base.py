"""The channel adapter interface: render -> send -> classify.

An adapter turns a rendered message into a provider call and classifies what
happened as one of three results, which the engine acts on:

- `Sent`: done; the provider's message id is kept for matching delivery events.
- `Retry`: try again after `after` seconds (rate limit, 5xx, timeout).
- `Failed`: will not work for this contact; `reason` says why and `effect` asks the
  engine to update the contact (e.g. turn SMS consent off after STOP).

Adapters declare which journey channels they serve and the message parts their
templates must provide. The engine never calls a provider for a contact without
consent or without an address on that channel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence, Union

from ..config import Settings


@dataclass(frozen=True)
class Delivery:
    """One message to one contact, with the ids that make it traceable and idempotent."""

    key: str                    # idempotency key: journey:stage:occurrence:step:contact
    contact_id: str
    journey: str
    stage: str
    step: str
    channel: str
    template: str
    locale: str
    to: Any                     # email address, phone number or list of device tokens
    parts: Mapping[str, str]    # rendered parts: subject/html/text, body, title/body
    at: float = 0.0             # when it is sent, on the journey clock (epoch seconds)
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    provider_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Retry:
    after: float
    reason: str


@dataclass(frozen=True)
class Failed:
    reason: str
    code: str = "failed"
    #: Contact attributes to set because of this failure, e.g. {"consent.sms": False}.
    effect: Mapping[str, Any] = field(default_factory=dict)


Result = Union[Sent, Retry, Failed]


class Channel(ABC):
    """Base class of channel adapters; one subclass per provider, one file each."""

    #: Adapter name used in configuration (LIFECYCLE_CHANNEL_EMAIL=<name>) and in the entry point.
    name: ClassVar[str]
    #: Journey channels this adapter can serve.
    channels: ClassVar[tuple[str, ...]]
    #: True if sending the same Delivery.key twice reaches the contact once (the provider
    #: deduplicates). Then a send interrupted by a crash is simply sent again.
    idempotent: ClassVar[bool] = False
    #: Parts per served channel: (required, optional). Defaults come from templates.MESSAGE_PARTS.
    parts: ClassVar[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {}

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def address(self, channel: str, contact: Mapping[str, Any]) -> Any:
        """Where this contact receives `channel` messages, or None if they cannot."""
        if channel == "email":
            return contact.get("email")
        if channel == "sms":
            return contact.get("phone")
        if channel == "push":
            tokens = contact.get("push_tokens")
            return list(tokens) if tokens else None
        return contact.get(channel)

    @abstractmethod
    def send(self, delivery: Delivery) -> Result:
        """Send one message and classify the outcome. Must not raise for provider errors."""

    def send_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        """Send several messages; adapters whose provider takes batches override this."""
        return [self.send(delivery) for delivery in deliveries]

    def close(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Release connections; called when a worker stops."""
