"""Signed per-contact unsubscribe links (RFC 8058 one-click) and their verification.

The token names the contact, the channel and when it was issued, and carries an HMAC, so an
unsubscribe endpoint can trust it without a database lookup and nobody can unsubscribe someone
else by guessing ids. Tokens expire (`LIFECYCLE_UNSUBSCRIBE_TOKEN_DAYS`, a year by default:
people unsubscribe from old emails), and during a key rotation the previous key
(`LIFECYCLE_SECRET_PREVIOUS`) is still accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Sequence

from automation.errors import ConfigError, InputError

SEPARATOR = "\x1f"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:16]


def make_token(secret: str | None, contact_id: str, channel: str, issued: float | None = None) -> str:
    """A token for (contact, channel), issued now (wall clock) unless `issued` says when."""
    if not secret:
        raise ConfigError("no LIFECYCLE_SECRET to sign unsubscribe links with")
    when = int(time.time() if issued is None else issued)
    payload = f"{contact_id}{SEPARATOR}{channel}{SEPARATOR}{when}".encode()
    return f"{_b64(payload)}.{_b64(_sign(secret, payload))}"


def verify_token(secrets: Sequence[str | None], token: str, now: float, max_age_seconds: float) -> tuple[str, str]:
    """(contact id, channel) of a genuine, unexpired token signed with one of `secrets` (the current
    key, then the previous one during a rotation); InputError saying why not otherwise."""
    try:
        payload_text, signature_text = token.split(".", 1)
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (ValueError, TypeError):
        raise InputError("this unsubscribe link is not valid") from None
    if not any(secret and hmac.compare_digest(signature, _sign(secret, payload)) for secret in secrets):
        raise InputError("this unsubscribe link is not valid")
    parts = payload.decode(errors="replace").split(SEPARATOR)
    if len(parts) != 3 or not parts[2].isdigit():
        raise InputError("this unsubscribe link is not valid")   # a token without an issue time
    contact_id, channel, issued = parts[0], parts[1], int(parts[2])
    if now - issued > max_age_seconds:
        raise InputError("this unsubscribe link has expired; use the link in a recent message")
    return contact_id, channel


def unsubscribe_url(base: str, secret: str | None, contact_id: str, channel: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}token={make_token(secret, contact_id, channel)}"  # URL-safe as it is


def list_unsubscribe_headers(url: str, mailto: str | None) -> dict[str, str]:
    targets = [f"<{url}>"] + ([f"<mailto:{mailto}?subject=unsubscribe>"] if mailto else [])
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
