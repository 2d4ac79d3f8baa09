"""`lifecycle test-send`: one step's message to a test address, through the real SDKs, marked as a test,
in no contact's ledger and no counter."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry
from automation.channels.sendgrid import SendGridChannel
from automation.channels.twilio import TwilioChannel
from automation.channels.webhook import WebhookChannel
from automation.errors import InputError
from automation.language.samples import SAMPLE_UNSUBSCRIBE_URL
from automation.messages.unsubscribe import verify_token
from automation.ops.cli import main
from automation.ops.preview import Workbench, contact_reader, sample_reader
from automation.ops import testsend
from automation.ops.testsend import TEST_PREFIX, send_test
from automation.server.webhooks import sendgrid_report, twilio_report
from tests.conftest import DAY, write
from tests.providers.sendgrid_api import SendGridStandIn
from tests.providers.twilio_api import TwilioStandIn
from tests.providers.webhook_receiver import SECRET, WebhookReceiver
from tests.test_sendgrid import TEMPLATE_AB, env_for
from tests.test_twilio import twilio_env


@pytest.fixture
def lapsed(runtime, engine, run_due, clock):
    """Jo, lapsed: the win-back email went out and the SMS waits; the ledger and counters have entries."""
    lc = Lifecycle(runtime)
    lc.identify("jo", {"email": "jo@example.com", "phone": "+14155550100", "first_name": "Jo",
                       "consent": {"email": True, "sms": True}})
    lc.track("jo", "purchase", {"item": "Trail shoes"}, at=clock.now() - 95 * DAY)
    run_due(engine)
    assert "customer-lifecycle:lapsed:1:winback-coupon" in lc.history("jo")
    return lc


def state_of(runtime) -> tuple[dict, dict, int]:
    """What a test send must not touch: jo's ledger, the counters, the activity stream."""
    redis, keys = runtime.redis, runtime.keys
    return redis.hgetall(keys.ledger("jo")), redis.hgetall(keys.stats), redis.xlen(keys.activity)


def sent_through(settings, adapters: dict, journey: str, step: str, to: str, reader) -> testsend.TestMessage:
    """`send_test` with these channel adapters (the stand-ins' clients), on a workbench opened for it."""
    bench = Workbench.open(settings, ChannelRegistry(settings, instances=adapters))
    try:
        return send_test(bench, journey, step, to, reader)
    finally:
        bench.close()


def test_an_email_goes_to_the_test_address_once_marked_as_a_test(runtime, lapsed):
    before = state_of(runtime)
    with SendGridStandIn() as stand_in:
        # When the win-back email is test-sent for jo to a marketer's address
        adapter = SendGridChannel(runtime.settings, env=env_for(stand_in))
        done = sent_through(runtime.settings, {"email": adapter}, "customer-lifecycle", "winback-coupon",
                            "me@northwind.test", contact_reader(runtime, "jo"))
        exchanges = stand_in.exchanges
    # Then SendGrid received exactly one request, for the test address only, marked as a test
    assert done.sent
    (exchange,) = exchanges
    body = exchange.request.json()
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "me@northwind.test"}]
    assert body["subject"].startswith(TEST_PREFIX) and "Jo" in body["subject"]
    assert personalization["headers"]["X-Lifecycle-Test"] == "1"
    assert personalization["custom_args"]["lc_test"] == "1"
    # And what SendGrid reports about it is ignored by the event webhook
    assert sendgrid_report({**personalization["custom_args"], "event": "delivered"}) is None
    # And its unsubscribe link is not jo's: a tester trying it must not unsubscribe the customer
    tokens = re.findall(r"token=([A-Za-z0-9_.%-]+)", json.dumps(body))
    assert tokens, "the test email carries an unsubscribe link"
    for token in tokens:
        with pytest.raises(InputError):
            verify_token([runtime.settings.secret], unquote(token), time.time(), 86400)
    # And jo's ledger, the counters and the activity stream are as they were
    assert state_of(runtime) == before


def test_an_sms_goes_to_the_test_number_once_and_its_callbacks_are_ignored(runtime, lapsed):
    before = state_of(runtime)
    with TwilioStandIn() as stand_in:
        # When the win-back SMS (named stage/step) is test-sent for jo to a marketer's phone
        adapter = TwilioChannel(runtime.settings, env=twilio_env(stand_in.url))
        done = sent_through(runtime.settings, {"sms": adapter}, "customer-lifecycle", "lapsed/winback-reminder",
                            "+15557654321", contact_reader(runtime, "jo"))
        delivered, requests = stand_in.delivered(), len(stand_in.exchanges)
    # Then Twilio received exactly one request, for the test number
    assert done.sent and requests == 1
    (message,) = delivered
    assert message["To"] == "+15557654321"
    assert "Jo" in message["Body"]
    callback = parse_qs(urlsplit(message["StatusCallback"]).query)
    assert callback["lc_test"] == ["1"]
    # And its status callbacks will be ignored; jo's ledger and the counters are as they were
    query = {name: values[0] for name, values in callback.items()}
    assert twilio_report({"MessageStatus": "delivered", "MessageSid": message["Sid"]}, query) is None
    assert state_of(runtime) == before


def test_a_wrong_step_or_address_is_one_line_and_exit_2(runtime, capsys, monkeypatch):
    for name, value in runtime.settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", runtime.redis_url)
    assert main(["test-send", "customer-lifecycle", "winback", "--to", "me@northwind.test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lifecycle test-send: journey 'customer-lifecycle' has no send step 'winback'")
    assert len(err.strip().splitlines()) == 1
    assert main(["test-send", "customer-lifecycle", "winback-reminder", "--to", "me@northwind.test"]) == 2
    assert "is not a phone number" in capsys.readouterr().err


def test_a_dynamic_template_step_sends_the_contacts_data_with_their_variants_template(runtime, settings, make_engine,
                                                                                     run_due):
    # Given an A/B test of two SendGrid dynamic templates, and a contact who got the "bold" one
    write(settings.journeys_dir / "template-ab.yaml", TEMPLATE_AB)
    with SendGridStandIn() as stand_in:
        channels = ChannelRegistry(settings, instances={"email": SendGridChannel(settings, env=env_for(stand_in))})
        engine = make_engine(channels)
        lc = Lifecycle(runtime)
        for n in range(10):
            lc.identify(f"c{n}", {"email": f"c{n}@example.com", "first_name": f"C{n}", "consent": {"email": True}})
            lc.track(f"c{n}", "signup", {})
        run_due(engine)
        bold = next(f"c{n}" for n in range(10)
                    if lc.contact(f"c{n}").enrollments["template-ab"].assignments["design"] == "bold")
        ledger, before = runtime.redis.hgetall(runtime.keys.ledger(bold)), len(stand_in.exchanges)
        # When its step is test-sent for that contact
        done = sent_through(settings, {"email": channels.adapters["email"]}, "template-ab", "email",
                            "me@northwind.test", contact_reader(runtime, bold))
        exchanges = stand_in.exchanges[before:]
    # Then SendGrid got one request: their variant's template with their data, marked as a test, for the
    # test address
    assert done.sent
    (exchange,) = exchanges
    body = exchange.request.json()
    (personalization,) = body["personalizations"]
    assert body["template_id"] == "d-bold" and personalization["to"] == [{"email": "me@northwind.test"}]
    data = personalization["dynamic_template_data"]
    assert data["test"] is True and data["contact"]["first_name"] == bold.upper()
    assert data["unsubscribe_url"] == SAMPLE_UNSUBSCRIBE_URL        # never the contact's own
    assert personalization["custom_args"]["lc_test"] == "1"
    assert runtime.redis.hgetall(runtime.keys.ledger(bold)) == ledger


@pytest.mark.parametrize("reader", ["sample", "contact"])
def test_a_webhook_step_is_test_sent_to_the_given_url_never_the_steps_own(runtime, settings, reader):
    write(settings.journeys_dir / "crm.yaml", """journey: crm
trigger: {event: signup}
steps:
  - send: webhook
    id: notify
    url: https://crm.invalid/hooks/lead
""")
    Lifecycle(runtime).identify("lee", {"first_name": "Lee", "email": "lee@example.com"})
    who = sample_reader() if reader == "sample" else contact_reader(runtime, "lee")
    with WebhookReceiver() as receiver:
        adapters = {"webhook": WebhookChannel(settings, env={"LIFECYCLE_WEBHOOK_SECRET": SECRET})}
        with pytest.raises(InputError, match="'crm.invalid' is not a URL"):
            sent_through(settings, adapters, "crm", "notify", "crm.invalid", who)
        done = sent_through(settings, adapters, "crm", "notify", receiver.url + "/test", who)
        (request,) = receiver.delivered()
    # A signed request with the reader's data, marked as a test in its body and headers
    assert done.sent
    assert request.headers["X-Lifecycle-Test"] == "1"
    payload = json.loads(request.body)
    assert payload["test"] is True and payload["step"] == "notify"
    assert payload["contact"]["first_name"] == ("Alexandra" if reader == "sample" else "Lee")
