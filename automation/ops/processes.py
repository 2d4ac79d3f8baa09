"""Starting and stopping worker processes for `lifecycle run`, the demo and tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from automation.config import Settings


def start_workers(settings: Settings, processes: int = 1, threads: int = 8,
                  log: IO[bytes] | Path | None = None, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`lifecycle worker` as a child process in its own process group, seeing `settings`."""
    env = {**os.environ, **settings.to_env(), **(extra_env or {})}
    command = [sys.executable, "-m", "automation", "worker", "--processes", str(processes),
               "--threads", str(threads), "--shutdown-timeout", "10"]
    output = open(log, "ab") if isinstance(log, Path) else log
    return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT if output else None,
                            start_new_session=True)


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the main process (graceful: running batches finish), then SIGKILL the group if needed.

    Only the main process is signalled: the Dramatiq master forwards the signal to its
    workers, and a worker that gets a second SIGTERM exits at once.
    """
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_process(process)


def kill_process(process: subprocess.Popen) -> None:
    """SIGKILL the whole process group: what a crash or an OOM kill looks like."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
