"""Inbound webhooks: what providers and recipients tell us, every request's signature checked.

    POST /webhooks/sendgrid          SendGrid's signed Event Webhook (ECDSA P-256)
    POST /webhooks/twilio/status     Twilio message status callbacks (X-Twilio-Signature)
    POST /webhooks/twilio/inbound    SMS replies: STOP / START / HELP (X-Twilio-Signature)
    GET  /unsubscribe?token=...      a confirmation page with one button
    POST /unsubscribe?token=...      unsubscribe: the page's button, or a mail client's
                                     RFC 8058 one-click request
    GET  /healthz

The handlers of these endpoints; `lifecycle serve` (automation.server.app) routes requests to
them as a `Request`. Reports are matched to journey steps through the ids our adapters attach to
every message (SendGrid custom_args, Twilio callback query parameters) and recorded by
`automation.store.deliveries`.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qs

from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader
from twilio.request_validator import RequestValidator

from automation.channels.twilio import error_effect
from automation.errors import InputError
from automation.events import Event
from automation.messages.templates import TemplateCatalog, text_direction
from automation.messages.unsubscribe import verify_token
from automation.runtime import Runtime
from automation.secret import require_secret
from automation.store.contacts import ContactStore
from automation.store.deliveries import DeliveryLog, DeliveryReport

logger = logging.getLogger(__name__)

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

#: The unsubscribe page's texts when templates/defaults.yaml has none (per locale, it has them).
PAGE_TEXTS: dict[str, Any] = {
    "unsubscribe_title": "Unsubscribe",
    "unsubscribe_question": "Stop receiving {channel} from us?",
    "unsubscribe_channels": {"email": "emails", "sms": "text messages", "push": "push notifications"},
    "unsubscribe_button": "Unsubscribe",
    "unsubscribed_title": "Unsubscribed",
    "unsubscribed_text": "You are unsubscribed.",
}


class HTTPError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def code(self) -> int:
        return int(self.status.split()[0])


@dataclass(frozen=True)
class Request:
    """What a handler needs of an HTTP request (the server fills it in)."""

    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)     # names in Title-Case
    url: str = ""                                                # as called: scheme://host/path?query


# -- SendGrid ---------------------------------------------------------------------------------------

def sendgrid_report(event: Mapping[str, Any]) -> DeliveryReport | None:
    """A SendGrid event as a delivery report, if it is about a message we sent."""
    key, contact = event.get("lc_key"), event.get("lc_contact")
    if not isinstance(key, str) or not isinstance(contact, str) or event.get("lc_test"):
        return None     # not ours, or a test message (lifecycle test-send): no contact's business
    kind = str(event.get("event", ""))
    at = float(event.get("timestamp") or time.time())
    reason = str(event.get("reason") or event.get("response") or "")
    status, effect, journey_event = kind, {}, None
    if kind == "bounce":
        if event.get("type") == "blocked":  # blocked by the receiving server this time: not the address
            status = "blocked"
        else:
            status, effect = "bounced", {"email_invalid": True}
    elif kind == "dropped":
        lowered = reason.lower()
        if "unsubscribed" in lowered or "spam" in lowered:
            effect = {"consent.email": False}
        elif "bounced" in lowered or "invalid" in lowered:
            effect = {"email_invalid": True}
    elif kind == "spamreport":
        status, effect = "complained", {"consent.email": False}
    elif kind in ("unsubscribe", "group_unsubscribe"):
        status, effect = "unsubscribed", {"consent.email": False}
    elif kind == "group_resubscribe":
        status, effect = "delivered", {"consent.email": True}
    elif kind == "open":
        status, journey_event = "opened", "email_opened"
    elif kind == "click":
        status, journey_event = "clicked", "email_clicked"
    properties = {"journey": event.get("lc_journey"), "step": event.get("lc_step")}
    if kind == "click" and event.get("url"):
        properties["url"] = event["url"]
    return DeliveryReport("email", key, contact, status, at, reason, effect, journey_event, properties,
                          str(event.get("sg_event_id") or "") or None)


# -- Twilio -----------------------------------------------------------------------------------------

def twilio_report(params: Mapping[str, str], query: Mapping[str, str]) -> DeliveryReport | None:
    key, contact = query.get("lc_key"), query.get("lc_contact")
    status = params.get("MessageStatus") or params.get("SmsStatus")
    if not key or not contact or not status or query.get("lc_test"):
        return None
    code = params.get("ErrorCode") or ""
    detail = f"error {code}" if code else ""
    return DeliveryReport("sms", key, contact, status, time.time(), detail, dict(error_effect(code)),
                          report_id=f"{params.get('MessageSid', '')}:{status}")


# -- the application --------------------------------------------------------------------------------

class WebhookApp:
    def __init__(self, runtime: Runtime, env: Mapping[str, str] | None = None) -> None:
        self.runtime = runtime
        self.env = os.environ if env is None else env
        self.log = DeliveryLog(runtime)
        self.store = ContactStore(runtime)
        self.public_url = (self.env.get("LIFECYCLE_WEBHOOK_PUBLIC_URL") or "").rstrip("/")
        self.help_text = self.env.get("LIFECYCLE_SMS_HELP_TEXT") or \
            "Reply STOP to unsubscribe, START to subscribe again."
        settings = runtime.settings
        # Unsubscribe links are checked with the current key, and the previous one during a rotation.
        self.secrets = (require_secret(settings, "the unsubscribe endpoint"), settings.secret_previous)
        # The unsubscribe page speaks the contact's language, from templates/defaults.yaml.
        self.catalog = TemplateCatalog(settings.templates_dir)
        self._catalog_checked = time.monotonic()

    # -- SendGrid

    def sendgrid(self, request: Request) -> tuple[str, str, bytes]:
        key = self.env.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
        if not key:
            raise HTTPError("503 Service Unavailable", "SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        signature = request.headers.get(EventWebhookHeader.SIGNATURE.title())
        timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP.title())
        payload = request.body.decode("utf-8", errors="replace")
        try:
            valid = bool(signature and timestamp and EventWebhook(key).verify_signature(payload, signature, timestamp))
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise HTTPError("403 Forbidden", "bad signature")
        # The signature covers the timestamp: an old signed request is a replay (or a very late retry).
        tolerance = self.runtime.settings.sendgrid_tolerance_seconds
        signed_at = float(timestamp) if str(timestamp).isdigit() else 0.0
        if abs(time.time() - signed_at) > tolerance:
            raise HTTPError("403 Forbidden", f"signed timestamp is more than {tolerance:.0f}s away from now")
        try:
            events = json.loads(payload)
        except ValueError:
            raise HTTPError("400 Bad Request", "the body is not JSON") from None
        if not isinstance(events, list):
            raise HTTPError("400 Bad Request", "expected a JSON array of events")
        recorded = 0
        for event in events:
            report = sendgrid_report(event) if isinstance(event, dict) else None
            if report is None or (report.report_id and not self.log.first_time("sendgrid", report.report_id)):
                continue
            recorded += bool(self.log.record(report))
        return "200 OK", "application/json", json.dumps({"recorded": recorded}).encode()

    # -- Twilio

    def _twilio_params(self, request: Request) -> dict[str, str]:
        token = self.env.get("TWILIO_AUTH_TOKEN")
        if not token:
            raise HTTPError("503 Service Unavailable", "TWILIO_AUTH_TOKEN is not set")
        try:
            params = {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise HTTPError("400 Bad Request", "the body is not UTF-8") from None
        url = request.url
        if self.public_url:  # Twilio signs the public URL it called, not the one behind a proxy
            scheme_host = url.split("/", 3)
            url = self.public_url + ("/" + scheme_host[3] if len(scheme_host) > 3 else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(token).validate(url, params, signature):
            raise HTTPError("403 Forbidden", "bad signature (set LIFECYCLE_WEBHOOK_PUBLIC_URL behind a proxy)")
        return params

    def twilio_status(self, request: Request) -> tuple[str, str, bytes]:
        params = self._twilio_params(request)
        report = twilio_report(params, request.query)
        if report is not None and (not report.report_id or self.log.first_time("twilio", report.report_id)):
            self.log.record(report)
        return "204 No Content", "text/plain", b""

    def twilio_inbound(self, request: Request) -> tuple[str, str, bytes]:
        params = self._twilio_params(request)
        phone, word = params.get("From", ""), params.get("Body", "").strip().upper()
        contact = self.store.find_by_phone(phone)
        reply = ""
        if word in HELP_WORDS:
            reply = self.help_text
        elif contact is not None and (word in STOP_WORDS or word in START_WORDS):
            subscribed = word in START_WORDS
            self.store.identify(contact, {"consent": {"sms": subscribed}})
            self.store.track(Event(contact, "sms_subscribed" if subscribed else "sms_unsubscribed", time.time(),
                                   {"keyword": word}, params.get("MessageSid")))
            logger.info("contact %s replied %s: SMS consent %s", contact, word, "on" if subscribed else "off")
        twiml = "<Response>" + (f"<Message>{html.escape(reply)}</Message>" if reply else "") + "</Response>"
        return "200 OK", "application/xml", f'<?xml version="1.0" encoding="UTF-8"?>{twiml}'.encode()

    # -- one-click unsubscribe

    def _token(self, request: Request) -> tuple[str, str, str]:
        token = request.query.get("token", "")
        max_age = self.runtime.settings.unsubscribe_token_days * 86400
        try:
            contact, channel = verify_token(self.secrets, token, time.time(), max_age)
        except InputError as error:
            raise HTTPError("400 Bad Request", str(error)) from None
        return token, contact, channel

    def _page_texts(self, contact: str) -> tuple[str, dict[str, Any]]:
        """The unsubscribe page's language (the contact's locale, its language, else English) and
        its texts in that language."""
        now = time.monotonic()
        if now - self._catalog_checked >= self.runtime.settings.reload_seconds:
            self._catalog_checked = now
            self.catalog.refresh()   # edits to defaults.yaml apply as they do for the workers
        locale = self.store.load(contact).attributes.get("locale")
        used = self.catalog.locale_defining("unsubscribe_question", locale if isinstance(locale, str) else None,
                                            "en") or "en"
        return used, {**PAGE_TEXTS, **self.catalog.defaults_for(used, "en")}

    def unsubscribe_page(self, request: Request) -> tuple[str, str, bytes]:
        # Link scanners open every URL in an email: a GET only shows the button, it never unsubscribes.
        token, contact, channel = self._token(request)
        locale, texts = self._page_texts(contact)
        names = texts["unsubscribe_channels"] if isinstance(texts["unsubscribe_channels"], dict) else {}
        question = str(texts["unsubscribe_question"]).replace("{channel}", str(names.get(channel, channel)))
        body = (f"<p>{html.escape(question)}</p>"
                f"<form method='post' action='?token={html.escape(token)}'>"
                f"<button type='submit'>{html.escape(str(texts['unsubscribe_button']))}</button></form>")
        return "200 OK", "text/html; charset=utf-8", html_page(locale, str(texts["unsubscribe_title"]), body)

    def unsubscribe(self, request: Request) -> tuple[str, str, bytes]:
        _, contact, channel = self._token(request)
        # Only a contact that exists: a genuine token for a deleted (or never stored) contact creates nothing.
        if self.store.update_existing(contact, {"consent": {channel: False}}):
            self.store.track(Event(contact, "unsubscribed", time.time(), {"channel": channel}))
            logger.info("contact %s unsubscribed from %s", contact, channel, extra={"contact": contact})
        locale, texts = self._page_texts(contact)
        body = f"<p>{html.escape(str(texts['unsubscribed_text']))}</p>"
        return "200 OK", "text/html; charset=utf-8", html_page(locale, str(texts["unsubscribed_title"]), body)


def html_page(locale: str, title: str, body: str) -> bytes:
    """A small page in `locale`, right to left for Persian, Arabic, Hebrew ...; `body` is HTML."""
    return (f'<!doctype html><html lang="{html.escape(locale)}" dir="{text_direction(locale)}">'
            f'<meta charset="utf-8"><title>{html.escape(title)}</title>{body}</html>').encode()
