"""Inbound webhooks: delivery events, STOP replies and one-click unsubscribe, signatures checked."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from automation.api import Lifecycle
from automation.channels import ChannelRegistry
from automation.messages.unsubscribe import make_token
from automation.server.app import create_app
from tests.providers.recording import Provider

TWILIO_TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://hooks.example.com"


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_text(private: ec.EllipticCurvePrivateKey) -> str:
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture
def app(runtime, sendgrid_key, serve_app) -> str:
    """`lifecycle serve`'s application on a real server; its base URL."""
    env = {"SENDGRID_WEBHOOK_PUBLIC_KEY": public_key_text(sendgrid_key), "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
           "LIFECYCLE_WEBHOOK_PUBLIC_URL": PUBLIC, "LIFECYCLE_SMS_HELP_TEXT": "Northwind: reply STOP to opt out."}
    return serve_app(create_app(runtime, env)).url


REASONS = {200: "200 OK", 204: "204 No Content", 400: "400 Bad Request", 403: "403 Forbidden"}


def call(app: str, method: str, path: str, body: bytes = b"", query: str = "",
         headers: dict[str, str] | None = None) -> tuple[str, bytes]:
    answer = requests.request(method, f"{app}{path}" + (f"?{query}" if query else ""), data=body,
                              headers=headers, timeout=10)
    return REASONS.get(answer.status_code, str(answer.status_code)), answer.content


def signed_events(key: ec.EllipticCurvePrivateKey, events: list[dict], at: float | None = None
                  ) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps(events)
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign((timestamp + payload).encode(), ec.ECDSA(hashes.SHA256()))
    return payload.encode(), {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                              "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def twilio_signed(path: str, params: dict[str, str], query: str = "") -> tuple[bytes, dict[str, str]]:
    url = f"{PUBLIC}{path}" + (f"?{query}" if query else "")
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return urlencode(params).encode(), {"X-Twilio-Signature": signature}


@pytest.fixture
def welcomed(runtime, make_engine, run_due, settings) -> Lifecycle:
    """Ana has been sent the welcome email (through a provider double), so the step is in her ledger."""
    provider = Provider(settings)
    engine = make_engine(ChannelRegistry(settings, instances={"email": provider, "sms": provider, "push": provider}))
    lc = Lifecycle(runtime)
    lc.identify("ana", {"email": "ana@example.com", "phone": "+14155550100", "first_name": "Ana",
                        "consent": {"email": True, "sms": True}})
    run_due(engine)
    return lc


KEY = "customer-lifecycle:lead:1:welcome:ana"
FIELD = "customer-lifecycle:lead:1:welcome"


def event(kind: str, n: int, **more: Any) -> dict[str, Any]:
    return {"email": "ana@example.com", "timestamp": int(time.time()), "event": kind, "sg_event_id": f"ev{n}",
            "sg_message_id": "m1", "lc_key": KEY, "lc_contact": "ana", "lc_journey": "customer-lifecycle",
            "lc_step": "welcome", **more}


def test_sendgrid_events_update_the_step_and_become_journey_events(app, welcomed, sendgrid_key):
    body, headers = signed_events(sendgrid_key, [event("processed", 1), event("delivered", 2), event("open", 3)])
    status, answer = call(app, "POST", "/webhooks/sendgrid", body, headers=headers)
    assert status == "200 OK" and json.loads(answer) == {"recorded": 3}
    outcome = welcomed.history("ana")[FIELD]
    assert outcome["state"] == "sent" and outcome["delivery"] == "opened"
    assert welcomed.contact("ana").events["email_opened"].count == 1
    # A late "processed" never downgrades what is known, and repeats are ignored
    body, headers = signed_events(sendgrid_key, [event("processed", 4), event("open", 3)])
    call(app, "POST", "/webhooks/sendgrid", body, headers=headers)
    assert welcomed.history("ana")[FIELD]["delivery"] == "opened"
    assert welcomed.contact("ana").events["email_opened"].count == 1


@pytest.mark.parametrize("kind, extra, attribute, value", [
    ("spamreport", {}, "consent", {"email": False, "sms": True}),
    ("unsubscribe", {}, "consent", {"email": False, "sms": True}),
    ("bounce", {"type": "bounce", "reason": "550 5.1.1 no such user"}, "email_invalid", True),
    ("dropped", {"reason": "Unsubscribed Address"}, "consent", {"email": False, "sms": True}),
])
def test_sendgrid_events_change_the_contact(app, welcomed, sendgrid_key, kind, extra, attribute, value):
    body, headers = signed_events(sendgrid_key, [event(kind, 9, **extra)])
    assert call(app, "POST", "/webhooks/sendgrid", body, headers=headers)[0] == "200 OK"
    assert welcomed.contact("ana").attributes[attribute] == value


def test_a_blocked_bounce_does_not_condemn_the_address(app, welcomed, sendgrid_key):
    body, headers = signed_events(sendgrid_key, [event("bounce", 9, type="blocked", reason="temporarily blocked")])
    call(app, "POST", "/webhooks/sendgrid", body, headers=headers)
    assert "email_invalid" not in welcomed.contact("ana").attributes
    assert welcomed.history("ana")[FIELD]["delivery"] == "blocked"


def test_an_unknown_step_is_reconciled_by_the_providers_report(app, welcomed, runtime, sendgrid_key):
    # Given the welcome recorded as unknown (its worker died after SendGrid accepted it)
    outcome = welcomed.history("ana")[FIELD]
    runtime.redis.hset(runtime.keys.ledger("ana"), FIELD, json.dumps({**outcome, "state": "unknown"}))
    # When SendGrid reports it processed
    body, headers = signed_events(sendgrid_key, [event("processed", 5)])
    call(app, "POST", "/webhooks/sendgrid", body, headers=headers)
    # Then the step is known to be sent
    reconciled = welcomed.history("ana")[FIELD]
    assert reconciled["state"] == "sent" and reconciled["reconciled"] is True


def test_sendgrid_signatures_are_checked(app, welcomed, sendgrid_key):
    body, headers = signed_events(sendgrid_key, [event("spamreport", 6)])
    tampered = body.replace(b"spamreport", b"delivered!")
    assert call(app, "POST", "/webhooks/sendgrid", tampered, headers=headers)[0] == "403 Forbidden"
    assert call(app, "POST", "/webhooks/sendgrid", body)[0] == "403 Forbidden"
    other = ec.generate_private_key(ec.SECP256R1())
    body, headers = signed_events(other, [event("spamreport", 7)])
    assert call(app, "POST", "/webhooks/sendgrid", body, headers=headers)[0] == "403 Forbidden"
    assert welcomed.contact("ana").attributes["consent"]["email"] is True


def test_twilio_status_callbacks(app, welcomed, runtime):
    # The SMS step of a journey, as the Twilio adapter would have recorded it
    sms_field = "customer-lifecycle:lapsed:1:winback-reminder"
    runtime.redis.hset(runtime.keys.ledger("ana"), sms_field, json.dumps({"state": "sent", "ch": "sms"}))
    query = urlencode({"lc_key": f"{sms_field}:ana", "lc_contact": "ana"})
    params = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30005", "To": "+14155550100"}
    body, headers = twilio_signed("/webhooks/twilio/status", params, query)
    assert call(app, "POST", "/webhooks/twilio/status", body, query, headers)[0] == "204 No Content"
    assert welcomed.history("ana")[sms_field]["delivery"] == "undelivered"
    assert welcomed.contact("ana").attributes["phone_invalid"] is True
    body, _ = twilio_signed("/webhooks/twilio/status", params, query)
    assert call(app, "POST", "/webhooks/twilio/status", body, query, {"X-Twilio-Signature": "forged"})[0] == \
        "403 Forbidden"


def test_stop_and_start_replies_change_sms_consent(app, welcomed):
    body, headers = twilio_signed("/webhooks/twilio/inbound",
                                  {"From": "+14155550100", "Body": " stop ", "MessageSid": "SM9"})
    status, answer = call(app, "POST", "/webhooks/twilio/inbound", body, headers=headers)
    assert status == "200 OK" and answer.endswith(b"<Response></Response>")
    assert welcomed.contact("ana").attributes["consent"]["sms"] is False
    assert welcomed.contact("ana").events["sms_unsubscribed"].count == 1
    body, headers = twilio_signed("/webhooks/twilio/inbound",
                                  {"From": "+14155550100", "Body": "START", "MessageSid": "SM10"})
    call(app, "POST", "/webhooks/twilio/inbound", body, headers=headers)
    assert welcomed.contact("ana").attributes["consent"]["sms"] is True
    # "stop the spam please" is a sentence, not the keyword
    body, headers = twilio_signed("/webhooks/twilio/inbound", {"From": "+14155550100", "Body": "stop the spam please"})
    call(app, "POST", "/webhooks/twilio/inbound", body, headers=headers)
    assert welcomed.contact("ana").attributes["consent"]["sms"] is True


def test_help_gets_the_help_text(app, welcomed):
    body, headers = twilio_signed("/webhooks/twilio/inbound", {"From": "+19995550000", "Body": "HELP"})
    status, answer = call(app, "POST", "/webhooks/twilio/inbound", body, headers=headers)
    assert b"<Message>Northwind: reply STOP to opt out.</Message>" in answer


def test_one_click_unsubscribe(app, welcomed, settings):
    token = make_token(settings.secret, "ana", "email")
    # A link scanner's GET shows a page and changes nothing
    status, page = call(app, "GET", "/unsubscribe", query=f"token={token}")
    assert status == "200 OK" and b"<button" in page
    assert welcomed.contact("ana").attributes["consent"]["email"] is True
    # The mail client's RFC 8058 POST unsubscribes
    status, _ = call(app, "POST", "/unsubscribe", b"List-Unsubscribe=One-Click", query=f"token={token}")
    assert status == "200 OK"
    assert welcomed.contact("ana").attributes["consent"]["email"] is False
    assert welcomed.contact("ana").events["unsubscribed"].count == 1
    assert call(app, "POST", "/unsubscribe", query="token=forged.token")[0] == "400 Bad Request"


def test_served_over_http(app):
    answer = requests.get(f"{app}/healthz", timeout=5)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    missing = requests.get(f"{app}/nope", timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
