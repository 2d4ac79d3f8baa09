"""Settings, read once from environment variables.

Every process of a deployment (workers, schedulers, the CLI) reads the same
variables, so they agree on Redis, key namespace, timer shards and clock.
The full list is documented in docs/operations.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from automation.errors import ConfigError

DEFAULT_CHANNELS = {"email": "outbox", "sms": "outbox", "push": "outbox", "webhook": "webhook"}
#: What to do with a message whose send a crash interrupted, when the provider has not confirmed it
#: within `reconcile_seconds`: send it again (at least once) or fail it (at most once). A marketing
#: email twice is a small harm and SendGrid confirms through its event webhook; an SMS twice costs
#: money and annoys, and FCM confirms nothing, so those are not repeated. Webhooks carry our
#: idempotency key for the receiver to deduplicate.
DEFAULT_AMBIGUOUS = {"email": "resend", "sms": "fail", "push": "fail", "webhook": "resend"}
AMBIGUOUS_POLICIES = ("resend", "fail")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float, kind: type) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _optional_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number (epoch seconds)") from None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    return int(_number(env, name, default, minimum, int))


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return float(_number(env, name, default, minimum, float))


DEPLOY_MODES = ("auto", "required")


def _deploy_mode(env: Mapping[str, str]) -> str:
    raw = (env.get("LIFECYCLE_DEPLOY") or "auto").strip().lower()
    if raw not in DEPLOY_MODES:
        raise ConfigError(f"LIFECYCLE_DEPLOY={raw!r} is not one of: {', '.join(DEPLOY_MODES)}")
    return raw


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    home: Path = Path(".lifecycle")
    journeys_dir: Path = Path("journeys")
    templates_dir: Path = Path("templates")
    outbox_dir: Path = Path("outbox")
    namespace: str = "lc"
    queue: str = "lifecycle"
    timer_shards: int = 16
    lease_seconds: float = 300.0         # a batch's lease once it is in Dramatiq's queue (a safety net)
    claim_lease_seconds: float = 5.0     # a claim's lease until the scheduler has queued it
    liveness_seconds: float = 10.0       # a worker silent this long is dead: its sends in doubt
    reconcile_seconds: float = 600.0     # how long an interrupted send waits for the provider's word
    redis_patience_seconds: float = 60.0 # how long a batch waits for a restarting Redis before failing
    batch_size: int = 100
    claim_limit: int = 1000
    poll_interval: float = 0.1
    max_queued_messages: int = 200
    heartbeat_timeout_ms: int = 15_000   # Dramatiq requeues a dead worker's messages after this
    broker_maintenance: int = 50_000     # Dramatiq maintenance runs on this many per million commands
    reload_seconds: float = 2.0
    #: "auto": workers serve the journey files as they change (and move waiting runs to each new
    #: version themselves); "required": only versions `lifecycle deploy` recorded.
    deploy: str = "auto"
    recent_events: int = 10
    inbox_length: int = 1000
    max_send_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    clock_speed: float = 1.0
    clock_origin: float | None = None
    clock_start: float | None = None    # what the clock reads at its origin (rehearsals)
    email_from: str = "Lifecycle <hello@example.com>"
    unsubscribe_url: str = "https://example.com/unsubscribe"
    unsubscribe_mailto: str = "unsubscribe@example.com"
    #: Signs unsubscribe links. No default: an embedded install generates one (automation.secret),
    #: a production install must set LIFECYCLE_SECRET.
    secret: str | None = None
    #: The secret before a rotation, still accepted for unsubscribe links while old emails are around.
    secret_previous: str | None = None
    unsubscribe_token_days: float = 365.0  # people unsubscribe from old emails: tokens live long
    sendgrid_tolerance_seconds: float = 600.0  # older signed SendGrid events are replays
    #: `lifecycle serve`: seconds a client may take to send a request's headers, and then its body.
    request_timeout_seconds: float = 10.0
    #: A port serving /healthz and /readyz for workers, schedulers and `lifecycle run` (unset: none).
    health_port: int | None = None
    pause_seconds: float = 300.0
    #: What rendering one message may take: wall time and output size (all parts, UTF-8 bytes).
    template_time_ms: int = 100
    template_max_bytes: int = 1_000_000
    channels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CHANNELS))
    #: Messages per second per adapter name (LIFECYCLE_RATE_TWILIO=10), shared by all workers.
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    #: Per channel: "resend" or "fail" a message a crash left in doubt (LIFECYCLE_AMBIGUOUS_SMS=resend).
    ambiguous: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_AMBIGUOUS))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        channels = dict(DEFAULT_CHANNELS)
        rate_limits: dict[str, float] = {}
        ambiguous = dict(DEFAULT_AMBIGUOUS)
        for key, value in env.items():
            # LIFECYCLE_CHANNEL_EMAIL=sendgrid routes the journey channel "email" to that adapter.
            if key.startswith("LIFECYCLE_CHANNEL_") and value:
                channels[key[len("LIFECYCLE_CHANNEL_"):].lower()] = value
            elif key.startswith("LIFECYCLE_RATE_") and value:
                rate_limits[key[len("LIFECYCLE_RATE_"):].lower()] = _float(env, key, 0.0, minimum=0.001)
            elif key.startswith("LIFECYCLE_AMBIGUOUS_") and value:
                if value not in AMBIGUOUS_POLICIES:
                    raise ConfigError(f"{key}={value!r}: use {' or '.join(AMBIGUOUS_POLICIES)}")
                ambiguous[key[len("LIFECYCLE_AMBIGUOUS_"):].lower()] = value
        namespace = env.get("LIFECYCLE_NAMESPACE") or "lc"
        if any(c in namespace for c in " |:"):
            raise ConfigError(f"LIFECYCLE_NAMESPACE={namespace!r} must not contain spaces, '|' or ':'")
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            home=Path(env.get("LIFECYCLE_HOME") or ".lifecycle"),
            journeys_dir=Path(env.get("LIFECYCLE_JOURNEYS") or "journeys"),
            templates_dir=Path(env.get("LIFECYCLE_TEMPLATES") or "templates"),
            outbox_dir=Path(env.get("LIFECYCLE_OUTBOX") or "outbox"),
            namespace=namespace,
            queue=env.get("LIFECYCLE_QUEUE") or "lifecycle",
            timer_shards=_int(env, "LIFECYCLE_TIMER_SHARDS", 16),
            lease_seconds=_float(env, "LIFECYCLE_LEASE_SECONDS", 300.0, minimum=1.0),
            claim_lease_seconds=_float(env, "LIFECYCLE_CLAIM_LEASE_SECONDS", 5.0, minimum=0.5),
            liveness_seconds=_float(env, "LIFECYCLE_LIVENESS_SECONDS", 10.0, minimum=1.0),
            reconcile_seconds=_float(env, "LIFECYCLE_RECONCILE_SECONDS", 600.0, minimum=0.0),
            redis_patience_seconds=_float(env, "LIFECYCLE_REDIS_PATIENCE_SECONDS", 60.0, minimum=0.0),
            batch_size=_int(env, "LIFECYCLE_BATCH_SIZE", 100),
            claim_limit=_int(env, "LIFECYCLE_CLAIM_LIMIT", 1000),
            poll_interval=_float(env, "LIFECYCLE_POLL_INTERVAL", 0.1, minimum=0.01),
            max_queued_messages=_int(env, "LIFECYCLE_MAX_QUEUED_MESSAGES", 200),
            heartbeat_timeout_ms=_int(env, "LIFECYCLE_HEARTBEAT_TIMEOUT_MS", 15_000, minimum=1000),
            broker_maintenance=_int(env, "LIFECYCLE_BROKER_MAINTENANCE", 50_000, minimum=1),
            reload_seconds=_float(env, "LIFECYCLE_RELOAD_SECONDS", 2.0),
            deploy=_deploy_mode(env),
            recent_events=_int(env, "LIFECYCLE_RECENT_EVENTS", 10),
            inbox_length=_int(env, "LIFECYCLE_INBOX_LENGTH", 1000),
            max_send_attempts=_int(env, "LIFECYCLE_MAX_SEND_ATTEMPTS", 8),
            retry_base_seconds=_float(env, "LIFECYCLE_RETRY_BASE_SECONDS", 30.0, minimum=0.01),
            retry_max_seconds=_float(env, "LIFECYCLE_RETRY_MAX_SECONDS", 3600.0, minimum=0.01),
            clock_speed=_float(env, "LIFECYCLE_CLOCK_SPEED", 1.0, minimum=0.001),
            clock_origin=_optional_float(env, "LIFECYCLE_CLOCK_ORIGIN"),
            clock_start=_optional_float(env, "LIFECYCLE_CLOCK_START"),
            email_from=env.get("LIFECYCLE_EMAIL_FROM") or cls.email_from,
            unsubscribe_url=env.get("LIFECYCLE_UNSUBSCRIBE_URL") or cls.unsubscribe_url,
            unsubscribe_mailto=env.get("LIFECYCLE_UNSUBSCRIBE_MAILTO") or cls.unsubscribe_mailto,
            secret=env.get("LIFECYCLE_SECRET") or None,
            secret_previous=env.get("LIFECYCLE_SECRET_PREVIOUS") or None,
            unsubscribe_token_days=_float(env, "LIFECYCLE_UNSUBSCRIBE_TOKEN_DAYS", 365.0, minimum=1.0),
            sendgrid_tolerance_seconds=_float(env, "LIFECYCLE_SENDGRID_TOLERANCE_SECONDS", 600.0, minimum=1.0),
            request_timeout_seconds=_float(env, "LIFECYCLE_REQUEST_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            health_port=_int(env, "LIFECYCLE_HEALTH_PORT", 0, minimum=0) or None,
            pause_seconds=_float(env, "LIFECYCLE_PAUSE_SECONDS", 300.0, minimum=1.0),
            template_time_ms=_int(env, "LIFECYCLE_TEMPLATE_TIME_MS", 100),
            template_max_bytes=_int(env, "LIFECYCLE_TEMPLATE_MAX_BYTES", 1_000_000, minimum=1000),
            channels=channels,
            rate_limits=rate_limits,
            ambiguous=ambiguous,
        )

    def with_changes(self, **changes: object) -> "Settings":
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process see these same settings."""
        env = {
            "LIFECYCLE_HOME": str(self.home),
            "LIFECYCLE_JOURNEYS": str(self.journeys_dir),
            "LIFECYCLE_TEMPLATES": str(self.templates_dir),
            "LIFECYCLE_OUTBOX": str(self.outbox_dir),
            "LIFECYCLE_NAMESPACE": self.namespace,
            "LIFECYCLE_QUEUE": self.queue,
            "LIFECYCLE_TIMER_SHARDS": str(self.timer_shards),
            "LIFECYCLE_LEASE_SECONDS": repr(self.lease_seconds),
            "LIFECYCLE_CLAIM_LEASE_SECONDS": repr(self.claim_lease_seconds),
            "LIFECYCLE_LIVENESS_SECONDS": repr(self.liveness_seconds),
            "LIFECYCLE_RECONCILE_SECONDS": repr(self.reconcile_seconds),
            "LIFECYCLE_REDIS_PATIENCE_SECONDS": repr(self.redis_patience_seconds),
            "LIFECYCLE_BATCH_SIZE": str(self.batch_size),
            "LIFECYCLE_CLAIM_LIMIT": str(self.claim_limit),
            "LIFECYCLE_POLL_INTERVAL": repr(self.poll_interval),
            "LIFECYCLE_MAX_QUEUED_MESSAGES": str(self.max_queued_messages),
            "LIFECYCLE_HEARTBEAT_TIMEOUT_MS": str(self.heartbeat_timeout_ms),
            "LIFECYCLE_BROKER_MAINTENANCE": str(self.broker_maintenance),
            "LIFECYCLE_RELOAD_SECONDS": repr(self.reload_seconds),
            "LIFECYCLE_DEPLOY": self.deploy,
            "LIFECYCLE_RECENT_EVENTS": str(self.recent_events),
            "LIFECYCLE_INBOX_LENGTH": str(self.inbox_length),
            "LIFECYCLE_MAX_SEND_ATTEMPTS": str(self.max_send_attempts),
            "LIFECYCLE_RETRY_BASE_SECONDS": repr(self.retry_base_seconds),
            "LIFECYCLE_RETRY_MAX_SECONDS": repr(self.retry_max_seconds),
            "LIFECYCLE_CLOCK_SPEED": repr(self.clock_speed),
            "LIFECYCLE_EMAIL_FROM": self.email_from,
            "LIFECYCLE_UNSUBSCRIBE_URL": self.unsubscribe_url,
            "LIFECYCLE_UNSUBSCRIBE_MAILTO": self.unsubscribe_mailto,
            "LIFECYCLE_UNSUBSCRIBE_TOKEN_DAYS": repr(self.unsubscribe_token_days),
            "LIFECYCLE_SENDGRID_TOLERANCE_SECONDS": repr(self.sendgrid_tolerance_seconds),
            "LIFECYCLE_REQUEST_TIMEOUT_SECONDS": repr(self.request_timeout_seconds),
            "LIFECYCLE_PAUSE_SECONDS": repr(self.pause_seconds),
            "LIFECYCLE_TEMPLATE_TIME_MS": str(self.template_time_ms),
            "LIFECYCLE_TEMPLATE_MAX_BYTES": str(self.template_max_bytes),
        }
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.secret:
            env["LIFECYCLE_SECRET"] = self.secret
        if self.secret_previous:
            env["LIFECYCLE_SECRET_PREVIOUS"] = self.secret_previous
        if self.clock_origin is not None:
            env["LIFECYCLE_CLOCK_ORIGIN"] = repr(self.clock_origin)
        if self.clock_start is not None:
            env["LIFECYCLE_CLOCK_START"] = repr(self.clock_start)
        for channel, adapter in self.channels.items():
            env[f"LIFECYCLE_CHANNEL_{channel.upper()}"] = adapter
        for adapter, rate in self.rate_limits.items():
            env[f"LIFECYCLE_RATE_{adapter.upper()}"] = repr(rate)
        for channel, policy in self.ambiguous.items():
            env[f"LIFECYCLE_AMBIGUOUS_{channel.upper()}"] = policy
        return env
