"""Contacts in Redis: attributes, per-event counts and times, recent events, journey state.

One hash per contact holds everything a rule needs (its layout: automation.store.fields).
The last few events with their properties live beside it, newest first, as JSON lines in
one string (`last.purchase.item` in a template), and the per-step outcomes in a ledger hash.
Every change queues a re-evaluation of the contact as a timer due now, so bursts of events
for one contact coalesce into one evaluation. Events and attribute changes that some journey
reacts to (a trigger, a wait_for, a goal, a score) also wait in the contact's inbox list for
that evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from automation.events import Event, check_attributes, check_contact_id
from automation.expressions import EventStats, EventsView
from automation.runtime import Runtime
from automation.store import fields
from automation.store.coupons import CouponStore
from automation.store.fields import Enrollment
from automation.store.keys import recheck_member, seconds
from automation.store.scripts import Scripts
from automation.store.suppression import ADDRESS_ATTRIBUTES, Suppressions

EVENT_ID_TTL = 7 * 86400
#: Events recorded by one call of record_event.lua (about a millisecond of Redis time).
EVENTS_PER_CALL = 100
#: Events whose `coupon` (or `code`) property redeems a coupon.
REDEEMING_EVENTS = frozenset({"purchase", "coupon_redeemed"})


@dataclass
class ContactState:
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: EventsView = field(default_factory=EventsView)
    enrollments: dict[str, Enrollment] = field(default_factory=dict)
    version: str = "0"
    created_at: float | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)       # the hash as read
    inbox: list[str] = field(default_factory=list)          # unprocessed inbox items, oldest first

    @property
    def exists(self) -> bool:
        return self.created_at is not None

    @classmethod
    def from_hash(cls, contact_id: str, data: Mapping[str, str]) -> "ContactState":
        flat: dict[str, Any] = {}
        events = EventsView()
        journeys: dict[str, dict[str, str]] = {}
        for key, raw in data.items():
            kind, rest = key[:2], key[2:]       # inline fields.split: this loop is on the hot path
            if kind == fields.ATTRIBUTE:
                flat[rest] = json.loads(raw)
            elif kind == fields.EVENT:
                events[rest] = EventStats(*fields.decode_event(raw))
            elif kind == fields.RUN:
                journey, _, part = rest.rpartition(":")
                journeys.setdefault(journey, {})[part] = raw
        enrollments = {name: fields.enrollment_of(parts) for name, parts in journeys.items()}
        return cls(
            id=contact_id,
            attributes=unflatten(flat),
            events=events,
            enrollments=enrollments,
            version=data.get(fields.VERSION, "0"),
            created_at=float(data[fields.CREATED]) if fields.CREATED in data else None,
            raw=data if isinstance(data, dict) else dict(data),   # the reply is ours: no copy
        )


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    if not any("." in path for path in flat):
        return dict(flat)
    nested: dict[str, Any] = {}
    for path, value in sorted(flat.items()):
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return nested


def decode_recent(text: str | None) -> list[dict[str, Any]]:
    """Recent events are kept as JSON lines of compact arrays: [name, time, properties]."""
    recent = []
    for raw in (text or "").splitlines():
        item = json.loads(raw)
        recent.append({"event": item[0], "at": float(item[1]), "properties": item[2] if len(item) > 2 else {}})
    recent.sort(key=lambda e: e["at"], reverse=True)
    return recent


class ContactStore:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.keys = runtime.keys
        self.scripts = Scripts(runtime.redis)
        self.coupons = CouponStore(runtime)
        self.suppressions = Suppressions(runtime)

    def identify(self, contact_id: str, attributes: Mapping[str, Any]) -> None:
        """Create or update a contact; attributes set to None are removed."""
        self.identify_many([(check_contact_id(contact_id), check_attributes(attributes))])

    def update_existing(self, contact_id: str, attributes: Mapping[str, Any]) -> bool:
        """Update a contact that exists, atomically; False (and nothing written) if there is none."""
        call = self._identify_call(check_contact_id(contact_id), check_attributes(attributes), self.runtime.clock.now(),
                                   True, existing_only=True)
        return self.scripts.run([call])[0] != -1

    def identify_many(self, items: Iterable[tuple[str, Mapping[str, Any]]], chunk: int = 500,
                      triggers: bool = True) -> int:
        """Pipelined identify of (contact id, attributes already checked by check_attributes).

        `triggers=False` is a backfill: the data is recorded (stages still follow it) but no
        attribute-change trigger fires for it.
        """
        now = self.runtime.clock.now()
        calls: list[Any] = []
        count = 0
        for contact_id, checked in items:
            calls.append(self._identify_call(contact_id, checked, now, triggers))
            count += 1
            if len(calls) >= chunk:
                self.scripts.run(calls)
                calls = []
        self.scripts.run(calls)
        return count

    def _identify_call(self, contact_id: str, checked: Mapping[str, Any], now: float, triggers: bool,
                       existing_only: bool = False) -> tuple[str, list[str], list[Any]]:
        keep = self.runtime.settings.inbox_length
        # A new address is worth trying again: forget that the old one was invalid.
        for address in ("email", "phone"):
            if checked.get(address) is not None and f"{address}_invalid" not in checked:
                checked = {**checked, f"{address}_invalid": None}
        keys = [self.keys.contact(contact_id), self.keys.timers_for(contact_id), self.keys.inbox(contact_id),
                self.keys.watched_attributes]
        phone = checked.get("phone") or ""
        if phone:
            # Verified on lookup: a stale entry for a number the contact no longer has is ignored.
            keys.append(self.keys.phone_index(phone))
        args: list[Any] = [seconds(now), repr(now), recheck_member(contact_id), phone, keep, contact_id,
                           "1" if triggers else "0", "1" if existing_only else "0"]
        for name, value in checked.items():
            args += [name, "" if value is None else json.dumps(value, ensure_ascii=False)]
        return "identify", keys, args

    def find_by_phone(self, phone: str) -> str | None:
        """The contact whose phone number this currently is, if any."""
        contact_id = self.redis.hget(self.keys.phone_index(phone), phone)
        if contact_id is None:
            return None
        current = self.redis.hget(self.keys.contact(contact_id), fields.attribute("phone"))
        return contact_id if current is not None and json.loads(current) == phone else None

    def apply_effects(self, contact_id: str, sets: Mapping[str, Any],
                      removals: Mapping[str, Iterable[Any]] | None = None) -> None:
        """Apply what an adapter learnt while sending: attributes to set (`{"consent.sms": False}`),
        and values to remove from list attributes, e.g. a push token the provider says is dead."""
        # An address the provider calls invalid (a hard bounce, an unknown number) goes on its
        # channel's suppression list too: giving it again later must not make it mailable.
        invalid = [channel for channel, attribute in ADDRESS_ATTRIBUTES.items() if sets.get(f"{attribute}_invalid")]
        if invalid:
            self.suppress(contact_id, invalid, "the provider reported the address invalid")
        if sets:
            self.identify(contact_id, sets)
        for name, values in (removals or {}).items():
            self._remove_from_list(contact_id, name, values)

    def suppress(self, contact_id: str, channels: Iterable[str], reason: str) -> None:
        """Put the contact's current address on each channel's suppression list."""
        channels = list(channels)
        addresses = self.redis.hmget(self.keys.contact(contact_id),
                                     [fields.attribute(ADDRESS_ATTRIBUTES[channel]) for channel in channels])
        self.suppressions.add_many((channel, json.loads(raw), reason)
                                   for channel, raw in zip(channels, addresses, strict=True) if raw)

    def _remove_from_list(self, contact_id: str, name: str, values: Iterable[Any]) -> None:
        key, field = self.keys.contact(contact_id), fields.attribute(name)
        gone = set(values)

        def change(pipe: Any) -> None:
            raw = pipe.hget(key, field)
            current = json.loads(raw) if raw else []
            kept = [v for v in current if v not in gone] if isinstance(current, list) else current
            pipe.multi()
            if kept:
                pipe.hset(key, field, json.dumps(kept, ensure_ascii=False))
            else:
                pipe.hdel(key, field)
            pipe.hincrby(key, fields.VERSION, 1)
            pipe.zadd(self.keys.timers_for(contact_id), {recheck_member(contact_id): self.runtime.clock.now()}, lt=True)

        self.redis.transaction(change, key)  # retried if the contact changes meanwhile
        # No inbox entry: list attributes (push tokens) are not something triggers watch.

    def track(self, event: Event) -> bool:
        """Record an event; False if an event with the same id was already recorded."""
        return self.track_many([event])[0]

    def track_many(self, events: Iterable[Event], pipeline_size: int = 500, triggers: bool = True) -> list[bool]:
        """Record events in pipelined batches (one round trip per `pipeline_size` events).

        `triggers=False` is a backfill of history: counts and times are recorded, but no
        journey reacts to the events themselves (no trigger, goal, wait_for or score).
        """
        results: list[bool] = []
        batch: list[Event] = []

        def flush() -> None:
            if not batch:
                return
            settings = self.runtime.settings
            head = [repr(self.runtime.clock.now()), settings.recent_events, EVENT_ID_TTL, settings.inbox_length,
                    "1" if triggers else "0"]
            calls = []
            # A script call per EVENTS_PER_CALL events: fewer calls to pack and run, while no one
            # call holds Redis for long (other clients wait while a script runs).
            for start in range(0, len(batch), EVENTS_PER_CALL):
                keys, args = [self.keys.watched_events], list(head)
                for event in batch[start:start + EVENTS_PER_CALL]:
                    contact = self.keys.contact(event.contact_id)
                    keys += [contact, self.keys.recent_events(event.contact_id), self.keys.timers_for(event.contact_id),
                             self.keys.inbox(event.contact_id),
                             self.keys.event_id(f"{event.contact_id}:{event.id}") if event.id is not None else contact]
                    args += [event.name, seconds(event.at), event.to_json(), recheck_member(event.contact_id),
                             "1" if event.id is not None else "0"]
                calls.append(("record_event", keys, args))
            recorded = [bool(r) for results_of_call in self.scripts.run(calls) for r in results_of_call]
            results.extend(recorded)
            self._redeem([event for event, new in zip(batch, recorded, strict=True) if new])
            batch.clear()

        for event in events:
            batch.append(event)
            if len(batch) >= pipeline_size:
                flush()
        flush()
        return results

    def _redeem(self, events: list[Event]) -> None:
        """A purchase or `coupon_redeemed` event carrying a coupon code redeems it."""
        for event in events:
            if event.name not in REDEEMING_EVENTS:
                continue
            code = event.properties.get("coupon") or event.properties.get("code")
            if isinstance(code, str) and code.strip():
                self.coupons.redeem(code, event.contact_id, event.at, event.name)

    def load(self, contact_id: str, recent: bool = False) -> ContactState:
        return self.load_many([contact_id], recent=recent)[contact_id]

    def load_many(self, contact_ids: Iterable[str], recent: bool = False,
                  inbox: bool = False) -> dict[str, ContactState]:
        ids = list(dict.fromkeys(contact_ids))
        pipe = self.redis.pipeline(transaction=False)
        for contact_id in ids:
            pipe.hgetall(self.keys.contact(contact_id))
            if recent:
                pipe.get(self.keys.recent_events(contact_id))
            if inbox:
                pipe.lrange(self.keys.inbox(contact_id), 0, -1)
        replies = iter(pipe.execute())
        states = {}
        for contact_id in ids:
            state = ContactState.from_hash(contact_id, next(replies))
            if recent:
                state.recent = decode_recent(next(replies))
            if inbox:
                state.inbox = next(replies)
            states[contact_id] = state
        return states

    def history(self, contact_id: str) -> dict[str, dict[str, Any]]:
        """Outcome of every step this contact has reached, by step key."""
        raw = self.redis.hgetall(self.keys.ledger(contact_id))
        return {key: json.loads(value) for key, value in sorted(raw.items())}

    def request_reevaluation(self, contact_ids: Iterable[str]) -> int:
        """Queue a stage re-evaluation (e.g. after deploying a new journey) for these contacts."""
        now = self.runtime.clock.now()
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for contact_id in contact_ids:
            pipe.zadd(self.keys.timers_for(contact_id), {recheck_member(contact_id): now}, lt=True)
            count += 1
            if count % 1000 == 0:
                pipe.execute()
        pipe.execute()
        return count

    def all_ids(self) -> Iterable[str]:
        prefix = self.keys.contact("")
        for key in self.redis.scan_iter(match=self.keys.contact_pattern, count=1000):
            yield key[len(prefix):]
