"""The outbox adapter: every message becomes a file in a folder.

Email is written as a standard `.eml` file with all its headers (open it in any
mail client), SMS and push as JSON. It needs no credentials, so the demo and a
fresh checkout work offline, and it is a faithful stand-in for a provider in
staging: the file name is derived from the idempotency key and created with
O_EXCL, so a message is written at most once, like a provider that deduplicates.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
        if delivery.channel == "email":
            body, suffix = self._email(delivery), ".eml"
        else:
            body, suffix = self._json(delivery), ".json"
        path = self._path(delivery, suffix)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return Sent(provider_id=path.name, detail="already in the outbox")
        except OSError as exc:
            return Failed(f"cannot write to the outbox {self.directory}: {exc}", code="outbox_error")
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        return Sent(provider_id=path.name, detail=str(path))

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
