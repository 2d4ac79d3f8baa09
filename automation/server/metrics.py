"""Prometheus metrics, read from Redis at scrape time.

Counters live in Redis (`<ns>:stats`), written atomically with each outcome, so
every worker and scheduler contributes and a restart loses nothing. Any process
can serve them: `lifecycle scheduler --metrics-port 9464` (or `lifecycle run`).
"""

from __future__ import annotations

import time
from typing import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from automation.engine.dispatch import broker_namespace, queue_key
from automation.runtime import Runtime
from automation.store.pauses import ChannelPauses
from automation.store.doubt import in_doubt
from automation.store.timers import TimerStore

OUTCOMES = ("sent", "skipped", "failed", "retry", "unknown", "paused", "throttled", "held", "deferred")


class RedisCollector:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.timers = TimerStore(runtime)

    def collect(self) -> Iterator[object]:
        client = self.runtime.redis
        settings = self.runtime.settings
        stats = {k: int(v) for k, v in client.hgetall(self.runtime.keys.stats).items()}
        steps = CounterMetricFamily("lifecycle_steps", "Journey steps by outcome, channel and reason",
                                    labels=["outcome", "channel", "reason"])
        per_step = CounterMetricFamily("lifecycle_journey_steps", "Outcomes per journey step",
                                       labels=["journey", "stage", "step", "outcome"])
        stages = CounterMetricFamily("lifecycle_stage_entries", "Contacts entering a stage (or starting a triggered "
                                     "journey: stage \"run\")", labels=["journey", "stage"])
        goals = CounterMetricFamily("lifecycle_goal", "Runs with a goal, and their conversions",
                                    labels=["journey", "stage", "event"])
        splits = CounterMetricFamily("lifecycle_split", "Contacts per A/B split variant (holdouts included), and "
                                     "their conversions", labels=["journey", "split", "variant", "event"])
        ends = CounterMetricFamily("lifecycle_run_ends", "Triggered runs that ended, by reason (finished, exit, goal, "
                                   "holdout ...)", labels=["journey", "reason"])
        coupons = CounterMetricFamily("lifecycle_coupons", "Coupons issued and redeemed", labels=["coupon", "event"])
        for key, value in stats.items():
            parts = key.split(":")
            if parts[0] in OUTCOMES and len(parts) == 2:
                channel = parts[1] if parts[1] in settings.channels else ""
                steps.add_metric([parts[0], channel, "" if channel else parts[1]], value)
            elif parts[0] == "step" and len(parts) == 5:
                per_step.add_metric(parts[1:], value)
            elif parts[0] == "enter" and len(parts) == 3:
                stages.add_metric(parts[1:], value)
            elif parts[0] == "goal" and len(parts) == 4:
                goals.add_metric(parts[1:], value)
            elif parts[0] == "split" and len(parts) == 5:
                splits.add_metric(parts[1:], value)
            elif parts[0] == "end" and len(parts) == 3:
                ends.add_metric(parts[1:], value)
            elif parts[0] == "coupon" and len(parts) == 3:
                coupons.add_metric(parts[1:], value)
        yield steps
        yield per_step
        yield stages
        yield goals
        yield splits
        yield ends
        yield coupons
        yield CounterMetricFamily("lifecycle_cancelled_steps", "Pending steps cancelled by a stage change",
                                  value=stats.get("cancelled", 0))
        yield CounterMetricFamily("lifecycle_rule_errors", "Rules that failed and counted as false",
                                  value=stats.get("rule_errors", 0))
        counts = self.timers.counts()
        pending = GaugeMetricFamily("lifecycle_timers", "Timers in Redis", labels=["state"])
        pending.add_metric(["pending"], counts["pending"])
        pending.add_metric(["claimed"], counts["leased"])
        yield pending
        next_due = self.timers.next_due()
        lag = max(0.0, self.runtime.clock.now() - next_due) if next_due is not None else 0.0
        yield GaugeMetricFamily("lifecycle_timer_lag_seconds", "How overdue the oldest due timer is", value=lag)
        yield GaugeMetricFamily("lifecycle_queue_messages", "Dramatiq messages waiting in the queue",
                                value=int(client.llen(queue_key(settings))))
        heartbeat = f"{broker_namespace(settings)}:__heartbeats__"
        alive = client.zcount(heartbeat, time.time() * 1000 - settings.heartbeat_timeout_ms, "+inf")
        yield GaugeMetricFamily("lifecycle_worker_processes", "Worker processes with a live heartbeat", value=alive)
        doubtful, oldest = in_doubt(self.runtime)
        yield GaugeMetricFamily("lifecycle_steps_in_doubt", "Steps whose send a crash interrupted, waiting for the "
                                "provider's confirmation", value=doubtful)
        yield GaugeMetricFamily("lifecycle_steps_in_doubt_oldest_seconds", "How long the oldest step has been in "
                                "doubt", value=max(0.0, self.runtime.clock.now() - oldest) if oldest else 0.0)
        paused = GaugeMetricFamily("lifecycle_channel_paused", "1 while a channel is paused (credentials refused)",
                                   labels=["channel"])
        for channel in ChannelPauses(self.runtime).active():
            paused.add_metric([channel], 1)
        yield paused


def serve_metrics(runtime: Runtime, port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(runtime))
    start_http_server(port, addr=address, registry=registry)
