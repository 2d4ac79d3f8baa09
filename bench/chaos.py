"""Fault injection: emails through a SendGrid stand-in while workers, the scheduler and Redis die.

    python3 bench/run.py --only chaos

Every contact of a small population has one email due now, sent by real `lifecycle worker`
processes through the real sendgrid SDK to a local SendGrid stand-in that answers slowly enough
for kills to land inside requests. Meanwhile the worker processes are killed with SIGKILL (and
started again at once), the scheduler process too, and, in its own round, the Redis server. The
stand-in counts what reaches it, so duplicates are counted where they would happen. What must
hold (docs/reliability.md): every step ends sent or failed with a reason; duplicates are no more
than the messages inside provider requests in flight at the kills (steps marked "sending" by the
killed workers); steps held by a killed worker are sent again within 30 s; a killed scheduler
delays nothing by more than 10 s; after Redis is back, work resumes within 10 s.

tests/test_faults.py runs the same harness, smaller.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis

from automation.config import Settings
from automation.embedded import EmbeddedRedis
from automation.events import check_attributes
from automation.ops.processes import kill_process, start_workers, stop_process
from automation.runtime import open_runtime
from automation.store.contacts import ContactStore
from automation.store.keys import Keys, parse_member
from tests.providers.sendgrid_api import API_KEY, SendGridStandIn

from .harness import publish_watch_lists

ROOT = Path(__file__).resolve().parent.parent
JOURNEY = """journey: chaos
locale: en
vars:
  brand: Northwind Outfitters
  shop_url: https://shop.example.com
stages:
  - name: member
    steps:
      - send: email
        template: welcome
"""
FIELD = "chaos:member:1:welcome"
FINAL = ("sent", "failed")


class SlowSendGrid(SendGridStandIn):
    """The SendGrid stand-in, answering after `latency` seconds and counting each message it accepts."""

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.latency = latency
        self.received: Counter[str] = Counter()      # our idempotency key -> times accepted
        self.arrivals: dict[str, list[float]] = {}   # our key -> wall times it arrived
        self._count_lock = threading.Lock()

    def handle(self, request: Any) -> Any:
        response = super().handle(request)
        if response.status == 202:
            arrived = time.time()
            with self._count_lock:
                for personalization in request.json()["personalizations"]:
                    key = personalization.get("custom_args", {}).get("lc_key", "")
                    self.received[key] += 1
                    self.arrivals.setdefault(key, []).append(arrived)
        response.delay = self.latency
        return response

    def duplicates(self) -> int:
        with self._count_lock:
            return sum(count - 1 for count in self.received.values() if count > 1)


@dataclass
class Kill:
    what: str                       # workers, scheduler or redis
    at: float                       # wall clock
    in_flight: list[str] = field(default_factory=list)   # marked "sending", not recorded: inside requests
    held: list[str] = field(default_factory=list)        # claimed, not marked, no outcome yet
    back_at: float | None = None    # redis: when it answered again


@dataclass
class ChaosResult:
    sends: int
    lost: int
    unknown_left: int
    duplicates: int
    inflight_at_kills: int
    recovery_s: list[float]         # per step held by a killed worker: its outcome after the kill
    scheduler_delay_s: list[float]  # per step claimed when the scheduler was killed
    redis_resume_s: float | None    # from Redis answering again to the next outcome recorded
    kills: list[Kill]
    states: Counter

    def p99(self, values: list[float]) -> float:
        if not values:
            return 0.0
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)


class Chaos:
    """One fault-injection run: a population, its workers and scheduler, and the kills."""

    def __init__(self, workdir: Path, contacts: int, latency: float, redis_url: str | None = None,
                 processes: int = 2, threads: int = 4, reconcile_seconds: float = 5.0,
                 seed: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.contacts = contacts
        self.rng = random.Random(seed)
        self.provider = SlowSendGrid(latency)
        self.embedded: EmbeddedRedis | None = None
        self._watching = threading.Event()
        if redis_url is None:       # a private server, which the Redis round may kill
            self.embedded = EmbeddedRedis(self.workdir / "redis")
            redis_url = self.embedded.start()
            self.embedded.watch(self._watching, interval=0.2)
        (self.workdir / "journeys").mkdir(parents=True, exist_ok=True)
        (self.workdir / "journeys" / "chaos.yaml").write_text(JOURNEY)
        self.settings = Settings(
            redis_url=redis_url, home=self.workdir / "home", journeys_dir=self.workdir / "journeys",
            templates_dir=ROOT / "templates", outbox_dir=self.workdir / "outbox",
            namespace=f"chaos{uuid.uuid4().hex[:8]}", queue=f"chaos{uuid.uuid4().hex[:6]}",
            batch_size=20, reload_seconds=3600.0, reconcile_seconds=reconcile_seconds, secret="chaos-secret",
            channels={"email": "sendgrid", "sms": "outbox", "push": "outbox", "webhook": "outbox"},
        )
        self.env = {"SENDGRID_API_KEY": API_KEY, "LIFECYCLE_SENDGRID_HOST": self.provider.url,
                    "LIFECYCLE_SENDGRID_CONCURRENCY": "2", "LIFECYCLE_SENDGRID_TIMEOUT": "10"}
        self.processes, self.threads = processes, threads
        self.keys = Keys(self.settings.namespace, self.settings.timer_shards)
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.ids = [f"c{n:05d}" for n in range(contacts)]
        self.workers: subprocess.Popen | None = None
        self.scheduler: subprocess.Popen | None = None
        self.kills: list[Kill] = []
        self.log = self.workdir / "processes.log"

    # -- the population and the processes -------------------------------------------------------------

    def load(self, contacts: list[str] | None = None) -> None:
        """New contacts, each with its email due now (the chaos journey's one step)."""
        runtime = open_runtime(self.settings)
        try:
            publish_watch_lists(runtime)
            ContactStore(runtime).identify_many(
                (cid, check_attributes({"email": f"{cid}@example.com", "first_name": f"Name{cid}",
                                        "consent": {"email": True}}))
                for cid in (self.ids if contacts is None else contacts))
        finally:
            runtime.close()

    def start_workers(self) -> None:
        self.workers = start_workers(self.settings, self.processes, self.threads, log=self.log, extra_env=self.env)

    def start_scheduler(self) -> None:
        env = {**os.environ, **self.settings.to_env(), **self.env}
        output = open(self.log, "ab")
        self.scheduler = subprocess.Popen([sys.executable, "-m", "automation", "scheduler"], env=env,
                                          stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for process in (self.scheduler, self.workers):
            if process is not None:
                stop_process(process, timeout=10)
        self._watching.set()
        self.provider.close()
        self.client.close()
        if self.embedded is not None:
            self.embedded.stop(force=True)

    # -- what the engine recorded ---------------------------------------------------------------------

    def outcomes(self) -> dict[str, dict[str, Any]]:
        """Each contact's ledger entry for its email (absent: not reached yet)."""
        pipe = self.client.pipeline(transaction=False)
        for cid in self.ids:
            pipe.hget(self.keys.ledger(cid), FIELD)
        found = {}
        for cid, raw in zip(self.ids, pipe.execute(), strict=True):
            if raw:
                found[cid] = json.loads(raw)
        return found

    def finished(self) -> int:
        return sum(outcome.get("state") in FINAL for outcome in self.outcomes().values())

    def all_final(self, contacts: list[str]) -> bool:
        outcomes = self.outcomes()
        return all(outcomes.get(cid, {}).get("state") in FINAL for cid in contacts)

    def leased_contacts(self) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.zrange(self.keys.leases(shard), 0, -1)
        held = []
        for members in pipe.execute():
            for member in members:
                kind, _, contact_id = parse_member(member)
                if kind == "s":
                    held.append(contact_id)
        return held

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return True
            except redis.ConnectionError:
                pass          # Redis restarting
            time.sleep(0.05)
        return False

    # -- the faults -----------------------------------------------------------------------------------

    def kill_workers(self) -> Kill:
        """SIGKILL the whole worker process group, note what was in flight, start new workers."""
        assert self.workers is not None
        kill = Kill("workers", time.time())
        kill_process(self.workers)
        outcomes = self.outcomes()
        kill.in_flight = [cid for cid, outcome in outcomes.items() if outcome.get("state") == "sending"]
        kill.held = [cid for cid in self.leased_contacts()
                     if outcomes.get(cid, {}).get("state") not in (*FINAL, "sending")]
        self.kills.append(kill)
        self.start_workers()
        return kill

    def kill_scheduler(self) -> Kill:
        assert self.scheduler is not None
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait()
        kill = Kill("scheduler", time.time())
        outcomes = self.outcomes()
        kill.held = [cid for cid in self.leased_contacts() if outcomes.get(cid, {}).get("state") not in FINAL]
        self.kills.append(kill)
        self.start_scheduler()
        return kill

    def kill_redis(self) -> Kill:
        """SIGKILL the Redis server; the watchdog starts it again at the same address."""
        assert self.embedded is not None and self.embedded.pid is not None
        kill = Kill("redis", time.time())
        os.kill(self.embedded.pid, signal.SIGKILL)
        self.kills.append(kill)
        self.wait(lambda: bool(self.client.ping()), timeout=60)
        kill.back_at = time.time()
        return kill

    # -- a run ----------------------------------------------------------------------------------------

    def run(self, worker_kills: int = 2, kill_scheduler: bool = True, kill_redis: bool = False,
            timeout: float = 300.0) -> ChaosResult:
        """One cohort of contacts per fault, each fault landing at a random moment while its cohort's
        emails go out; each recovery is waited for before the next cohort, so it is measured alone."""
        faults = ["workers"] * worker_kills + (["scheduler"] if kill_scheduler else []) + \
            (["redis"] if kill_redis else [])
        size = len(self.ids) // max(1, len(faults))
        cohorts = [self.ids[i * size:(i + 1) * size] for i in range(len(faults))]
        cohorts[-1] = self.ids[(len(faults) - 1) * size:]
        total = self.contacts
        self.start_workers()
        self.start_scheduler()
        redis_resume = None
        for fault, cohort in zip(faults, cohorts, strict=True):
            before = len(self.provider.received)
            self.load(cohort)
            share = self.rng.uniform(0.1, 0.5)
            self.wait(lambda b=before, c=cohort, s=share: len(self.provider.received) - b >= s * len(c),
                      timeout=timeout)
            if fault == "workers":
                kill = self.kill_workers()
                self.wait(lambda k=kill: self.all_final(k.held + k.in_flight), timeout=timeout)
            elif fault == "scheduler":
                kill = self.kill_scheduler()
                self.wait(lambda k=kill: self.all_final(k.held), timeout=timeout)
            else:
                kill = self.kill_redis()
                done = self.finished()
                self.wait(lambda d=done: self.finished() > d, timeout=timeout)
                assert kill.back_at is not None
                redis_resume = time.time() - kill.back_at
        self.wait(lambda: self.finished() >= total, timeout=timeout)
        outcomes = self.outcomes()
        states = Counter(outcome.get("state", "none") for outcome in outcomes.values())
        states["none"] += total - len(outcomes)
        recovery = [outcomes[cid]["w"] - kill.at for kill in self.kills if kill.what == "workers"
                    for cid in kill.held if outcomes.get(cid, {}).get("state") in FINAL]
        delays = [outcomes[cid]["w"] - kill.at for kill in self.kills if kill.what == "scheduler"
                  for cid in kill.held if outcomes.get(cid, {}).get("state") in FINAL]
        return ChaosResult(
            sends=total,
            lost=total - sum(states[state] for state in FINAL),
            unknown_left=states["unknown"] + states["sending"],
            duplicates=self.provider.duplicates(),
            inflight_at_kills=sum(len(kill.in_flight) for kill in self.kills if kill.what == "workers"),
            recovery_s=recovery, scheduler_delay_s=delays, redis_resume_s=redis_resume,
            kills=self.kills, states=states,
        )


@dataclass
class OptOutResult:
    opted_out: int
    late_sends: int             # reached the provider after the opt-out returned, marked after it too
    in_flight_sends: int        # reached it after the opt-out returned, but were marked (in a request) before
    states: Counter


def run_optouts(chaos: Chaos, fraction: float = 0.5, timeout: float = 300.0) -> OptOutResult:
    """Contacts opt out of email while their emails are due and going out, from another thread.

    For each, the time its opt-out call returned; afterwards, any of its emails that reached the
    provider after that must have been marked for its request before it (mark.lua re-checks
    consent in the same script as the mark).
    """
    chaos.load()
    runtime = open_runtime(chaos.settings)
    store = ContactStore(runtime)
    chosen = chaos.rng.sample(chaos.ids, int(len(chaos.ids) * fraction))
    returned: dict[str, float] = {}
    chaos.start_workers()
    chaos.start_scheduler()
    try:
        chaos.wait(lambda: len(chaos.provider.received) >= 0.05 * len(chaos.ids), timeout=timeout)
        for cid in chosen:              # while the others' emails are going out
            store.identify(cid, {"consent": {"email": False}})
            returned[cid] = time.time()
        settled = ("sent", "skipped", "failed")
        chaos.wait(lambda: sum(o.get("state") in settled for o in chaos.outcomes().values()) >= len(chaos.ids),
                   timeout=timeout)
    finally:
        runtime.close()
    outcomes = chaos.outcomes()
    late = in_flight = 0
    for cid in chosen:
        key = f"{FIELD}:{cid}"
        after = [at for at in chaos.provider.arrivals.get(key, []) if at > returned[cid]]
        if not after:
            continue
        marked = outcomes.get(cid, {}).get("mw")
        if marked is not None and marked < returned[cid]:
            in_flight += len(after)
        else:
            late += len(after)
    states = Counter(outcome.get("state", "none") for outcome in outcomes.values())
    return OptOutResult(len(chosen), late, in_flight, states)


def run(bench: Any) -> dict:
    """The chaos figures for bench/run.py (each round with its own embedded Redis: one kills it)."""
    contacts = bench.count(2000, 600)
    with tempfile.TemporaryDirectory(prefix="lifecycle-chaos-") as folder:
        chaos = Chaos(Path(folder) / "kills", contacts, latency=0.1, processes=bench.processes, threads=4, seed=7)
        try:
            result = chaos.run(worker_kills=2, kill_scheduler=True, kill_redis=True)
        finally:
            chaos.stop()
        optout = Chaos(Path(folder) / "optout", contacts, latency=0.05, processes=bench.processes, threads=4,
                       seed=8)
        try:
            opted = run_optouts(optout)
        finally:
            optout.stop()
    return {
        "chaos_sends": result.sends,
        "chaos_lost": result.lost,
        "chaos_unknown_left": result.unknown_left,
        "chaos_duplicates": result.duplicates,
        "chaos_inflight_at_kills": result.inflight_at_kills,
        "chaos_recovery_p99_s": result.p99(result.recovery_s),
        "chaos_recovery_max_s": round(max(result.recovery_s, default=0.0), 2),
        "chaos_scheduler_delay_max_s": round(max(result.scheduler_delay_s, default=0.0), 2),
        "chaos_redis_resume_s": round(result.redis_resume_s or 0.0, 2),
        "optout_contacts": opted.opted_out,
        "optout_late_sends": opted.late_sends,
        "optout_in_flight_sends": opted.in_flight_sends,
    }
