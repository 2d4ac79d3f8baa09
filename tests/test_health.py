"""Liveness and readiness of every process, and JSON logs (LIFECYCLE_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from automation.api import Lifecycle
from automation.config import Settings
from automation.messages.unsubscribe import make_token
from automation.runtime import open_runtime
from automation.server.app import create_app
from automation.server.health import Health, journeys_check, one_at_a_time, redis_check, serve_probes
from tests.conftest import lifecycle_command as lifecycle, wait_for, write


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def probe(url: str) -> int | None:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.ConnectionError:
        return None


@pytest.mark.integration
@pytest.mark.parametrize("command", [["scheduler"], ["worker", "-p", "1", "-t", "2"], ["run", "-p", "1", "-t", "2"]])
def test_long_running_commands_answer_health_probes(settings, tmp_path, command):
    port = free_port()
    log = open(tmp_path / "process.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "automation", *command, "--health-port", str(port)],
                               env={**os.environ, **settings.to_env()}, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: probe(f"{base}/readyz") == 200 or process.poll() is not None, timeout=90,
                 what=f"lifecycle {command[0]} to be ready")
        assert process.poll() is None, (tmp_path / "process.log").read_text()
        ready = requests.get(f"{base}/readyz", timeout=5).json()
        assert ready["status"] == "ok" and ready["checks"]["redis"] == "ok"
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_readiness_fails_while_redis_does_not_answer():
    dead = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    port = free_port()
    server = serve_probes(Health(ready={"redis": redis_check(dead)}), port, host="127.0.0.1")
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert answer.status_code == 503 and answer.json()["checks"]["redis"].startswith("redis does not answer")
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        server.should_exit = True


def test_deployed_versions_that_cannot_be_read_say_so(settings):
    dead = settings.with_changes(redis_url=f"redis://127.0.0.1:{free_port()}/0", deploy="required")
    problem = journeys_check(dead)()
    assert problem is not None and problem.startswith("the deployed versions cannot be read: redis does not answer")


def test_serve_is_not_ready_while_a_journey_file_does_not_load(runtime, project, serve_app):
    url = serve_app(create_app(runtime, env={})).url
    assert requests.get(f"{url}/readyz", timeout=10).json() == {"status": "ok",
                                                              "checks": {"redis": "ok", "journeys": "ok"}}
    broken = write(project / "journeys" / "broken.yaml", "journey: broken\nsteps: [{send: emial}]\n")
    url = serve_app(create_app(runtime, env={})).url
    answer = requests.get(f"{url}/readyz", timeout=10)
    assert answer.status_code == 503 and str(broken) in answer.json()["checks"]["journeys"]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_serve_logs_json_lines_with_request_and_contact_ids(settings, runtime, tmp_path):
    Lifecycle(runtime).identify("ana", {"email": "ana@example.com", "consent": {"email": True}})
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_LOG_FORMAT": "json"}
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "automation", "-v", "serve", "--port", str(port)], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: probe(f"{url}/healthz") == 200, timeout=60, what="lifecycle serve")
            answer = requests.post(f"{url}/unsubscribe", params={"token": make_token(settings.secret, "ana", "email")},
                                   headers={"X-Request-Id": "req-42"}, timeout=10)
            assert answer.status_code == 200 and answer.headers["X-Request-Id"] == "req-42"
            wait_for(lambda: "unsubscribed from email" in log.read_text(), timeout=30, what="the log line")
        finally:
            process.terminate()
            process.wait(timeout=20)
    lines = json_lines(log.read_text())
    line = next(item for item in lines if "unsubscribed from email" in item["message"])
    assert (line["contact"], line["request_id"], line["level"]) == ("ana", "req-42", "INFO")
    assert {"time", "logger", "message"} <= set(line)


@pytest.mark.integration
def test_worker_processes_log_json(settings, tmp_path: Path):
    log = tmp_path / "worker.log"
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_LOG_FORMAT": "json"}
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "automation", "-v", "worker", "-p", "1", "-t", "1"],
                                   env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: "Worker process is ready" in log.read_text(), timeout=90, what="the worker to start")
        finally:
            process.terminate()
            process.wait(timeout=60)
    lines = json_lines(log.read_text())        # every line is one JSON object ...
    assert any(item["message"] == "Worker process is ready for action." for item in lines)   # ... the workers' too


def test_with_deployed_versions_required_serve_is_ready_once_they_are_deployed(settings, clock, serve_app):
    required = settings.with_changes(deploy="required")
    runtime = open_runtime(required, clock=clock)
    try:
        url = serve_app(create_app(runtime, env={})).url
        answer = requests.get(f"{url}/readyz", timeout=10)
        # The files load, but workers serve only deployed versions, and none is yet
        assert answer.status_code == 503
        assert answer.json()["checks"]["journeys"] == "no journeys are deployed (lifecycle deploy)"
        assert lifecycle(settings, "deploy", LIFECYCLE_DEPLOY="required").returncode == 0
        wait_for(lambda: probe(f"{url}/readyz") == 200, timeout=30, what="readiness after the deploy")
    finally:
        runtime.close()


def test_a_probe_that_comes_while_another_checks_answers_what_the_last_check_found():
    release, started = threading.Event(), threading.Event()
    answers = iter(["redis does not answer", None])

    def slow() -> str | None:
        started.set()
        assert release.wait(30)
        return next(answers)

    check = one_at_a_time(slow)
    release.set()
    assert check() == "redis does not answer"
    release.clear()
    started.clear()
    second = threading.Thread(target=check)
    second.start()
    assert started.wait(30)
    # A probe meanwhile does not wait in line: it answers the last result at once
    assert check() == "redis does not answer"
    release.set()
    second.join(30)
