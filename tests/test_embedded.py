"""The embedded Redis: shared by commands, durable, and back after a crash."""

from __future__ import annotations

import os
import signal
import threading
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
    client.set("contact", "ana")          # acknowledged: in the append-only file before the reply
    os.kill(server.pid, signal.SIGKILL)   # the server dies without cleaning up
    again = EmbeddedRedis(tmp_path)
    url = again.start()
    assert redis.Redis.from_url(url).get("contact") == b"ana"
    again.stop(force=True)


def test_a_killed_server_comes_back_at_the_same_address_and_clients_reconnect(tmp_path: Path):
    # Given a process using the embedded server, watching it, and a client connected to it
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    client = redis.Redis.from_url(url, retry_on_error=[redis.ConnectionError])
    client.set("timer", "due")
    stop = threading.Event()
    server.watch(stop, interval=0.1)
    # When the server is killed
    first = server.pid
    os.kill(first, signal.SIGKILL)
    # Then it is started again at the same address, with its data, and the same client object works
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client.get("timer") == b"due":
                break
        except redis.ConnectionError:
            time.sleep(0.1)
    else:
        raise AssertionError("the client did not get its data back")
    assert server.pid != first and EmbeddedRedis(tmp_path).url == url
    stop.set()
    server.stop(force=True)
