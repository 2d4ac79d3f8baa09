"""Timers under load: short timers on time behind a million long ones, at ~100 bytes each.

1. Long timers (1,000,000; quick: 100,000) due in 30 days are added to the timer store:
   `redis_bytes_per_timer` is Redis's memory growth divided by their number.
2. 1,000 contacts each get a step that falls due over the next 10 s; the scheduler and
   the workers run; the lateness of each step is when its outcome was recorded minus when
   it was due (`timer_p50/p99/max_lateness_s`).
3. `worker_rss_growth_mb`: the workers' resident memory after all that, minus before:
   workers never hold pending timers.
4. `scheduler_claims_per_s`: a large batch (100,000; quick: 20,000) falls due at once; how
   fast one scheduler claims it and hands it to Dramatiq (workers stopped, so it is the
   scheduler alone).
5. The same 1,000 short timers as Dramatiq messages with `delay=`, queued behind 200,000
   (quick: 20,000) thirty-day delays, on bare Dramatiq workers:
   `dramatiq_delay_short_timer_lateness_s` (p99, or null if they had not all run within
   `dramatiq_delay_limit_s`), and how much memory the workers grew holding the delayed
   messages (`dramatiq_delay_worker_rss_growth_mb`).
"""

from __future__ import annotations

import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from automation.clock import ManualClock, SystemClock
from automation.engine.dispatch import DramatiqDispatcher
from automation.engine.scheduler import Scheduler
from automation.events import check_attributes
from automation.runtime import open_runtime
from automation.store.contacts import ContactStore
from automation.store.keys import step_member
from automation.store.timers import TimerStore

from .harness import (
    Bench,
    LifecycleWorkers,
    NoopWorkers,
    delete_namespace,
    percentile,
    progress,
    run_in_process,
    scheduler_thread,
    setup_engine,
    tree_rss_mb,
    used_memory,
    wait_until,
)

DAY = 86400.0
SHORT = 1000
SPREAD = 10.0


def _short_timers(bench: Bench, settings, start: float) -> dict[str, float]:
    """1,000 leads whose first step (one hour after entry) falls due between start and start + 10 s."""
    clock = ManualClock()
    runtime, engine = setup_engine(settings, clock)
    store = ContactStore(runtime)
    due: dict[str, float] = {}
    for i in range(SHORT):
        contact = f"short{i:04d}"
        due[contact] = start + SPREAD * i / SHORT
        clock.set(due[contact] - 3600)
        store.identify_many([(contact, check_attributes({"email": f"{contact}@example.com",
                                                         "consent": {"email": True}}))])
        run_in_process(runtime, engine)
    engine.close()
    runtime.close()
    return due


def lateness_and_memory(bench: Bench) -> dict:
    long_count = bench.count(full=1_000_000, quick=100_000)
    settings = bench.settings("timers")
    client = bench.client()
    runtime = open_runtime(settings, clock=SystemClock())
    timers = TimerStore(runtime)
    workers = LifecycleWorkers(bench, settings)
    rss_before = workers.rss_mb()
    before = used_memory(client)
    later = time.time() + 30 * DAY
    timers.schedule_many((f"f{n:07d}", step_member("bench", f"f{n:07d}"), later) for n in range(long_count))
    bytes_per_timer = (used_memory(client) - before) / long_count

    start = time.time() + 8.0
    due = _short_timers(bench, settings, start)
    if time.time() >= start:
        bench.notes.append("timers: setting up the short timers took longer than planned; lateness is overstated")
    dispatcher = DramatiqDispatcher(settings)
    store = ContactStore(runtime)
    with scheduler_thread(runtime, dispatcher):
        wait_until(progress(client, runtime.keys.stats, SHORT), timeout=start + SPREAD + 60 - time.time(),
                   interval=0.05)
        lateness = []
        for contact, due_at in due.items():
            outcome = store.history(contact).get("bench:lead:1:welcome")
            lateness.append(outcome["w"] - due_at if outcome and outcome["state"] == "sent" else float("inf"))
    rss_growth = workers.rss_mb() - rss_before
    workers.stop()

    claims = _claim_rate(bench, settings, runtime, dispatcher)
    dispatcher.close()
    runtime.close()
    delete_namespace(client, settings.namespace)
    return {
        "timers_pending": long_count,
        "timer_p50_lateness_s": round(percentile(lateness, 0.50), 3),
        "timer_p99_lateness_s": round(percentile(lateness, 0.99), 3),
        "timer_max_lateness_s": round(max(lateness), 3),
        "redis_bytes_per_timer": round(bytes_per_timer, 1),
        "worker_rss_growth_mb": round(rss_growth, 1),
        "scheduler_claims_per_s": round(claims, 1),
    }


def _claim_rate(bench: Bench, settings, runtime, dispatcher: DramatiqDispatcher) -> float:
    count = bench.count(full=100_000, quick=20_000)
    timers = TimerStore(runtime)
    now = time.time()
    timers.schedule_many((f"x{n:07d}", step_member("bench", f"x{n:07d}"), now - 1) for n in range(count))
    unlimited = settings.with_changes(max_queued_messages=10**9)
    scheduler = Scheduler(runtime, dispatcher, dispatcher.queue_depth)
    scheduler.settings = unlimited
    start = time.perf_counter()
    claimed = 0
    while claimed < count:
        got = scheduler.tick()
        if not got:
            break
        claimed += got
    elapsed = time.perf_counter() - start
    dispatcher.broker.flush(settings.queue)
    return claimed / elapsed


def dramatiq_delay(bench: Bench) -> dict:
    limit = 30.0 if bench.quick else 60.0
    long_delays = bench.count(full=200_000, quick=20_000)
    namespace = f"bdelay{time.time_ns() % 10**6}"
    broker = RedisBroker(url=bench.redis_url, namespace=namespace)
    broker.declare_queue("noop")
    client = bench.client()
    workers = NoopWorkers(bench, namespace)
    try:
        heartbeats = f"{namespace}:__heartbeats__"
        wait_until(lambda: client.zcard(heartbeats) >= bench.processes, timeout=60)
        rss_before = tree_rss_mb(workers.process)
        noop = dramatiq.Message(queue_name="noop", actor_name="noop", args=(), kwargs={}, options={})
        thirty_days_ms = int(30 * DAY * 1000)
        for _ in range(long_delays):
            broker.enqueue(noop, delay=thirty_days_ms)
        stamps = f"{namespace}:stamps"
        start = time.time() + 2.0
        for i in range(SHORT):
            due = start + SPREAD * i / SHORT
            delay_ms = max(0, int((due - time.time()) * 1000))
            broker.enqueue(dramatiq.Message(queue_name="noop", actor_name="stamp", args=(stamps, due), kwargs={},
                                            options={}), delay=delay_ms)
        wait_until(lambda: client.hlen(stamps) >= SHORT, timeout=start + SPREAD + limit - time.time(), interval=0.1)
        ran = [float(v) for v in client.hvals(stamps)]
        rss_growth = tree_rss_mb(workers.process) - rss_before
    finally:
        workers.stop()
        broker.close()
        delete_namespace(client, namespace)
    complete = len(ran) >= SHORT
    return {
        "dramatiq_delay_short_timer_lateness_s": round(percentile(ran, 0.99), 3) if complete else None,
        "dramatiq_delay_limit_s": limit,
        "dramatiq_delay_long_timers": long_delays,
        "dramatiq_delay_short_timers_run": len(ran),
        "dramatiq_delay_worker_rss_growth_mb": round(rss_growth, 1),
    }


def run(bench: Bench) -> dict:
    return {**lateness_and_memory(bench), **dramatiq_delay(bench)}
