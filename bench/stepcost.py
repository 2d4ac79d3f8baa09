"""CPU per step, in one process: a figure that stays put where rates do not.

N welcome-email steps that fell due (prepared as bench/throughput.py prepares them) are run by
the production executor in this process: claim, load the contact, guards, render, mark, the
discard adapter, record the outcome. No Dramatiq and no worker threads, so nothing waits for a
core. Measured per step: this process's CPU time and Redis's (INFO cpu), in each of three
rounds; the figures are the lowest round.

On a shared two-core machine `steps_per_s` moves 20 to 40% between runs; these move a few
percent, so they show what a change costs. To compare two commits, run each alternately from
its own work tree:

    PYTHONPATH=/path/to/worktree python3 /path/to/worktree/bench/run.py --only stepcost
"""

from __future__ import annotations

import time
from typing import Any

from automation.clock import SystemClock

from .harness import Bench, delete_namespace, run_in_process, setup_engine
from .throughput import prepare_due_steps

ROUNDS = 3


def redis_cpu(bench: Bench) -> float:
    info = bench.client().info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def one_round(bench: Bench, n: int) -> tuple[float, float]:
    """(Python, Redis) CPU microseconds per step."""
    settings = bench.settings("stepcost")
    prepare_due_steps(bench, settings, n)
    runtime, engine = setup_engine(settings, SystemClock())
    try:
        redis_before, python_before = redis_cpu(bench), time.process_time()
        run_in_process(runtime, engine)
        python, redis_ = time.process_time() - python_before, redis_cpu(bench) - redis_before
        sent = int(bench.client().hget(runtime.keys.stats, "sent") or 0)
        if sent != n:
            raise RuntimeError(f"only {sent} of {n} steps were sent")
    finally:
        engine.close()
        runtime.close()
        delete_namespace(bench.client(), settings.namespace)
    return python / n * 1e6, redis_ / n * 1e6


def run(bench: Bench) -> dict[str, Any]:
    n = bench.count(full=10_000, quick=5_000)
    rounds = [one_round(bench, n) for _ in range(ROUNDS)]
    return {"stepcost_n": n,
            "stepcost_python_us": round(min(python for python, _ in rounds), 1),
            "stepcost_redis_us": round(min(redis_ for _, redis_ in rounds), 1),
            "stepcost_rounds_us": {"python": [round(python, 1) for python, _ in rounds],
                                   "redis": [round(redis_, 1) for _, redis_ in rounds]}}
