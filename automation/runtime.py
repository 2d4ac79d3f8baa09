"""The shared handles every part of the engine works with: settings, Redis, keys, clock.

`open_runtime()` resolves where Redis is (REDIS_URL, or the embedded server) and
checks that this process agrees with the data already in Redis about the number
of timer shards, which must never change once timers exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import redis

from automation.clock import Clock, clock_from_settings
from automation.config import ConfigError, Settings
from automation.embedded import EmbeddedRedis
from automation.secret import embedded_secret
from automation.store.keys import Keys

SCHEMA_VERSION = "2"


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    clock: Clock
    embedded: EmbeddedRedis | None = field(default=None, repr=False)

    @property
    def redis_url(self) -> str:
        assert self.settings.redis_url, "open_runtime() always sets redis_url"
        return self.settings.redis_url

    def close(self, stop_embedded: bool = False) -> None:
        """Disconnect; leave the embedded server if this process started or joined it
        (`stop_embedded=True` stops it even if other clients are connected)."""
        self.redis.close()
        if self.embedded is not None:
            self.embedded.stop(force=stop_embedded)
            self.embedded = None


def resolve_redis(settings: Settings) -> tuple[Settings, EmbeddedRedis | None]:
    """Settings with a concrete redis_url, starting the embedded server if there is none. The
    embedded install also gets its own generated secret, kept with its data, unless one is set."""
    if settings.redis_url:
        return settings, None
    embedded = EmbeddedRedis(Path(settings.home) / "redis")
    url = embedded.start()
    return settings.with_changes(redis_url=url, secret=settings.secret or embedded_secret(settings.home)), embedded


def open_runtime(settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
    settings = settings or Settings.from_env()
    settings, embedded = resolve_redis(settings)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.namespace, settings.timer_shards)
    runtime = Runtime(
        settings=settings,
        redis=client,
        keys=keys,
        clock=clock or clock_from_settings(settings.clock_speed, settings.clock_origin, settings.clock_start),
        embedded=embedded,
    )
    check_meta(runtime)
    return runtime


def check_meta(runtime: Runtime) -> None:
    """Record the shard count on first use; refuse to run with a different one later."""
    key = runtime.keys.meta
    runtime.redis.hsetnx(key, "timer_shards", runtime.settings.timer_shards)
    runtime.redis.hsetnx(key, "schema", SCHEMA_VERSION)
    schema = runtime.redis.hget(key, "schema")
    if schema != SCHEMA_VERSION:
        raise ConfigError(
            f"the data in Redis (namespace {runtime.settings.namespace!r}) has layout version {schema}, this "
            f"version of lifecycle uses {SCHEMA_VERSION}; use another LIFECYCLE_NAMESPACE or an empty database"
        )
    stored = int(runtime.redis.hget(key, "timer_shards"))
    if stored != runtime.settings.timer_shards:
        raise ConfigError(
            f"LIFECYCLE_TIMER_SHARDS={runtime.settings.timer_shards} but the data in Redis "
            f"(namespace {runtime.settings.namespace!r}) was written with {stored} shards; "
            f"set LIFECYCLE_TIMER_SHARDS={stored}"
        )
