"""What `lifecycle plan` costs on a live population: 100,000 contacts spread over a journey's steps.

A stage journey of six steps is deployed; its contacts are written straight into their hashes
(each waiting at one of the steps, on the deployed version), then a new version changes a
template, shortens a wait and replaces a removed step. `plan_seconds_100k` is the time of one
plan over all of them (SCAN in chunks of 1,000, a pipeline of HMGETs per chunk, the fate of
every waiting run). `plan_stage_seconds_100k` is the same plan when a stage rule changed too,
which reads whole contacts and evaluates the old and the new rules on each.
"""

from __future__ import annotations

import time
from typing import Any

from automation.channels import ChannelRegistry
from automation.clock import ManualClock
from automation.engine.migration import plan
from automation.ops.deploys import file_candidates
from automation.runtime import open_runtime
from automation.store import fields, versions
from automation.store.keys import due as due_text
from automation.store.keys import step_member

from .harness import Bench, delete_namespace

N = 100_000
JOURNEY = """\
journey: plan-bench
vars: {brand: Acme, shop_url: "https://acme.test", review_url: "https://reviews.test/acme"}
stages:
  - name: lapsed
    when: days_since('purchase') >= 90
    steps:
      - send: email
        template: we-miss-you
      - wait: 7d
        send: email
        template: winback-coupon
  - name: active
    steps:
      - send: email
        template: welcome
      - wait: 3d
        send: email
        template: check-in
      - wait: 10d
        send: email
        template: review-request
"""
#: Each (stage, step) a contact may wait at, and how long before its due time it got there.
PLACES = [("lapsed", "we-miss-you", 0.0), ("lapsed", "winback-coupon", 7 * 86400.0),
          ("active", "welcome", 0.0), ("active", "check-in", 3 * 86400.0), ("active", "review-request", 10 * 86400.0)]


def _edit(text: str, stage_rule: bool) -> str:
    text = text.replace("template: check-in", "template: thank-you")           # a changed template
    text = text.replace("wait: 10d", "wait: 5d")                                 # a shorter wait
    text = text.replace("      - wait: 7d\n        send: email\n        template: winback-coupon\n",
                        "      - wait: 7d\n        send: email\n        template: winback-vip\n"
                        "        id: vip-offer\n        replaces: winback-coupon\n")
    return text.replace(">= 90", ">= 120") if stage_rule else text


def run(bench: Bench) -> dict[str, Any]:
    folder = bench.workdir / "plan-journeys"
    folder.mkdir(exist_ok=True)
    path = folder / "plan-bench.yaml"
    path.write_text(JOURNEY)
    settings = bench.settings("plan", journeys_dir=folder)
    clock = ManualClock(start=1_767_268_800.0)
    runtime = open_runtime(settings, clock=clock)
    channels = ChannelRegistry(settings)
    try:
        [candidate], problems = file_candidates(settings, channels, [path])
        assert not [p for p in problems if p.is_error], problems
        journey = candidate.journey
        versions.record(runtime, journey.name, journey.version, str(path), candidate.text, "bench")
        _populate(runtime, journey.version, clock.now())
        figures: dict[str, Any] = {}
        for key, stage_rule in (("plan_seconds_100k", False), ("plan_stage_seconds_100k", True)):
            path.write_text(_edit(JOURNEY, stage_rule))
            [edited], problems = file_candidates(settings, channels, [path])
            assert not [p for p in problems if p.is_error], problems
            started = time.perf_counter()
            shown = plan(runtime, [edited], channels.adapters)
            figures[key] = round(time.perf_counter() - started, 2)
            summary = shown.to_json()["journeys"][0]
            figures[key.replace("seconds", "runs")] = summary["runs"]
            if stage_rule:
                changes = sum(c["contacts"] for c in summary["stage_changes"])
                # The rule moved from 90 to 120 days: exactly the contacts whose purchase is 90 to 119
                # days old change stage. A plan that counts otherwise is wrong, not slow.
                expected = sum(1 for n in range(N) if 90 <= n % 200 < 120)
                assert changes == expected, f"plan counted {changes} stage changes, not {expected}"
                figures["plan_stage_changes_100k"] = changes
        return figures
    finally:
        runtime.close()
        delete_namespace(bench.client(), settings.namespace)


def _populate(runtime: Any, version: str, now: float) -> None:
    """Contacts written directly: attributes, a purchase some time ago, and a run waiting at a step."""
    keys = runtime.keys
    pipe = runtime.redis.pipeline(transaction=False)
    for n in range(N):
        contact_id = f"p{n:06d}"
        stage, step, waited = PLACES[n % len(PLACES)]
        bought = now - (n % 200) * 86400
        due = now + 3600 + (n % 97) * 600
        name = "plan-bench"
        pipe.hset(keys.contact(contact_id), mapping={
            fields.attribute("email"): f'"{contact_id}@example.com"',
            fields.attribute("consent.email"): "true",
            fields.event("purchase"): f"1,{int(bought)},{int(bought)}",
            fields.run(name, "st"): stage, fields.run(name, "oc"): "1", fields.run(name, "in"): str(int(due - waited)),
            fields.run(name, "sp"): step, fields.run(name, "du"): due_text(due), fields.run(name, "vr"): version,
            fields.VERSION: "1", fields.CREATED: str(int(now)),
        })
        pipe.zadd(keys.timers_for(contact_id), {step_member(name, contact_id): due})
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()
