"""`lifecycle test-send`: one message of a journey, through the configured adapter, to a test address.

The message is rendered as `lifecycle preview` renders it (for a real contact, read only, or the
sample data) and handed straight to the channel's adapter: it never goes through the engine's
mark and record phases, so it is in no contact's ledger and in no counter. It is marked as a
test where people and machines look: `[TEST]` before an email's subject (and in a push title),
an `X-Lifecycle-Test` header, and `Delivery.test`, which adapters pass on with our ids (SendGrid
`lc_test` custom arg, `lc_test=1` on Twilio's status callback, FCM data), so the webhooks ignore
whatever the provider reports about it.

A step without a template (a SendGrid dynamic template, a webhook) sends the step's data, as the
engine would, with `"test": true` in it; a webhook step goes to the `--to` URL, never to the
step's own.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from automation.channels import Delivery
from automation.channels.base import TEST_HEADER, Result, Sent
from automation.errors import InputError
from automation.engine.context import plain_data, send_options, step_data
from automation.engine.scores import definitions
from automation.expressions import did_you_mean
from automation.language.flow import SendNode, sample_vars
from automation.language.journey import Journey
from automation.language.samples import SAMPLE_CONTACT, SAMPLE_UNSUBSCRIBE_URL
from automation.ops.preview import MessageRef, Reader, Workbench, flows_of, preview
from automation.store.contacts import ContactState

#: Put before the subject of a test email and the title of a test push.
TEST_PREFIX = "[TEST] "
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass(frozen=True)
class TestMessage:
    delivery: Delivery
    result: Result

    @property
    def sent(self) -> bool:
        return isinstance(self.result, Sent)


def find_step(journey: Journey, step: str) -> tuple[str, SendNode]:
    """A journey's send step by its id (as `lifecycle inspect` and the ledger name it), or `stage/id`."""
    scope_wanted, _, step_id = step.rpartition("/")
    steps = [(scope, node) for scope, flow in flows_of(journey) for node in sorted(flow.sends(), key=lambda n: n.line)]
    found = [(scope, node) for scope, node in steps if node.id == step_id and scope_wanted in ("", scope)]
    names = [f"{scope}/{node.id}" for scope, node in steps]
    if not found:
        hint = did_you_mean(step, names) or did_you_mean(step_id, [n.rpartition("/")[2] for n in names])
        raise InputError(f"journey {journey.name!r} has no send step {step!r}" + (f"; {hint}" if hint else "")
                         + f" (its steps: {', '.join(names)})")
    if len(found) > 1:
        raise InputError(f"step {step!r} is in several stages of {journey.name!r}: name one, e.g. "
                         f"{found[0][0]}/{step_id}")
    return found[0]


def check_address(channel: str, to: str) -> None:
    """A test address that cannot be one for the channel is a usage error, not a provider's refusal."""
    if channel == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", to):
        raise InputError(f"--to {to!r} is not an email address")
    if channel == "sms" and not _PHONE.match(to):
        raise InputError(f"--to {to!r} is not a phone number in E.164 form, e.g. +447700900123")
    if channel == "webhook" and not to.startswith(("http://", "https://")):
        raise InputError(f"--to {to!r} is not a URL: a webhook step is test-sent to an http(s) URL of yours")


def step_options(journey: Journey, scope: str, node: SendNode, reader: Reader) -> Mapping[str, Any]:
    """The step's options for `reader`: those read from `vars.<name>` with the split variants the contact
    was given; where that gives none (sample data, a contact not yet at the split), the journey's value or
    the first variant's, as a preview shows it."""
    enrollment = reader.state.enrollments.get(journey.name) if reader.state is not None else None
    options = send_options(journey, scope, node, enrollment.assignments if enrollment is not None else {})
    return {key: node.options[key] if value is None else value for key, value in options.items()}


def step_data_for(bench: Workbench, journey: Journey, scope: str, node: SendNode, reader: Reader,
                  now: float) -> dict[str, Any]:
    """What a step without a template sends (a provider's template, a webhook), for `reader`, as the engine
    builds it: the step's data, the contact's coupons and (for channels that have one) a sample
    unsubscribe link, never the contact's own."""
    state = reader.state or ContactState(id=SAMPLE_CONTACT["id"],
                                         attributes={k: v for k, v in SAMPLE_CONTACT.items() if k != "id"})
    data = step_data(state, journey, scope, node.id, now, definitions(bench.journeys.values()))
    data["vars"] = {**sample_vars(flow for _, flow in flows_of(journey)), **data["vars"]}
    extra: dict[str, Any] = {"coupons": dict(reader.coupons)} if reader.coupons else {}
    adapter = bench.channels.get(node.channel)
    if adapter is not None and adapter.unsubscribe_link(node.channel):
        extra["unsubscribe_url"] = SAMPLE_UNSUBSCRIBE_URL
    return {**data, **plain_data(extra)}


def marked_delivery(bench: Workbench, journey: Journey, scope: str, node: SendNode, reader: Reader,
                    to: str, locale: str | None = None) -> Delivery:
    """The step's message for `reader`, addressed to `to` and marked as a test."""
    adapter = bench.channels.get(node.channel)
    if adapter is None:
        raise InputError(f"no adapter serves channel {node.channel!r} (lifecycle check-config)")
    options = step_options(journey, scope, node, reader)
    now = time.time()
    parts: dict[str, str] = {}
    data: dict[str, Any] = {}
    used_locale = reader.locale or locale or journey.locale
    if node.template:
        ref = MessageRef(node.channel, node.template, journey, scope, node.id)
        # The reader's locale, or (sample data) the one asked for, else the journey's. No secret: the
        # unsubscribe link is the sample one, since a tester trying it must not unsubscribe the contact.
        (message,) = preview([ref], bench.catalog, bench.renderer, dataclasses.replace(reader, secret=None),
                             used_locale, unsubscribe=lambda channel: adapter.unsubscribe_link(channel))
        parts, used_locale = dict(message.parts), message.locale
        for part in ("subject", "title"):
            if part in parts:
                parts[part] = TEST_PREFIX + parts[part]
    elif adapter.template_required(node.channel, options):
        raise InputError(f"step {scope}/{node.id} names no template and its channel's adapter needs one "
                         "(lifecycle validate)")
    else:
        # The provider renders it (a SendGrid dynamic template) or a service receives it (a webhook):
        # the step's data, with `test` set so that either can tell.
        data = {**step_data_for(bench, journey, scope, node, reader, now), "test": True}
    contact_id = reader.state.id if reader.state is not None else "sample-contact"
    # Never a step's real key: the provider must not deduplicate it against the real message.
    key = f"test:{journey.name}:{scope}:{node.id}:{uuid.uuid4().hex[:12]}"
    metadata = {"journey": journey.name, "stage": scope, "step": node.id, "contact_id": contact_id, "key": key,
                "test": "1"}
    headers = {TEST_HEADER: "1", "X-Lifecycle-Journey": journey.name, "X-Lifecycle-Step": f"{scope}/{node.id}",
               "X-Lifecycle-Key": key}
    address: object = [to] if node.channel == "push" else to
    return Delivery(key=key, contact_id=contact_id, journey=journey.name, stage=scope, step=node.id,
                    channel=node.channel, template=node.template, locale=used_locale, to=address, parts=parts,
                    at=now, headers=headers, metadata=metadata, options=options, data=data, test=True)


def send_test(bench: Workbench, journey_name: str, step: str, to: str, reader: Reader,
              locale: str | None = None) -> TestMessage:
    """Send one step's message to `to` through the configured adapter; nothing is written to Redis."""
    journey = bench.journeys.get(journey_name)
    if journey is None:
        hint = did_you_mean(journey_name, bench.journeys)
        raise InputError(f"no journey {journey_name!r} is served" + (f"; {hint}" if hint else ""))
    scope, node = find_step(journey, step)
    check_address(node.channel, to)
    delivery = marked_delivery(bench, journey, scope, node, reader, to, locale)
    adapter = bench.channels.get(node.channel)
    assert adapter is not None
    return TestMessage(delivery, adapter.send(delivery))


__all__ = ["TEST_PREFIX", "TEST_HEADER", "TestMessage", "find_step", "send_test", "marked_delivery", "step_options",
           "step_data_for"]
