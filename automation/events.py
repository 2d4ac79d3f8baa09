"""Events and contact attributes as they come in: checked here, rejected with a reason.

Everything that enters the engine (Python API, CLI, CSV/JSONL import) goes
through `parse_event` or `check_attributes`, so a malformed input is refused the
same way everywhere and never half-written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from automation.errors import InputError
from automation.expressions import to_timestamp

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
# BCP 47 as sources write it: any case, `_` or `-` (zh_TW, RU, en-US-u-ca-gregory); negotiation reads it.
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
# Size limits, in bytes of JSON as stored (UTF-8). Values over 64 bytes already leave Redis's
# compact hash encoding, so these do not keep a contact compact; they bound what one contact
# costs, since its whole hash is read at every evaluation and its events are copied into its
# recent events and inbox. Real profiles and events stay far below them.
#: One attribute value: an address, a note or a list of device tokens fits many times over.
MAX_ATTRIBUTE_BYTES = 8 * 1024
#: One identify, all names and values together: Segment's limit per call, so what passes there passes here.
MAX_IDENTIFY_BYTES = 32 * 1024
#: One event's properties: kept with the last LIFECYCLE_RECENT_EVENTS events of the contact and, for
#: events a journey watches, in its inbox (up to LIFECYCLE_INBOX_LENGTH items while workers lag).
MAX_PROPERTIES_BYTES = 8 * 1024
MAX_EVENT_ID_LENGTH = 256
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Events may be a little in the future (clock skew between machines), not more.
MAX_FUTURE_SKEW = 300.0


@dataclass(frozen=True)
class Event:
    contact_id: str
    name: str
    at: float
    properties: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    def to_json(self) -> str:
        """Compact form kept in the contact's recent-event list: [name, whole seconds, properties]."""
        item: list[Any] = [self.name, int(self.at)]
        if self.properties:
            item.append(dict(self.properties))
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


def check_contact_id(value: object) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InputError("contact id must be a string")
    text = str(value).strip()
    if not text:
        raise InputError("contact id is empty")
    if len(text) > 256:
        raise InputError("contact id is longer than 256 characters")
    if "|" in text or _CONTROL.search(text) or any(ch.isspace() for ch in text):
        raise InputError(f"contact id {text!r} contains whitespace, '|' or control characters")
    if _SURROGATE.search(text):
        raise InputError(f"contact id {text!r} is not valid Unicode text")
    return text


def check_event_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError("event name is missing")
    name = value.strip()
    if len(name) > 128:
        raise InputError("event name is longer than 128 characters")
    if "|" in name or _CONTROL.search(name):
        raise InputError(f"event name {name!r} contains '|' or control characters")
    if _SURROGATE.search(name):
        raise InputError(f"event name {name!r} is not valid Unicode text")
    return name


def _size(limit: int) -> str:
    return f"{limit:,} bytes ({limit // 1024} KB)"


def json_size(value: object, what: str) -> int:
    """Bytes of `value` as stored (JSON in UTF-8); InputError naming `what` if it cannot be stored."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise InputError(f"{what} is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not plain JSON: {exc}") from None
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        # A lone surrogate ("\udc80" in JSON) is valid in a Python str, not in UTF-8 or Redis.
        raise InputError(f"{what} holds text that is not valid Unicode (a lone surrogate)") from None


def parse_time(value: object, now: float, what: str = "timestamp") -> float:
    """Epoch seconds from an ISO 8601 string or a number; missing means now."""
    if value is None or value == "":
        return now
    timestamp = to_timestamp(value)
    if timestamp is None or not math.isfinite(timestamp):
        raise InputError(f"{what} {value!r} is not an ISO 8601 time or epoch seconds")
    if timestamp > now + MAX_FUTURE_SKEW:
        raise InputError(f"{what} {value!r} is in the future")
    if timestamp < 0:
        # Event statistics keep whole epoch seconds; nothing that happened before 1970 is an event.
        raise InputError(f"{what} {value!r} is before 1970")
    return timestamp


def parse_event(data: object, now: float) -> Event:
    """An Event from a mapping such as {"contact_id", "event", "timestamp", "properties", "id"}."""
    if not isinstance(data, Mapping):
        raise InputError("an event must be a JSON object")
    known = {"contact_id", "event", "name", "timestamp", "at", "properties", "id", "attributes"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} (fields: contact_id, event, timestamp, properties, id)")
    contact_id = check_contact_id(data.get("contact_id"))
    name = check_event_name(data.get("event", data.get("name")))
    at = parse_time(data.get("timestamp", data.get("at")), now)
    # No properties (left out or null) is an event without any; anything else must be an object.
    properties = data.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, Mapping):
        raise InputError("properties must be a JSON object")
    size = json_size(properties, "properties")
    if size > MAX_PROPERTIES_BYTES:
        raise InputError(f"properties are {size:,} bytes as JSON; the limit is {_size(MAX_PROPERTIES_BYTES)} per event")
    event_id = data.get("id")
    if event_id is not None and (not isinstance(event_id, (str, int)) or not str(event_id).strip()):
        raise InputError("id must be a non-empty string")
    if event_id is not None and (len(str(event_id)) > MAX_EVENT_ID_LENGTH or _SURROGATE.search(str(event_id))):
        raise InputError(f"id must be valid text of at most {MAX_EVENT_ID_LENGTH} characters")
    return Event(contact_id, name, at, dict(properties), str(event_id) if event_id is not None else None)


def flatten(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"consent": {"email": True}} -> {"consent.email": True}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in attributes.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "y", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "no", "0", "n", "off"}:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InputError(f"{name} must be true or false, not {value!r}")


def check_attributes(attributes: object) -> dict[str, Any]:
    """Flattened, checked attributes; None values mean "remove this attribute"."""
    if not isinstance(attributes, Mapping):
        raise InputError("attributes must be a JSON object")
    try:
        flat = flatten(attributes)
    except RecursionError:
        raise InputError("attributes are nested too deeply") from None
    checked: dict[str, Any] = {}
    total = 0
    for name, value in flat.items():
        if not _ATTRIBUTE.match(name) or len(name) > 128:
            raise InputError(f"attribute name {name!r} must be letters, digits and '_' (dots for nesting)")
        if value is None or value == "":
            checked[name] = None
            continue
        if name == "email":
            if not isinstance(value, str) or not _EMAIL.match(value.strip()):
                raise InputError(f"email {value!r} is not an email address")
            value = value.strip()
        elif name == "phone":
            phone = re.sub(r"[\s().-]", "", str(value))
            if not _PHONE.match(phone):
                raise InputError(f"phone {value!r} is not an international number like +14155550100")
            value = phone
        elif name == "locale":
            if not isinstance(value, str) or not _LOCALE.match(value.strip()):
                raise InputError(f"locale {value!r} must look like en, pt-BR or zh-TW")
            value = value.strip()
        elif name == "timezone":
            try:
                ZoneInfo(str(value))
            except (ZoneInfoNotFoundError, ValueError):
                raise InputError(f"timezone {value!r} is not an IANA time zone like Asia/Tehran") from None
        elif name.startswith("consent."):
            value = _bool(value, name)
        elif name == "push_tokens":
            if isinstance(value, str):
                value = [t for t in value.split() if t]
            if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
                raise InputError("push_tokens must be a list of device tokens")
        size = json_size(value, f"attribute {name!r}")
        if size > MAX_ATTRIBUTE_BYTES:
            raise InputError(f"attribute {name!r} is {size:,} bytes as JSON; "
                             f"the limit is {_size(MAX_ATTRIBUTE_BYTES)} per value")
        total += len(name) + size
        checked[name] = value
    if total > MAX_IDENTIFY_BYTES:
        raise InputError(f"the attributes are {total:,} bytes as JSON in all; "
                         f"the limit is {_size(MAX_IDENTIFY_BYTES)} per identify")
    return checked
