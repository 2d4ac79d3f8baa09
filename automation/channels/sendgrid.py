"""Email over SendGrid's v3 Mail Send API, with the official `sendgrid` SDK.

Two ways to send:
- our rendered message (subject, HTML, text): contacts whose rendered message is the
  same (a broadcast without personal details) share requests of up to 1,000
  personalizations; personalised ones go one request each, sent concurrently;
- a SendGrid dynamic template (`options: {sendgrid_template_id: d-...}`): the step's
  data goes as `dynamic_template_data`, and contacts of a batch share requests of up to
  1,000 personalizations.

Per-contact parts (recipient, unsubscribe headers, our ids) are in each personalization.

Every message carries our ids in `custom_args` (so SendGrid's event webhook can be
matched to the journey step), categories for the journey and the step, and the
one-click unsubscribe headers (RFC 8058). Sandbox mode is a setting. Every request has
a timeout.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from email.utils import parseaddr
from typing import Any, Mapping, Sequence

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from automation.channels.base import Channel, Check, Delivery, Failed, Misconfigured, Result, Retry, Sent

logger = logging.getLogger(__name__)

MAX_PERSONALIZATIONS = 1000
DEFAULT_HOST = "https://api.sendgrid.com"
TEMPLATE_OPTION = "sendgrid_template_id"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _mask(secret: str) -> str:
    return f"{secret[:3]}...{secret[-4:]}" if len(secret) > 10 else "***"


class SendGridChannel(Channel):
    name = "sendgrid"
    channels = ("email",)
    options = {TEMPLATE_OPTION: "a SendGrid dynamic template (d-...) that renders the email from the step's data"}

    def __init__(self, settings, env=None) -> None:
        super().__init__(settings, env)
        self.api_key = self.env.get("SENDGRID_API_KEY") or self.env.get("LIFECYCLE_SENDGRID_API_KEY") or ""
        self.host = (self.env.get("LIFECYCLE_SENDGRID_HOST") or DEFAULT_HOST).rstrip("/")
        self.sandbox = _truthy(self.env.get("LIFECYCLE_SENDGRID_SANDBOX"))
        self.timeout = float(self.env.get("LIFECYCLE_SENDGRID_TIMEOUT") or 10)
        self.concurrency = max(1, int(self.env.get("LIFECYCLE_SENDGRID_CONCURRENCY") or 8))
        name, address = parseaddr(settings.email_from)
        self.sender = {"email": address, **({"name": name} if name else {})}
        reply_name, reply_to = parseaddr(self.env.get("LIFECYCLE_EMAIL_REPLY_TO") or "")
        self.reply_to = {"email": reply_to, **({"name": reply_name} if reply_name else {})} if reply_to else None
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None

    # -- configuration --------------------------------------------------------------------------

    def template_required(self, channel: str, options: Mapping[str, Any]) -> bool:
        return TEMPLATE_OPTION not in options

    def check_options(self, channel: str, options: Mapping[str, Any]) -> list[str]:
        template = options.get(TEMPLATE_OPTION)
        if template is not None and not (isinstance(template, str) and template.startswith("d-")):
            return [f"{TEMPLATE_OPTION} must be a dynamic template id like d-8f0c..."]
        return []

    def check(self) -> list[Check]:
        checks = [
            Check("ok", f"sendgrid: API key {_mask(self.api_key)}") if self.api_key else
            Check("error", "sendgrid: no API key (set SENDGRID_API_KEY)"),
            Check("ok" if self.sender["email"] and not self.sender["email"].endswith("@example.com") else "warning",
                  f"sendgrid: sender {self.sender['email']} (LIFECYCLE_EMAIL_FROM)"),
            Check("ok", f"sendgrid: {self.host}, timeout {self.timeout:g}s, {self.concurrency} requests at a time"),
        ]
        if self.sandbox:
            checks.append(Check("warning", "sendgrid: sandbox mode is on: SendGrid accepts but does not deliver"))
        return checks

    # -- sending --------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = SendGridAPIClient(self.api_key, host=self.host)
            self._client.client.timeout = self.timeout
        return self._client

    def send(self, delivery: Delivery) -> Result:
        return self.send_many([delivery])[0]

    def requests(self, deliveries: Sequence[Delivery]) -> list[list[int]]:
        """Messages that are the same but for their personalization share a request (up to 1,000)."""
        groups: dict[tuple, list[int]] = {}
        for index, delivery in enumerate(deliveries):
            template = delivery.options.get(TEMPLATE_OPTION)
            same = ("template", template) if template else (
                "content", delivery.parts.get("subject"), delivery.parts.get("html"), delivery.parts.get("text"))
            groups.setdefault((delivery.journey, delivery.stage, delivery.step, *same), []).append(index)
        return [indexes[start:start + MAX_PERSONALIZATIONS]
                for indexes in groups.values() for start in range(0, len(indexes), MAX_PERSONALIZATIONS)]

    def send_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        if not self.api_key:
            return [Misconfigured("no SendGrid API key (SENDGRID_API_KEY)")] * len(deliveries)
        results: list[Result | None] = [None] * len(deliveries)
        jobs = self.requests(deliveries)
        if self._pool is None and self.concurrency > 1:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sendgrid")
        batches = [[deliveries[i] for i in job] for job in jobs]
        answers = self._pool.map(self._send_batch, batches) if self._pool and len(jobs) > 1 else \
            map(self._send_batch, batches)
        for job, answer in zip(jobs, answers, strict=True):
            for index, result in zip(job, answer, strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    def _send_batch(self, batch: Sequence[Delivery]) -> list[Result]:
        """One request; a batch refused as a whole (400) is retried one by one to find the culprit."""
        result = self._post(self._body(batch))
        if len(batch) > 1 and isinstance(result, Failed):
            return [self._post(self._body([delivery])) for delivery in batch]
        return [result] * len(batch)

    def _body(self, batch: Sequence[Delivery]) -> dict[str, Any]:
        first = batch[0]
        body: dict[str, Any] = {
            "from": self.sender,
            "personalizations": [self._personalization(delivery) for delivery in batch],
            "categories": [first.journey[:255], f"{first.journey}/{first.stage}/{first.step}"[:255]],
            "mail_settings": {"sandbox_mode": {"enable": self.sandbox}},
        }
        if self.reply_to:
            body["reply_to"] = self.reply_to
        template = first.options.get(TEMPLATE_OPTION)
        if template:
            body["template_id"] = template
        else:
            body["subject"] = first.parts["subject"]
            body["content"] = [{"type": "text/plain", "value": first.parts.get("text") or " "},
                               {"type": "text/html", "value": first.parts["html"]}]
        return body

    def _personalization(self, delivery: Delivery) -> dict[str, Any]:
        personalization: dict[str, Any] = {
            "to": [{"email": delivery.to}],
            # custom_args come back on every event of SendGrid's event webhook.
            "custom_args": {"lc_key": delivery.key, "lc_contact": delivery.contact_id, "lc_journey": delivery.journey,
                            "lc_stage": delivery.stage, "lc_step": delivery.step},
            "headers": dict(delivery.headers),
        }
        if delivery.test:
            personalization["custom_args"]["lc_test"] = "1"
        if delivery.options.get(TEMPLATE_OPTION):
            personalization["dynamic_template_data"] = dict(delivery.data)
        return personalization

    def _post(self, body: dict[str, Any]) -> Result:
        try:
            response = self.client.send(body)
        except HTTPError as error:
            return self._classify(error.status_code, error.body, error.headers)
        except (socket.timeout, TimeoutError) as error:
            return Retry(30.0, f"SendGrid did not answer within {self.timeout:g}s ({error})")
        except urllib.error.URLError as error:
            return Retry(30.0, f"cannot reach SendGrid at {self.host}: {error.reason}")
        except OSError as error:
            return Retry(30.0, f"cannot reach SendGrid at {self.host}: {error}")
        if response.status_code == 200:
            return Sent("sandbox", "accepted in sandbox mode (not delivered)", {"sandbox": True})
        return Sent(response.headers.get("X-Message-Id", ""), "accepted by SendGrid")

    def _classify(self, status: int, body: bytes | str | None, headers: Any) -> Result:
        reason = _error_text(body) or f"HTTP {status}"
        if status in (401, 403):
            return Misconfigured(f"SendGrid refused the API key ({status}): {reason}")
        if status == 429:
            reset = headers.get("X-RateLimit-Reset") if headers else None
            wait = max(1.0, float(reset) - time.time()) if reset and str(reset).isdigit() else 60.0
            return Retry(wait, f"SendGrid rate limit (429): {reason}")
        if status >= 500:
            return Retry(30.0, f"SendGrid error {status}: {reason}")
        return Failed(f"SendGrid refused the message ({status}): {reason}", code="rejected")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def _error_text(body: bytes | str | None) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
        return "; ".join(f"{e.get('field') or 'request'}: {e.get('message')}" for e in data.get("errors", []))
    except (ValueError, AttributeError):
        return (body.decode(errors="replace") if isinstance(body, bytes) else str(body))[:300]
