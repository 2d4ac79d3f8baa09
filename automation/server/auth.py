"""Who may call: write keys as the HTTP Basic user name (as Segment's libraries send them).

Keys live hashed in Redis (automation.store.apikeys). A key found there is remembered for
`CACHE_SECONDS`, so the ingest path costs no Redis round trip for it; a revoked key therefore stops
working within that time. Unknown keys are never remembered.
"""

from __future__ import annotations

import base64
import binascii
import time

from automation.runtime import Runtime
from automation.server.webhooks import HTTPError
from automation.store.apikeys import ApiKey, ApiKeys

CACHE_SECONDS = 5.0
CHALLENGE = {"WWW-Authenticate": 'Basic realm="lifecycle"'}


class Unauthorized(HTTPError):
    """401: the response carries a Basic challenge."""


def key_of(authorization: str | None) -> str | None:
    """The key (the Basic user name; the password is ignored, as Segment's is empty)."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, _ = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user or None


class KeyCheck:
    def __init__(self, runtime: Runtime) -> None:
        self.keys = ApiKeys(runtime)
        self._known: dict[str, tuple[ApiKey, float]] = {}

    def cached(self, authorization: str | None) -> ApiKey | None:
        """The key's record if it was seen lately (no Redis call: the event loop may call this)."""
        key = key_of(authorization)
        found = self._known.get(key) if key else None
        if found is not None and found[1] > time.monotonic():
            return found[0]
        return None

    def require(self, authorization: str | None, scope: str) -> ApiKey:
        """The key's record, if it may act in `scope`; else 401 (no key, unknown or revoked) or 403."""
        record = self.cached(authorization)
        if record is None:
            key = key_of(authorization)
            if key is None:
                raise Unauthorized("401 Unauthorized", "send a write key as the HTTP Basic user name")
            record = self.keys.lookup(key)
            if record is None:
                raise Unauthorized("401 Unauthorized", "this key is not valid (unknown or revoked)")
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[key] = (record, time.monotonic() + CACHE_SECONDS)
        if not record.allows(scope):
            raise HTTPError("403 Forbidden", f"this key's scope is {record.scope!r}; this needs {scope!r}")
        return record
