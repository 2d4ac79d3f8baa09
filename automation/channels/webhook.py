"""Webhook steps: POST the step's JSON to a URL, signed, e.g. "hot lead -> notify sales".

    - send: webhook
      url: https://crm.example.com/hooks/hot-lead

The body is the step's data (journey, stage, step, the contact's attributes and event
counts), or a template's `body` when the step names one. Each request carries

    X-Lifecycle-Key:       the step's idempotency key (deduplicate on it)
    X-Lifecycle-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with LIFECYCLE_WEBHOOK_SECRET>

so the receiver can check it came from us and is fresh (`verify_signature` below does
exactly that). A webhook is not a message to the contact: no consent is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

import requests

from automation.channels.base import TEST_HEADER, Channel, Check, Delivery, Failed, Misconfigured, Result, Retry, Sent

SIGNATURE_HEADER = "X-Lifecycle-Signature"
KEY_HEADER = "X-Lifecycle-Key"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300.0,
                     now: float | None = None) -> bool:
    """For receivers: is `header` our signature of `body`, made within `tolerance` seconds?"""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={fields.get('v1', '')}")


class WebhookChannel(Channel):
    name = "webhook"
    channels = ("webhook",)
    needs_consent = False
    parts = {"webhook": (("body",), ())}
    options = {"url": "where to POST the step's JSON (also written as `url:` on the step)"}

    def __init__(self, settings, env=None) -> None:
        super().__init__(settings, env)
        self.secret = self.env.get("LIFECYCLE_WEBHOOK_SECRET") or ""
        self.timeout = float(self.env.get("LIFECYCLE_WEBHOOK_TIMEOUT") or 10)
        self.concurrency = max(1, int(self.env.get("LIFECYCLE_WEBHOOK_CONCURRENCY") or 8))
        self._session: requests.Session | None = None
        self._pool: ThreadPoolExecutor | None = None

    def address(self, channel: str, contact: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        return options.get("url")

    def template_required(self, channel: str, options: Mapping[str, Any]) -> bool:
        return False

    def check_options(self, channel: str, options: Mapping[str, Any]) -> list[str]:
        url = options.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return ["a webhook step needs url: https://..."]
        return []

    def check(self) -> list[Check]:
        return [
            Check("ok", "webhook: requests are signed with LIFECYCLE_WEBHOOK_SECRET") if self.secret else
            Check("warning", "webhook: LIFECYCLE_WEBHOOK_SECRET is not set; webhook steps wait until it is"),
            Check("ok", f"webhook: timeout {self.timeout:g}s"),
        ]

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["User-Agent"] = "lifecycle-webhook/1"
        return self._session

    def send(self, delivery: Delivery) -> Result:
        if not self.secret:
            return Misconfigured("LIFECYCLE_WEBHOOK_SECRET is not set: webhooks are always signed")
        if delivery.parts.get("body"):
            body = delivery.parts["body"].encode()
            try:
                json.loads(body)
                content_type = "application/json"
            except ValueError:
                content_type = "text/plain; charset=utf-8"
        else:
            payload = {"id": delivery.key, "contact_id": delivery.contact_id, **delivery.data}
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            content_type = "application/json"
        headers = {"Content-Type": content_type, KEY_HEADER: delivery.key,
                   SIGNATURE_HEADER: sign(self.secret, body, int(time.time()))}
        if delivery.test:
            headers[TEST_HEADER] = "1"      # `lifecycle test-send`: the receiver can tell
        try:
            response = self.session.post(delivery.to, data=body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.Timeout:
            return Retry(30.0, f"no answer from {delivery.to} within {self.timeout:g}s")
        except requests.RequestException as error:
            return Retry(30.0, f"cannot reach {delivery.to}: {type(error).__name__}")
        return self._classify(response, delivery.to)

    def _classify(self, response: requests.Response, url: str) -> Result:
        status = response.status_code
        text = response.text[:200]
        if 200 <= status < 300:
            return Sent(response.headers.get("X-Request-Id", ""), f"{url} answered {status}")
        if status in (401, 403):
            return Misconfigured(f"{url} refused our signature or credentials ({status}): {text}")
        if status in (408, 425, 429) or status >= 500:
            after = response.headers.get("Retry-After", "")
            return Retry(float(after) if after.isdigit() else 30.0, f"{url} answered {status}: {text}")
        return Failed(f"{url} answered {status}: {text}", code="rejected")

    def send_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        if len(deliveries) < 2 or self.concurrency < 2:
            return [self.send(d) for d in deliveries]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")
        return list(self._pool.map(self.send, deliveries))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._session is not None:
            self._session.close()
