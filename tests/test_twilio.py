"""The Twilio SMS adapter: the real `twilio` SDK against a local stand-in for Twilio's REST API."""

from __future__ import annotations

import base64
import socket
import time
from email.utils import formatdate
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry, Delivery, Failed, Misconfigured, Retry, Sent
from automation.channels.twilio import TwilioChannel
from automation.config import Settings
from automation.testing import AdapterContract
from tests.conftest import write
from tests.providers.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    MESSAGING_SERVICE_SID,
    SENDER,
    TwilioStandIn,
    twilio_error,
)

CALLBACK = "https://hooks.example.com/twilio/status"
ANA = "+15551230001"


def twilio_env(base_url: str, **changes: str | None) -> dict[str, str]:
    env: dict[str, str | None] = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "LIFECYCLE_TWILIO_FROM": SENDER,
        "LIFECYCLE_TWILIO_STATUS_CALLBACK": CALLBACK,
        "LIFECYCLE_TWILIO_BASE_URL": base_url,
        "LIFECYCLE_TWILIO_TIMEOUT": "1",
        **changes,
    }
    return {name: value for name, value in env.items() if value is not None}


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    with TwilioStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def make_adapter(twilio: TwilioStandIn) -> Iterator[Callable[..., TwilioChannel]]:
    """An adapter pointed at the stand-in; keyword arguments change (or, with None, remove) settings."""
    adapters: list[TwilioChannel] = []

    def make(**changes: str | None) -> TwilioChannel:
        adapter = TwilioChannel(Settings(), env=twilio_env(twilio.url, **changes))
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        adapter.close()


def sms(body: str = "Hi Ana, your order has shipped.", to: str = ANA, contact: str = "ana",
        step: str = "shipped") -> Delivery:
    key = f"orders:active:1:{step}:{contact}"
    return Delivery(key=key, contact_id=contact, journey="orders", stage="active", step=step, channel="sms",
                    template=step, locale="en", to=to, parts={"body": body}, at=time.time(),
                    metadata={"key": key, "contact_id": contact, "journey": "orders"})


def basic_auth(request) -> tuple[str, str]:
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    sid, _, token = base64.b64decode(encoded).decode().partition(":")
    return sid, token


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the contract every adapter passes ------------------------------------------------------------


class TestTwilioContract(AdapterContract):
    channel = "sms"
    timeout = 1.0

    @pytest.fixture
    def provider(self) -> Iterator[TwilioStandIn]:
        with TwilioStandIn() as stand_in:
            yield stand_in

    @pytest.fixture
    def adapter(self, provider: TwilioStandIn) -> Iterator[TwilioChannel]:
        adapter = TwilioChannel(Settings(), env=twilio_env(provider.url, LIFECYCLE_TWILIO_TIMEOUT=str(self.timeout)))
        yield adapter
        adapter.close()

    def contact(self, provider: TwilioStandIn) -> dict[str, str]:
        return {"phone": "+15551239876"}


# -- the request Twilio receives ------------------------------------------------------------------


def test_a_message_is_created_with_twilio_s_messages_api(twilio, make_adapter):
    # Given an adapter with a sender number and a status callback
    adapter = make_adapter()
    # When it sends an SMS
    result = adapter.send(sms())
    # Then Twilio got one form-encoded POST to the account's Messages resource, with basic auth
    assert isinstance(result, Sent), result
    [request] = twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert basic_auth(request) == (ACCOUNT_SID, AUTH_TOKEN)
    form = {name: values for name, values in request.form().items()}
    assert form["To"] == [ANA]
    assert form["From"] == [SENDER]
    assert form["Body"] == ["Hi Ana, your order has shipped."]
    assert "MessagingServiceSid" not in form
    # And the status callback carries our ids, so delivery reports find the journey step
    callback = urlsplit(form["StatusCallback"][0])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == CALLBACK
    ids = parse_qs(callback.query)
    assert ids["lc_key"] == ["orders:active:1:shipped:ana"]
    assert ids["lc_contact"] == ["ana"]
    assert ids["lc_journey"] == ["orders"] and ids["lc_stage"] == ["active"] and ids["lc_step"] == ["shipped"]
    # And the provider id is the Message SID Twilio answered with
    [message] = twilio.delivered()
    assert result.provider_id == message["Sid"]
    assert result.provider_id.startswith("SM") and len(result.provider_id) == 34
    assert result.detail == "queued at Twilio"


def test_a_messaging_service_sends_instead_of_a_number(twilio, make_adapter):
    # Given an adapter configured with a Messaging Service and no sender number
    adapter = make_adapter(LIFECYCLE_TWILIO_FROM=None, LIFECYCLE_TWILIO_MESSAGING_SERVICE_SID=MESSAGING_SERVICE_SID)
    # When it sends
    result = adapter.send(sms())
    # Then Twilio picks the sender from the service's pool
    assert isinstance(result, Sent) and result.detail == "accepted at Twilio", result
    form = twilio.requests[0].form()
    assert form["MessagingServiceSid"] == [MESSAGING_SERVICE_SID]
    assert "From" not in form


def test_the_status_callback_keeps_its_own_query_and_is_optional(twilio, make_adapter):
    # Given a callback URL that already has a query, and an adapter without any callback
    with_query = make_adapter(LIFECYCLE_TWILIO_STATUS_CALLBACK=CALLBACK + "?tenant=north")
    without = make_adapter(LIFECYCLE_TWILIO_STATUS_CALLBACK=None)
    # When both send
    with_query.send(sms())
    without.send(sms())
    # Then our ids are added after the existing query, and no callback is sent when none is set
    first, second = (request.form() for request in twilio.requests)
    query = parse_qs(urlsplit(first["StatusCallback"][0]).query)
    assert query["tenant"] == ["north"] and query["lc_contact"] == ["ana"]
    assert "StatusCallback" not in second


@pytest.mark.parametrize("body, segments, encoding", [
    ("a" * 160, 1, "GSM-7"),
    ("a" * 161, 2, "GSM-7"),
    ("a" * 159 + "€", 2, "GSM-7"),            # € is in the extension table: it counts twice
    ("Привет, Аня! " * 5 + "Ждём", 1, "UCS-2"),   # 69 Cyrillic characters
    ("Привет, Аня! " * 10 + "Ваш заказ отправлен", 3, "UCS-2"),   # 149: three segments of 67
])
def test_the_segment_count_is_recorded(twilio, make_adapter, body, segments, encoding):
    # Given a text of a known length and alphabet
    adapter = make_adapter()
    # When it is sent
    result = adapter.send(sms(body))
    # Then the outcome records how many segments Twilio bills, and in which encoding
    assert isinstance(result, Sent), result
    assert result.info == {"segments": segments, "encoding": encoding}
    assert twilio.requests[0].form()["Body"] == [body]


# -- failures, classified -------------------------------------------------------------------------


def test_an_invalid_number_marks_the_phone_invalid(twilio, make_adapter):
    # Given a number that is not E.164 and a landline
    twilio.landlines.add("+15557770000")
    adapter = make_adapter()
    # When SMS go to them
    invalid = adapter.send(sms(to="555-1234"))
    landline = adapter.send(sms(to="+15557770000"))
    # Then both fail for good with Twilio's reason, and ask the engine to mark the phone invalid
    assert isinstance(invalid, Failed) and invalid.code == "invalid_number", invalid
    assert "21211" in invalid.reason and "555-1234 is not a valid phone number" in invalid.reason
    assert invalid.effect == {"phone_invalid": True}
    assert isinstance(landline, Failed) and landline.code == "invalid_number", landline
    assert "21614" in landline.reason and landline.effect == {"phone_invalid": True}
    assert twilio.delivered() == []


def test_a_recipient_who_replied_stop_loses_sms_consent(twilio, make_adapter):
    # Given a recipient who replied STOP to our sender
    twilio.stopped.add(ANA)
    # When we send to them
    result = make_adapter().send(sms())
    # Then it fails as unsubscribed and turns their SMS consent off
    assert isinstance(result, Failed) and result.code == "unsubscribed", result
    assert "21610" in result.reason
    assert result.effect == {"consent.sms": False}


@pytest.mark.parametrize("code, expected", [(21408, "region_not_enabled"), (21612, "unroutable"),
                                            (21608, "unverified_recipient")])
def test_recipient_specific_refusals_fail_without_touching_the_contact(twilio, make_adapter, code, expected):
    # Given Twilio refuses this recipient for a reason that is not the number itself
    twilio.answer(twilio_error(code, f"refused with {code}"))
    # When we send
    result = make_adapter().send(sms())
    # Then the step fails with a code of its own and Twilio's message; the contact is left alone
    assert isinstance(result, Failed) and result.code == expected, result
    assert f"Twilio error {code}: refused with {code}" == result.reason
    assert result.effect == {}


def test_any_other_refusal_keeps_twilio_s_code_and_message(twilio, make_adapter):
    # Given a body longer than Twilio's 1,600 character limit
    result = make_adapter().send(sms("x" * 1601))
    # Then the step fails with Twilio's code and message
    assert isinstance(result, Failed) and result.code == "twilio_21617", result
    assert "exceeds the 1600 character limit" in result.reason


def test_a_wrong_sender_pauses_the_channel(twilio, make_adapter):
    # Given a sender that is no phone number, short code or alphanumeric sender ID
    result = make_adapter(LIFECYCLE_TWILIO_FROM="not a number!").send(sms())
    # Then the channel is paused (it would fail for every contact), rather than failing this one
    assert isinstance(result, Misconfigured), result
    assert "21212" in result.reason


def test_a_rate_limit_is_retried_after_retry_after(twilio, make_adapter):
    # Given Twilio answers 429, once with a Retry-After in seconds, once as a date, once without
    in_a_minute = formatdate(time.time() + 60, usegmt=True)
    twilio.answer(twilio_error(20429, "Too Many Requests", 429, {"Retry-After": "7"}),
                  twilio_error(20429, "Too Many Requests", 429, {"Retry-After": in_a_minute}),
                  twilio_error(20429, "Too Many Requests", 429))
    adapter = make_adapter()
    # When we send three times
    seconds, date, default = (adapter.send(sms()) for _ in range(3))
    # Then each is retried, when Twilio says or after a short default
    assert isinstance(seconds, Retry) and seconds.after == 7 and "20429" in seconds.reason
    assert isinstance(date, Retry) and 55 <= date.after <= 60
    assert isinstance(default, Retry) and default.after == 10
    # And the SDK did not retry by itself: one request per send
    assert len(twilio.requests) == 3


def test_a_server_error_is_retried(twilio, make_adapter):
    # Given Twilio fails with a 500
    twilio.answer(twilio_error(20500, "Internal Server Error", 500))
    # When we send
    result = make_adapter().send(sms())
    # Then it is retried later, and not re-sent by the SDK now
    assert isinstance(result, Retry) and result.after > 0 and "20500" in result.reason, result
    assert len(twilio.requests) == 1 and twilio.delivered() == []


def test_refused_credentials_pause_the_channel(twilio, make_adapter):
    # Given a wrong auth token
    result = make_adapter(TWILIO_AUTH_TOKEN="0" * 32).send(sms())
    # Then Twilio answers 401 (20003) and the adapter asks for a pause, not a failure
    assert isinstance(result, Misconfigured), result
    assert "401" in result.reason and "20003" in result.reason
    assert twilio.delivered() == []


def test_a_provider_that_does_not_answer_is_retried_after_the_timeout(twilio, make_adapter):
    # Given Twilio holds its answer far longer than the adapter's 1 second timeout (60 s: an adapter that
    # waited for it would be seen to, however slow the machine; the stand-in's close ends the wait)
    twilio.hang(60)
    adapter = make_adapter()
    # When we send
    result = adapter.send(sms())
    # Then the request reached Twilio, the adapter gave up before Twilio answered, and asks for a retry
    assert isinstance(result, Retry) and "did not answer within 1s" in result.reason, result
    (exchange,) = twilio.exchanges
    assert exchange.request.path.endswith("/Messages.json")
    assert exchange.response is None, "the adapter waited for Twilio's answer"
    assert twilio.delivered() == []


def test_an_unreachable_provider_is_retried(make_adapter):
    # Given nothing listens at the API's address
    adapter = make_adapter(LIFECYCLE_TWILIO_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    # When we send
    result = adapter.send(sms())
    # Then it is retried later
    assert isinstance(result, Retry) and "cannot reach Twilio" in result.reason, result


def test_without_credentials_nothing_is_sent(twilio, make_adapter):
    # Given a worker started without Twilio credentials
    adapter = make_adapter(TWILIO_ACCOUNT_SID=None, TWILIO_AUTH_TOKEN=None)
    # When a message is due
    result = adapter.send(sms())
    # Then the channel pauses with what is missing, and Twilio is not called
    assert isinstance(result, Misconfigured), result
    assert "TWILIO_ACCOUNT_SID" in result.reason and "TWILIO_AUTH_TOKEN" in result.reason
    assert twilio.requests == []


# -- batches ----------------------------------------------------------------------------------------


def test_send_many_answers_each_message_in_order(twilio, make_adapter):
    # Given a batch where some recipients cannot be reached
    twilio.stopped.add("+15551230003")
    numbers = [f"+1555123000{n}" for n in range(1, 9)] + ["12345"]
    batch = [sms(to=number, contact=f"c{n}") for n, number in enumerate(numbers)]
    # When it is sent concurrently
    results = make_adapter().send_many(batch)
    # Then each result belongs to its own delivery
    assert len(results) == len(batch)
    sids = {message["To"]: message["Sid"] for message in twilio.delivered()}
    for number, result in zip(numbers, results, strict=True):
        if number == "+15551230003":
            assert isinstance(result, Failed) and result.code == "unsubscribed"
        elif number == "12345":
            assert isinstance(result, Failed) and result.code == "invalid_number"
        else:
            assert isinstance(result, Sent) and result.provider_id == sids[number]
    assert len(twilio.requests) == len(batch)


# -- configuration ------------------------------------------------------------------------------------


def test_check_reports_a_complete_configuration_without_sending(twilio, make_adapter):
    # Given a complete configuration
    checks = make_adapter().check()
    # Then nothing is an error, the SID is masked and the token never shown
    text = "\n".join(check.message for check in checks)
    assert [check for check in checks if check.level == "error"] == []
    assert "twilio: account AC01...cdef" in text and ACCOUNT_SID not in text and AUTH_TOKEN not in text
    assert f"sends from {SENDER}" in text
    assert f"delivery status reported to {CALLBACK}" in text
    # And the base URL override is pointed out, and Twilio was not called
    assert any(check.level == "warning" and twilio.url in check.message for check in checks)
    assert twilio.requests == []


def test_check_reports_what_is_missing(twilio):
    # Given a worker with none of the Twilio settings, and a bad timeout
    adapter = TwilioChannel(Settings(), env={"LIFECYCLE_TWILIO_TIMEOUT": "soon"})
    # When ops run check-config
    checks = {check.message: check.level for check in adapter.check()}
    # Then each missing setting is an error, and a missing callback a warning
    errors = "\n".join(message for message, level in checks.items() if level == "error")
    warnings = "\n".join(message for message, level in checks.items() if level == "warning")
    assert "TWILIO_ACCOUNT_SID" in errors and "TWILIO_AUTH_TOKEN" in errors
    assert "LIFECYCLE_TWILIO_FROM or LIFECYCLE_TWILIO_MESSAGING_SERVICE_SID" in errors
    assert "delivery status will not be tracked" in warnings
    assert "LIFECYCLE_TWILIO_TIMEOUT='soon'" in warnings and adapter.timeout == 10
    assert twilio.requests == []


def test_check_reports_a_status_callback_that_is_no_url(make_adapter):
    checks = make_adapter(LIFECYCLE_TWILIO_STATUS_CALLBACK="hooks.example.com/twilio").check()
    assert any(check.level == "error" and "is not an http(s) URL" in check.message for check in checks)


def test_an_edge_setting_does_not_undo_the_base_url_override(twilio, make_adapter):
    # Given TWILIO_EDGE and TWILIO_REGION in the environment, which make the SDK rewrite the host
    adapter = make_adapter(TWILIO_EDGE="sydney", TWILIO_REGION="au1")
    # Then a test's base URL still wins
    assert isinstance(adapter.send(sms()), Sent)
    assert len(twilio.delivered()) == 1


def test_the_adapter_is_found_through_its_entry_point():
    from automation.channels import available_adapters

    assert available_adapters()["twilio"] is TwilioChannel


# -- through the engine -------------------------------------------------------------------------------


def test_a_contact_who_replied_stop_loses_consent_through_the_engine(twilio, make_adapter, settings, runtime,
                                                                     make_engine, run_due):
    # Given a journey that texts everyone, routed to Twilio
    for shipped in settings.journeys_dir.glob("*.yaml"):
        shipped.unlink()
    write(settings.journeys_dir / "texts.yaml",
          "journey: texts\nstages:\n  - name: everyone\n    steps:\n      - send: sms\n        template: hello\n")
    write(settings.templates_dir / "sms" / "hello.en.txt", "Hello from Northwind. Reply STOP to opt out.")
    engine = make_engine(ChannelRegistry(settings.with_changes(channels={"sms": "twilio"}),
                                         instances={"sms": make_adapter()}))
    assert "texts" in engine.journeys.journeys, [d.format() for d in engine.journeys.diagnostics]
    # And Ana, who once replied STOP to our number, and Bo, who did not
    twilio.stopped.add(ANA)
    lc = Lifecycle(runtime)
    lc.identify("ana", {"phone": ANA, "consent": {"sms": True}})
    lc.identify("bo", {"phone": "+15551230002", "consent": {"sms": True}})
    # When the workers run what is due
    run_due(engine)
    # Then Ana's step failed as unsubscribed and her SMS consent is off in Redis
    [ana] = [o for key, o in lc.history("ana").items() if key.startswith("texts:everyone:")]
    assert ana["state"] == "failed" and ana["code"] == "unsubscribed", ana
    assert "21610" in ana["reason"]
    assert lc.contact("ana").attributes["consent"]["sms"] is False
    # And Bo got the text, with its Message SID and segment count recorded
    [bo] = [o for key, o in lc.history("bo").items() if key.startswith("texts:everyone:")]
    assert bo["state"] == "sent" and bo["id"].startswith("SM"), bo
    assert bo["segments"] == 1 and bo["encoding"] == "GSM-7"
    assert lc.contact("bo").attributes["consent"]["sms"] is True
    assert [message["To"] for message in twilio.delivered()] == ["+15551230002"]
