"""Journey versions: which version of each journey file the workers serve, since when, deployed by
whom, and the source text of every version, so a plan can compare files with what runs and a
rollback can go back.

    <ns>:jv                  hash    journey -> the deployed version (12 hex digits of the text's SHA-256)
    <ns>:jv:<journey>        list    JSON records {v, at, by, path}, newest first (the first is deployed)
    <ns>:js:<journey>:<v>    string  the file's text of that version

A version is recorded once per change: recording the version already deployed does nothing, so
every worker that reloads the same file may try, and one of them wins.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import redis

from automation.runtime import Runtime

logger = logging.getLogger(__name__)

#: Versions kept per journey (and their texts); older ones cannot be rolled back to.
HISTORY = 50
#: Seconds the deploy lock outlives a deployer that stopped renewing it (a crash).
LOCK_SECONDS = 60.0


@dataclass(frozen=True)
class Version:
    journey: str
    version: str
    at: float           # wall clock
    by: str             # a commit, a name, or "worker" (a worker's automatic reload)
    path: str           # the file it came from

    def encode(self) -> str:
        data = asdict(self)
        data.pop("journey")
        return json.dumps({"v": data.pop("version"), **data}, separators=(",", ":"))

    @classmethod
    def decode(cls, journey: str, raw: str) -> "Version":
        data = json.loads(raw)
        return cls(journey, data["v"], float(data["at"]), data.get("by", ""), data.get("path", ""))


def record(runtime: Runtime, journey: str, version: str, path: str, text: str, by: str = "") -> Version | None:
    """Make `version` the deployed one; None when it already was (another process recorded it)."""
    keys, client = runtime.keys, runtime.redis
    entry = Version(journey, version, time.time(), by, path)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.deployed)
                if pipe.hget(keys.deployed, journey) == version:
                    return None
                dropped = [Version.decode(journey, raw).version
                           for raw in pipe.lrange(keys.versions(journey), HISTORY - 1, -1)]
                pipe.multi()
                pipe.hset(keys.deployed, journey, version)
                pipe.lpush(keys.versions(journey), entry.encode())
                pipe.ltrim(keys.versions(journey), 0, HISTORY - 1)
                pipe.set(keys.version_source(journey, version), text)
                for old in set(dropped) - {version}:
                    pipe.delete(keys.version_source(journey, old))
                pipe.execute()
                return entry
            except redis.WatchError:
                continue


def deployed(runtime: Runtime) -> dict[str, Version]:
    """Every journey's deployed version."""
    keys, client = runtime.keys, runtime.redis
    pointers = client.hgetall(keys.deployed)
    pipe = client.pipeline(transaction=False)
    for journey in pointers:
        pipe.lindex(keys.versions(journey), 0)
    found: dict[str, Version] = {}
    for (journey, version), raw in zip(pointers.items(), pipe.execute(), strict=True):
        entry = Version.decode(journey, raw) if raw else Version(journey, version, 0.0, "", "")
        found[journey] = entry if entry.version == version else Version(journey, version, 0.0, "", "")
    return found


def pointers(runtime: Runtime) -> dict[str, str]:
    """Journey -> deployed version: what a worker serving deployed versions polls (one HGETALL)."""
    return runtime.redis.hgetall(runtime.keys.deployed)


def history(runtime: Runtime, journey: str, limit: int = HISTORY) -> list[Version]:
    """A journey's versions, newest (the deployed one) first."""
    return [Version.decode(journey, raw) for raw in runtime.redis.lrange(runtime.keys.versions(journey), 0, limit - 1)]


def source(runtime: Runtime, journey: str, version: str) -> str | None:
    return runtime.redis.get(runtime.keys.version_source(journey, version))


def deployed_sources(runtime: Runtime) -> dict[str, tuple[Version, str]]:
    """Every deployed journey's version and source text (those whose text is missing are left out)."""
    found = deployed(runtime)
    pipe = runtime.redis.pipeline(transaction=False)
    for journey, entry in found.items():
        pipe.get(runtime.keys.version_source(journey, entry.version))
    return {journey: (entry, text) for (journey, entry), text in zip(found.items(), pipe.execute(), strict=True)
            if text is not None}


def forget(runtime: Runtime, journey: str) -> None:
    """The journey is no longer deployed (its file was removed); its history stays."""
    runtime.redis.hdel(runtime.keys.deployed, journey)


def deployer(folder: Path | None = None) -> str:
    """Who deploys: the git commit of the checkout the files are in, else the user's name."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=folder or Path.cwd(),
                              capture_output=True, text=True, timeout=5, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return f"git:{done.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


class DeployedSource:
    """The deployed versions, for a journey registry serving only those (LIFECYCLE_DEPLOY=required)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def pointers(self) -> dict[str, str]:
        return pointers(self.runtime)

    def source(self, journey: str, version: str) -> tuple[str, str] | None:
        text = source(self.runtime, journey, version)
        if text is None:
            return None
        entry = next((v for v in history(self.runtime, journey) if v.version == version), None)
        return (entry.path if entry and entry.path else f"{journey}.yaml"), text


def lock(runtime: Runtime, owner: str, wait: float = 60.0, hold: float = LOCK_SECONDS) -> bool:
    """Take the deploy lock (one deploy moves runs at a time, be it `lifecycle deploy` or a worker
    that saw a file change); False if another held it for `wait` seconds."""
    deadline = time.monotonic() + wait
    while not runtime.redis.set(runtime.keys.deploying, owner, nx=True, px=int(hold * 1000)):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def extend(runtime: Runtime, owner: str, hold: float = LOCK_SECONDS) -> bool:
    """Hold the lock `hold` seconds more, if `owner` still holds it."""
    with runtime.redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(runtime.keys.deploying)
            if pipe.get(runtime.keys.deploying) != owner:
                return False
            pipe.multi()
            pipe.pexpire(runtime.keys.deploying, int(hold * 1000))
            pipe.execute()
            return True
        except redis.WatchError:
            return False


def unlock(runtime: Runtime, owner: str) -> None:
    with runtime.redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(runtime.keys.deploying)
            if pipe.get(runtime.keys.deploying) == owner:
                pipe.multi()
                pipe.delete(runtime.keys.deploying)
                pipe.execute()
        except redis.WatchError:
            pass


@contextmanager
def locked(runtime: Runtime, owner: str, wait: float = 60.0, hold: float = LOCK_SECONDS) -> Iterator[bool]:
    """The deploy lock for as long as the block runs, however long (renewed every third of `hold`);
    yields False, holding nothing, if another held it for `wait` seconds."""
    if not lock(runtime, owner, wait, hold):
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(hold / 3):
            try:
                extend(runtime, owner, hold)
            except redis.RedisError as exc:     # Redis away for a moment: the next renewal may reach it
                logger.warning("could not renew the deploy lock: %s", exc)

    keeper = threading.Thread(target=renew, name="deploy-lock", daemon=True)
    keeper.start()
    try:
        yield True
    finally:
        stop.set()
        keeper.join()
        unlock(runtime, owner)
