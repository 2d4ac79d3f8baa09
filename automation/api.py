"""The Python API: what an application calls to feed contacts and events in.

    from automation import Lifecycle

    with Lifecycle.connect() as lc:
        lc.identify("c42", {"email": "ana@example.com", "first_name": "Ana",
                            "consent": {"email": True}})
        lc.track("c42", "purchase", {"item": "Merino shirt", "value": 59})

Each call writes to Redis and returns; the workers react (stage changes,
messages) within the scheduler's poll interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from automation.config import Settings
from automation.errors import InputError
from automation.events import parse_event, parse_time
from automation.ops.importer import ImportReport, import_file
from automation.runtime import Runtime, open_runtime
from automation.store.contacts import ContactState, ContactStore
from automation.store.coupons import Coupon, CouponStore, Redemption


class Lifecycle:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = ContactStore(runtime)

    @classmethod
    def connect(cls, settings: Settings | None = None) -> "Lifecycle":
        return cls(open_runtime(settings))

    def identify(self, contact_id: str, attributes: Mapping[str, Any] | None = None, **more: Any) -> None:
        """Create or update a contact. `None` removes an attribute."""
        if attributes is not None and not isinstance(attributes, Mapping):
            raise InputError("attributes must be a JSON object")
        self.store.identify(contact_id, {**(attributes or {}), **more})

    def track(self, contact_id: str, event: str, properties: Mapping[str, Any] | None = None,
              at: Any = None, id: str | None = None) -> bool:
        """Record an event (at: ISO 8601 or epoch seconds, default now); False if `id` was seen before."""
        # parse_event checks the properties (None: the event has none; else a JSON object).
        data: dict[str, Any] = {"contact_id": contact_id, "event": event, "properties": properties}
        if at is not None:
            data["timestamp"] = at
        if id is not None:
            data["id"] = id
        return self.store.track(parse_event(data, self.runtime.clock.now()))

    def import_file(self, path: str | Path, kind: str | None = None, triggers: bool = True) -> ImportReport:
        """Import contacts (CSV) or events and identifies (JSONL); `triggers=False` backfills history
        without starting triggered journeys (stages still follow the data)."""
        return import_file(self.store, Path(path), kind, triggers)

    def contact(self, contact_id: str) -> ContactState:
        return self.store.load(contact_id, recent=True)

    def history(self, contact_id: str) -> dict[str, dict[str, Any]]:
        return self.store.history(contact_id)

    def coupons(self, contact_id: str) -> dict[str, Coupon]:
        """The contact's current coupons by name (each journey step `coupon:` issued one)."""
        return CouponStore(self.runtime).coupons_of(contact_id)

    def redeem(self, code: str, contact_id: str | None = None, at: Any = None, source: str = "api") -> Redemption:
        """Record that a coupon code was used (a purchase carrying `coupon: CODE` does this by itself)."""
        when = parse_time(at, self.runtime.clock.now(), "at")
        return CouponStore(self.runtime).redeem(code, contact_id, when, source)

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Lifecycle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
