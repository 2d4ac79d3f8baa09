"""The channel adapter interface: render -> send -> classify.

An adapter turns a rendered message into a provider call and classifies what
happened as one of four results, which the engine acts on:

- `Sent`: done; the provider's message id is kept for matching delivery events.
- `Retry`: try again after `after` seconds (rate limit, 5xx, timeout), with backoff.
- `Failed`: will not work for this contact; `reason` says why and `effect` asks the
  engine to update the contact (turn SMS consent off after STOP, mark a number invalid).
- `Misconfigured`: will not work for anyone until ops fix something (401, 403): the
  engine pauses the channel and keeps every step waiting, nothing is lost.

Adapters declare the journey channels they serve, the message parts their templates
must provide and the step options they accept. The engine checks consent and the
address before calling `send`, so an adapter only ever talks to its provider.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Mapping, Sequence, Union

from automation.config import Settings


#: The header that marks a test message (`lifecycle test-send`) where a provider or receiver keeps headers.
TEST_HEADER = "X-Lifecycle-Test"


@dataclass(frozen=True)
class Delivery:
    """One message to one contact, with the ids that make it traceable and idempotent."""

    key: str                    # idempotency key: journey:stage:occurrence:step:contact
    contact_id: str
    journey: str
    stage: str
    step: str
    channel: str
    template: str               # "" for steps without a template (webhook, provider templates)
    locale: str
    to: Any                     # email address, phone number, list of device tokens, URL
    parts: Mapping[str, str]    # rendered parts: subject/html/text, body, title/body
    at: float = 0.0             # when it is sent, on the journey clock (epoch seconds)
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)   # our ids, for provider callbacks
    options: Mapping[str, Any] = field(default_factory=dict)    # the step's `options:` (and `url:`)
    data: Mapping[str, Any] = field(default_factory=dict)       # JSON-able step data (webhooks, provider templates)
    #: A test message (`lifecycle test-send`): adapters pass the mark on with our ids, so the
    #: provider's reports about it are ignored by the webhooks.
    test: bool = False


@dataclass(frozen=True)
class Remove:
    """An effect that removes values from a list attribute (e.g. a dead push token)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Sent:
    provider_id: str = ""
    detail: str = ""
    #: Facts recorded with the outcome, e.g. {"segments": 2, "encoding": "UCS-2"}.
    info: Mapping[str, Any] = field(default_factory=dict)
    #: Contact changes learnt while sending, e.g. {"push_tokens": Remove(("dead-token",))}.
    effect: Mapping[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Misconfigured:
    """The provider refused our credentials or account (401/403): pause the channel."""

    reason: str


Result = Union[Sent, Retry, Failed, Misconfigured]


@dataclass(frozen=True)
class Check:
    """One line of `lifecycle check-config`."""

    level: str      # "ok", "warning" or "error"
    message: str


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
    #: False for notifications that do not go to the contact (a webhook to your CRM): no
    #: consent is needed and the address comes from the step.
    needs_consent: ClassVar[bool] = True
    #: Step options this adapter accepts under `options:` (name -> what it does), for validation.
    options: ClassVar[Mapping[str, str]] = {}
    #: How many provider requests `send_many` makes at once (adapters with a pool set their own).
    concurrency: int = 1

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.env = os.environ if env is None else env

    def address(self, channel: str, contact: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        """Where this contact receives `channel` messages, or None if they cannot."""
        if channel == "email":
            return None if contact.get("email_invalid") else contact.get("email")
        if channel == "sms":
            return None if contact.get("phone_invalid") else contact.get("phone")
        if channel == "push":
            tokens = contact.get("push_tokens")
            return list(tokens) if tokens else None
        return contact.get(channel)

    def missing_address(self, channel: str) -> str:
        """Why a contact that `address` finds no address for is skipped (the ledger's reason)."""
        return {"email": "no valid email address", "sms": "no valid phone number",
                "push": "no push token"}.get(channel, f"no {channel} address")

    def unsubscribe_link(self, channel: str) -> bool:
        """Whether messages on `channel` carry a one-click unsubscribe link (templates see
        `unsubscribe_url`) and the RFC 8058 List-Unsubscribe headers: bulk email must."""
        return channel == "email"

    def template_required(self, channel: str, options: Mapping[str, Any]) -> bool:
        """Whether a step on `channel` with these options must name a template."""
        return True

    def consent_needed(self, channel: str) -> bool:
        """Whether the contact must have consented to `channel` (see `needs_consent`)."""
        return self.needs_consent

    def check_options(self, channel: str, options: Mapping[str, Any]) -> list[str]:
        """Problems with a step's options, as messages (called by `lifecycle validate`)."""
        return []

    def requests(self, deliveries: Sequence[Delivery]) -> list[list[int]]:
        """How `send_many` groups these deliveries into provider requests, as lists of indexes.

        The engine marks a step "sending" just before the request that carries it is made, so
        a crash leaves in doubt only the messages of the requests in flight. It calls `send_many`
        with the deliveries of at most `concurrency` requests at a time. The default, one request
        per delivery, is what `send` does; an adapter whose provider takes several messages in
        one request (SendGrid's personalizations) says how it groups them.
        """
        return [[index] for index in range(len(deliveries))]

    @abstractmethod
    def send(self, delivery: Delivery) -> Result:
        """Send one message and classify the outcome. Must not raise for provider errors."""

    def send_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        """Send several messages (the requests of one `requests()` wave), one result each, in
        order; adapters whose provider takes batches, or that can send concurrently, override this."""
        return [self.send(delivery) for delivery in deliveries]

    def check(self) -> list[Check]:
        """What is configured and what is missing, without sending anything."""
        return [Check("ok", f"{self.name}: no configuration needed")]

    def close(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Release connections; called when a worker stops."""


def retry_after(value: str | None, default: float) -> float:
    """Seconds from a provider's Retry-After header, which is either seconds or an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default
