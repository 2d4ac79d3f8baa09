"""The key that signs unsubscribe links: never a default everyone knows.

An embedded install (REDIS_URL unset) generates a random key on its first start and keeps it with
its data (`$LIFECYCLE_HOME/secret`, mode 600), so every process of that install signs and checks
links with the same key, across restarts. A production install (REDIS_URL set) must say which key
to use: `LIFECYCLE_SECRET`. Whatever signs or checks links refuses to run without one
(`require_secret`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from automation.config import Settings
from automation.errors import ConfigError

FILE_NAME = "secret"
#: What every installation used before keys were required; tokens signed with it are forgeries.
WELL_KNOWN = frozenset({"change-me"})
HOW_TO_SET = ("set LIFECYCLE_SECRET to a long random value (e.g. the output of `openssl rand -hex 32`), the same "
              "for every process of this install")


def secret_file(home: Path) -> Path:
    return Path(home) / FILE_NAME


def embedded_secret(home: Path) -> str:
    """The embedded install's key: read from its data folder, created there on first use."""
    path = secret_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two processes starting at once, one creates it and the other reads it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):
            text = path.read_text().strip()
            if text:
                return text
            os.sched_yield()  # the creator is between creating and writing it
        raise ConfigError(f"{path} is empty; delete it to generate a new key, or {HOW_TO_SET}") from None
    key = secrets.token_hex(32)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key


def require_secret(settings: Settings, what: str) -> str:
    """The key, or a ConfigError saying how to set it (`what` needs it)."""
    if not settings.secret:
        raise ConfigError(f"LIFECYCLE_SECRET is not set, and {what} needs it to sign or check unsubscribe "
                          f"links: {HOW_TO_SET}")
    if settings.secret in WELL_KNOWN:
        raise ConfigError(f"LIFECYCLE_SECRET is the well-known old default {settings.secret!r}: {HOW_TO_SET}")
    return settings.secret
