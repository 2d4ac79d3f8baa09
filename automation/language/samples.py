"""Sample data for rendering templates during `lifecycle validate` (e.g. to count SMS segments).

Values the sample contact does not have print as a ten-letter placeholder instead of
failing, so a template can be measured before any real contact exists.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from automation.expressions import EventStats, EventsView

PLACEHOLDER = "Xxxxxxxxxx"


class Sample:
    """Any attribute or item of a sample value is a sample value; printed, it is a placeholder."""

    def __getattr__(self, name: str) -> "Sample":
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: object) -> "Sample":
        return self

    def __str__(self) -> str:
        return PLACEHOLDER

    def __html__(self) -> str:
        return PLACEHOLDER

    def __bool__(self) -> bool:
        return True


class SampleDict(dict):
    def __missing__(self, key: str) -> Sample:
        return Sample()


#: The sample contact's unsubscribe link: a token no secret signs, so trying it unsubscribes no one.
SAMPLE_UNSUBSCRIBE_URL = "https://example.com/unsubscribe?token=c2FtcGxlLWNvbnRhY3Q.AAAAAAAAAAAAAAAAAAAAAA"
#: The sample contact's attributes (and id).
SAMPLE_CONTACT = {"first_name": "Alexandra", "last_name": "Kowalska", "email": "alexandra@example.com",
                  "phone": "+48501234567", "locale": "en", "id": "sample-contact"}


def sample_context(variables: Mapping[str, Any], channel: str,
                   run_vars: Mapping[str, Any] | None = None) -> dict[str, Any]:
    now = datetime(2026, 5, 4, 9, 30, tzinfo=timezone.utc)
    contact = SampleDict(SAMPLE_CONTACT)
    context: dict[str, Any] = dict(variables)
    context.update(
        contact=contact, first_name="Alexandra", last_name="Kowalska", now=now,
        events=EventsView(purchase=EventStats(3, now.timestamp() - 86400 * 90, now.timestamp() - 86400 * 7)),
        last=SampleDict(purchase=SampleDict(item="Merino wool shirt", value=79, at=now)),
        coupon=SampleDict(code="WB-7KQ9XP3MA2", percent=20, amount=None, currency=None, issued=now,
                          expires=datetime(2026, 5, 18, 9, 30, tzinfo=timezone.utc)),
        coupons=SampleDict(), scores=SampleDict(), stages=SampleDict(),
        recent_events=[], stage="stage", step="step", channel=channel, journey="journey",
        unsubscribe_url=SAMPLE_UNSUBSCRIBE_URL,
        days_since=lambda what: 30, hours_since=lambda what: 720,
        vars={**variables, **(run_vars or {})},
    )
    return context
