"""Suppression lists: addresses and numbers nothing is sent to, whatever the journey or message type.

One hash per channel (`<ns>:sup:<channel>`): the address, as the channel's adapter sees it
(emails in lower case), -> why and since when (JSON). mark.lua checks it in the same script
that marks a step for its provider, so an address suppressed now is never written to again.
Hard bounces, spam complaints and invalid numbers add to it by themselves (automation.store
.contacts `apply_effects`, automation.store.deliveries); ops add lists with `lifecycle suppress`.
"""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from automation.errors import InputError
from automation.runtime import Runtime

#: Attributes that hold each channel's address; a contact's address is suppressed through them.
ADDRESS_ATTRIBUTES = {"email": "email", "sms": "phone"}


_PHONE = re.compile(r"\+?[0-9][0-9 ()-]{5,}")


def _channel_of(address: str) -> str:
    """A list's channel from an address alone: an email has an @, a phone number digits."""
    return "email" if "@" in address else "sms" if _PHONE.fullmatch(address) else ""


def normalize(channel: str, address: Any) -> str:
    """The form an address is listed and looked up in: emails without case or spaces."""
    text = str(address or "").strip()
    return text.lower() if channel == "email" else text


@dataclass(frozen=True)
class Suppression:
    channel: str
    address: str
    reason: str
    at: float


class Suppressions:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.keys = runtime.keys

    def add(self, channel: str, address: Any, reason: str) -> bool:
        """Suppress an address; False if it was already listed (its first reason stays)."""
        value = normalize(channel, address)
        if not value:
            return False
        entry = json.dumps({"reason": reason[:200], "at": time.time()}, ensure_ascii=False)
        return bool(self.redis.hsetnx(self.keys.suppressed(channel), value, entry))

    def add_many(self, items: Iterable[tuple[str, Any, str]], chunk: int = 1000) -> int:
        pipe = self.redis.pipeline(transaction=False)
        added = pending = 0
        for channel, address, reason in items:
            value = normalize(channel, address)
            if value:
                entry = json.dumps({"reason": reason[:200], "at": time.time()}, ensure_ascii=False)
                pipe.hsetnx(self.keys.suppressed(channel), value, entry)
                pending += 1
            if pending >= chunk:
                added += sum(pipe.execute())
                pending = 0
        added += sum(pipe.execute())
        return added

    def remove(self, channel: str, address: Any) -> bool:
        return bool(self.redis.hdel(self.keys.suppressed(channel), normalize(channel, address)))

    def get(self, channel: str, address: Any) -> Suppression | None:
        value = normalize(channel, address)
        raw = self.redis.hget(self.keys.suppressed(channel), value) if value else None
        if raw is None:
            return None
        data = json.loads(raw)
        return Suppression(channel, value, data.get("reason", ""), float(data.get("at", 0)))

    def which(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (channel, normalized address) pairs are listed, in one round trip."""
        asked = sorted(set(pairs))
        if not asked:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for channel, address in asked:
            pipe.hexists(self.keys.suppressed(channel), address)
        return {pair for pair, listed in zip(asked, pipe.execute(), strict=True) if listed}

    def listed(self, channel: str) -> list[Suppression]:
        found = []
        for address, raw in self.redis.hscan_iter(self.keys.suppressed(channel), count=1000):
            data = json.loads(raw)
            found.append(Suppression(channel, address, data.get("reason", ""), float(data.get("at", 0))))
        return sorted(found, key=lambda s: s.address)

    def count(self, channel: str) -> int:
        return int(self.redis.hlen(self.keys.suppressed(channel)))


def read_csv(path: Path, default_channel: str | None = None) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Rows of a suppression CSV: `address` (or `email` / `phone`), optional `channel` and `reason`.

    Returns (channel, address, reason) rows and one error per bad line, with its number.
    """
    rows: list[tuple[str, str, str]] = []
    errors: list[str] = []
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower() for name in reader.fieldnames or []}
        if not columns & {"address", "email", "phone"}:
            raise InputError(f"{path}: the first line must name an address column (address, email or phone)")
        for row in reader:
            line = reader.line_num
            cells = {key.strip().lower(): (value or "").strip() for key, value in row.items() if key}
            address = cells.get("address") or cells.get("email") or cells.get("phone") or ""
            if not address:
                continue
            channel = cells.get("channel") or default_channel or ("email" if cells.get("email") else
                                                                  "sms" if cells.get("phone") else _channel_of(address))
            if channel not in ADDRESS_ATTRIBUTES:
                errors.append(f"{path}:{line}: {address!r} is neither an email address nor a phone number; "
                              "give a channel column (email or sms)" if not channel else
                              f"{path}:{line}: unknown channel {channel!r} (email or sms)")
                continue
            if channel == "email" and "@" not in address:
                errors.append(f"{path}:{line}: {address!r} is not an email address")
                continue
            if channel == "sms" and not _PHONE.fullmatch(address):
                errors.append(f"{path}:{line}: {address!r} is not a phone number (write it as +<country><number>)")
                continue
            rows.append((channel, address, cells.get("reason") or f"imported from {Path(path).name}"))
    return rows, errors
