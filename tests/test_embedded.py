"""The embedded Redis: shared by commands, durable, and back after a crash."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from automation.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_second_user_joins_and_the_last_one_out_stops_it(tmp_path: Path):
    first, second = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    url = first.start()
    assert second.start() == url
    pid = first.pid
    first.stop()                 # the second still uses it
    assert redis.Redis.from_url(url).ping()
    second.stop()
    time.sleep(0.2)
    assert not alive(pid)


def test_force_stop_ignores_forgotten_clients(tmp_path: Path):
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    pid = server.pid
    forgotten = redis.Redis.from_url(url)
    forgotten.set("k", "v")
    server.stop(force=True)
    assert not alive(pid)


def test_data_survives_and_a_killed_server_is_replaced(tmp_path: Path):
    server = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(server.start())
    client.set("contact", "ana")
    time.sleep(1.2)              # appendfsync everysec
    os.kill(server.pid, signal.SIGKILL)   # the server dies without cleaning up
    again = EmbeddedRedis(tmp_path)
    url = again.start()
    assert redis.Redis.from_url(url).get("contact") == b"ana"
    again.stop(force=True)
