"""SMS over Twilio's Programmable Messaging API, with the official `twilio` SDK.

Twilio has no batch send: every message is one `POST .../Messages.json`, so a batch is
sent a few requests at a time from a small thread pool. The SDK never retries on its
own (a retried POST can reach the contact twice); the engine retries with backoff.

Every message may carry a status callback URL with our ids in its query string
(`lc_key`, `lc_contact`, ...), so Twilio's delivery reports can be matched to the
journey step. The segment count and encoding are recorded with the outcome, since
Twilio bills per segment.
"""

from __future__ import annotations

import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from automation.channels.base import Channel, Check, Delivery, Failed, Misconfigured, Result, Retry, Sent, retry_after
from automation.config import Settings
from automation.messages.sms import segments

DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 4
RATE_LIMIT_WAIT = 10.0      # 20429 without a Retry-After: Twilio says "wait for a short period"
TRANSIENT_WAIT = 30.0       # 5xx, timeouts, connection errors
QUEUE_FULL_WAIT = 600.0     # 21611: the sender already has 10 hours of messages queued

# Twilio error codes (https://www.twilio.com/docs/api/errors) and what they mean for us: the one
# table both the REST answers and the status callbacks (automation.server.webhooks) are read with.
# Twilio warns that codes get refined over time; anything not listed here is still a `Failed`
# (4xx) or a `Retry` (429, 5xx), with Twilio's own code and message kept.


@dataclass(frozen=True)
class TwilioError:
    """What one Twilio error code means for a message and its contact."""

    meaning: str
    action: str                             # "fail" this contact, "pause" the channel, "retry" later
    code: str = ""                          # our reason code ("fail")
    effect: Mapping[str, Any] = field(default_factory=dict)   # what to change on the contact
    wait: float = 0.0                       # seconds before trying again ("retry")


def _invalid(meaning: str) -> TwilioError:
    # The number cannot take SMS at all: mark the phone invalid (a new number clears the mark).
    return TwilioError(meaning, "fail", "invalid_number", {"phone_invalid": True})


ERRORS: dict[int, TwilioError] = {
    21211: _invalid("invalid 'To' number"),
    21614: _invalid("'To' is not a mobile number"),
    21635: _invalid("'To' is a landline"),                  # split out of 21614 in 2024
    21265: _invalid("'To' is a short code"),                # split out of 21211 in 2024
    21268: _invalid("'To' is a premium-rate number"),
    # Status callbacks: the carrier could not deliver to the handset.
    30003: _invalid("unreachable destination handset"),
    30005: _invalid("unknown destination handset"),
    30006: _invalid("landline or unreachable carrier"),
    # The recipient replied STOP (or UNSUBSCRIBE, CANCEL, ...) to this sender: only their START
    # brings them back, so their SMS consent is turned off.
    21610: TwilioError("the recipient unsubscribed (replied STOP)", "fail", "unsubscribed", {"consent.sms": False}),
    # About this recipient and our account together; the number itself may be fine, so no contact
    # change, and no channel pause either (every other contact can still be reached).
    # Messaging Geo Permissions disable the destination country. Ops may enable it in the console,
    # but pausing the channel would hold back every other country meanwhile.
    21408: TwilioError("the destination country is not enabled", "fail", "region_not_enabled"),
    # This To/From combination cannot be connected (sender-ID rules of the destination country or
    # network): another sender might reach the number.
    21612: TwilioError("this sender cannot reach this number", "fail", "unroutable"),
    # Trial accounts only send to verified numbers: the others fail, the verified ones work.
    21608: TwilioError("a trial account reaches verified numbers only", "fail", "unverified_recipient"),
    # Short codes and some senders only reach their own country, so these also depend on the
    # destination; as a pause they would block the whole channel on one contact.
    21606: TwilioError("the sender cannot send to this number", "fail", "sender_not_allowed"),
    21659: TwilioError("the sender cannot send to this country", "fail", "sender_not_allowed"),
    # Our sender settings are wrong, whoever the recipient is: pause the channel until ops fix them
    # (steps wait, nothing is lost) rather than fail every contact for good.
    21212: TwilioError("the 'From' number is invalid", "pause"),
    21601: TwilioError("the 'From' number is not an SMS-capable number of this account", "pause"),
    21603: TwilioError("a 'From' number is required", "pause"),
    21660: TwilioError("the 'From' number does not belong to this account", "pause"),
    21661: TwilioError("the 'From' number is not SMS-capable", "pause"),
    21705: TwilioError("the Messaging Service SID is invalid", "pause"),
    # Try later: too many requests ("wait for a short period"), or the sender already has 10
    # hours of messages queued.
    20429: TwilioError("too many requests", "retry", wait=RATE_LIMIT_WAIT),
    21611: TwilioError("the sender's queue is full", "retry", wait=QUEUE_FULL_WAIT),
}


def error_effect(code: int | str | None) -> Mapping[str, Any]:
    """What a Twilio error code (from an API answer or a status callback) changes on the contact."""
    try:
        known = ERRORS.get(int(code or 0))
    except ValueError:
        return {}
    return known.effect if known is not None else {}


def _mask(value: str) -> str:
    return f"{value[:4]}...{value[-4:]}" if len(value) > 12 else "***"


class TwilioChannel(Channel):
    name = "twilio"
    channels = ("sms",)

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        super().__init__(settings, env)
        self.problems: list[str] = []
        self.account_sid = (self.env.get("TWILIO_ACCOUNT_SID") or "").strip()
        self.auth_token = (self.env.get("TWILIO_AUTH_TOKEN") or "").strip()
        self.sender = (self.env.get("LIFECYCLE_TWILIO_FROM") or "").strip()
        self.messaging_service_sid = (self.env.get("LIFECYCLE_TWILIO_MESSAGING_SERVICE_SID") or "").strip()
        self.status_callback = (self.env.get("LIFECYCLE_TWILIO_STATUS_CALLBACK") or "").strip()
        self.base_url = (self.env.get("LIFECYCLE_TWILIO_BASE_URL") or "").strip().rstrip("/")
        self.timeout = self._number("LIFECYCLE_TWILIO_TIMEOUT", DEFAULT_TIMEOUT)
        self.concurrency = int(self._number("LIFECYCLE_TWILIO_CONCURRENCY", DEFAULT_CONCURRENCY))
        # SDK clients not in use right now. A client (its requests session, and the headers of
        # its last answer) serves one thread at a time; worker threads and the pool share them.
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _number(self, name: str, default: float) -> float:
        """A positive number from the environment; a bad value is reported by `check()`, not
        raised, so one typo does not stop a worker that serves other channels too."""
        raw = (self.env.get(name) or "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if value <= 0:
            self.problems.append(f"{name}={raw!r} is not a positive number; using {default:g}")
            return default
        return value

    # -- configuration --------------------------------------------------------------------------

    def _missing(self) -> str:
        """What keeps every message from being sent, or "" when the configuration is complete."""
        missing = [name for name, value in (("TWILIO_ACCOUNT_SID", self.account_sid),
                                            ("TWILIO_AUTH_TOKEN", self.auth_token)) if not value]
        if not (self.sender or self.messaging_service_sid):
            missing.append("LIFECYCLE_TWILIO_FROM or LIFECYCLE_TWILIO_MESSAGING_SERVICE_SID")
        return f"twilio: not configured (set {', '.join(missing)})" if missing else ""

    def check(self) -> list[Check]:
        checks: list[Check] = []
        if not self.account_sid:
            checks.append(Check("error", "twilio: no account SID (set TWILIO_ACCOUNT_SID)"))
        elif not re.fullmatch(r"AC[0-9a-fA-F]{32}", self.account_sid):
            checks.append(Check("warning", f"twilio: account SID {_mask(self.account_sid)} does not look like "
                                           "AC followed by 32 hex digits"))
        else:
            checks.append(Check("ok", f"twilio: account {_mask(self.account_sid)}"))
        checks.append(Check("ok", "twilio: auth token set") if self.auth_token else
                      Check("error", "twilio: no auth token (set TWILIO_AUTH_TOKEN)"))
        if self.messaging_service_sid:
            via = f"Messaging Service {self.messaging_service_sid}"
            checks.append(Check("ok", f"twilio: sends from {self.sender} through {via}" if self.sender else
                                f"twilio: sends through {via} (Twilio picks the sender)"))
        elif self.sender:
            checks.append(Check("ok", f"twilio: sends from {self.sender}"))
        else:
            checks.append(Check("error", "twilio: no sender (set LIFECYCLE_TWILIO_FROM or "
                                         "LIFECYCLE_TWILIO_MESSAGING_SERVICE_SID)"))
        callback = urlsplit(self.status_callback)
        if not self.status_callback:
            checks.append(Check("warning", "twilio: no status callback (LIFECYCLE_TWILIO_STATUS_CALLBACK): "
                                           "delivery status will not be tracked"))
        elif callback.scheme not in ("http", "https") or not callback.netloc:
            checks.append(Check("error", f"twilio: status callback {self.status_callback!r} is not an http(s) URL"))
        else:
            checks.append(Check("ok", f"twilio: delivery status reported to {self.status_callback}"))
        if self.base_url:
            checks.append(Check("warning", f"twilio: API base URL overridden: {self.base_url} "
                                           "(LIFECYCLE_TWILIO_BASE_URL, for tests)"))
        checks.append(Check("ok", f"twilio: timeout {self.timeout:g}s, {self.concurrency} requests at a time"))
        checks += [Check("warning", f"twilio: {problem}") for problem in self.problems]
        return checks

    # -- sending --------------------------------------------------------------------------------

    def _client(self) -> Any:
        """An idle SDK client, or a new one: created on first use, so a worker starts without
        credentials and `check()` says what is missing."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        client = Client(self.account_sid, self.auth_token, http_client=_HttpClient(self.timeout))
        # Edge and region come from our environment only; with a base URL override (tests)
        # they must stay unset, or the SDK rewrites the host.
        client.edge = None if self.base_url else self.env.get("TWILIO_EDGE")
        client.region = None if self.base_url else self.env.get("TWILIO_REGION")
        if self.base_url:
            client.api.base_url = self.base_url
        return client

    def send(self, delivery: Delivery) -> Result:
        missing = self._missing()
        if missing:
            return Misconfigured(missing)
        body = delivery.parts["body"]
        encoding, count, _ = segments(body)
        request: dict[str, Any] = {"to": str(delivery.to), "body": body}
        if self.sender:
            request["from_"] = self.sender
        if self.messaging_service_sid:
            request["messaging_service_sid"] = self.messaging_service_sid
        callback = self._callback_url(delivery)
        if callback:
            request["status_callback"] = callback
        client = self._client()
        try:
            result = self._create(client, request)
        finally:
            self._idle.put(client)
        if isinstance(result, Sent):
            return Sent(result.provider_id, result.detail, {"segments": count, "encoding": encoding})
        return result

    def _callback_url(self, delivery: Delivery) -> str:
        """The status callback with our ids added to whatever query it already has."""
        if not self.status_callback:
            return ""
        url = urlsplit(self.status_callback)
        ids = [("lc_key", delivery.key), ("lc_contact", delivery.contact_id), ("lc_journey", delivery.journey),
               ("lc_stage", delivery.stage), ("lc_step", delivery.step)] + ([("lc_test", "1")] if delivery.test else [])
        query = parse_qsl(url.query, keep_blank_values=True) + ids
        return urlunsplit(url._replace(query=urlencode(query)))

    def _create(self, client: Any, request: Mapping[str, Any]) -> Result:
        http: _HttpClient = client.http_client
        try:
            message = client.messages.create(**request)
        except TwilioRestException as error:
            text = str(error.msg).removeprefix("Unable to create record: ")
            return self._classify(error.status, error.code, text, http.last_headers)
        except TwilioServiceException as error:  # RFC 9457 problem details (newer Twilio APIs)
            return self._classify(error.status, error.code, error.detail or error.title, http.last_headers)
        except requests.ReadTimeout:
            # Twilio may have created the message before we gave up; there is no idempotency key.
            return Retry(TRANSIENT_WAIT, f"Twilio did not answer within {self.timeout:g}s "
                                         "(the message may have been accepted)")
        except requests.RequestException as error:
            return Retry(TRANSIENT_WAIT, f"cannot reach Twilio at {client.api.base_url}: {error}")
        except ValueError:
            if 200 <= http.last_status < 300:
                # Created, but the answer could not be read: sending again would reach the contact twice.
                return Sent("", f"Twilio answered {http.last_status} with a body that is not JSON")
            return Retry(TRANSIENT_WAIT, f"Twilio answered {http.last_status} with a body that is not JSON")
        return Sent(message.sid or "", f"{message.status or 'accepted'} at Twilio")

    def _classify(self, status: int, code: int | None, message: str, headers: Mapping[str, str]) -> Result:
        reason = f"Twilio error {code}: {message}" if code and code != status else f"Twilio HTTP {status}: {message}"
        if status in (401, 403):
            return Misconfigured(f"Twilio refused our credentials ({status}): {reason}")
        if status == 404:   # no such account (a wrong TWILIO_ACCOUNT_SID) or a wrong base URL
            return Misconfigured(f"Twilio does not know this account or URL (404): {reason}")
        known = ERRORS.get(code or 0)
        if status == 429 and known is None:
            known = ERRORS[20429]
        if status >= 500:
            return Retry(retry_after(headers.get("Retry-After"), TRANSIENT_WAIT), reason)
        if known is None:
            return Failed(reason, code=f"twilio_{code or status}")
        if known.action == "retry":
            return Retry(retry_after(headers.get("Retry-After"), known.wait), reason)
        if known.action == "pause":
            return Misconfigured(f"{known.meaning} ({reason})")
        return Failed(reason, code=known.code, effect=dict(known.effect))

    def send_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        if len(deliveries) <= 1 or self.concurrency <= 1:
            return [self.send(delivery) for delivery in deliveries]
        with self._pool_lock:   # worker threads share the adapter
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="twilio")
            pool = self._pool
        return list(pool.map(self.send, deliveries))   # map keeps the order

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
        while True:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                return
            client.http_client.session.close()


class _HttpClient(TwilioHttpClient):
    """The SDK's HTTP client, never retrying (a retried POST can send twice), and remembering
    the status and headers of its last answer: the SDK's exceptions do not carry headers, and
    a 429 may say when to come back (Retry-After)."""

    last_status: int = 0
    last_headers: Mapping[str, str] = {}

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout, max_retries=0)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.last_status, self.last_headers = 0, {}
        response = super().request(*args, **kwargs)
        self.last_status, self.last_headers = response.status_code, response.headers or {}
        return response
