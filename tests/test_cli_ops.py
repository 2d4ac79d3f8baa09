"""The ops commands as an operator runs them: `lifecycle run` on the embedded Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import process_alive, outbox_files, wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lifecycle(project: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "automation", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)


def test_run_serves_contacts_from_other_commands_on_the_embedded_redis(project: Path):
    # Given no REDIS_URL: every command uses the embedded server in LIFECYCLE_HOME
    env = {**os.environ, "LIFECYCLE_HOME": str(project / ".lifecycle"), "LIFECYCLE_NAMESPACE": "ops"}
    env.pop("REDIS_URL", None)
    log = project / "run.log"
    port = free_port()
    run = subprocess.Popen([sys.executable, "-m", "automation", "run", "--threads", "2", "--metrics-port", str(port),
                            "--timeline"],
                           cwd=project, env=env,
                           stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # When a contact is identified from another process
        result = lifecycle(project, env, "identify", "zoe", "email=zoe@example.com", "first_name=Zoë",
                           "consent.email:=true")
        assert result.returncode == 0, result.stderr
        # Then the running workers welcome them
        try:
            wait_for(lambda: outbox_files(project / "outbox", "email") != [], timeout=30, what="the welcome email")
        except AssertionError:
            raise AssertionError(log.read_text()) from None
        (path,) = outbox_files(project / "outbox", "email")
        assert path.name.startswith("zoe--customer-lifecycle--welcome--")
        # and --timeline prints it as the demo does: the day on the journey clock, the contact, what happened
        timeline = re.compile(r"^day +0\.0  zoe +(?P<text>.+)$", re.MULTILINE)
        wait_for(lambda: len(timeline.findall(log.read_text())) >= 2, timeout=30, what="the timeline")
        assert [line.split()[:4] for line in timeline.findall(log.read_text())][:2] == [
            ["->", "enters", "stage", "'lead'"], ["sent", "email", "welcome", f"outbox/email/{path.name}"]]
        status = json.loads(lifecycle(project, env, "status", "--json").stdout)
        assert status["stats"]["sent"] == 1 and status["worker_processes"] >= 1
        info = lifecycle(project, env, "inspect", "zoe")
        assert "customer-lifecycle: lead since" in info.stdout
        assert "customer-lifecycle:lead:1:welcome: sent email welcome" in info.stdout
        # and Prometheus sees the same counters
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'lifecycle_steps_total{channel="email",outcome="sent",reason=""} 1.0' in metrics
        assert ('lifecycle_journey_steps_total{journey="customer-lifecycle",outcome="sent",stage="lead",'
                'step="welcome"} 1.0') in metrics
        assert 'lifecycle_stage_entries_total{journey="customer-lifecycle",stage="lead"} 1.0' in metrics
        assert 'lifecycle_timers{state="pending"} 1.0' in metrics
        redis_pid = int((project / ".lifecycle" / "redis" / "redis.pid").read_text())
    finally:
        os.killpg(run.pid, signal.SIGINT)    # Ctrl-C
        run.wait(timeout=60)
    assert run.returncode == 0, log.read_text()
    # The last process to leave the embedded Redis stopped it (the scheduler's Dramatiq connections
    # once kept it up after `run` was gone)
    wait_for(lambda: not process_alive(redis_pid), timeout=20, what="the embedded redis-server to stop")
    # The data survives: a new command sees the contact (append-only file on disk)
    info = lifecycle(project, env, "inspect", "zoe", "--json")
    assert json.loads(info.stdout)["attributes"]["first_name"] == "Zoë"
    assert (project / ".lifecycle" / "redis" / "appendonly.aof").exists()


def test_inspect_unknown_contact_and_validate_exit_codes(project: Path):
    env = {**os.environ, "LIFECYCLE_HOME": str(project / ".lifecycle")}
    env.pop("REDIS_URL", None)
    assert lifecycle(project, env, "inspect", "nobody").returncode == 1
    assert lifecycle(project, env, "validate").returncode == 0
    (project / "journeys" / "bad.yaml").write_text("journey: Bad Name\nstages: []\n")
    result = lifecycle(project, env, "validate")
    assert result.returncode == 1
    assert "journeys/bad.yaml:1:10: 'journey' journey name must be lowercase" in result.stdout
