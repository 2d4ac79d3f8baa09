"""The outbox adapter: every message becomes a file in a folder.

Email is written as a standard `.eml` file with all its headers (open it in any
mail client), SMS and push as JSON. It needs no credentials, so the demo and a
fresh checkout work offline, and it is a faithful stand-in for a provider in
staging: the file name is derived from the idempotency key, and a message is
written at most once, like a provider that deduplicates. Each message is written
whole to a hidden temporary file (`.tmp-...`) first and then linked under its
name, which fails if that name exists: a crash never leaves part of a message
under a message's name, only a temporary file that nothing lists (message names
have `--` in them, temporary ones do not).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Mapping, Sequence

from automation.channels.base import Channel, Check, Delivery, Failed, Result, Sent

# SMTP line endings, and no folding of long headers: a folded List-Unsubscribe URL would be
# RFC 2047-encoded, which mail clients do not accept.
EML_POLICY = policy.SMTP.clone(max_line_length=998)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:limit] or "x"


class OutboxChannel(Channel):
    name = "outbox"
    channels = ("email", "sms", "push", "webhook")
    idempotent = True

    def requests(self, deliveries: Sequence[Delivery]) -> list[list[int]]:
        # Local and idempotent: a batch is one "request", and one that a crash interrupts is simply
        # written again (an existing message is never written twice).
        return [list(range(len(deliveries)))] if deliveries else []
    options = {"url": "webhook steps: where the webhook would go (the outbox writes the step's JSON instead)"}

    def address(self, channel: str, contact: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        if channel == "webhook":
            return options.get("url")
        return super().address(channel, contact, options)

    def template_required(self, channel: str, options: Mapping[str, Any]) -> bool:
        return channel != "webhook"

    def consent_needed(self, channel: str) -> bool:
        return channel != "webhook"   # a webhook goes to your own systems, not to the contact

    def __init__(self, settings, env=None, directory: Path | None = None) -> None:
        super().__init__(settings, env)
        self.directory = Path(directory or settings.outbox_dir)

    def check(self) -> list[Check]:
        folder = self.directory.resolve()
        probe = folder if folder.exists() else folder.parent
        if os.access(probe, os.W_OK):
            return [Check("ok", f"outbox: writes messages to {folder}")]
        return [Check("error", f"outbox: cannot write to {folder}")]

    def _path(self, delivery: Delivery, suffix: str) -> Path:
        digest = hashlib.sha256(delivery.key.encode()).hexdigest()[:12]
        name = f"{_slug(delivery.contact_id)}--{_slug(delivery.journey)}--{_slug(delivery.step)}--{digest}{suffix}"
        return self.directory / delivery.channel / name

    def send(self, delivery: Delivery) -> Result:
        return self.send_many([delivery])[0]

    def send_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        results: list[Result] = []
        folders: set[Path] = set()
        for delivery in deliveries:
            result, folder = self._write(delivery)
            results.append(result)
            if folder is not None:
                folders.add(folder)
        # The new names are durable before anyone records the messages as sent: once per folder.
        for folder in folders:
            _fsync_folder(folder)
        return results

    def _write(self, delivery: Delivery) -> tuple[Result, Path | None]:
        """Write one message; the result, and the folder that got a new name (None if none did)."""
        if delivery.channel == "email":
            body, suffix = self._email(delivery), ".eml"
        else:
            body, suffix = self._json(delivery), ".json"
        path = self._path(delivery, suffix)
        temp = path.with_name(f".tmp-{path.stem[-12:]}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                # Unlike a rename, a link never replaces a message another worker wrote meanwhile.
                os.link(temp, path)
            except FileExistsError:
                return Sent(provider_id=path.name, detail="already in the outbox"), None
        except OSError as exc:
            return Failed(f"cannot write to the outbox {self.directory}: {exc}", code="outbox_error"), None
        finally:
            temp.unlink(missing_ok=True)
        return Sent(provider_id=path.name, detail=str(path)), path.parent

    def _email(self, delivery: Delivery) -> bytes:
        message = EmailMessage(policy=EML_POLICY)
        message["From"] = self.settings.email_from
        message["To"] = delivery.to
        message["Subject"] = delivery.parts["subject"]
        message["Date"] = formatdate(delivery.at, usegmt=True)
        # The same step always gets the same Message-ID, so receivers can deduplicate too.
        message["Message-ID"] = f"<{hashlib.sha256(delivery.key.encode()).hexdigest()[:32]}@lifecycle.local>"
        for header, value in delivery.headers.items():
            message[header] = value
        message.set_content(delivery.parts.get("text") or "")
        message.add_alternative(delivery.parts["html"], subtype="html")
        return bytes(message)

    def _json(self, delivery: Delivery) -> bytes:
        payload = {
            "channel": delivery.channel,
            "to": delivery.to,
            **delivery.parts,
            "metadata": dict(delivery.metadata),
        }
        if delivery.data:
            payload["data"] = dict(delivery.data)
        return (json.dumps(payload, ensure_ascii=False, indent=2) + "\n").encode()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass   # some file systems cannot sync a folder; the message's own data is synced
    finally:
        os.close(fd)
