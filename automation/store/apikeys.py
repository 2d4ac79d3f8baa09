"""Write keys for the HTTP API: created, listed and revoked by `lifecycle keys`, checked per request.

A key is shown once, when it is created; Redis keeps only its SHA-256 (`<ns>:key:<digest>`), with
its id, name, scope and creation time, so a copy of the database gives nobody a usable key. Keys
are 192 random bits, so a fast hash is enough: there is nothing to guess a password from.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from automation.errors import InputError
from automation.runtime import Runtime

#: `ingest` sends contacts and events; `admin` also reads /metrics (and any admin endpoint).
SCOPES = ("ingest", "admin")
PREFIX = "lc_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: str
    created: float

    def allows(self, scope: str) -> bool:
        return self.scope == scope or self.scope == "admin"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, runtime: Runtime) -> None:
        self.redis = runtime.redis
        self.keys = runtime.keys

    def create(self, scope: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key: its record and the key itself (never stored, shown once)."""
        if scope not in SCOPES:
            raise InputError(f"scope {scope!r}: use {' or '.join(SCOPES)}")
        key = PREFIX + secrets.token_urlsafe(24)
        hashed = digest(key)
        record = ApiKey(hashed[:12], name, scope, time.time())
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.api_key(hashed), mapping={"id": record.id, "name": name, "scope": scope,
                                                      "created": repr(record.created)})
        pipe.hset(self.keys.api_keys, record.id, hashed)
        pipe.execute()
        return record, key

    def list(self) -> list[ApiKey]:
        pipe = self.redis.pipeline(transaction=False)
        for hashed in self.redis.hvals(self.keys.api_keys):
            pipe.hgetall(self.keys.api_key(hashed))
        found = [self._record(data) for data in pipe.execute() if data]
        return sorted(found, key=lambda k: k.created)

    def revoke(self, key_id: str) -> bool:
        hashed = self.redis.hget(self.keys.api_keys, key_id)
        if hashed is None:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.api_key(hashed))
        pipe.hdel(self.keys.api_keys, key_id)
        pipe.execute()
        return True

    def lookup(self, key: str) -> ApiKey | None:
        """The key's record, or None for a key that is unknown or revoked."""
        data = self.redis.hgetall(self.keys.api_key(digest(key)))
        return self._record(data) if data else None

    @staticmethod
    def _record(data: dict[str, str]) -> ApiKey:
        return ApiKey(data["id"], data.get("name", ""), data["scope"], float(data.get("created", 0)))
