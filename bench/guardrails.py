"""What guardrails cost: steps per second with frequency caps and quiet hours configured, and without.

The same production path as bench/throughput.py (10,000 or 50,000 leads, each with a welcome
email due), twice over in alternating rounds: once with a workspace file that sets quiet hours
and frequency caps, none of them binding (the quiet hours are twelve hours away, the caps far
above one email), so every step is checked and counted but still sent; once with none. The ratio
is the cost of the checks: reading the caps and quiet hours, and counting in mark.lua.
`redis_bytes_per_capped_contact` is what the counts add to a contact's hash (MEMORY USAGE of a
sample of contacts, with and without).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from automation.config import Settings
from automation.store.keys import Keys

from .harness import ROOT, Bench
from .throughput import steps

SAMPLE = 1000


def workspace(guarded: bool) -> str:
    if not guarded:
        return "quiet_hours: none\n"
    # A quiet hour twelve hours from now in UTC (the bench contacts have no zone): configured, never hit.
    hour = (time.gmtime().tm_hour + 12) % 24
    return (f'quiet_hours:\n  email: {{from: "{hour:02d}:00", to: "{(hour + 1) % 24:02d}:00"}}\n'
            f'  sms: {{from: "21:00", to: "08:00"}}\n'
            "frequency_caps:\n"
            "  - {channel: email, max: 5, per: 1d}\n"
            "  - {channel: email, max: 20, per: 7d}\n"
            "  - {channel: marketing, max: 50, per: 7d}\n")


def journeys(bench: Bench, guarded: bool) -> Path:
    folder = bench.workdir / ("journeys-guarded" if guarded else "journeys-plain")
    if not folder.exists():
        shutil.copytree(ROOT / "bench" / "journeys", folder)
        (folder / "_workspace.yaml").write_text(workspace(guarded))
    return folder


def contact_bytes(bench: Bench, settings: Settings, found: list[float]) -> None:
    keys = Keys(settings.namespace, settings.timer_shards)
    client = bench.client()
    pipe = client.pipeline(transaction=False)
    for i in range(SAMPLE):
        pipe.memory_usage(keys.contact(f"c{i:07d}"), samples=0)
    found.append(sum(pipe.execute()) / SAMPLE)


def run(bench: Bench) -> dict[str, Any]:
    n = bench.count(full=50_000, quick=10_000)
    rates: dict[bool, list[float]] = {False: [], True: []}
    sizes: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(2):
        for guarded in (False, True) if round_ == 0 else (True, False):
            settings = bench.settings("guard" if guarded else "plain", journeys_dir=journeys(bench, guarded))
            rates[guarded].append(steps(bench, n, settings=settings,
                                        measure=lambda s, g=guarded: contact_bytes(bench, s, sizes[g])))
    plain, guarded = sum(rates[False]) / 2, sum(rates[True]) / 2
    return {
        "guardrails_n": n,
        "guardrails_plain_steps_per_s": round(plain, 1),
        "guardrails_steps_per_s": round(guarded, 1),
        "guardrails_cost_ratio": round(guarded / plain, 3),
        "guardrails_rounds": {"plain": [round(r, 1) for r in rates[False]],
                              "guarded": [round(r, 1) for r in rates[True]]},
        "redis_bytes_per_capped_contact": round(sum(sizes[True]) / 2 - sum(sizes[False]) / 2, 1),
    }
