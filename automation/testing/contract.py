"""The adapter contract kit: tests every channel adapter must pass.

Subclass `AdapterContract` in your adapter's test module and provide two fixtures and
two methods; pytest then runs every test below against your adapter:

    from automation.testing import AdapterContract

    class TestSlackAdapter(AdapterContract):
        channel = "slack"

        @pytest.fixture
        def provider(self):              # your stand-in for the provider, see ProviderScript
            with SlackStandIn() as stand_in:
                yield stand_in

        @pytest.fixture
        def adapter(self, provider):     # your adapter, pointed at the stand-in
            return SlackChannel(Settings(), env={"SLACK_API_URL": provider.url})

        def contact(self, provider):     # attributes that give a contact an address on the channel
            return {"slack_webhook": provider.url + "/hooks/T1"}

The kit proves that the adapter renders its message parts, sends, classifies each kind
of failure (temporary, permanent, refused credentials, a provider that hangs), answers
every delivery of a batch in order, reports its configuration without sending, and, run
through the real executor on an embedded Redis, never reaches a contact twice when a
message is delivered twice.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, ClassVar, Protocol

from automation.channels import ChannelRegistry
from automation.channels.base import Channel, Delivery, Failed, Misconfigured, Retry, Sent
from automation.config import Settings
from automation.engine.executor import run_batch
from automation.engine.services import Engine
from automation.messages.templates import MESSAGE_PARTS, Renderer, TemplateCatalog
from automation.runtime import open_runtime
from automation.store.contacts import ContactStore
from automation.store.timers import TimerStore
from automation.testing.standin import HTTPStandIn


class ProviderScript(Protocol):
    """What the kit needs from your provider stand-in."""

    def accept(self) -> None:
        """The next message is accepted."""

    def fail_temporarily(self) -> None:
        """The next message gets the provider's "try later" answer (429 or 5xx)."""

    def reject(self) -> None:
        """The next message is refused for good for this contact (e.g. invalid address)."""

    def refuse_credentials(self) -> None:
        """The next request is refused for our credentials or account (401 or 403)."""

    def hang(self, seconds: float) -> None:
        """The next request gets no answer for `seconds`."""

    def delivered(self) -> list[Any]:
        """Every message the provider accepted so far, one item per message reaching a contact."""


def _part_block(part: str) -> str:
    content = {"html": "<p>Hello {{ first_name }}</p>", "subject": "Hello {{ first_name }}"}
    return "{% block " + part + " %}" + content.get(part, "Hello {{ first_name }}, from the kit") + "{% endblock %}"


class AdapterContract:
    """Base class of an adapter's contract tests; see the module docstring."""

    #: The journey channel under test.
    channel: ClassVar[str]
    #: Seconds after which the adapter gives up on a request (its configured timeout).
    timeout: ClassVar[float] = 10.0

    def contact(self, provider: ProviderScript) -> dict[str, Any]:
        raise NotImplementedError("return the attributes that give a contact an address on the channel")

    def options(self, provider: ProviderScript) -> dict[str, Any]:
        """Step options for the channel (e.g. a webhook's url)."""
        return {}

    # -- helpers -----------------------------------------------------------------------------

    def parts_of(self, adapter: Channel) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return adapter.parts.get(self.channel) or MESSAGE_PARTS.get(self.channel, (("body",), ()))

    def write_template(self, adapter: Channel, root: Path) -> Path:
        required, optional = self.parts_of(adapter)
        folder = root / self.channel
        folder.mkdir(parents=True, exist_ok=True)
        source = "Hello {{ first_name }}, from the kit" if required == ("body",) and not optional else \
            "".join(_part_block(part) for part in required + optional)
        path = folder / "kit.en.txt"
        path.write_text(source)
        return path

    def delivery(self, adapter: Channel, provider: ProviderScript, root: Path, n: int = 0) -> Delivery:
        self.write_template(adapter, root)
        renderer = Renderer(TemplateCatalog(root), lambda channel: self.parts_of(adapter))
        contact = {**self.contact(provider), "id": f"kit-contact-{n}"}
        options = self.options(provider)
        rendered = renderer.render(self.channel, "kit", "en", "en", {"first_name": f"Kit{n}", "contact": contact})
        key = f"kit:stage:1:step:{contact['id']}:{uuid.uuid4().hex[:8]}"
        return Delivery(key=key, contact_id=contact["id"], journey="kit", stage="stage", step="step",
                        channel=self.channel, template="kit", locale=rendered.locale,
                        to=adapter.address(self.channel, contact, options), parts=rendered.parts, at=time.time(),
                        metadata={"key": key, "contact_id": contact["id"], "journey": "kit"}, options=options,
                        data={"contact": contact, "journey": "kit", "stage": "stage", "step": "step"})

    # -- the contract ------------------------------------------------------------------------

    def test_declares_what_it_serves(self, adapter: Channel) -> None:
        assert isinstance(adapter, Channel)
        assert adapter.name and isinstance(adapter.name, str)
        assert self.channel in adapter.channels
        if self.channel not in MESSAGE_PARTS:
            assert self.channel in adapter.parts, "declare the message parts of a channel of your own"

    def test_renders_its_message_parts(self, adapter: Channel, provider: ProviderScript, tmp_path: Path) -> None:
        delivery = self.delivery(adapter, provider, tmp_path)
        required, _ = self.parts_of(adapter)
        for part in required:
            assert delivery.parts.get(part), f"the {part!r} part is missing or empty"

    def test_an_address_comes_from_the_contact_or_the_step(self, adapter: Channel, provider: ProviderScript) -> None:
        assert adapter.address(self.channel, {**self.contact(provider), "id": "c"}, self.options(provider))
        if adapter.needs_consent:
            assert not adapter.address(self.channel, {"id": "c"}, self.options(provider))

    def test_sends_and_the_provider_receives_it(self, adapter: Channel, provider: ProviderScript,
                                                tmp_path: Path) -> None:
        provider.accept()
        result = adapter.send(self.delivery(adapter, provider, tmp_path))
        assert isinstance(result, Sent), result
        assert len(provider.delivered()) == 1

    def test_a_temporary_failure_is_retried_later(self, adapter: Channel, provider: ProviderScript,
                                                  tmp_path: Path) -> None:
        provider.fail_temporarily()
        result = adapter.send(self.delivery(adapter, provider, tmp_path))
        assert isinstance(result, Retry), result
        assert result.after >= 0 and result.reason
        assert provider.delivered() == []

    def test_a_permanent_failure_says_why(self, adapter: Channel, provider: ProviderScript, tmp_path: Path) -> None:
        provider.reject()
        result = adapter.send(self.delivery(adapter, provider, tmp_path))
        assert isinstance(result, Failed), result
        assert result.reason and result.code

    def test_refused_credentials_pause_the_channel(self, adapter: Channel, provider: ProviderScript,
                                                   tmp_path: Path) -> None:
        provider.refuse_credentials()
        result = adapter.send(self.delivery(adapter, provider, tmp_path))
        assert isinstance(result, Misconfigured), result
        assert result.reason

    def test_a_provider_that_hangs_is_retried(self, adapter: Channel, provider: ProviderScript,
                                              tmp_path: Path) -> None:
        delivery = self.delivery(adapter, provider, tmp_path)
        # The provider holds its answer a minute longer than the adapter's timeout: an adapter that waited
        # for it would be seen to, however slow the machine (an HTTPStandIn's close ends the wait).
        held = self.timeout + 60
        provider.hang(held)
        started = time.monotonic()
        result = adapter.send(delivery)
        assert isinstance(result, Retry), result
        assert result.reason
        if isinstance(provider, HTTPStandIn):
            assert provider.requests, "the request never reached the provider"
            assert provider.answered() == [], "the adapter waited for the provider's answer"
        else:
            # A stand-in of your own tells us nothing more: the send's duration is all there is. Giving up
            # before the held answer would come is the behaviour; the minute of slack keeps it off the clock.
            assert time.monotonic() - started < held, "the adapter must give up after its timeout"

    def test_send_many_answers_each_delivery_in_order(self, adapter: Channel, provider: ProviderScript,
                                                      tmp_path: Path) -> None:
        deliveries = [self.delivery(adapter, provider, tmp_path, n) for n in range(3)]
        for _ in deliveries:
            provider.accept()
        results = adapter.send_many(deliveries)
        assert len(results) == 3 and all(isinstance(r, Sent) for r in results), results
        assert len(provider.delivered()) == 3

    def test_reports_its_configuration_without_sending(self, adapter: Channel, provider: ProviderScript) -> None:
        checks = adapter.check()
        assert checks and all(c.level in ("ok", "warning", "error") and c.message for c in checks)
        assert provider.delivered() == []

    def test_a_redelivered_step_reaches_the_contact_once(self, adapter: Channel, provider: ProviderScript,
                                                         tmp_path: Path) -> None:
        """Through the real executor on an embedded Redis: the same message delivered twice."""
        templates = tmp_path / "templates"
        self.write_template(adapter, templates)
        journeys = tmp_path / "journeys"
        journeys.mkdir()
        options = self.options(provider)
        option_lines = "".join(f"\n          {k}: {v!r}" for k, v in options.items())
        (journeys / "kit.yaml").write_text(
            "journey: kit\nstages:\n  - name: everyone\n    steps:\n"
            f"      - send: {self.channel}\n        template: kit\n"
            + (f"        options:{option_lines}\n" if options else ""))
        settings = Settings(home=tmp_path / "home", journeys_dir=journeys, templates_dir=templates,
                            outbox_dir=tmp_path / "outbox", namespace=f"kit{uuid.uuid4().hex[:8]}",
                            timer_shards=1, channels={self.channel: adapter.name})
        runtime = open_runtime(settings)
        try:
            engine = Engine.create(runtime, ChannelRegistry(settings, instances={self.channel: adapter}))
            assert "kit" in engine.journeys.journeys, [d.format() for d in engine.journeys.diagnostics]
            ContactStore(runtime).identify("kit-contact", {**self.contact(provider), "consent": {self.channel: True}})
            timers = TimerStore(runtime)
            run_batch(engine, timers.claim(100)[0])      # the contact enters the stage
            step, _ = timers.claim(100)
            assert step, "the step was not scheduled"
            provider.accept()
            provider.accept()
            run_batch(engine, step)
            run_batch(engine, step)                      # the same message again (redelivery)
            assert len(provider.delivered()) == 1
            outcome = ContactStore(runtime).history("kit-contact")["kit:everyone:1:kit"]
            assert outcome["state"] == "sent", outcome
        finally:
            runtime.close(stop_embedded=True)
