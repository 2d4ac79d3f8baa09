"""Guardrails across journeys: message types, quiet hours, frequency caps with priorities, suppression.

Quiet hours are per contact, in their own time zone; caps are counted in Redis when a step is
marked for sending, so parallel workers can never exceed one; transactional messages ignore both
and marketing consent, but never reach a suppressed address.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from automation.api import Lifecycle
from automation.clock import ScaledClock
from automation.engine.dispatch import DramatiqDispatcher
from automation.engine.scheduler import Scheduler
from automation.engine.services import Engine
from automation.events import check_attributes
from automation.runtime import open_runtime
from automation.store.contacts import ContactStore
from automation.store.deliveries import DeliveryLog, DeliveryReport
from automation.store.suppression import Suppressions
from tests.conftest import DAY, outbox_files, wait_for, write

HOUR = 3600.0


@pytest.fixture(autouse=True)
def without_the_lifecycle_journey(project: Path) -> None:
    """These tests count every message a contact gets: the customer lifecycle's welcome would be one."""
    (project / "journeys" / "customer-lifecycle.yaml").unlink()


def at_local(text: str, tz: str) -> float:
    """An instant from a local wall-clock reading, e.g. at_local("2026-01-05 22:00", "Asia/Tehran")."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(tz)).timestamp()


def local(instant: float, tz: str) -> str:
    return datetime.fromtimestamp(instant, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


PING_SMS = """journey: ping-sms
vars: {brand: Northwind, shop_url: https://shop.example.com}
trigger: {event: ping}
re_entry: every_time
steps:
  - send: sms
    template: sms-welcome
"""


def texter(lc: Lifecycle, contact_id: str, tz: str | None, **attributes) -> None:
    zone = {"timezone": tz} if tz else {}
    lc.identify(contact_id, {"phone": "+14155550100", "first_name": contact_id.title(), **zone,
                             "consent": {"sms": True, "email": True}, "email": f"{contact_id}@example.com",
                             **attributes})


def sms_outcome(lc: Lifecycle, contact_id: str) -> dict:
    return lc.history(contact_id)["ping-sms:run:1:sms-welcome"]


@pytest.mark.parametrize("tz", ["Asia/Tehran", "Asia/Taipei"])
def test_a_marketing_sms_due_at_night_waits_for_the_morning_in_the_contacts_zone(
        runtime, make_engine, run_due, clock, settings, tz):
    # Given the default quiet hours for marketing SMS (21:00 to 08:00 in the contact's zone)
    write(settings.journeys_dir / "ping-sms.yaml", PING_SMS)
    engine = make_engine()
    lc = Lifecycle(runtime)
    clock.set(at_local("2026-01-05 22:30", tz))
    texter(lc, "nas", tz)
    # When an SMS falls due at 22:30 their time
    lc.track("nas", "ping", {})
    run_due(engine)
    # Then it is held, not sent, until 08:00 their time
    assert outbox_files(settings.outbox_dir, "sms") == []
    outcome = sms_outcome(lc, "nas")
    assert outcome["state"] == "held" and outcome["code"] == "quiet_hours"
    clock.set(at_local("2026-01-06 07:59", tz))
    run_due(engine)
    assert outbox_files(settings.outbox_dir, "sms") == []
    clock.set(at_local("2026-01-06 08:00", tz))
    run_due(engine)
    assert len(outbox_files(settings.outbox_dir, "sms")) == 1
    assert local(sms_outcome(lc, "nas")["at"], tz) == "2026-01-06 08:00"


def sms_then_email(runtime, make_engine, settings, clock, contact: str, at: str, first_wait: str = ""):
    """`contact` in Warsaw is sent an SMS, then two hours later an email, by a journey triggered at `at` (their
    time), its SMS after `first_wait` if given: (the API, the engine)."""
    journey = PING_SMS.replace("steps:\n", f"steps:\n  - wait: {first_wait}\n") if first_wait else PING_SMS
    write(settings.journeys_dir / "ping-sms.yaml", journey + "  - wait: 2h\n  - send: email\n    template: welcome\n")
    engine = make_engine()
    lc = Lifecycle(runtime)
    clock.set(at_local(at, "Europe/Warsaw"))
    texter(lc, contact, "Europe/Warsaw")
    lc.track(contact, "ping", {})
    return lc, engine


def emails_at(clock, run_due, engine, settings, *times: str) -> list[int]:
    """The emails sent so far at each of these local times in Warsaw."""
    counts = []
    for text in times:
        clock.set(at_local(text, "Europe/Warsaw"))
        run_due(engine)
        counts.append(len(outbox_files(settings.outbox_dir, "email")))
    return counts


def test_the_wait_after_a_held_message_counts_from_when_it_went(runtime, make_engine, run_due, clock, settings):
    # Given an SMS, then two hours later an email, falling due at 22:30 (in quiet hours for SMS)
    lc, engine = sms_then_email(runtime, make_engine, settings, clock, "ewa", "2026-01-05 22:30")
    run_due(engine)
    assert emails_at(clock, run_due, engine, settings, "2026-01-06 08:00") == [0]
    assert local(sms_outcome(lc, "ewa")["at"], "Europe/Warsaw") == "2026-01-06 08:00"
    # Then the email waits its two hours from 08:00, when the SMS went, not from 22:30
    assert emails_at(clock, run_due, engine, settings, "2026-01-06 09:59", "2026-01-06 10:00") == [0, 1]
    (email_step,) = [outcome for outcome in lc.history("ewa").values() if outcome.get("ch") == "email"]
    assert local(email_step["at"], "Europe/Warsaw") == "2026-01-06 10:00"


def test_a_late_worker_does_not_move_the_schedule(runtime, make_engine, run_due, clock, settings):
    # Given an SMS due at 13:00 and an email two hours after it, and workers that only get to the SMS at 13:50
    _, engine = sms_then_email(runtime, make_engine, settings, clock, "ela", "2026-01-05 12:00", first_wait="1h")
    run_due(engine)
    assert emails_at(clock, run_due, engine, settings, "2026-01-05 13:50") == [0]
    assert len(outbox_files(settings.outbox_dir, "sms")) == 1
    # Then the email still goes at 15:00, two hours after the SMS was due
    assert emails_at(clock, run_due, engine, settings, "2026-01-05 14:59", "2026-01-05 15:00") == [0, 1]


def test_quiet_hours_end_at_8_local_across_a_dst_change(runtime, make_engine, run_due, clock, settings):
    # Given a contact in New York, where clocks jump from 02:00 to 03:00 on 2026-03-08
    write(settings.journeys_dir / "ping-sms.yaml", PING_SMS)
    engine = make_engine()
    lc = Lifecycle(runtime)
    clock.set(at_local("2026-03-07 23:00", "America/New_York"))     # EST, UTC-5
    texter(lc, "ny", "America/New_York")
    lc.track("ny", "ping", {})
    run_due(engine)
    assert sms_outcome(lc, "ny")["state"] == "held"
    # Then the night is an hour shorter: 08:00 EDT is 12:00 UTC, not 13:00
    clock.set(datetime(2026, 3, 8, 11, 59, tzinfo=timezone.utc).timestamp())
    run_due(engine)
    assert outbox_files(settings.outbox_dir, "sms") == []
    clock.set(datetime(2026, 3, 8, 12, 0, tzinfo=timezone.utc).timestamp())
    run_due(engine)
    assert len(outbox_files(settings.outbox_dir, "sms")) == 1


def test_a_journey_may_skip_instead_of_holding_and_a_purchase_cancels_a_hold(runtime, make_engine, run_due, clock,
                                                                            settings):
    write(settings.journeys_dir / "ping-sms.yaml", PING_SMS.replace(
        "re_entry: every_time", 're_entry: every_time\nquiet_hours: {sms: {from: "21:00", to: "09:00", action: skip}}'))
    held = PING_SMS.replace("ping-sms", "held-sms").replace("event: ping", "event: pong")
    write(settings.journeys_dir / "held-sms.yaml",
          held.replace("re_entry: every_time", "re_entry: every_time\nexit_on: [{event: purchase}]"))
    engine = make_engine()
    lc = Lifecycle(runtime)
    clock.set(at_local("2026-01-05 22:00", "Europe/Warsaw"))
    texter(lc, "ola", "Europe/Warsaw")
    lc.track("ola", "ping", {})
    lc.track("ola", "pong", {})
    run_due(engine)
    # The journey that skips: skipped, with the reason
    assert sms_outcome(lc, "ola")["state"] == "skipped" and sms_outcome(lc, "ola")["code"] == "quiet_hours"
    # The one that holds: a timer like any other, which a purchase cancels
    assert lc.history("ola")["held-sms:run:1:sms-welcome"]["state"] == "held"
    lc.track("ola", "purchase", {})
    run_due(engine)
    clock.set(at_local("2026-01-06 09:00", "Europe/Warsaw"))
    run_due(engine)
    assert outbox_files(settings.outbox_dir, "sms") == []
    assert lc.history("ola")["held-sms:run:1:sms-welcome"]["state"] == "held"     # cancelled, never sent


TWO_NEWSLETTERS = {
    "news-a": 10,
    "news-b": 0,
}


def newsletter(name: str, priority: int, event: str = "news") -> str:
    return f"""journey: {name}
priority: {priority}
vars: {{brand: Northwind, shop_url: https://shop.example.com}}
trigger: {{event: {event}}}
re_entry: every_time
steps:
  - send: email
    template: welcome
"""


WORKSPACE_CAPS = """frequency_caps:
  - {channel: email, max: 1, per: 1d}
  - {channel: marketing, max: 3, per: 7d}
"""


def test_the_more_important_journey_wins_the_last_slot(runtime, make_engine, run_due, clock, settings):
    # Given at most one marketing email a day, and two journeys emailing the same contact: the less
    # important one due now, the more important one due in five minutes
    write(settings.journeys_dir / "_workspace.yaml", WORKSPACE_CAPS)
    write(settings.journeys_dir / "news-b.yaml", newsletter("news-b", 0, "news_b").replace(
        "  - send: email", "  - wait: 0s\n    send: email"))
    write(settings.journeys_dir / "news-a.yaml", newsletter("news-a", 10, "news_a").replace(
        "  - send: email", "  - wait: 5m\n    send: email"))
    engine = make_engine()
    lc = Lifecycle(runtime)
    texter(lc, "ana", None)
    lc.track("ana", "news_b", {})
    lc.track("ana", "news_a", {})
    run_due(engine)
    # Then the less important one is deferred, keeping the slot for the more important one
    b = lc.history("ana")["news-b:run:1:welcome"]
    assert b["state"] == "deferred" and b["code"] == "frequency_capped"
    clock.advance(5 * 60)
    run_due(engine)
    assert lc.history("ana")["news-a:run:1:welcome"]["state"] == "sent"
    assert len(outbox_files(settings.outbox_dir, "email")) == 1
    # And the deferred one goes out when the day has passed since the first
    clock.advance(DAY)
    run_due(engine)
    assert lc.history("ana")["news-b:run:1:welcome"]["state"] == "sent"
    assert len(outbox_files(settings.outbox_dir, "email")) == 2


def test_a_message_held_for_the_night_does_not_keep_a_slot_all_night(runtime, make_engine, run_due,
                                                                     clock, settings):
    # Given one marketing message a day, an important SMS held by quiet hours from 22:30 until 08:00,
    # and a less important email due at 23:00
    write(settings.journeys_dir / "_workspace.yaml", "frequency_caps:\n  - {channel: marketing, max: 1, per: 1d}\n")
    write(settings.journeys_dir / "ping-sms.yaml", PING_SMS.replace("re_entry: every_time", "priority: 10"))
    write(settings.journeys_dir / "news-b.yaml", newsletter("news-b", 0, "news_b").replace(
        "  - send: email", "  - wait: 30m\n    send: email"))
    engine = make_engine()
    lc = Lifecycle(runtime)
    clock.set(at_local("2026-01-05 22:30", "Europe/Warsaw"))
    texter(lc, "iza", "Europe/Warsaw")
    lc.track("iza", "ping", {})
    lc.track("iza", "news_b", {})
    run_due(engine)
    assert sms_outcome(lc, "iza")["state"] == "held"
    # Then at 23:00 the SMS counts as due at 08:00, outside the priority window (an hour): the email
    # takes the slot
    clock.set(at_local("2026-01-05 23:00", "Europe/Warsaw"))
    run_due(engine)
    assert lc.history("iza")["news-b:run:1:welcome"]["state"] == "sent"
    # and the SMS waits for the day to pass since the email
    clock.set(at_local("2026-01-06 08:00", "Europe/Warsaw"))
    run_due(engine)
    assert sms_outcome(lc, "iza")["code"] == "frequency_capped"


RENEWAL_NOTICE = """journey: renewal-notice
type: transactional
vars: {brand: Northwind, shop_url: https://shop.example.com}
trigger: {event: renewal_due}
re_entry: every_time
steps:
  - send: sms
    template: renewal-tomorrow
  - send: email
    template: welcome
"""


def test_transactional_messages_ignore_caps_quiet_hours_and_marketing_consent(runtime, make_engine, run_due, clock,
                                                                                settings):
    # Given caps, the night in Tehran, and a contact who gave no marketing consent at all
    write(settings.journeys_dir / "_workspace.yaml", WORKSPACE_CAPS)
    write(settings.journeys_dir / "renewal-notice.yaml", RENEWAL_NOTICE)
    engine = make_engine()
    lc = Lifecycle(runtime)
    clock.set(at_local("2026-01-05 23:00", "Asia/Tehran"))
    lc.identify("reza", {"phone": "+989121234567", "email": "reza@example.com", "timezone": "Asia/Tehran",
                         "renewal_date": "2026-01-06"})
    # When a transactional notice falls due
    lc.track("reza", "renewal_due", {})
    run_due(engine)
    # Then both its messages go out now
    assert len(outbox_files(settings.outbox_dir, "sms")) == 1
    assert len(outbox_files(settings.outbox_dir, "email")) == 1


def test_transactional_messages_never_go_to_a_suppressed_or_invalid_address(runtime, make_engine, run_due, clock,
                                                                            settings):
    write(settings.journeys_dir / "renewal-notice.yaml", RENEWAL_NOTICE)
    engine = make_engine()
    lc = Lifecycle(runtime)
    lc.identify("reza", {"phone": "+989121234567", "email": "Reza@Example.com", "renewal_date": "2026-01-06"})
    # Given the address bounced (SendGrid's event webhook) and the number is on a suppression list
    DeliveryLog(runtime).record(DeliveryReport("email", "x:run:1:y:reza", "reza", "bounced", clock.now(),
                                               effect={"email_invalid": True}))
    Suppressions(runtime).add("sms", "+989121234567", "asked by phone")
    # When a transactional notice falls due
    lc.track("reza", "renewal_due", {})
    run_due(engine)
    # Then neither goes out, and the ledger says why
    assert outbox_files(settings.outbox_dir) == []
    history = lc.history("reza")
    assert history["renewal-notice:run:1:renewal-tomorrow"]["code"] == "suppressed"
    assert history["renewal-notice:run:1:welcome"]["code"] in ("suppressed", "no_address")
    assert Suppressions(runtime).get("email", "reza@example.com") is not None


def test_a_bounce_suppresses_the_address_for_every_journey_even_after_it_is_set_again(runtime, make_engine, run_due,
                                                                                    clock, settings):
    write(settings.journeys_dir / "news-a.yaml", newsletter("news-a", 0))
    engine = make_engine()
    lc = Lifecycle(runtime)
    texter(lc, "bo", None)
    DeliveryLog(runtime).record(DeliveryReport("email", "x:run:1:y:bo", "bo", "bounced", clock.now(),
                                               effect={"email_invalid": True}))
    # The same address given again (a form re-submitted) clears email_invalid, not the suppression
    lc.identify("bo", {"email": "bo@example.com"})
    lc.track("bo", "news", {})
    run_due(engine)
    assert outbox_files(settings.outbox_dir, "email") == []
    assert lc.history("bo")["news-a:run:1:welcome"]["code"] == "suppressed"


def test_do_not_contact_stops_marketing_on_every_channel(runtime, make_engine, run_due, clock, settings):
    write(settings.journeys_dir / "news-a.yaml", newsletter("news-a", 0))
    engine = make_engine()
    lc = Lifecycle(runtime)
    texter(lc, "dn", None, do_not_contact=True)
    lc.track("dn", "news", {})
    run_due(engine)
    assert outbox_files(settings.outbox_dir) == []
    assert lc.history("dn")["news-a:run:1:welcome"]["code"] == "do_not_contact"


@pytest.mark.integration
def test_caps_shared_by_two_journeys_hold_under_several_worker_processes(settings, workers):
    # Given one marketing email per contact per hour (on a clock running 600 times as fast: an hour
    # is 6 seconds), two journeys emailing the same 60 contacts at once, and 2 worker processes
    write(settings.journeys_dir / "_workspace.yaml", "frequency_caps:\n  - {channel: email, max: 1, per: 1h}\n")
    for name, priority in TWO_NEWSLETTERS.items():
        write(settings.journeys_dir / f"{name}.yaml", newsletter(name, priority))
    origin = time.time() + 1
    fast = settings.with_changes(clock_speed=600.0, clock_origin=origin, lease_seconds=30.0)
    runtime = open_runtime(fast, clock=ScaledClock(600.0, origin))
    try:
        store = ContactStore(runtime)
        ids = [f"c{n:02d}" for n in range(60)]
        store.identify_many((cid, check_attributes({"email": f"{cid}@example.com", "first_name": cid,
                                                    "consent": {"email": True}})) for cid in ids)
        Engine.create(runtime).close()     # publishes what the journeys watch (the "news" event)
        workers(processes=2, threads=4, LIFECYCLE_CLOCK_SPEED="600", LIFECYCLE_CLOCK_ORIGIN=repr(origin))
        dispatcher = DramatiqDispatcher(fast)
        scheduler = Scheduler(runtime, dispatcher, dispatcher.queue_depth)
        stop = threading.Event()
        thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
        thread.start()
        try:
            lc = Lifecycle(runtime)
            for cid in ids:
                lc.track(cid, "news", {})

            def delivered() -> Counter:
                return Counter(path.name.split("--")[0] for path in outbox_files(fast.outbox_dir, "email"))

            def sent_at(cid: str) -> list[float]:
                return sorted(o["at"] for o in lc.history(cid).values() if o.get("state") == "sent")

            # When both rounds have gone out and been recorded (the deferred ones once their hour passed)
            wait_for(lambda: sum(delivered().values()) >= 120 and all(len(sent_at(cid)) == 2 for cid in ids),
                     timeout=180, what="both emails to every contact")
            # Then every contact got both, never two within the hour (by the engine's own send times),
            # and the second of each was deferred by the cap, not lost
            assert set(delivered()) == set(ids) and set(delivered().values()) == {2}
            for cid in ids:
                sent = sent_at(cid)
                assert sent[1] - sent[0] >= HOUR - 1, (cid, sent)
            stats = runtime.redis.hgetall(runtime.keys.stats)
            assert int(stats.get("deferred:frequency_capped", 0)) >= 60
        finally:
            stop.set()
            thread.join(timeout=5)
            dispatcher.close()
    finally:
        runtime.close()


def test_redis_memory_per_capped_contact_is_bounded(runtime, make_engine, run_due, clock, settings):
    # Given 3 emails a week at most: however many are sent over months, the counter keeps 3 times
    write(settings.journeys_dir / "_workspace.yaml", "frequency_caps:\n  - {channel: email, max: 3, per: 7d}\n")
    write(settings.journeys_dir / "news-a.yaml", newsletter("news-a", 0))
    engine = make_engine()
    lc = Lifecycle(runtime)
    texter(lc, "ana", None)
    for _ in range(20):
        lc.track("ana", "news", {})
        run_due(engine)
        clock.advance(2 * DAY)
    times = runtime.redis.hget(runtime.keys.contact("ana"), "f:email").split(",")
    assert len(times) <= 3 and runtime.redis.hget(runtime.keys.contact("ana"), "f:*") is None


def test_validate_checks_the_workspace_file(project: Path, capsys):
    from automation.ops.cli import main

    write(project / "journeys" / "_workspace.yaml",
          'quiet_hours:\n  sms: {from: "25:00", to: "08:00"}\nfrequency_caps:\n  - {channel: email, max: 0, per: 1d}\n'
          'frequency_cap_action: later\n')
    code = main(["validate", str(project / "journeys"), "--templates", str(project / "templates")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1
    assert "_workspace.yaml:2:" in text and "25:00" in text
    assert "_workspace.yaml:4:" in text and "max" in text
    assert "_workspace.yaml:5:" in text and "defer" in text


def test_suppression_lists_are_imported_from_csv_and_shown_by_inspect(runtime, settings, project: Path, capsys):
    from automation.ops.cli import main
    from automation.ops.status import format_contact, inspect_contact

    # Given a CSV of addresses not to be contacted (one bad line among them)
    write(project / "dnc.csv", "address,reason\nAna@Example.com,asked by phone\n+48601000000,\nnot-an-address,\n")
    lc = Lifecycle(runtime)
    lc.identify("ana", {"email": "ana@example.com", "consent": {"email": True}})
    env_before = dict(__import__("os").environ)
    __import__("os").environ.update(settings.to_env())
    try:
        code = main(["suppress", str(project / "dnc.csv")])
        listed = main(["suppress", "--list"])
    finally:
        __import__("os").environ.clear()
        __import__("os").environ.update(env_before)
    out = capsys.readouterr()
    # Then the good lines are listed (emails without case), the bad one reported with its line
    assert code == 1 and listed == 0
    assert "dnc.csv:4:" in out.err and "suppressed 2 new" in out.out
    assert "email\tana@example.com\tasked by phone" in out.out and "sms\t+48601000000" in out.out
    # And inspect says why the contact gets nothing by email
    text = format_contact(inspect_contact(runtime, "ana"))
    assert "email: nothing (ana@example.com is suppressed since" in text and "asked by phone" in text
