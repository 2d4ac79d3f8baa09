"""Anonymous visitors: what they do before they are identified ends up on the contact they become.

An anonymous id (Segment's `anonymousId` without a `userId`) is not a contact: no journey runs for
it, nobody is messaged. Its events and traits wait in `<ns>:anon:<id>` (JSON lines, the newest
`MAX_ITEMS`, kept `KEEP_SECONDS` after the last one). An identify or alias naming both ids links
them (`<ns>:alias:<id>`, kept as long) and hands the waiting items over in the same script, to be
recorded on the contact with their own times and ids; from then on the anonymous id's calls go
straight to the contact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from automation.events import Event
from automation.runtime import Runtime
from automation.store.scripts import Scripts

MAX_ITEMS = 1000
KEEP_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Pending:
    """What an anonymous visitor did: an event, or traits (attributes already checked)."""

    event: Event | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        if self.event is not None:
            e = self.event
            return json.dumps({"e": e.name, "t": e.at, "p": dict(e.properties), "i": e.id}, ensure_ascii=False)
        return json.dumps({"a": dict(self.attributes)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, contact_id: str) -> "Pending":
        data = json.loads(text)
        if "e" in data:
            return cls(event=Event(contact_id, data["e"], data["t"], data.get("p") or {}, data.get("i")))
        return cls(attributes=data["a"])


class AnonymousStore:
    def __init__(self, runtime: Runtime) -> None:
        self.keys = runtime.keys
        self.scripts = Scripts(runtime.redis)

    def keep(self, anonymous_id: str, item: Pending) -> str | None:
        """Keep the item for the anonymous id; or, if it is linked already, the contact to record it on."""
        return self.scripts.call("anonymous_push", [self.keys.alias(anonymous_id), self.keys.anonymous(anonymous_id)],
                                 [item.to_json(), MAX_ITEMS, KEEP_SECONDS])

    def link(self, anonymous_id: str, contact_id: str) -> list[Pending]:
        """Link the anonymous id to the contact; what it did before, oldest first, to record on the contact."""
        items = self.scripts.call("anonymous_link", [self.keys.alias(anonymous_id), self.keys.anonymous(anonymous_id)],
                                  [contact_id, KEEP_SECONDS])
        return [Pending.from_json(text, contact_id) for text in items]
