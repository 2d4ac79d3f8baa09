"""The shipped SaaS trial journeys in one process (real Redis, a manual clock): waits before a date
that skip a step whose moment has passed (`if_past`), a thank-you sent at most once whatever the
re-entries (`once`), and split variants whose `vars` reach the steps after the split."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from automation.api import Lifecycle
from automation.store.keys import step_reason_stat
from automation.language.flow import SplitNode, assign_variant
from tests.conftest import DAY, ROOT, outbox_files

#: The two journeys and their clock: 2026-01-01 is a Thursday; the tests start at noon UTC (London).
JOURNEYS = ("saas-trial.yaml", "saas-nps.yaml")


def at(day: int, hour: int) -> float:
    """Epoch seconds of 2026-01-<day> <hour>:00 UTC (Europe/London in winter)."""
    return datetime(2026, 1, day, hour, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def saas(project: Path) -> Path:
    for name in JOURNEYS:
        shutil.copy(ROOT / "journeys" / name, project / "journeys" / name)
    return project


def team(lc: Lifecycle, contact_id: str, **attributes: object) -> None:
    lc.identify(contact_id, {"email": f"{contact_id}@example.com", "phone": "+14155550100",
                             "first_name": contact_id.title(), "segment": "b2b-saas",
                             "timezone": "Europe/London", "consent": {"email": True, "sms": True},
                             **attributes})


def sent(outbox: Path, contact_id: str) -> list[str]:
    """The steps that reached the outbox for a contact, by channel and step, in file-name order."""
    return sorted(f"{path.parent.name} {path.name.split('--')[2]}" for path in outbox_files(outbox)
                  if path.name.startswith(f"{contact_id}--"))


def subjects(outbox: Path, contact_id: str, step: str) -> list[str]:
    found = []
    for path in outbox_files(outbox, "email"):
        if path.name.startswith(f"{contact_id}--saas-trial--{step}--"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            found.append(str(message["Subject"]))
    return found


def ledger(lc: Lifecycle, runtime, contact_id: str) -> dict[str, dict]:
    raw = runtime.redis.hgetall(runtime.keys.ledger(contact_id))
    return {field: json.loads(value) for field, value in raw.items()}


@pytest.mark.parametrize("if_past", ["skip", "send_now"])
def test_a_short_trial_skips_the_reminder_whose_moment_has_passed(saas, make_engine, runtime, run_due, clock,
                                                                    settings, if_past):
    # Given the trial journey, with the 3-days-before wait as shipped (skip) or going on at once (send_now)
    path = saas / "journeys" / "saas-trial.yaml"
    shipped = "{date: contact.trial_ends_at, offset: -3d, time: \"10:00\", if_past: skip}"
    assert shipped in path.read_text(encoding="utf-8")
    path.write_text(path.read_text(encoding="utf-8").replace(shipped, shipped.replace("skip", if_past)),
                    encoding="utf-8")
    engine = make_engine()
    lc = Lifecycle(runtime)
    # and a team whose trial ends on 6 January: too short for a reminder three days before (3 January,
    # while the run still waits for the tips on 4 January), long enough for the SMS the day before
    team(lc, "short", trial_ends_at="2026-01-06")
    run_due(engine)
    clock.set(at(4, 10))
    run_due(engine)
    clock.set(at(5, 10))
    run_due(engine)
    if if_past == "skip":
        # Then the reminder is skipped, never sent late, and the SMS still goes out on time
        assert sent(settings.outbox_dir, "short") == ["email saas-tips", "email saas-welcome",
                                                      "sms saas-trial-tomorrow"]
        skipped = [entry for entry in runtime.redis.xrange(runtime.keys.activity) if entry[1].get("k") == "skipped"]
        assert [(e[1]["p"], e[1]["ch"], e[1]["d"]) for e in skipped] == [
            ("saas-trial-ending", "email", "the date has passed (if_past: skip)")]
        assert runtime.redis.hget(runtime.keys.stats, "skipped:date_passed") == "1"     # lifecycle status
        # and the report's "why not sent" of that step counts it
        reason = step_reason_stat("saas-trial", skipped[0][1]["s"], "saas-trial-ending", "date_passed")
        assert runtime.redis.hget(runtime.keys.stats, reason) == "1"
    else:
        # Then send_now sends it at once, late, right after the tips
        assert sent(settings.outbox_dir, "short") == ["email saas-tips", "email saas-trial-ending",
                                                      "email saas-welcome", "sms saas-trial-tomorrow"]


def test_a_long_trial_gets_both_reminders_on_their_days(saas, engine, runtime, run_due, clock, settings):
    lc = Lifecycle(runtime)
    team(lc, "long", trial_ends_at="2026-01-15")
    lc.track("long", "project_created", {})
    run_due(engine)
    for day in (4, 12, 14):
        clock.set(at(day, 10))
        run_due(engine)
        if day == 12:
            assert sent(settings.outbox_dir, "long") == ["email saas-trial-ending", "email saas-welcome"]
    # No tips (a project was created), the email on the 12th and the SMS on the 14th
    assert sent(settings.outbox_dir, "long") == ["email saas-trial-ending", "email saas-welcome",
                                                 "sms saas-trial-tomorrow"]


def variant_of(engine, contact_id: str) -> str:
    split = next(node for node in engine.journeys.get("saas-trial").flow_of("churn-risk").nodes.values()
                 if isinstance(node, SplitNode))
    return assign_variant(split, contact_id, "saas-trial").name


def test_thank_you_once_across_reentries_and_variant_vars_reach_the_shared_steps(saas, engine, runtime, run_due,
                                                                                clock, settings):
    # Given two paying teams, one in each discount variant of the win-back split
    names = [f"team{n}" for n in range(40)]
    twenty = next(name for name in names if variant_of(engine, name) == "twenty")
    ten = next(name for name in names if variant_of(engine, name) == "ten")
    lc = Lifecycle(runtime)
    for contact_id in (twenty, ten):
        team(lc, contact_id, plan="paid")
        lc.track(contact_id, "login", {})
        lc.track(contact_id, "subscribed", {})
    run_due(engine)
    # When nobody logs in for two weeks they are at risk; then they come back (paid again)
    clock.advance(14 * DAY + 60)
    run_due(engine)
    assert lc.contact(twenty).enrollments["saas-trial"].stage == "churn-risk"
    for contact_id in (twenty, ten):
        lc.track(contact_id, "login", {})
    run_due(engine)
    assert lc.contact(twenty).enrollments["saas-trial"].stage == "paid"
    # Then the thank-you went out once, and its second turn is recorded as skipped
    for contact_id in (twenty, ten):
        assert subjects(settings.outbox_dir, contact_id, "saas-thank-you") == [
            f"Thank you for choosing Northwind Cloud, {contact_id.title()}"]
    entries = ledger(lc, runtime, twenty)
    assert sorted(key for key in entries if key.endswith(":saas-thank-you")) == [
        "saas-trial:paid:1:saas-thank-you", "saas-trial:paid:3:saas-thank-you"]   # 2 was churn-risk
    assert entries["saas-trial:paid:1:saas-thank-you"]["state"] == "sent"
    assert entries["saas-trial:paid:3:saas-thank-you"]["state"] == "skipped"
    assert entries["saas-trial:paid:3:saas-thank-you"]["reason"] == "sent before (once: true)"
    # and each variant's discount reached the shared coupon step and the shared email
    for contact_id, percent in ((twenty, 20), (ten, 10)):
        raw = lc.contact(contact_id).raw
        coupon = engine.store.coupons.coupons_of(contact_id, raw)["saas-winback"]
        assert coupon.percent == percent
        (subject,) = subjects(settings.outbox_dir, contact_id, "saas-winback")
        assert subject == f"{percent}% off your next Northwind Cloud invoice"
    # The NPS survey, a journey of its own, comes 30 days after subscribing (at the next 10:00), whatever
    # the stage did meanwhile
    clock.set(at(31, 12))
    run_due(engine)
    assert not [p for p in outbox_files(settings.outbox_dir, "email") if "saas-nps" in p.name]
    clock.set(at(31, 10) + DAY)
    run_due(engine)
    for contact_id in (twenty, ten):
        assert [p.name.split("--")[1] for p in outbox_files(settings.outbox_dir, "email")
                if p.name.startswith(f"{contact_id}--") and "saas-nps" in p.name] == ["saas-nps"]


def test_once_holds_for_instant_steps_across_runs_of_a_triggered_journey(project, make_engine, runtime, run_due):
    # Given a triggered journey every signup starts, whose coupon and event are once per contact
    (project / "journeys" / "greet.yaml").write_text("""\
journey: greet
trigger: {event: page_view}
re_entry: every_time
steps:
  - coupon: {name: first-visit, percent: 5, prefix: HI}
    once: true
  - track: greeted
    once: true
  - track: visited
""", encoding="utf-8")
    engine = make_engine()
    lc = Lifecycle(runtime)
    team(lc, "vic")
    # When three page views start three runs
    first_code = None
    for _ in range(3):
        lc.track("vic", "page_view", {})
        run_due(engine)
        code = engine.store.coupons.coupons_of("vic", lc.contact("vic").raw)["first-visit"].code
        first_code = first_code or code
        assert code == first_code          # no new code replaced the first one
    # Then every run tracked `visited`, but `greeted` was recorded once
    events = lc.contact("vic").events
    assert (events["visited"].count, events["greeted"].count) == (3, 1)
    assert lc.contact("vic").enrollments["greet"].occurrence == 3
