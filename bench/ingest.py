"""Events in over HTTP (`lifecycle serve`) and from files (`lifecycle import`), on the benchmark's Redis.

The server is `lifecycle serve --workers 2` in its own processes; the load comes from another
process: `wrk` (Debian's package) when it is installed, else this module's asyncio client. Figures:

- http_track_req_per_s: single events to /v1/track, keep-alive, 64 connections, as fast as they go;
- http_batch_events_per_s: /v1/batch requests of 100 events each, 16 connections;
- http_p99_ms_at_1000_rps: single events sent at a fixed 1,000 requests a second (open loop: a
  request's latency counts from when it was due, so a stalled server cannot hide its queue);
- import_events_per_s: `lifecycle import` of a JSONL file of events.

    python -m bench.ingest load URL KEY RATE SECONDS CONNECTIONS   # the asyncio client, alone
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
import requests

from automation.runtime import open_runtime
from automation.store.apikeys import ApiKeys

from .harness import ROOT, Bench, delete_namespace, percentile, publish_watch_lists, wait_until

#: wrk's request: single events vary their contact (10,000 of them); a batch is the same 100 events.
WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = %s
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json", ["Authorization"] = "Basic %s"}, body)
end
"""
SINGLE_LUA = """string.format('{"userId": "u%d", "event": "page_view", "properties": {"path": "/pricing", "n": %d}}',
                              counter % 10000, counter)"""


def track_body(n: int) -> str:
    return json.dumps({"userId": f"u{n % 10000}", "event": "page_view", "messageId": f"m{n}-{os.getpid()}",
                       "properties": {"path": "/pricing", "n": n}})


def batch_body() -> str:
    return json.dumps({"batch": [{"type": "track", "userId": f"u{i}", "event": "page_view",
                                  "properties": {"path": "/pricing", "n": i}} for i in range(100)]})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """`lifecycle serve` in its own processes for a benchmark's settings."""

    def __init__(self, bench: Bench, settings: Any, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(bench.workdir / f"{settings.namespace}-serve.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "automation", "serve", "--port", str(self.port), "--workers", str(workers)],
            env={**os.environ, **settings.to_env()}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            try:
                return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        if not wait_until(up, timeout=60, interval=0.1):
            raise RuntimeError(f"lifecycle serve did not start; see {log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def cpu_seconds(process: subprocess.Popen) -> float:
    """CPU time (user + system) of a process and its children so far."""
    root = psutil.Process(process.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def redis_cpu_seconds(bench: Bench) -> float:
    info = bench.client().info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wrk(url: str, path: str, key: str, body_lua: str | None, seconds: int, connections: int,
        cpu: dict[str, Any] | None = None) -> float:
    """Requests per second `wrk` measured (non-2xx answers make the run fail); a plain GET when
    `body_lua` is None. With `cpu` (the served process and the bench), CPU microseconds per request
    of the server, Redis and wrk go in it too: on a machine shared with other work they say more
    than the rate does."""
    token = base64.b64encode(f"{key}:".encode()).decode()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (body_lua, path, token) if body_lua else "")
    before = (cpu_seconds(cpu["served"].process), redis_cpu_seconds(cpu["bench"]),
              sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])) if cpu else None
    result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url + path],
                            capture_output=True, text=True, timeout=seconds + 60)
    os.unlink(script.name)
    if "Non-2xx" in result.stdout:
        raise RuntimeError(f"wrk saw errors:\n{result.stdout}")
    done = int(next(line.split()[0] for line in result.stdout.splitlines() if "requests in" in line))
    if cpu and before:
        after = (cpu_seconds(cpu["served"].process), redis_cpu_seconds(cpu["bench"]),
                 sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]))
        cpu["us_per_request"] = {name: round((b - a) / done * 1e6) for name, a, b in
                                 zip(("server", "redis", "wrk"), before, after, strict=True)}
    return float(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("Requests/sec")))


# -- the asyncio client (another process) --------------------------------------------------------------

async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def _raw(host: str, path: str, key: str, body: str) -> bytes:
    token = base64.b64encode(f"{key}:".encode()).decode()
    payload = body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload


async def open_loop(url: str, key: str, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    """Single events at `rate` per second; latency of each from the moment it was due."""
    host, port = url.removeprefix("http://").split(":")
    total = int(rate * seconds)
    start = time.perf_counter() + 0.5
    latencies: list[float] = []
    failures = 0

    async def connection(index: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, int(port))
        for n in range(index, total, connections):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await _request(reader, writer, _raw(host, "/v1/track", key, track_body(n)))
            latencies.append(time.perf_counter() - due)
            failures += status != 200
        writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    return {"requests": len(latencies), "failures": failures, "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "max_ms": max(latencies) * 1000}


def load_in_another_process(url: str, key: str, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "bench.ingest", "load", url, key, str(rate), str(seconds),
                             str(connections)], cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


# -- the figures ------------------------------------------------------------------------------------------

def http(bench: Bench) -> dict[str, Any]:
    settings = bench.settings("http")
    runtime = open_runtime(settings)
    publish_watch_lists(runtime)
    key = ApiKeys(runtime).create("ingest", "bench")[1]
    served = Served(bench, settings)
    seconds = 5 if bench.quick else 15
    results: dict[str, Any] = {}
    try:
        if shutil.which("wrk"):
            wrk(served.url, "/v1/track", key, SINGLE_LUA, 2, 64)                       # warm-up
            cpu: dict[str, Any] = {"served": served, "bench": bench}
            results["http_track_req_per_s"] = round(wrk(served.url, "/v1/track", key, SINGLE_LUA, seconds, 64, cpu))
            results["http_track_cpu_us_per_request"] = cpu["us_per_request"]
            # The baseline, same server and load: GET /healthz, which neither reads a body nor touches
            # Redis, is what the HTTP stack alone can serve on this machine.
            trivial = wrk(served.url, "/healthz", key, None, seconds, 64)
            results["http_trivial_req_per_s"] = round(trivial)
            results["http_track_vs_trivial"] = round(results["http_track_req_per_s"] / trivial, 2)
            batch = "[[" + batch_body() + "]]"                                         # a Lua long string
            results["http_batch_events_per_s"] = round(100 * wrk(served.url, "/v1/batch", key, batch, seconds, 16,
                                                                 cpu))
            results["http_batch_cpu_us_per_event"] = {name: round(value / 100, 1)
                                                      for name, value in cpu["us_per_request"].items()}
            bench.notes.append("ingest: throughput load from wrk -t1; the paced figures from bench/ingest.py's client")
        else:
            bench.notes.append("ingest: wrk is not installed (apt-get install wrk): no throughput figures")
        paced = load_in_another_process(served.url, key, 1000, seconds, 32)
        if paced["failures"]:
            raise RuntimeError(f"{paced['failures']} paced requests failed")
        results["http_p50_ms_at_1000_rps"] = round(paced["p50_ms"], 2)
        results["http_p99_ms_at_1000_rps"] = round(paced["p99_ms"], 2)
        results["http_max_ms_at_1000_rps"] = round(paced["max_ms"], 2)
    finally:
        served.stop()
        runtime.close()
        delete_namespace(bench.client(), settings.namespace)
    return results


def import_events(bench: Bench) -> dict[str, Any]:
    settings = bench.settings("import")
    runtime = open_runtime(settings)
    publish_watch_lists(runtime)
    runtime.close()
    n = bench.count(200_000, 50_000)
    path = bench.workdir / "events.jsonl"
    now = time.time()
    with open(path, "w") as handle:
        for i in range(n):
            handle.write(json.dumps({"contact_id": f"c{i % 20000}", "event": "page_view", "timestamp": now - 3600,
                                     "properties": {"path": "/pricing", "n": i}}) + "\n")
    started, redis_before = time.perf_counter(), redis_cpu_seconds(bench)
    children_before = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    result = subprocess.run([sys.executable, "-m", "automation", "import", str(path)],
                            env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    importer = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]) - children_before
    redis_cpu = redis_cpu_seconds(bench) - redis_before
    delete_namespace(bench.client(), settings.namespace)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    # The baseline, same file and machine: reading and parsing its lines as JSON in one Python
    # process, which every importer does before it stores anything.
    started = time.perf_counter()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            json.loads(line)
    parse_only = n / (time.perf_counter() - started)
    return {"import_events": n, "import_events_per_s": round(n / elapsed),
            "import_json_parse_only_events_per_s": round(parse_only),
            "import_cpu_us_per_event": {"importer": round(importer / n * 1e6, 1),
                                        "redis": round(redis_cpu / n * 1e6, 1)}}


def run(bench: Bench) -> dict[str, Any]:
    return {**http(bench), **import_events(bench)}


if __name__ == "__main__" and sys.argv[1:2] == ["load"]:
    url_, key_, rate_, seconds_, connections_ = sys.argv[2:7]
    print(json.dumps(asyncio.run(open_loop(url_, key_, float(rate_), float(seconds_), int(connections_)))))
