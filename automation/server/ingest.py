"""Segment's calls (identify, track, page, screen, alias, batch) as our contacts and events.

The mapping (docs/api.md):

- the contact is `userId`; without one, `anonymousId` names an anonymous visitor whose calls wait
  (automation.store.anonymous) until an identify or alias links it to a contact;
- identify: `traits` are the contact's attributes (nested ones flattened, `address.city`);
  `context.locale` and `context.timezone` become the `locale` and `timezone` attributes unless the
  traits set them;
- track: `event` and `properties`; page and screen are the events `page_view` and `screen_view`,
  with `name` and `category` added to their properties;
- alias: `previousId` (an anonymous id) is linked to `userId`;
- `messageId` is the event's id (a repeat within 7 days is ignored); `timestamp` is when it
  happened, corrected for the sender's clock as Segment does: timestamp + (received - sentAt);
- `integrations`, the rest of `context`, `version`, `channel`, `writeKey` are accepted and unused.

Every value goes through automation.events' checks (check_contact_id, check_attributes,
parse_event); this module only knows Segment's shape. A message it refuses raises InputError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from automation.errors import InputError
from automation.events import Event, check_attributes, check_contact_id, parse_event
from automation.expressions import to_timestamp
from automation.runtime import Runtime
from automation.store.anonymous import AnonymousStore, Pending
from automation.store.contacts import ContactStore

TYPES = ("identify", "track", "page", "screen", "alias")
#: Fields every Segment call may carry.
COMMON = frozenset({"type", "userId", "anonymousId", "context", "integrations", "timestamp", "sentAt", "receivedAt",
                    "originalTimestamp", "messageId", "version", "channel", "writeKey"})
FIELDS = {
    "identify": COMMON | {"traits"},
    "track": COMMON | {"event", "properties"},
    "page": COMMON | {"name", "category", "properties"},
    "screen": COMMON | {"name", "category", "properties"},
    "alias": COMMON | {"previousId"},
}
#: Fields of a /v1/batch body besides `batch`: defaults for its messages, and the library's own.
BATCH_FIELDS = frozenset({"batch", "sentAt", "context", "integrations", "writeKey", "metadata"})
EVENT_NAMES = {"page": "page_view", "screen": "screen_view"}
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH = 2500


@dataclass
class Outcome:
    """What a batch did: messages stored, and those refused with why (by their index)."""

    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Defaults:
    """What a batch's top level gives its messages: a context and the time it was sent."""

    context: Mapping[str, Any] = field(default_factory=dict)
    sent_at: float | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "Defaults":
        return cls(_object(body, "context"), _time(body.get("sentAt"), "sentAt"))


NO_DEFAULTS = Defaults()


@dataclass(frozen=True)
class Call:
    """One checked message, ready to store."""

    kind: str                      # "event", "identify" or "alias"
    contact_id: str | None         # the user, or None for an anonymous visitor
    anonymous_id: str | None
    event: Event | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def _id(message: Mapping[str, Any], name: str) -> str | None:
    value = message.get(name)
    if value is None or value == "":
        return None
    try:
        return check_contact_id(value)
    except InputError as error:
        raise InputError(f"{name}: {error}") from None


def _object(message: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):  # parsed JSON: objects are dicts (and this check is cheap)
        raise InputError(f"{name} must be a JSON object")
    return value


def _time(value: Any, name: str) -> float | None:
    if value is None:
        return None
    timestamp = to_timestamp(value)
    if timestamp is None:
        raise InputError(f"{name} {value!r} is not an ISO 8601 time")
    return timestamp


def check_message(message: object, received: float, defaults: Defaults = NO_DEFAULTS,
                  kind: str | None = None, measure: bool = True) -> Call:
    """One Segment message as a Call; `kind` is the endpoint's type (a batch message names its own).
    `measure=False`: the message is known to be small (its whole request is), its size is not checked."""
    if not isinstance(message, dict):
        raise InputError("a message must be a JSON object")
    declared = message.get("type")
    kind = kind or declared
    if not isinstance(kind, str) or kind not in FIELDS:
        raise InputError(f"type {declared!r} is not supported (types: {', '.join(TYPES)})")
    if declared is not None and declared != kind:
        raise InputError(f"type {declared!r} sent to the {kind} endpoint")
    unknown = sorted(set(message) - FIELDS[kind])
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} in a {kind} call")
    if measure and len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()) > MAX_EVENT_BYTES:
        raise InputError(f"a message is larger than {MAX_EVENT_BYTES // 1024} KB")
    context = _object(message, "context")
    _object(message, "integrations")
    user, anonymous = _id(message, "userId"), _id(message, "anonymousId")
    if kind == "alias":
        previous = _id(message, "previousId")
        if user is None or previous is None:
            raise InputError("an alias needs userId and previousId")
        return Call("alias", user, previous)
    if user is None and anonymous is None:
        raise InputError("userId or anonymousId is required")
    if kind == "identify":
        traits = dict(_object(message, "traits"))
        for name in ("locale", "timezone"):
            value = context.get(name, defaults.context.get(name))
            if value not in (None, "") and name not in traits:
                traits[name] = value
        try:
            attributes = check_attributes(traits)
        except InputError as error:
            raise InputError(f"traits: {error}") from None
        return Call("identify", user, anonymous, attributes=attributes)
    # track, page, screen: an event, at the sender's time corrected for its clock's skew.
    at = _time(message.get("timestamp"), "timestamp")
    sent = _time(message["sentAt"], "sentAt") if "sentAt" in message else defaults.sent_at
    if at is not None and sent is not None:
        at += received - sent
    properties = message.get("properties")
    name = message.get("event")
    if kind in EVENT_NAMES:
        properties = dict(_object(message, "properties"))
        for extra in ("name", "category"):
            if message.get(extra) is not None:
                properties[extra] = message[extra]
        name = EVENT_NAMES[kind]
    event = parse_event({"contact_id": user or anonymous, "event": name, "timestamp": at, "properties": properties,
                         "id": message.get("messageId")}, received)
    return Call("event", user, anonymous, event=event)


class Ingest:
    """Stores checked calls: events pipelined in order, identifies and aliases linking anonymous ids."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.contacts = ContactStore(runtime)
        self.anonymous = AnonymousStore(runtime)

    def one(self, kind: str, message: object) -> None:
        """A single call (/v1/track ...); InputError if it is refused."""
        self.store([check_message(message, self.runtime.clock.now(), kind=kind, measure=False)])

    def batch(self, body: object, size: int = MAX_EVENT_BYTES + 1) -> Outcome:
        """A /v1/batch body (of `size` bytes): the good messages are stored, the others listed with why."""
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise InputError("a batch is a JSON object with a list `batch`")
        unknown = sorted(set(body) - BATCH_FIELDS)
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r} in a batch")
        messages = body["batch"]
        if len(messages) > MAX_BATCH:
            raise InputError(f"a batch holds at most {MAX_BATCH} messages")
        now = self.runtime.clock.now()
        defaults = Defaults.of(body)
        outcome, calls = Outcome(), []
        for index, message in enumerate(messages):
            try:
                calls.append(check_message(message, now, defaults, measure=size > MAX_EVENT_BYTES))
            except InputError as error:
                outcome.rejected.append({"index": index, "message": str(error)})
        self.store(calls)
        outcome.accepted = len(calls)
        return outcome

    def store(self, calls: Iterable[Call]) -> None:
        events: list[Event] = []
        for call in calls:
            if call.kind == "event" and call.contact_id is not None:
                events.append(call.event)  # type: ignore[arg-type]
                continue
            self.contacts.track_many(events)      # in order: what came before an identify is stored first
            events = []
            if call.kind == "event":
                assert call.anonymous_id is not None and call.event is not None
                linked = self.anonymous.keep(call.anonymous_id, Pending(event=call.event))
                if linked is not None:
                    self.contacts.track(_on(call.event, linked))
            elif call.kind == "identify" and call.contact_id is None:
                assert call.anonymous_id is not None
                linked = self.anonymous.keep(call.anonymous_id, Pending(attributes=call.attributes))
                if linked is not None:
                    self.contacts.identify_many([(linked, call.attributes)])
            else:
                assert call.contact_id is not None
                if call.anonymous_id is not None:
                    self._merge(call.anonymous_id, call.contact_id)
                if call.kind == "identify":
                    self.contacts.identify_many([(call.contact_id, call.attributes)])
        self.contacts.track_many(events)

    def _merge(self, anonymous_id: str, contact_id: str) -> None:
        """The anonymous visitor's traits and events, recorded on the contact (traits first: the
        identify that linked them has the newer values)."""
        pending = self.anonymous.link(anonymous_id, contact_id)
        traits = [(contact_id, item.attributes) for item in pending if item.event is None]
        if traits:
            self.contacts.identify_many(traits)
        self.contacts.track_many([item.event for item in pending if item.event is not None])


def _on(event: Event, contact_id: str) -> Event:
    return Event(contact_id, event.name, event.at, event.properties, event.id)
