"""The forecast of a population: 100,000 contacts followed over 30 days.

100,000 contacts spread over the customer lifecycle (none to five purchases, the latest up
to two years ago, in four time zones, some with SMS and push consent) are imported as history
(no triggers), with every shipped journey served. `forecast_seconds_100k` is the time
`lifecycle forecast --days 30` takes to follow all of them (loading them from Redis included);
the target is a minute on 2 cores. The CPU seconds it took (this process and the processes it
forks) and the load average are printed beside it: on a machine busy with other work the wall
time says more about the neighbours. Nothing is sent and nothing is written.
"""

from __future__ import annotations

import os
import random
import resource
import time

from automation.clock import SystemClock
from automation.engine.forecast import forecast
from automation.engine.services import Engine
from automation.events import Event, check_attributes
from automation.runtime import open_runtime
from automation.store.contacts import ContactStore

from .harness import DISCARD, ROOT, Bench, delete_namespace

DAY = 86400.0
SIZE = 100_000
CHUNK = 5000
ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Warsaw")


def populate(store: ContactStore, size: int, now: float) -> None:
    rng = random.Random(7)
    for first in range(0, size, CHUNK):
        ids = [f"u{n:07d}" for n in range(first, min(size, first + CHUNK))]
        store.identify_many(((cid, check_attributes({
            "email": f"{cid}@example.com", "phone": "+14155550100", "first_name": f"U{cid[1:]}",
            "timezone": ZONES[n % len(ZONES)], "lifetime_value": rng.randrange(0, 1000),
            "consent": {"email": True, "sms": n % 3 == 0, "push": n % 4 == 0}, "push_tokens": [f"t{cid}"]}))
            for n, cid in enumerate(ids, start=first)), triggers=False)
        events = []
        for cid in ids:
            latest = rng.uniform(0, 730)
            for extra in range(rng.choice((0, 1, 1, 1, 2, 5))):
                events.append(Event(cid, "purchase", now - (latest + 20 * extra) * DAY, {"item": "Merino shirt"}))
        store.track_many(events, triggers=False)


def run(bench: Bench) -> dict:
    # Every shipped journey loads: the webhook steps (CRM, sales) get the webhook adapter, never called.
    settings = bench.settings("fc", journeys_dir=ROOT / "journeys", channels={**DISCARD, "webhook": "webhook"})
    client = bench.client()
    runtime = open_runtime(settings, clock=SystemClock())
    engine = Engine.create(runtime, publish=False)
    try:
        started = time.perf_counter()
        populate(ContactStore(runtime), SIZE, time.time())
        # Every contact waits for its first evaluation, as after an import: the forecast makes it.
        ContactStore(runtime).request_reevaluation(f"u{n:07d}" for n in range(SIZE))
        imported = time.perf_counter() - started
        started, cpu = time.perf_counter(), _cpu_seconds()
        result = forecast(engine, days=30)[""]
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    finally:
        engine.close()
        runtime.close()
        delete_namespace(client, settings.namespace)
    return {
        "forecast_contacts": result.contacts,
        "forecast_messages_30d": sum(sum(values) for values in result.channel_days().values()),
        "forecast_import_seconds": round(imported, 1),
        "forecast_seconds_100k": round(elapsed, 1),
        # CPU of this process and its forked ones: what the wall time comes down to on an idle machine
        "forecast_cpu_seconds_100k": round(cpu, 1),
        "forecast_load_average": round(os.getloadavg()[0], 1),
    }


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
