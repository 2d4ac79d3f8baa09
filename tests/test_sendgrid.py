"""Email over SendGrid: the real `sendgrid` SDK against a local stand-in of the Mail Send API."""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry, Delivery, Failed, Misconfigured, Retry, Sent
from automation.channels.sendgrid import SendGridChannel
from automation.config import Settings
from automation.testing import AdapterContract, Response
from tests.providers.sendgrid_api import API_KEY, SendGridStandIn, errors
from tests.conftest import write


#: Seconds a stand-in holds back an answer to play a provider that hangs: far beyond any adapter timeout,
#: so an adapter that waited for the answer would be seen to, however slow the machine. (Closing the
#: stand-in at the end of the test ends the wait.)
HELD = 60.0


def env_for(stand_in: SendGridStandIn, **more: str) -> dict[str, str]:
    return {"SENDGRID_API_KEY": API_KEY, "LIFECYCLE_SENDGRID_HOST": stand_in.url, "LIFECYCLE_SENDGRID_TIMEOUT": "1",
            **more}


@pytest.fixture
def stand_in() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as server:
        yield server


@pytest.fixture
def sendgrid(stand_in: SendGridStandIn) -> SendGridChannel:
    return SendGridChannel(Settings(email_from="Northwind <hello@northwind.test>"), env=env_for(stand_in))


class TestSendGridContract(AdapterContract):
    channel = "email"
    timeout = 1.0

    @pytest.fixture
    def provider(self) -> Iterator[SendGridStandIn]:
        with SendGridStandIn() as server:
            yield server

    @pytest.fixture
    def adapter(self, provider: SendGridStandIn) -> SendGridChannel:
        return SendGridChannel(Settings(email_from="Northwind <hello@northwind.test>"), env=env_for(provider))

    def contact(self, provider: SendGridStandIn) -> dict:
        return {"email": "ana@example.com"}


def delivery(n: int = 0, **changes) -> Delivery:
    base = dict(key=f"winback:lapsed:1:coupon:c{n}", contact_id=f"c{n}", journey="winback", stage="lapsed",
                step="coupon", channel="email", template="coupon", locale="en", to=f"c{n}@example.com",
                parts={"subject": f"20% off, C{n}", "html": f"<p>Hi C{n}</p>", "text": f"Hi C{n}"},
                headers={"List-Unsubscribe": "<https://x.test/u?token=t>, <mailto:u@x.test?subject=unsubscribe>",
                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Lifecycle-Key": "k"})
    base.update(changes)
    return Delivery(**base)


def test_the_request_carries_our_message_ids_and_unsubscribe_headers(sendgrid, stand_in):
    # When one email is sent
    result = sendgrid.send(delivery())
    # Then SendGrid accepted it and gave its message id
    (exchange,) = stand_in.exchanges
    assert isinstance(result, Sent) and result.provider_id == exchange.response.headers["X-Message-Id"]
    request = exchange.request
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = request.json()
    assert body["from"] == {"email": "hello@northwind.test", "name": "Northwind"}
    assert body["subject"] == "20% off, C0"
    assert body["content"] == [{"type": "text/plain", "value": "Hi C0"}, {"type": "text/html", "value": "<p>Hi C0</p>"}]
    assert body["categories"] == ["winback", "winback/lapsed/coupon"]
    assert body["mail_settings"] == {"sandbox_mode": {"enable": False}}
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "c0@example.com"}]
    assert personalization["custom_args"] == {"lc_key": "winback:lapsed:1:coupon:c0", "lc_contact": "c0",
                                              "lc_journey": "winback", "lc_stage": "lapsed", "lc_step": "coupon"}
    assert personalization["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert personalization["headers"]["List-Unsubscribe"].startswith("<https://x.test/u?token=t>")


def test_personalised_emails_go_one_request_each(sendgrid, stand_in):
    results = sendgrid.send_many([delivery(n) for n in range(5)])
    assert all(isinstance(r, Sent) for r in results)
    subjects = sorted(r.json()["subject"] for r in stand_in.requests)
    assert subjects == [f"20% off, C{n}" for n in range(5)]


def test_identical_emails_share_requests_of_up_to_1000_personalizations(sendgrid, stand_in):
    # Given a broadcast whose rendered message is the same for everyone
    same = {"subject": "Winter sale", "html": "<p>30% off</p>", "text": "30% off"}
    results = sendgrid.send_many([delivery(n, parts=same) for n in range(1200)])
    # Then two requests carry it, each contact in its own personalization with its own ids and headers
    assert all(isinstance(r, Sent) for r in results)
    assert sorted(len(r.json()["personalizations"]) for r in stand_in.requests) == [200, 1000]
    people = [p for r in stand_in.requests for p in r.json()["personalizations"]]
    assert len({p["custom_args"]["lc_contact"] for p in people}) == 1200
    assert all(p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for p in people)


def test_a_dynamic_template_step_batches_up_to_1000_personalizations(sendgrid, stand_in):
    # Given 2,500 contacts reaching a step that uses a SendGrid dynamic template
    batch = [delivery(n, template="", parts={}, options={"sendgrid_template_id": "d-123"},
                      data={"contact": {"first_name": f"C{n}"}, "journey": "winback"}) for n in range(2500)]
    # When they are sent
    results = sendgrid.send_many(batch)
    # Then three requests carried them all, each contact with its own data and ids
    assert sorted(len(r.json()["personalizations"]) for r in stand_in.requests) == [500, 1000, 1000]
    assert all(r.json()["template_id"] == "d-123" and "subject" not in r.json() for r in stand_in.requests)
    first = next(p for r in stand_in.requests for p in r.json()["personalizations"]
                 if p["to"][0]["email"] == "c0@example.com")
    assert first["dynamic_template_data"] == {"contact": {"first_name": "C0"}, "journey": "winback"}
    assert first["custom_args"]["lc_contact"] == "c0"
    assert len(results) == 2500 and all(isinstance(r, Sent) for r in results)
    assert len(stand_in.delivered()) == 2500


def test_a_batch_refused_for_one_bad_address_is_sent_one_by_one(sendgrid, stand_in):
    stand_in.rejected_addresses.add("c1@example.com")
    batch = [delivery(n, template="", parts={}, options={"sendgrid_template_id": "d-123"}) for n in range(3)]
    results = sendgrid.send_many(batch)
    assert [type(r) for r in results] == [Sent, Failed, Sent]
    assert "personalizations.0.to.0.email: Does not contain a valid address." in results[1].reason
    assert results[1].code == "rejected"


def test_sandbox_mode_is_a_setting(stand_in):
    adapter = SendGridChannel(Settings(), env=env_for(stand_in, LIFECYCLE_SENDGRID_SANDBOX="true"))
    result = adapter.send(delivery())
    assert isinstance(result, Sent) and result.provider_id == "sandbox" and result.info == {"sandbox": True}
    assert stand_in.requests[0].json()["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert stand_in.delivered() == []


def test_rate_limit_waits_until_sendgrid_says(sendgrid, stand_in):
    stand_in.answer(Response(429, errors(("too many requests", None)),
                             {"X-RateLimit-Reset": str(int(time.time()) + 40)}))
    result = sendgrid.send(delivery())
    assert isinstance(result, Retry) and 38 <= result.after <= 41


@pytest.mark.parametrize("status, kind", [(500, Retry), (503, Retry), (401, Misconfigured), (403, Misconfigured),
                                          (400, Failed), (413, Failed)])
def test_failure_classes(sendgrid, stand_in, status, kind):
    stand_in.answer(Response(status, errors(("something", None))))
    assert isinstance(sendgrid.send(delivery()), kind)


def test_a_wrong_api_key_pauses_the_channel(stand_in):
    adapter = SendGridChannel(Settings(), env=env_for(stand_in, SENDGRID_API_KEY="SG.wrong"))
    result = adapter.send(delivery())
    assert isinstance(result, Misconfigured) and "401" in result.reason


def test_timeouts_and_unreachable_hosts_are_retried(sendgrid, stand_in):
    # Given SendGrid holds its answer far longer than the adapter's 1 second timeout
    stand_in.answer(Response(202, b"", {"X-Message-Id": "late"}, delay=HELD))
    # When an email is sent
    result = sendgrid.send(delivery())
    # Then the request reached SendGrid, the adapter gave up before SendGrid answered, and asks for a retry
    assert isinstance(result, Retry) and "did not answer within 1s" in result.reason, result
    (exchange,) = stand_in.exchanges
    assert exchange.response is None, "the adapter waited for SendGrid's answer"
    # Given nothing listens at the API's address
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    adapter = SendGridChannel(Settings(), env={"SENDGRID_API_KEY": API_KEY,
                                               "LIFECYCLE_SENDGRID_HOST": f"http://127.0.0.1:{closed}"})
    result = adapter.send(delivery())
    assert isinstance(result, Retry) and "cannot reach SendGrid" in result.reason


def test_check_config_reports_without_sending(stand_in):
    complete = SendGridChannel(Settings(email_from="N <hello@northwind.test>"), env=env_for(stand_in))
    assert [c.level for c in complete.check()] == ["ok", "ok", "ok"]
    missing = SendGridChannel(Settings(), env={})
    levels = {c.level for c in missing.check()}
    assert "error" in levels and any("SENDGRID_API_KEY" in c.message for c in missing.check())
    assert stand_in.requests == []
    assert isinstance(missing.send(delivery()), Misconfigured)


def test_a_journey_email_goes_through_sendgrid(runtime, make_engine, run_due, settings, stand_in):
    # Given the email channel routed to SendGrid
    adapter = SendGridChannel(settings, env=env_for(stand_in))
    engine = make_engine(ChannelRegistry(settings, instances={"email": adapter}))
    lc = Lifecycle(runtime)
    # When a new lead arrives
    lc.identify("ana", {"email": "ana@example.com", "first_name": "Ana", "consent": {"email": True}})
    run_due(engine)
    # Then SendGrid got the rendered welcome with our ids, and the step records its message id
    (exchange,) = stand_in.exchanges
    request = exchange.request
    body = request.json()
    assert body["subject"] == "Ana, welcome to Northwind Outfitters!"
    assert "Hi Ana," in body["content"][1]["value"] and "Hi Ana," in body["content"][0]["value"]
    assert body["personalizations"][0]["custom_args"]["lc_key"] == "customer-lifecycle:lead:1:welcome:ana"
    assert body["personalizations"][0]["headers"]["List-Unsubscribe"].startswith("<https://example.com/unsubscribe?")
    outcome = lc.history("ana")["customer-lifecycle:lead:1:welcome"]
    assert exchange.response is not None and exchange.response.status == 202
    message_id = exchange.response.headers["X-Message-Id"]     # what SendGrid answered
    assert outcome["state"] == "sent" and outcome["id"] == message_id


TEMPLATE_AB = """journey: template-ab
vars: {brand: Northwind, shop_url: https://shop.example.com}
trigger: {event: signup}
steps:
  - split:
      name: design
      variants:
        - {name: classic, weight: 50, vars: {design: d-classic}}
        - {name: bold, weight: 50, vars: {design: d-bold}}
  - send: email
    options: {sendgrid_template_id: vars.design}
"""


def forty_signups(runtime, make_engine, run_due, settings, stand_in,
                  journey: str) -> tuple[Lifecycle, dict[int, str], dict[str, str]]:
    """40 contacts sign up to `journey` (alone, beside no lifecycle welcome), its email routed to the stand-in:
    (the API, each contact's `design` variant, the template id each address got)."""
    (settings.journeys_dir / "customer-lifecycle.yaml").unlink()
    write(settings.journeys_dir / "template-ab.yaml", journey)
    adapter = SendGridChannel(settings, env=env_for(stand_in))
    engine = make_engine(ChannelRegistry(settings, instances={"email": adapter}))
    lc = Lifecycle(runtime)
    for n in range(40):
        lc.identify(f"c{n}", {"email": f"c{n}@example.com", "consent": {"email": True}})
        lc.track(f"c{n}", "signup", {})
    run_due(engine)
    variants = {n: lc.contact(f"c{n}").enrollments["template-ab"].assignments["design"] for n in range(40)}
    sent = {p["to"][0]["email"]: body["template_id"] for body in stand_in.delivered() for p in body["personalizations"]}
    return lc, variants, sent


def test_a_split_variant_chooses_the_dynamic_template_through_vars(runtime, make_engine, run_due, settings, stand_in):
    # Given an A/B test of two SendGrid dynamic templates, each variant naming its own in vars
    _, variants, sent = forty_signups(runtime, make_engine, run_due, settings, stand_in, TEMPLATE_AB)
    # Then each contact's email went with their variant's template
    assert sent == {f"c{n}@example.com": {"classic": "d-classic", "bold": "d-bold"}[v] for n, v in variants.items()}
    assert set(sent.values()) == {"d-classic", "d-bold"}


def test_a_run_without_a_value_for_the_option_fails_its_step_and_the_others_go(runtime, make_engine, run_due,
                                                                                settings, stand_in):
    # Given a variant that sets no dynamic template (validate warns about it; it loads)
    lc, variants, sent = forty_signups(runtime, make_engine, run_due, settings, stand_in, TEMPLATE_AB.replace(
        "{name: bold, weight: 50, vars: {design: d-bold}}", "{name: bold, weight: 50}"))
    # Then the classic runs' emails went, and each bold run's step failed with the reason, sending nothing
    assert set(variants.values()) == {"classic", "bold"}
    assert sent == {f"c{n}@example.com": "d-classic" for n, v in variants.items() if v == "classic"}
    for n, variant in variants.items():
        if variant == "bold":
            (outcome,) = [o for o in lc.history(f"c{n}").values() if o.get("ch") == "email"]
            assert (outcome["state"], outcome["code"]) == ("failed", "missing_var"), outcome
            assert outcome["reason"].startswith("vars.design has no value in this run")
