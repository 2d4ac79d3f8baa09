"""How the HTTP stack of `lifecycle serve` was chosen: the same two endpoints on each candidate.

A trivial GET /healthz and a POST /v1/track that records the event through the Python API
(`Lifecycle.track`, one Redis script call), on:

    starlette-uvicorn        Starlette on uvicorn (httptools, uvloop), 2 worker processes
    falcon-asgi-uvicorn      Falcon's ASGI app on uvicorn, 2 worker processes
    falcon-gunicorn-sync     Falcon's WSGI app on gunicorn, 2 sync workers
    falcon-gunicorn-gthread  Falcon's WSGI app on gunicorn, 2 workers x 16 threads

Not part of `bench/run.py` and not a dependency of the project: it needs
`.venv/bin/pip install falcon gunicorn` and `wrk` (apt-get install wrk). Run it as
`python3 bench/frameworks.py` with REDIS_URL set (it uses its own namespace). Results and the
choice: docs/performance.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from automation.api import Lifecycle
from automation.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PORT = 8099
_lc: Lifecycle | None = None
_n = itertools.count()


def track(body: bytes) -> None:
    global _lc
    if _lc is None:
        _lc = Lifecycle.connect(Settings.from_env())
    data = json.loads(body)
    _lc.track(data["userId"] + str(next(_n) % 1000), data["event"], data.get("properties"))


# The candidates are imported where they are built: Falcon and gunicorn are not the project's dependencies.
def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def ok(request: Any) -> Any:
        return PlainTextResponse("ok")

    async def post(request: Any) -> Any:
        await run_in_threadpool(track, await request.body())
        return JSONResponse({"success": True})

    return Starlette(routes=[Route("/healthz", ok), Route("/v1/track", post, methods=["POST"])])


def falcon_wsgi() -> Any:
    import falcon

    class Ok:
        def on_get(self, req: Any, resp: Any) -> None:
            resp.text = "ok"

    class Track:
        def on_post(self, req: Any, resp: Any) -> None:
            track(req.bounded_stream.read())
            resp.media = {"success": True}

    app = falcon.App()
    app.add_route("/healthz", Ok())
    app.add_route("/v1/track", Track())
    return app


def falcon_asgi() -> Any:
    import falcon.asgi

    class Ok:
        async def on_get(self, req: Any, resp: Any) -> None:
            resp.text = "ok"

    class Track:
        async def on_post(self, req: Any, resp: Any) -> None:
            await asyncio.to_thread(track, await req.stream.read())
            resp.media = {"success": True}

    app = falcon.asgi.App()
    app.add_route("/healthz", Ok())
    app.add_route("/v1/track", Track())
    return app


BIN = Path(sys.executable).parent
STACKS = {
    "starlette-uvicorn": [str(BIN / "uvicorn"), "bench.frameworks:starlette_app", "--factory", "--workers", "2",
                          "--port", str(PORT), "--no-access-log", "--log-level", "warning"],
    "falcon-asgi-uvicorn": [str(BIN / "uvicorn"), "bench.frameworks:falcon_asgi", "--factory", "--workers", "2",
                            "--port", str(PORT), "--no-access-log", "--log-level", "warning"],
    "falcon-gunicorn-sync": [str(BIN / "gunicorn"), "bench.frameworks:falcon_wsgi()", "-w", "2",
                             "-b", f"127.0.0.1:{PORT}"],
    "falcon-gunicorn-gthread": [str(BIN / "gunicorn"), "bench.frameworks:falcon_wsgi()", "-w", "2", "--threads", "16",
                                "-k", "gthread", "-b", f"127.0.0.1:{PORT}"],
}
POST = """wrk.method = "POST"
wrk.body = '{"userId":"u","event":"page_view","properties":{"path":"/pricing","n":1}}'
wrk.headers["Content-Type"] = "application/json"
"""


def requests_per_s(url: str, seconds: int, script: str | None = None) -> float:
    command = ["wrk", "-t1", "-c64", f"-d{seconds}s", *(["-s", script] if script else []), url]
    out = subprocess.run(command, capture_output=True, text=True).stdout
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))


def main() -> None:
    env = {**os.environ, "LIFECYCLE_NAMESPACE": f"fw{uuid.uuid4().hex[:6]}", "LIFECYCLE_SECRET": "frameworks",
           "PYTHONPATH": str(ROOT)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(POST)
    for name, command in STACKS.items():
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    requests.get(f"http://127.0.0.1:{PORT}/healthz", timeout=1)
                    break
                except requests.RequestException:   # not up yet
                    time.sleep(0.1)
            requests_per_s(f"http://127.0.0.1:{PORT}/healthz", 2)
            trivial = requests_per_s(f"http://127.0.0.1:{PORT}/healthz", 8)
            tracked = requests_per_s(f"http://127.0.0.1:{PORT}/v1/track", 8, script.name)
            print(f"{name:<26} trivial {trivial:>8,.0f} req/s   /v1/track {tracked:>7,.0f} req/s", flush=True)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
