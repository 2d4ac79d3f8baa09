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
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
MAX_PROPERTIES_BYTES = 8192
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
    return text


def check_event_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError("event name is missing")
    name = value.strip()
    if len(name) > 128:
        raise InputError("event name is longer than 128 characters")
    if "|" in name or _CONTROL.search(name):
        raise InputError(f"event name {name!r} contains '|' or control characters")
    return name


def parse_time(value: object, now: float, what: str = "timestamp") -> float:
    """Epoch seconds from an ISO 8601 string or a number; missing means now."""
    if value is None or value == "":
        return now
    timestamp = to_timestamp(value)
    if timestamp is None or not math.isfinite(timestamp):
        raise InputError(f"{what} {value!r} is not an ISO 8601 time or epoch seconds")
    if timestamp > now + MAX_FUTURE_SKEW:
        raise InputError(f"{what} {value!r} is in the future")
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
    try:
        encoded = json.dumps(properties, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"properties are not plain JSON: {exc}") from None
    if len(encoded.encode()) > MAX_PROPERTIES_BYTES:
        raise InputError(f"properties are larger than {MAX_PROPERTIES_BYTES} bytes")
    event_id = data.get("id")
    if event_id is not None and (not isinstance(event_id, (str, int)) or not str(event_id).strip()):
        raise InputError("id must be a non-empty string")
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
    checked: dict[str, Any] = {}
    for name, value in flatten(attributes).items():
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
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InputError(f"attribute {name!r} has a value that is not plain JSON") from None
        checked[name] = value
    return checked
