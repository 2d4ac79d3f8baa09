"""Signed per-contact unsubscribe links (RFC 8058 one-click) and their verification.

The token names the contact and channel and carries an HMAC, so an unsubscribe
endpoint can trust it without a database lookup and nobody can unsubscribe
someone else by guessing ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, contact_id: str, channel: str) -> str:
    payload = f"{contact_id}\x1f{channel}".encode()
    signature = hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(signature)}"


def verify_token(secret: str, token: str) -> tuple[str, str] | None:
    """(contact id, channel) if the token is genuine, else None."""
    try:
        payload_text, signature_text = token.split(".", 1)
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (ValueError, TypeError):
        return None
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(signature, expected):
        return None
    contact_id, _, channel = payload.decode().partition("\x1f")
    return contact_id, channel


def unsubscribe_url(base: str, secret: str, contact_id: str, channel: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}token={make_token(secret, contact_id, channel)}"  # URL-safe as it is


def list_unsubscribe_headers(url: str, mailto: str | None) -> dict[str, str]:
    targets = [f"<{url}>"] + ([f"<mailto:{mailto}?subject=unsubscribe>"] if mailto else [])
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
