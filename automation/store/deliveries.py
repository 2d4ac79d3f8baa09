"""Delivery reports from providers, recorded against the step that sent the message.

Providers report what happened after they accepted a message (delivered, bounced,
unsubscribed ...) through webhooks that carry our ids back: SendGrid's `custom_args`,
our query parameters on Twilio's status callback. A report updates the step's ledger
entry (and reconciles a step left "unknown" by a worker that died mid-send), may
change the contact (consent off after a complaint, an invalid address after a hard
bounce), and can become an event journeys react to (`email_opened`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from automation.events import Event, InputError, check_contact_id
from automation.runtime import Runtime
from automation.store.contacts import ContactStore
from automation.store import fields
from automation.store.keys import ACTIVITY_LENGTH, step_delivery_prefix, step_member
from automation.store.scripts import Scripts

logger = logging.getLogger(__name__)

#: Higher ranks are not replaced by lower ones: reports arrive out of order.
RANKS = {"accepted": 1, "queued": 1, "processed": 1, "sending": 1, "sent": 2, "deferred": 2, "delivered": 3,
         "read": 4, "opened": 4, "clicked": 4, "undelivered": 5, "failed": 5, "bounced": 5, "dropped": 5,
         "blocked": 5, "complained": 6, "unsubscribed": 6}
DEDUPE_SECONDS = 7 * 86400


@dataclass(frozen=True)
class DeliveryReport:
    channel: str
    key: str                 # our idempotency key of the step: journey:stage:entry:step:contact
    contact_id: str
    status: str
    at: float
    detail: str = ""
    effect: Mapping[str, Any] = field(default_factory=dict)
    event: str | None = None             # an event to record on the contact, e.g. email_opened
    event_properties: Mapping[str, Any] = field(default_factory=dict)
    report_id: str | None = None         # the provider's id of this report, for deduplication


class DeliveryLog:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = ContactStore(runtime)
        self.scripts = Scripts(runtime.redis)

    def first_time(self, provider: str, report_id: str) -> bool:
        """False if this report was already handled (providers deliver webhooks at least once)."""
        return bool(self.runtime.redis.set(self.runtime.keys.seen(provider, report_id), "1", nx=True,
                                           ex=DEDUPE_SECONDS))

    def record(self, report: DeliveryReport) -> int:
        """0: not a step of ours, 1: recorded, 2: recorded and reconciled an unknown step."""
        try:
            contact_id = check_contact_id(report.contact_id)
        except InputError:
            return 0
        suffix = f":{contact_id}"
        if not report.key.endswith(suffix):
            return 0
        field_name = report.key[: -len(suffix)]
        parts = field_name.split(":")      # journey:scope:occurrence:step (names never hold ':')
        if len(parts) != 4:
            return 0
        journey, scope, occurrence, step = parts
        keys = self.runtime.keys
        waiting = [fields.run(journey, "st"), scope, fields.run(journey, "oc"), occurrence,
                   fields.run(journey, "sp"), step]
        result = self.scripts.call(
            "delivery", [keys.ledger(contact_id), keys.activity, keys.stats, keys.contact(contact_id),
                         keys.timers_for(contact_id), keys.ambiguous],
            [field_name, report.status, RANKS.get(report.status, 2), repr(report.at), report.detail[:300],
             ACTIVITY_LENGTH, contact_id, report.channel, f"{contact_id}|{field_name}",
             step_member(journey, contact_id), repr(self.runtime.clock.now()),
             step_delivery_prefix(journey, scope, step), *waiting])
        if result == 2:
            logger.info("step %s reconciled from a %s report: it was sent", report.key, report.channel)
        # The contact changes even if the step has left the ledger: the report is about them.
        if report.status == "complained":
            # A spam complaint: nothing more to that address, whatever the journey or message type.
            self.store.suppress(contact_id, [report.channel], "the recipient marked a message as spam")
        if report.effect:
            self.store.apply_effects(contact_id, report.effect)
        if report.event:
            self.store.track(Event(contact_id, report.event, report.at, dict(report.event_properties),
                                   report.report_id))
        return int(result)
