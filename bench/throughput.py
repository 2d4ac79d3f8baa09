"""Steps per second through the production path, against bare Dramatiq on the same Redis.

Baseline: N no-op messages already in the queue, consumed by `dramatiq bench.noop`
with the same process and thread counts; measured from the first acknowledgement
to the last.

Steps: N contacts, each in a stage whose step is due (it fell due an hour ago),
with `lifecycle worker` processes idle and ready; measured from starting the
scheduler to the last outcome recorded. Every step goes the whole way: claim,
hand-off to Dramatiq, load contact, guards (stage, consent, address), render the
email template with its layout, mark, adapter (discard), outcome, stats.
"""

from __future__ import annotations

import time
from typing import Callable

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from automation.clock import ManualClock, SystemClock
from automation.config import Settings
from automation.engine.dispatch import DramatiqDispatcher
from automation.events import check_attributes
from automation.runtime import open_runtime
from automation.store.contacts import ContactStore

from .harness import (
    Bench,
    LifecycleWorkers,
    NoopWorkers,
    delete_namespace,
    progress,
    run_in_process,
    scheduler_thread,
    setup_engine,
    wait_until,
)


def baseline(bench: Bench, n: int) -> float:
    namespace = f"bnoop{time.time_ns() % 10**6}"
    broker = RedisBroker(url=bench.redis_url, namespace=namespace)
    message = dramatiq.Message(queue_name="noop", actor_name="noop", args=(), kwargs={}, options={})
    broker.declare_queue("noop")
    for _ in range(n):
        broker.enqueue(message)
    client = bench.client()
    pending = f"{namespace}:noop.msgs"
    assert client.hlen(pending) == n
    workers = NoopWorkers(bench, namespace)
    try:
        if not wait_until(lambda: client.hlen(pending) < n, timeout=60, interval=0.001):
            raise RuntimeError("the baseline workers consumed nothing")
        start = time.perf_counter()
        wait_until(lambda: client.hlen(pending) == 0, timeout=600, interval=0.005)
        elapsed = time.perf_counter() - start
    finally:
        workers.stop()
        broker.close()
        delete_namespace(client, namespace)
    return (n - 1) / elapsed


def prepare_due_steps(bench: Bench, settings, n: int) -> None:
    """N leads who entered the stage two hours ago, so their first step is due now."""
    clock = ManualClock(time.time() - 7200)
    runtime, engine = setup_engine(settings, clock)
    ContactStore(runtime).identify_many(
        (f"c{i:07d}", check_attributes({"email": f"c{i}@example.com", "first_name": f"Name{i}",
                                        "consent": {"email": True}}))
        for i in range(n))
    run_in_process(runtime, engine)
    engine.close()
    runtime.close()


def steps(bench: Bench, n: int, name: str = "steps", settings: Settings | None = None,
          measure: Callable[[Settings], None] | None = None) -> float:
    """Steps per second; `measure` looks at Redis once every step finished, before it is cleaned up."""
    settings = settings or bench.settings(name)
    prepare_due_steps(bench, settings, n)
    runtime = open_runtime(settings, clock=SystemClock())
    client = bench.client()
    workers = LifecycleWorkers(bench, settings)
    dispatcher = DramatiqDispatcher(settings)
    done = progress(client, runtime.keys.stats, n)
    try:
        start = time.perf_counter()
        with scheduler_thread(runtime, dispatcher):
            if not wait_until(done, timeout=1800, interval=0.005):
                raise RuntimeError(f"only {client.hget(runtime.keys.stats, 'sent')} of {n} steps finished")
            elapsed = time.perf_counter() - start
        if measure is not None:
            measure(settings)
    finally:
        workers.stop()
        dispatcher.close()
        runtime.close()
        delete_namespace(client, settings.namespace)
    return n / elapsed


def run(bench: Bench) -> dict:
    n = bench.count(full=50_000, quick=10_000)
    base = baseline(bench, n)
    rate = steps(bench, n)
    return {
        "throughput_n": n,
        "baseline_dramatiq_msgs_per_s": round(base, 1),
        "steps_per_s": round(rate, 1),
        "throughput_ratio": round(rate / base, 2),
    }
