"""Redis memory of one contact with 10 attributes and a short event history.

100,000 such contacts (10 attributes, 5 events with properties) are imported:
Redis's memory growth divided by their number is `redis_bytes_per_contact` (the
contact hash, its recent events and its pending re-evaluation timer). They are then
settled in a journey stage: `redis_bytes_per_contact_in_journey` adds the journey
state and the pending step timer (one per journey the contact is in).
"""

from __future__ import annotations

import time

from automation.clock import ManualClock
from automation.events import Event, check_attributes
from automation.store.contacts import ContactStore

from .harness import Bench, delete_namespace, run_in_process, setup_engine, used_memory

DAY = 86400.0
COUNT = 100_000


def attributes(n: int) -> dict:
    return {
        "email": f"customer{n}@example.com", "phone": f"+1415555{n % 10000:04d}", "first_name": "Alexandra",
        "last_name": "Kowalska", "locale": "pl", "timezone": "Europe/Warsaw", "country": "PL", "plan": "gold",
        "consent": {"email": True, "sms": False},
    }


def history(contact: str, now: float) -> list[Event]:
    return [
        Event(contact, "signup", now - 60 * DAY, {}),
        Event(contact, "page_view", now - 50 * DAY, {"page": "/jackets"}),
        Event(contact, "page_view", now - 40 * DAY, {"page": "/pricing"}),
        Event(contact, "purchase", now - 30 * DAY, {"item": "Merino wool shirt", "value": 79}),
        Event(contact, "email_open", now - 20 * DAY, {"campaign": "spring"}),
    ]


def run(bench: Bench) -> dict:
    settings = bench.settings("mem")
    clock = ManualClock(time.time())
    runtime, engine = setup_engine(settings, clock)
    store = ContactStore(runtime)
    client = bench.client()
    before = used_memory(client)
    ids = [f"m{n:06d}" for n in range(COUNT)]
    store.identify_many((cid, check_attributes(attributes(n))) for n, cid in enumerate(ids))
    store.track_many(event for cid in ids for event in history(cid, clock.now()))
    stored = used_memory(client) - before
    run_in_process(runtime, engine)
    settled = used_memory(client) - before
    engine.close()
    runtime.close()
    delete_namespace(client, settings.namespace)
    return {
        "redis_bytes_per_contact": round(stored / COUNT, 1),
        "redis_bytes_per_contact_in_journey": round(settled / COUNT, 1),
    }
