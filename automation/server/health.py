"""Liveness and readiness, for `lifecycle serve` and for every other long-running process.

    GET /healthz   200 while the process works (and, for `lifecycle worker` / `run`, its worker
                   processes and scheduler thread are alive); an orchestrator restarts it otherwise
    GET /readyz    200 when it can do its job: Redis answers, the journeys load (the files, or with
                   LIFECYCLE_DEPLOY=required the deployed versions; a process that runs journeys or
                   accepts events for them); 503 with what is wrong otherwise

`lifecycle worker`, `scheduler` and `run` serve these on `--health-port` (or LIFECYCLE_HEALTH_PORT)
from a thread (`serve_probes`); `lifecycle serve` has them beside its other endpoints.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import redis
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from automation.channels import ChannelRegistry
from automation.clock import SystemClock
from automation.config import Settings
from automation.language.registry import JourneyRegistry
from automation.runtime import Runtime
from automation.store.keys import Keys
from automation.store.versions import DeployedSource
from automation.messages.templates import Renderer, TemplateCatalog, TemplateCheck
from automation.sandbox import RenderBudget

logger = logging.getLogger(__name__)
#: A check answers None when all is well, else what is wrong.
Check = Callable[[], "str | None"]
REDIS_TIMEOUT = 2.0


def one_at_a_time(check: Check) -> Check:
    """`check`, run by one probe at a time: a probe that comes while another runs it answers what the
    last run found, since waiting in line behind a slow Redis could outlast an orchestrator's probe
    timeout (and the checks share a client, which each run disconnects)."""
    lock = threading.Lock()
    last: list[str | None] = [None]

    def checked() -> str | None:
        if not lock.acquire(blocking=False):
            return last[0]
        try:
            last[0] = check()
            return last[0]
        finally:
            lock.release()

    return checked


def redis_check(settings: Settings) -> Check:
    """Redis answers a PING within REDIS_TIMEOUT (a client of its own: a hung Redis must not hang the probe)."""
    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=REDIS_TIMEOUT,
                                  socket_connect_timeout=REDIS_TIMEOUT)

    def check() -> str | None:
        try:
            client.ping()
        except (redis.RedisError, OSError) as error:
            return f"redis does not answer: {error}"
        finally:
            # No idle connection between probes: it would keep an embedded server from stopping.
            client.connection_pool.disconnect()
        return None

    return one_at_a_time(check)


def served_journeys(settings: Settings, runtime: Runtime | None = None) -> JourneyRegistry:
    """The journeys as workers load them (for the readiness probe and `/report`): with
    LIFECYCLE_DEPLOY=required and a `runtime`, the deployed versions, as workers and `lifecycle report`
    serve them."""
    channels = ChannelRegistry(settings)
    catalog = TemplateCatalog(settings.templates_dir)
    deployed = DeployedSource(runtime) if runtime is not None and settings.deploy == "required" else None
    return JourneyRegistry(settings.journeys_dir, channels.adapters,
                           TemplateCheck(catalog, Renderer(catalog, channels.parts_for, RenderBudget.of(settings))),
                           max(settings.reload_seconds, 1.0), deployed)


def journeys_check(settings: Settings) -> Check:
    """Every journey loads (or kept a good version), and there is at least one: the files, or with
    LIFECYCLE_DEPLOY=required the deployed versions, as workers serve them."""
    deployed = settings.deploy == "required"
    # With deployed versions the check reads Redis: a client of its own, disconnected after each probe
    # (as redis_check's), and the registry made at the first probe, so a Redis that is down at start
    # fails the probe rather than the process.
    client = redis.Redis.from_url(settings.redis_url or "", decode_responses=True, socket_timeout=REDIS_TIMEOUT,
                                  socket_connect_timeout=REDIS_TIMEOUT) if deployed else None
    registry: list[JourneyRegistry] = []

    def check() -> str | None:
        try:
            if client is not None:
                try:
                    client.ping()
                except (redis.RedisError, OSError) as error:
                    return f"the deployed versions cannot be read: redis does not answer: {error}"
            if not registry:
                runtime = Runtime(settings, client, Keys(settings.namespace, settings.timer_shards),
                                  SystemClock()) if client is not None else None
                registry.append(served_journeys(settings, runtime))
            registry[0].refresh()
            failed, journeys = registry[0].failed_files, registry[0].journeys
        finally:
            if client is not None:
                client.connection_pool.disconnect()
        if failed:
            return "journey files do not load: " + ", ".join(str(path) for path in failed)
        if not journeys:
            return "no journeys are deployed (lifecycle deploy)" if deployed else \
                f"no journeys load from {settings.journeys_dir}"
        return None

    return one_at_a_time(check)


@dataclass
class Health:
    """What this process checks: `live` to keep running, `ready` to be given work."""

    live: dict[str, Check] = field(default_factory=dict)
    ready: dict[str, Check] = field(default_factory=dict)

    @staticmethod
    def run(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
        results = {}
        for name, check in checks.items():
            try:
                problem = check()
            except Exception as error:  # a check that fails is a failing check, not a 500
                problem = f"check failed: {error}"
            results[name] = problem or "ok"
        return all(value == "ok" for value in results.values()), results

    async def healthz(self, request: Request) -> JSONResponse:
        return await self._answer(self.live)

    async def readyz(self, request: Request) -> JSONResponse:
        return await self._answer({**self.live, **self.ready})

    async def _answer(self, checks: dict[str, Check]) -> JSONResponse:
        ok, results = await run_in_threadpool(self.run, checks)
        return JSONResponse({"status": "ok" if ok else "failing", "checks": results}, status_code=200 if ok else 503)

    def routes(self) -> list[Route]:
        return [Route("/healthz", self.healthz, methods=["GET"]), Route("/readyz", self.readyz, methods=["GET"])]


def thread_alive(thread: threading.Thread, what: str) -> Check:
    return lambda: None if thread.is_alive() else f"{what} has stopped"


def serve_probes(health: Health, port: int, host: str = "0.0.0.0") -> uvicorn.Server:
    """Serve /healthz and /readyz on `port` from a daemon thread; returns once it listens."""
    app = Starlette(routes=health.routes())
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                           timeout_keep_alive=5, lifespan="off"))
    thread = threading.Thread(target=server.run, name="lifecycle-probes", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise OSError(f"could not serve health probes on {host}:{port}")
    logger.info("health probes on http://%s:%d/healthz and /readyz", host, port)
    return server
