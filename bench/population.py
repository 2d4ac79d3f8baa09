"""A population through one step: N contacts enter a stage and receive its first message.

N contacts (1,000,000; quick: 100,000), each with a purchase 100 days ago, are imported
(pipelined identify and track, as `lifecycle import` does) while the scheduler and the
workers run. Each contact is re-evaluated, enters `lapsed`, and its win-back email (the
shipped template, discard adapter) goes out. `population_step_seconds` runs from the
start of the import to the last message recorded.
"""

from __future__ import annotations

import time

from automation.clock import SystemClock
from automation.engine.dispatch import DramatiqDispatcher
from automation.events import Event, check_attributes
from automation.runtime import open_runtime
from automation.store.contacts import ContactStore

from .harness import (
    Bench,
    LifecycleWorkers,
    delete_namespace,
    progress,
    publish_watch_lists,
    scheduler_thread,
    used_memory,
    wait_until,
)

DAY = 86400.0
CHUNK = 5000


def run(bench: Bench) -> dict:
    size = bench.count(full=1_000_000, quick=100_000)
    settings = bench.settings("pop")
    client = bench.client()
    runtime = open_runtime(settings, clock=SystemClock())
    publish_watch_lists(runtime)
    store = ContactStore(runtime)
    workers = LifecycleWorkers(bench, settings)
    dispatcher = DramatiqDispatcher(settings)
    memory_before = used_memory(client)
    done_key = "step:bench:lapsed:winback-coupon:sent"
    try:
        with scheduler_thread(runtime, dispatcher):
            start = time.perf_counter()
            for first in range(0, size, CHUNK):
                ids = [f"u{n:07d}" for n in range(first, min(size, first + CHUNK))]
                store.identify_many((cid, check_attributes({"email": f"{cid}@example.com", "first_name": f"U{cid[1:]}",
                                                            "consent": {"email": True}})) for cid in ids)
                now = time.time()
                store.track_many(Event(cid, "purchase", now - 100 * DAY, {"item": "Merino shirt"}) for cid in ids)
            imported = time.perf_counter() - start
            finished = wait_until(progress(client, runtime.keys.stats, size, done_key), timeout=3600, interval=0.1)
            elapsed = time.perf_counter() - start
            if not finished:
                bench.notes.append(f"population: only {client.hget(runtime.keys.stats, done_key)} of {size} done")
            memory = used_memory(client) - memory_before
    finally:
        workers.stop()
        dispatcher.close()
        runtime.close()
        delete_namespace(client, settings.namespace)
    return {
        "population": size,
        "population_step_seconds": round(elapsed, 1),
        "population_import_seconds": round(imported, 1),
        "population_redis_bytes_per_contact_after_message": round(memory / size, 1),
    }
