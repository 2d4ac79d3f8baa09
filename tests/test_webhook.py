"""Webhook steps: the step's JSON, signed, POSTed to a receiver that checks the signature."""

from __future__ import annotations

import json
import time
from typing import Iterator

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry, Delivery, Failed, Misconfigured, Retry, Sent
from automation.channels.webhook import WebhookChannel, sign, verify_signature
from automation.config import Settings
from automation.testing import AdapterContract, Response
from tests.conftest import write
from tests.providers.webhook_receiver import SECRET, WebhookReceiver


def env(**more: str) -> dict[str, str]:
    return {"LIFECYCLE_WEBHOOK_SECRET": SECRET, "LIFECYCLE_WEBHOOK_TIMEOUT": "1", **more}


class TestWebhookContract(AdapterContract):
    channel = "webhook"
    timeout = 1.0

    @pytest.fixture
    def provider(self) -> Iterator[WebhookReceiver]:
        with WebhookReceiver() as receiver:
            yield receiver

    @pytest.fixture
    def adapter(self, provider: WebhookReceiver) -> WebhookChannel:
        return WebhookChannel(Settings(), env=env())

    def contact(self, provider: WebhookReceiver) -> dict:
        return {}

    def options(self, provider: WebhookReceiver) -> dict:
        return {"url": provider.url + "/hooks/hot-lead"}


def test_signatures_verify_and_expire():
    body = b'{"id":"k"}'
    header = sign(SECRET, body, int(time.time()))
    assert verify_signature(SECRET, header, body)
    assert not verify_signature("other-secret", header, body)
    assert not verify_signature(SECRET, header, body + b" ")
    assert not verify_signature(SECRET, sign(SECRET, body, int(time.time()) - 3600), body)
    assert not verify_signature(SECRET, "garbage", body)


HOT_LEAD = """\
journey: sales-alerts
stages:
  - name: hot
    when: events.page_view.count >= 3
    steps:
      - send: webhook
        url: {url}
"""


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def test_a_hot_lead_notifies_sales_with_the_step_json(runtime, make_engine, run_due, settings, receiver):
    # Given a journey that alerts sales when a lead views three pages
    write(settings.journeys_dir / "sales.yaml", HOT_LEAD.format(url=receiver.url + "/hooks/hot-lead"))
    engine = make_engine(ChannelRegistry(settings, instances={"webhook": WebhookChannel(settings, env())}))
    lc = Lifecycle(runtime)
    lc.identify("ana", {"email": "ana@example.com", "first_name": "Ana", "company": "Acme"})   # no consent needed
    # When the lead views three pages
    for page in ("/a", "/b", "/pricing"):
        lc.track("ana", "page_view", {"page": page})
    run_due(engine)
    # Then the receiver got one signed POST with the step's data and its idempotency key
    (request,) = receiver.received
    assert request.path == "/hooks/hot-lead"
    assert request.headers["X-Lifecycle-Key"] == "sales-alerts:hot:1:webhook:ana"
    payload = json.loads(request.body)
    assert payload["id"] == "sales-alerts:hot:1:webhook:ana"
    assert payload["journey"] == "sales-alerts" and payload["stage"] == "hot"
    assert payload["contact"]["company"] == "Acme" and payload["contact"]["id"] == "ana"
    assert payload["events"]["page_view"]["count"] == 3
    assert lc.history("ana")["sales-alerts:hot:1:webhook"]["state"] == "sent"


def test_a_template_can_shape_the_body(runtime, make_engine, run_due, settings, receiver):
    write(settings.templates_dir / "webhook" / "crm-lead.json", '{"name": "{{ contact.first_name }}", "score": 42}')
    write(settings.journeys_dir / "sales.yaml", HOT_LEAD.format(url=receiver.url) + "        template: crm-lead\n")
    engine = make_engine(ChannelRegistry(settings, instances={"webhook": WebhookChannel(settings, env())}))
    lc = Lifecycle(runtime)
    lc.identify("ana", {"first_name": "Ana"})
    for page in ("/a", "/b", "/c"):
        lc.track("ana", "page_view", {"page": page})
    run_due(engine)
    (request,) = receiver.received
    assert json.loads(request.body) == {"name": "Ana", "score": 42}
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("status, kind", [(200, Sent), (204, Sent), (422, Failed), (410, Failed), (429, Retry),
                                          (500, Retry), (401, Misconfigured), (403, Misconfigured)])
def test_failure_classes(receiver, status, kind):
    adapter = WebhookChannel(Settings(), env=env())
    receiver.answer(Response(status, {}))
    delivery = Delivery(key="k", contact_id="c", journey="j", stage="s", step="webhook", channel="webhook",
                        template="", locale="en", to=receiver.url, parts={}, data={"contact": {"id": "c"}})
    assert isinstance(adapter.send(delivery), kind)


def test_without_a_secret_the_channel_pauses_rather_than_send_unsigned(receiver):
    adapter = WebhookChannel(Settings(), env={})
    result = adapter.send(Delivery(key="k", contact_id="c", journey="j", stage="s", step="w", channel="webhook",
                                   template="", locale="en", to=receiver.url, parts={}))
    assert isinstance(result, Misconfigured)
    assert receiver.requests == []
    assert any(c.level == "warning" and "LIFECYCLE_WEBHOOK_SECRET" in c.message for c in adapter.check())


def test_validate_requires_a_url(capsys, project):
    from automation.ops.cli import main

    path = write(project / "journeys" / "bad.yaml", "journey: bad\nstages:\n  - name: all\n    steps:\n"
                                                     "      - send: webhook\n        url: ftp://nope\n")
    assert main(["validate", str(path), "--templates", str(project / "templates")]) == 1
    out = capsys.readouterr().out
    assert f"{path}:6:14: 'url' must be an http:// or https:// URL" in out
