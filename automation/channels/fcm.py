"""The FCM adapter: push notifications through Firebase Cloud Messaging, HTTP v1 API.

FCM v1 takes one message per device token (`POST /v1/projects/{project}/messages:send`),
so a contact with three devices is three requests; they go out concurrently and their
answers are combined into one result. A token FCM reports as dead (UNREGISTERED, or
SENDER_ID_MISMATCH: it belongs to another Firebase project) is removed from the contact
with a `Remove` effect, whether or not another device got the message.

It is a small client over `requests` rather than the firebase-admin SDK: the API is one
endpoint, the base URL must point at a local stand-in in tests, and every error has to
be classified for the engine anyway. Access tokens come from google-auth (a service
account), or are given as they are (LIFECYCLE_FCM_TOKEN, for tests and tokens minted
elsewhere). Nothing is created until the first send, so a worker starts without
credentials and `lifecycle check-config` says what is missing.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol, Sequence
from urllib.parse import quote, urlsplit

import requests
from google.auth import exceptions
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from requests.adapters import HTTPAdapter

from automation.channels.base import (
    Channel,
    Check,
    Delivery,
    Failed,
    Misconfigured,
    Remove,
    Result,
    Retry,
    Sent,
    retry_after,
)
from automation.config import Settings

logger = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TIMEOUT = 10.0
#: FCM's advice for QUOTA_EXCEEDED without a Retry-After: back off, starting at one minute.
QUOTA_BACKOFF = 60.0
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


#: A batch in which at least this many devices say SENDER_ID_MISMATCH, and none accepts, means
#: the project is misconfigured: the channel pauses instead of deleting every token.
MISMATCH_GUARD = 5


class _NoAccessToken(Exception):
    """No access token could be had; `retry` says whether trying later may help."""

    def __init__(self, reason: str, retry: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class _AccessToken(Protocol):
    def get(self, session: requests.Session, timeout: float) -> str: ...

    def forget(self) -> None: ...


class _StaticToken:
    """A token minted elsewhere; it is never refreshed, so an expired one pauses the channel."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get(self, session: requests.Session, timeout: float) -> str:
        return self.token

    def forget(self) -> None:
        pass


class _ServiceAccountToken:
    """OAuth2 access tokens for a service account, refreshed by google-auth when expired.

    The key file is read on first use, not at start, and read again after a failure, so
    fixing the file needs no restart. One lock: worker threads share one token, and only
    one of them asks for a new one.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._credentials: Any = None
        self._lock = threading.Lock()

    def get(self, session: requests.Session, timeout: float) -> str:
        with self._lock:
            if self._credentials is None:
                self._credentials = load_service_account(self.path)
            credentials = self._credentials
            if not credentials.valid:   # no token yet, or it expires within google-auth's margin
                try:
                    # refresh() only, not before_request(): we set the header ourselves, and
                    # before_request() would also start google-auth's regional access lookups.
                    credentials.refresh(_timed_request_class()(session, timeout))
                except exceptions.TransportError as exc:
                    raise _NoAccessToken(f"token endpoint unreachable: {_short(exc)}", retry=True) from None
                except exceptions.GoogleAuthError as exc:
                    # Refused by the token endpoint (a deleted key, a disabled account): ops must
                    # act, unless google-auth says the endpoint itself failed (5xx, after its
                    # own retries); `retryable` exists in google-auth 2.23 and later.
                    raise _NoAccessToken(f"service account {credentials.service_account_email}: token refused: "
                                         f"{_short(exc)}", retry=bool(getattr(exc, "retryable", False))) from None
            return credentials.token

    def forget(self) -> None:
        """FCM refused the token: ask for a new one next time rather than wait for its expiry."""
        with self._lock:
            if self._credentials is not None:
                self._credentials.token = None


def load_service_account(path: str) -> Any:
    """google-auth service-account credentials from a key file, scoped for FCM."""
    try:
        return service_account.Credentials.from_service_account_file(path, scopes=[SCOPE])
    except FileNotFoundError:
        raise _NoAccessToken(f"service-account file {path} does not exist") from None
    except (OSError, ValueError, KeyError) as exc:   # unreadable, not JSON, not a service-account key
        raise _NoAccessToken(f"service-account file {path} is not a usable key: {_short(exc)}") from None


@functools.cache
def _timed_request_class() -> type:
    """Built on first use, so workers that never send push do not import google-auth."""
    class TimedRequest(Request):
        """google-auth's transport over our session, with our timeout instead of its 120 s."""

        def __init__(self, session: requests.Session, timeout: float) -> None:
            super().__init__(session)
            self.timeout = timeout

        def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                     timeout: float | None = None, **kwargs: Any) -> Any:
            return super().__call__(url, method, body, headers, timeout=timeout or self.timeout, **kwargs)

    return TimedRequest


@dataclass(frozen=True)
class _Answer:
    """What FCM said about one device token."""

    kind: str            # sent | dead | retry | paused | invalid | failed
    token: str
    detail: str = ""
    name: str = ""       # the message name FCM gives an accepted message
    after: float = 0.0   # for retry: seconds to wait
    status: int = 0      # the HTTP status, 0 when FCM was not reached
    code: str = ""       # FCM's errorCode, e.g. UNREGISTERED


def classify(token: str, status: int, body: Any, headers: Mapping[str, str]) -> _Answer:
    """Sort an FCM v1 answer for one token into what the engine must do about it.

    FCM reports errors as {"error": {"code", "message", "status", "details": [...]}}, the
    FCM-specific reason being the `errorCode` of a details item of type FcmError. Tokens
    are only dropped on that explicit reason: a bare 404 is a wrong base URL or project,
    and deleting every contact's tokens for it would be a disaster.
    """
    if 200 <= status < 300:
        name = body.get("name", "") if isinstance(body, dict) else ""
        return _Answer("sent", token, name=str(name), status=status)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    code = next((str(d.get("errorCode")) for d in details if d.get("@type") == FCM_ERROR and d.get("errorCode")), "")
    grpc_status = str(error.get("status") or "")
    reason = code or grpc_status or f"HTTP {status}"
    message = str(error.get("message") or (body if isinstance(body, str) else "")).strip()
    detail = f"FCM {status} {reason}" + (f": {message[:200]}" if message else "")

    if code in ("UNREGISTERED", "SENDER_ID_MISMATCH"):
        # UNREGISTERED: the app was uninstalled, or the token expired or was rotated; FCM's
        # advice is to drop it. SENDER_ID_MISMATCH: it was registered for another Firebase
        # project, so this sender can never use it.
        return _Answer("dead", token, f"{detail} (token {_mask(token)})", status=status, code=code)
    if status == 429 or status >= 500:
        # QUOTA_EXCEEDED (429), INTERNAL (500), UNAVAILABLE (503), gateways: all temporary.
        default = QUOTA_BACKOFF if status == 429 else 0.0
        return _Answer("retry", token, detail, after=retry_after(headers.get("Retry-After"), default), status=status)
    if status == 400 or grpc_status == "INVALID_ARGUMENT":
        # INVALID_ARGUMENT covers a malformed token *and* a bad message (too big, a reserved
        # data key, a wrong type). Both arrive with the same code and status; only the
        # details tell them apart. The token is dropped only when FCM points at it (a field
        # violation on message.token, or "not a valid FCM registration token"); anything
        # else is our payload, which would fail for every device: fail the step, keep tokens.
        if _blames_token(error):
            return _Answer("dead", token, f"{detail} (token {_mask(token)})", status=status)
        return _Answer("invalid", token, detail, status=status)
    if status in (401, 403, 404):
        # 401: the access token is expired or wrong, or THIRD_PARTY_AUTH_ERROR (the APNs key
        # or web-push credentials in the Firebase console). 403: PERMISSION_DENIED, the
        # account may not send for this project. 404 without UNREGISTERED: the URL or the
        # project id is wrong. None is about this contact; pause until ops fix it.
        hint = {401: "credentials refused", 403: "not allowed to send for this project",
                404: "check LIFECYCLE_FCM_BASE_URL and LIFECYCLE_FCM_PROJECT"}[status]
        return _Answer("paused", token, f"{detail} ({hint})", status=status)
    return _Answer("failed", token, detail, status=status)


def _blames_token(error: Mapping[str, Any]) -> bool:
    for item in error.get("details") or []:
        if isinstance(item, dict) and item.get("@type") == BAD_REQUEST:
            for violation in item.get("fieldViolations") or []:
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    return True
    return "registration token" in str(error.get("message") or "").lower()


def combine(answers: Sequence[_Answer]) -> Result:
    """One result for a contact from the answers for each of their devices.

    Once any device got the message the step is sent: a retry would send it again to the
    devices that already have it. Otherwise the most general problem wins: a refused
    account (pause), then a temporary failure (retry), then a bad message, then dead tokens.
    """
    dead = tuple(a.token for a in answers if a.kind == "dead")
    effect: dict[str, Any] = {"push_tokens": Remove(dead)} if dead else {}
    sent = [a for a in answers if a.kind == "sent"]
    if sent:
        others = [a for a in answers if a.kind not in ("sent", "dead")]
        info: dict[str, Any] = {"tokens": len(sent)}
        if dead:
            info["removed_tokens"] = len(dead)
        if others:
            info["failed_tokens"] = len(others)
            logger.warning("fcm: %d of %d devices did not get the message: %s", len(others), len(answers),
                           "; ".join(a.detail for a in others))
        detail = f"{len(sent)} of {len(answers)} devices"
        return Sent(provider_id=sent[0].name, detail=detail, info=info, effect=effect)
    # Retry and Misconfigured carry no effect: a dead token seen meanwhile is seen again next time.
    by_kind = {a.kind: a for a in reversed(answers)}   # the first answer of each kind
    if "paused" in by_kind:
        return Misconfigured(f"fcm: {by_kind['paused'].detail}")
    if "retry" in by_kind:
        return Retry(max(a.after for a in answers if a.kind == "retry"), by_kind["retry"].detail)
    if "invalid" in by_kind:
        return Failed(f"FCM refused the message: {by_kind['invalid'].detail}", code="invalid_message", effect=effect)
    if "failed" in by_kind:
        return Failed(by_kind["failed"].detail, code="rejected", effect=effect)
    if dead:
        return Failed(f"all {len(dead)} device tokens are dead: {answers[0].detail}", code="unregistered",
                      effect=effect)
    return Failed("no device tokens", code="no_address")


class FCMChannel(Channel):
    name = "fcm"
    channels = ("push",)
    #: Requests in flight at once per worker process (one per device token).
    concurrency: ClassVar[int] = 8

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        super().__init__(settings, env)
        self.project = (self.env.get("LIFECYCLE_FCM_PROJECT") or "").strip()
        self.base_url = (self.env.get("LIFECYCLE_FCM_BASE_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
        self.credentials_file, self.credentials_source = _credentials_file(self.env)
        self.static_token = (self.env.get("LIFECYCLE_FCM_TOKEN") or "").strip()
        self.timeout, self._timeout_problem = _timeout(self.env.get("LIFECYCLE_FCM_TIMEOUT"))
        self._access: _AccessToken | None = None
        self._session: requests.Session | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def uses_service_account(self) -> bool:
        """LIFECYCLE_FCM_CREDENTIALS wins over LIFECYCLE_FCM_TOKEN, which wins over the process-wide
        GOOGLE_APPLICATION_CREDENTIALS: the most specific setting, then the self-refreshing kind."""
        return bool(self.credentials_file) and (self.credentials_source == "LIFECYCLE_FCM_CREDENTIALS"
                                                or not self.static_token)

    @property
    def send_url(self) -> str:
        return f"{self.base_url}/v1/projects/{quote(self.project, safe='')}/messages:send"

    # -- configuration -----------------------------------------------------------------------

    def check(self) -> list[Check]:
        checks: list[Check] = []
        if self.project:
            checks.append(Check("ok", f"fcm: Firebase project {self.project}"))
        else:
            checks.append(Check("error", "fcm: LIFECYCLE_FCM_PROJECT (the Firebase project id) is not set"))
        checks.extend(self._check_credentials())
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            checks.append(Check("error", f"fcm: LIFECYCLE_FCM_BASE_URL={self.base_url!r} is not an http(s) URL"))
        elif parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            checks.append(Check("warning", f"fcm: {self.base_url} is plain http: access tokens travel unencrypted"))
        else:
            checks.append(Check("ok", f"fcm: sends to {self.base_url} (timeout {self.timeout:g}s)"))
        if self._timeout_problem:
            checks.append(Check("error", f"fcm: {self._timeout_problem}"))
        return checks

    def _check_credentials(self) -> list[Check]:
        checks: list[Check] = []
        if self.credentials_file and self.credentials_source == "LIFECYCLE_FCM_CREDENTIALS" and self.static_token:
            checks.append(Check("warning", "fcm: LIFECYCLE_FCM_TOKEN is ignored: LIFECYCLE_FCM_CREDENTIALS is set"))
        if self.uses_service_account:
            try:
                account = load_service_account(self.credentials_file)
            except _NoAccessToken as exc:
                return [*checks, Check("error", f"fcm: {self.credentials_source}: {exc.reason}")]
            return [*checks, Check("ok", f"fcm: service account {account.service_account_email} "
                                         f"from {self.credentials_source}={self.credentials_file}")]
        if self.static_token:
            return [Check("warning", f"fcm: static access token {_mask(self.static_token)} from LIFECYCLE_FCM_TOKEN "
                                     "is never refreshed; the channel pauses when it expires")]
        return [Check("error", "fcm: no credentials: set LIFECYCLE_FCM_CREDENTIALS to a service-account key file "
                               "(or GOOGLE_APPLICATION_CREDENTIALS), or LIFECYCLE_FCM_TOKEN to an access token")]

    def _access_token(self) -> _AccessToken:
        if self._access is None:
            if self.uses_service_account:
                self._access = _ServiceAccountToken(self.credentials_file)
            elif self.static_token:
                self._access = _StaticToken(self.static_token)
            else:
                raise _NoAccessToken("no credentials: set LIFECYCLE_FCM_CREDENTIALS or LIFECYCLE_FCM_TOKEN")
        return self._access

    # -- sending -----------------------------------------------------------------------------

    def send(self, delivery: Delivery) -> Result:
        return self.send_many([delivery])[0]

    def send_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        """Every token of every delivery is one request; they run on a small shared pool and
        the answers are put back together per delivery, in order."""
        if not self.project:
            return [Misconfigured("fcm: LIFECYCLE_FCM_PROJECT is not set")] * len(deliveries)
        with self._lock:
            try:
                access = self._access_token()
            except _NoAccessToken as exc:
                return [Misconfigured(f"fcm: {exc.reason}")] * len(deliveries)
            session, pool = self._open()
        try:
            bearer = access.get(session, self.timeout)
        except _NoAccessToken as exc:
            result: Result = Retry(0.0, f"fcm: {exc.reason}") if exc.retry else Misconfigured(f"fcm: {exc.reason}")
            return [result] * len(deliveries)

        jobs = [(index, token) for index, delivery in enumerate(deliveries) for token in _tokens(delivery.to)]
        if len(jobs) == 1:
            answers = [self._post(session, bearer, deliveries[jobs[0][0]], jobs[0][1])]
        else:
            answers = list(pool.map(lambda job: self._post(session, bearer, deliveries[job[0]], job[1]), jobs))
        if any(a.status == 401 for a in answers):
            access.forget()
        mismatched = sum(a.code == "SENDER_ID_MISMATCH" for a in answers)
        if mismatched >= MISMATCH_GUARD and not any(a.kind == "sent" for a in answers):
            # Every device "belongs to another project": our project is the wrong one, not the
            # devices. Removing the tokens could not be undone; pausing the channel can.
            return [Misconfigured(f"fcm: {mismatched} devices answered SENDER_ID_MISMATCH and none accepted: "
                                  f"is LIFECYCLE_FCM_PROJECT ({self.project}) the app's Firebase project?")] * \
                len(deliveries)
        per_delivery: list[list[_Answer]] = [[] for _ in deliveries]
        for (index, _), answer in zip(jobs, answers, strict=True):
            per_delivery[index].append(answer)
        return [combine(found) for found in per_delivery]

    def _open(self) -> tuple[requests.Session, ThreadPoolExecutor]:
        if self._session is None or self._pool is None:
            session = requests.Session()
            session.mount("https://", HTTPAdapter(pool_maxsize=self.concurrency))
            session.mount("http://", HTTPAdapter(pool_maxsize=self.concurrency))
            self._session = session
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="fcm")
        return self._session, self._pool

    def message(self, delivery: Delivery, token: str) -> dict[str, Any]:
        """The FCM v1 request body for one device. `data` carries our ids (all strings, as FCM
        requires) so the app can report opens and delivery events against the step."""
        data = {str(k): str(v) for k, v in delivery.metadata.items()}
        data.update(key=delivery.key, contact_id=delivery.contact_id, journey=delivery.journey,
                    stage=delivery.stage, step=delivery.step)
        return {"message": {
            "token": token,
            "notification": {"title": delivery.parts.get("title", ""), "body": delivery.parts.get("body", "")},
            "data": data,
        }}

    def _post(self, session: requests.Session, bearer: str, delivery: Delivery, token: str) -> _Answer:
        try:
            response = session.post(self.send_url, json=self.message(delivery, token), timeout=self.timeout,
                                    headers={"Authorization": f"Bearer {bearer}"})
        except requests.Timeout:
            return _Answer("retry", token, f"FCM did not answer within {self.timeout:g}s")
        except requests.RequestException as exc:   # refused, reset, DNS, TLS: try again later
            return _Answer("retry", token, f"FCM unreachable: {_short(exc)}")
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:200]
        return classify(token, response.status_code, body, response.headers)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._session is not None:
                self._session.close()
            self._pool = self._session = None


def _tokens(to: Any) -> list[str]:
    """The contact's device tokens, each once (the same device must not buzz twice)."""
    values = [to] if isinstance(to, str) else list(to or [])
    return list(dict.fromkeys(str(v) for v in values if v))


def _credentials_file(env: Mapping[str, str]) -> tuple[str, str]:
    for name in ("LIFECYCLE_FCM_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"):
        value = (env.get(name) or "").strip()
        if value:
            return os.path.expanduser(value), name
    return "", ""


def _timeout(raw: str | None) -> tuple[float, str]:
    if raw in (None, ""):
        return DEFAULT_TIMEOUT, ""
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        return DEFAULT_TIMEOUT, f"LIFECYCLE_FCM_TIMEOUT={raw!r} is not a positive number of seconds " \
                                f"(using {DEFAULT_TIMEOUT:g})"
    return value, ""


def _mask(secret: str) -> str:
    return f"{secret[:6]}…({len(secret)} chars)" if len(secret) > 10 else "…"


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
