"""What every benchmark needs: Redis, worker processes, namespaces, setup on a manual clock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psutil
import redis

from automation.channels import ChannelRegistry
from automation.clock import Clock
from automation.config import Settings
from automation.engine.dispatch import DramatiqDispatcher
from automation.engine.executor import run_batch
from automation.engine.scheduler import Scheduler
from automation.engine.services import Engine
from automation.ops.processes import start_workers, stop_process
from automation.runtime import Runtime, open_runtime

ROOT = Path(__file__).resolve().parent.parent
DISCARD = {"email": "discard", "sms": "discard", "push": "discard"}


@dataclass
class Bench:
    """Shared state of one `bench/run.py` invocation."""

    redis_url: str
    quick: bool
    processes: int
    threads: int
    workdir: Path
    notes: list[str] = field(default_factory=list)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def settings(self, name: str, **changes: object) -> Settings:
        """Settings for one benchmark: its own key namespace, the bench journey, the discard adapter."""
        base = Settings(
            redis_url=self.redis_url,
            home=self.workdir / "home",
            journeys_dir=ROOT / "bench" / "journeys",
            templates_dir=ROOT / "templates",
            outbox_dir=self.workdir / "outbox",
            namespace=f"b{name}{uuid.uuid4().hex[:6]}",
            channels=DISCARD,
            reload_seconds=3600.0,
            secret="bench-secret-not-for-production",
        )
        return base.with_changes(**changes)

    def count(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@contextmanager
def bench_redis() -> Iterator[tuple[str, str]]:
    """REDIS_URL if set, else a fresh embedded server; yields (url, description)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, f"REDIS_URL ({url})"
        return
    from automation.embedded import EmbeddedRedis

    folder = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    server = EmbeddedRedis(folder)
    try:
        url = server.start()
        version = redis.Redis.from_url(url).info("server")["redis_version"]
        yield url, f"embedded redis-server {version} (append-only file on)"
    finally:
        server.stop(force=True)
        shutil.rmtree(folder, ignore_errors=True)


class StepsFailed(RuntimeError):
    """A benchmark's steps failed instead of being sent: the figures would mean nothing."""


def progress(client: redis.Redis, stats_key: str, target: int, field: str = "sent") -> Callable[[], bool]:
    """A wait_until condition: `field` reached `target`; raises if steps failed meanwhile."""

    def done() -> bool:
        values = client.hmget(stats_key, field, "failed")
        if int(values[1] or 0):
            namespace = stats_key.rsplit(":", 1)[0]
            last = client.xrevrange(f"{namespace}:activity", count=1)
            raise StepsFailed(f"{values[1]} step(s) failed, e.g. {last[0][1] if last else '?'}")
        return int(values[0] or 0) >= target

    return done


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def tree_rss_mb(process: subprocess.Popen) -> float:
    """Resident memory of a process and all its children, in MB."""
    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in members if p.is_running()) / 1e6
    except psutil.NoSuchProcess:
        return 0.0


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


class LifecycleWorkers:
    """`lifecycle worker` processes for a benchmark's settings."""

    def __init__(self, bench: Bench, settings: Settings) -> None:
        self.bench = bench
        self.settings = settings
        log = bench.workdir / f"{settings.namespace}-worker.log"
        self.process = start_workers(settings, bench.processes, bench.threads, log=log)
        heartbeats = f"{settings.namespace}:dramatiq:__heartbeats__"
        client = bench.client()
        if not wait_until(lambda: client.zcard(heartbeats) >= bench.processes, timeout=60):
            raise RuntimeError(f"lifecycle workers did not start; see {log}")
        time.sleep(0.5)  # let every consumer thread reach its first poll

    def rss_mb(self) -> float:
        return tree_rss_mb(self.process)

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


class NoopWorkers:
    """Bare Dramatiq worker processes for the baseline actors in bench/noop.py."""

    def __init__(self, bench: Bench, namespace: str) -> None:
        env = {**os.environ, "REDIS_URL": bench.redis_url, "BENCH_NAMESPACE": namespace,
               "dramatiq_worker_timeout": "100"}
        log = open(bench.workdir / f"{namespace}-noop.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "bench.noop", "--processes", str(bench.processes),
             "--threads", str(bench.threads), "--path", str(ROOT)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


def setup_engine(settings: Settings, clock: Clock) -> tuple[Runtime, Engine]:
    """An engine in this process, on a manual clock, for putting contacts where a benchmark needs them."""
    runtime = open_runtime(settings, clock=clock)
    return runtime, Engine.create(runtime, ChannelRegistry(settings))


def publish_watch_lists(runtime: Runtime) -> None:
    """What a running installation has before its contacts come: a worker has said which events and
    attributes its journeys react to (until one has, every event and change waits in an inbox)."""
    # Channels only decide which journeys load: the configured ones, with discarding adapters where one
    # serves the channel, so no provider client is made for this.
    channels = {**runtime.settings.channels, **DISCARD}
    Engine.create(runtime, ChannelRegistry(runtime.settings.with_changes(channels=channels))).close()


def run_in_process(runtime: Runtime, engine: Engine) -> int:
    """Claim and execute everything due on the runtime's clock, here; returns timers handled."""
    scheduler = Scheduler(runtime, lambda claims: run_batch(engine, claims))
    total = 0
    while True:
        claimed = scheduler.tick()
        total += claimed
        if not claimed:
            return total


@contextmanager
def scheduler_thread(runtime: Runtime, dispatcher: DramatiqDispatcher) -> Iterator[None]:
    """The production scheduler handing due timers to Dramatiq, in a thread, while the block runs."""
    stop = threading.Event()
    thread = threading.Thread(target=Scheduler(runtime, dispatcher, dispatcher.queue_depth).run, args=(stop,),
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{namespace}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
