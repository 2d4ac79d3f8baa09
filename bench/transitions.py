"""Time-based stage changes cost per transition, not per contact.

For each population size, every contact has bought once; 1% bought between 89 and 90
days ago and lapse within the next simulated day, the rest bought 1 to 80 days ago.
After the population is settled (each contact in its stage, with its one re-check
timer), Redis's command counters are reset and the clock moves one day on. Every
Redis command the engine then issues (claims, re-evaluations, transitions, the
win-back email each lapsed contact gets) is divided by the number of transitions.
The engine runs in this process on a manual clock; Dramatiq's own per-message
commands (about two per batch of 100) are not included.
"""

from __future__ import annotations

import random
import time

from automation.clock import ManualClock
from automation.events import Event, check_attributes
from automation.store.contacts import ContactStore

from .harness import Bench, delete_namespace, run_in_process, setup_engine

DAY = 86400.0
CHUNK = 5000


def commands(client) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


def cost_at(bench: Bench, size: int) -> tuple[float, int]:
    settings = bench.settings(f"tr{size}")
    clock = ManualClock(time.time())
    runtime, engine = setup_engine(settings, clock)
    store = ContactStore(runtime)
    rng = random.Random(size)
    now = clock.now()
    for start in range(0, size, CHUNK):
        ids = [f"p{n:07d}" for n in range(start, min(size, start + CHUNK))]
        store.identify_many((cid, check_attributes({"email": f"{cid}@example.com", "consent": {"email": True}}))
                            for cid in ids)
        events = []
        for n, cid in enumerate(ids, start=start):
            days_ago = rng.uniform(89.0, 90.0) if n % 100 == 0 else rng.uniform(1.0, 80.0)
            events.append(Event(cid, "purchase", now - days_ago * DAY, {"item": "shirt"}))
        store.track_many(events)
        run_in_process(runtime, engine)
    client = bench.client()
    client.config_resetstat()
    clock.advance(DAY)
    run_in_process(runtime, engine)
    used = commands(client)
    transitions = int(client.hget(runtime.keys.stats, "enter:bench:lapsed") or 0)
    engine.close()
    runtime.close()
    delete_namespace(client, settings.namespace)
    return used / max(1, transitions), transitions


def run(bench: Bench) -> dict:
    sizes = [10_000, 100_000] if bench.quick else [10_000, 100_000, 1_000_000]
    per_transition: dict[str, float] = {}
    counts: dict[str, int] = {}
    for size in sizes:
        cost, transitions = cost_at(bench, size)
        per_transition[str(size)] = round(cost, 2)
        counts[str(size)] = transitions
    values = list(per_transition.values())
    return {
        "transition_redis_cmds_per_transition": per_transition,
        "transition_count": counts,
        "transition_cost_spread": round(max(values) / min(values) - 1, 3),
    }
