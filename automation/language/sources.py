"""What the outside world sends: the contact attributes and events a team's sources produce.

`journeys/_contact.yaml` lists them (and the locales the team writes templates for), so
`lifecycle validate` can report a rule reading `contact.lifetme_value` or a journey
waiting for an event that nothing ever sends (errors). Without the file those checks are off:
the engine cannot know what a team's sources send.

    attributes: [first_name, email, phone, lifetime_value, birthday]
    events: [signup, purchase, page_view, checkout_started]
    locales: [en, ru, zh-TW, pl, fa]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from automation.language.diagnostics import Diagnostic
from automation.language.sourcemap import Report, display_path, pos, read_yaml

FILE_NAME = "_contact.yaml"

#: Attributes the engine itself reads or writes.
BUILT_IN_ATTRIBUTES = frozenset({
    "email", "phone", "first_name", "last_name", "locale", "timezone", "consent", "push_tokens",
    "email_invalid", "phone_invalid", "id",
})
#: Events the engine records itself (provider webhooks, unsubscribe links, coupons).
BUILT_IN_EVENTS = frozenset({
    "email_opened", "email_clicked", "sms_subscribed", "sms_unsubscribed", "unsubscribed", "coupon_redeemed",
})


@dataclass(frozen=True)
class Sources:
    path: str
    attributes: frozenset[str]
    events: frozenset[str]
    locales: tuple[str, ...] = ()


def declared(sources: Sources | None) -> tuple[frozenset[str], frozenset[str]]:
    """The attributes and events a rule may name: the built-ins, and what the sources file lists."""
    if sources is None:
        return BUILT_IN_ATTRIBUTES, BUILT_IN_EVENTS
    return sources.attributes | BUILT_IN_ATTRIBUTES, sources.events | BUILT_IN_EVENTS


def load_sources(journeys_dir: Path) -> tuple[Sources | None, list[Diagnostic]]:
    """The sources file of a journeys folder; None (and no diagnostics) when there is none."""
    path = Path(journeys_dir) / FILE_NAME
    if not path.is_file():
        return None, []
    report = Report(display_path(path))
    doc = read_yaml(path, report)
    if report.items:
        return None, report.items
    if not isinstance(doc, CommentedMap):
        report.add((1, 1), "the sources file is a mapping with attributes:, events: and locales:")
        return None, report.items
    lists: dict[str, tuple[str, ...]] = {}
    for key in doc:
        if key not in ("attributes", "events", "locales"):
            report.add(pos(doc, key, of_key=True), f"unknown key {key!r} in {FILE_NAME}",
                       "allowed keys: attributes, events, locales")
    for key in ("attributes", "events", "locales"):
        value = doc.get(key, [])
        if not isinstance(value, CommentedSeq) and value != []:
            report.add(pos(doc, key), f"{key} must be a list of names")
            value = []
        lists[key] = tuple(str(item) for item in value if isinstance(item, str))
    return Sources(report.path, frozenset(lists["attributes"]), frozenset(lists["events"]), lists["locales"]), \
        report.items
