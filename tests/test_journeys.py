"""Journeys end to end in one process: real Redis, real scheduler claims, the executor, a manual clock.

Worker processes are not needed for these behaviours (tests/test_workers.py covers
what depends on them). Where a provider is needed, `Provider` below stands in for
the external service: it implements the adapter interface and records every call.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry, Failed, Retry, Sent
from automation.engine.executor import run_batch
from automation.engine.services import Engine
from automation.ops.status import collect_status
from automation.runtime import open_runtime
from automation.store.keys import recheck_member, step_member
from automation.store.timers import TimerStore
from tests.conftest import DAY, ROOT, outbox_files, write
from tests.providers.recording import Provider


class Crash(BaseException):
    """The process dying right after the provider accepted the message."""


def with_provider(make_engine, settings, provider: Provider):
    return make_engine(ChannelRegistry(settings, instances={c: provider for c in ("email", "sms", "push")}))


def customer(lc: Lifecycle, contact_id: str, days_since_purchase: float | None, clock, purchases: int = 1,
             **attributes: Any) -> None:
    lc.identify(contact_id, {"email": f"{contact_id}@example.com", "phone": "+14155550100",
                             "first_name": contact_id.title(),
                             "consent": {"email": True, "sms": True, "push": True}, **attributes})
    if days_since_purchase is not None:
        for n in range(purchases):
            lc.track(contact_id, "purchase", {"item": f"item {n}"},
                     at=clock.now() - (days_since_purchase + purchases - 1 - n) * DAY)


def stage_of(lc: Lifecycle, contact_id: str, journey: str = "customer-lifecycle") -> str | None:
    enrollment = lc.contact(contact_id).enrollments.get(journey)
    return enrollment.stage if enrollment else None


def test_a_new_lead_gets_a_personal_welcome_email(runtime, engine, run_due, settings):
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    run_due(engine)
    assert stage_of(lc, "ana") == "lead"
    (path,) = outbox_files(settings.outbox_dir, "email")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Ana, welcome to Northwind Outfitters!"
    assert message["To"] == "ana@example.com"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<https://example.com/unsubscribe?token=")
    html = message.get_body(("html",)).get_content()
    assert "Hi Ana," in html and '<html lang="en" dir="ltr">' in html
    assert "Hi Ana," in message.get_body(("plain",)).get_content()


def test_lapsing_happens_on_time_without_an_event_and_without_a_scan(runtime, engine, run_due, clock):
    # Given 300 recent customers whose first-week messages are done ...
    lc = Lifecycle(runtime)
    for n in range(300):
        customer(lc, f"other{n}", 1, clock)
    run_due(engine)
    clock.advance(8 * DAY)
    run_due(engine)
    # ... and tom, whose last purchase was 80 days ago
    customer(lc, "tom", 80, clock)
    run_due(engine)
    clock.advance(7 * DAY)
    run_due(engine)   # tom's check-in
    assert stage_of(lc, "tom") == "new"
    # Then one timer waits for the exact moment tom's lapse rule flips
    timers = TimerStore(runtime)
    flip = timers.due_time("tom", recheck_member("tom"))
    assert flip == pytest.approx(clock.now() + 3 * DAY, abs=1)
    # When the clock passes that moment, with no new event
    clock.set(flip + 1)
    claimed = run_due(engine)
    # Then tom is lapsed, and only tom's two timers were touched (the re-evaluation, then the
    # win-back email it scheduled): the cost follows the transition, not the number of contacts.
    assert stage_of(lc, "tom") == "lapsed"
    assert claimed == 2
    assert lc.history("tom")["customer-lifecycle:lapsed:2:winback-coupon"]["state"] == "sent"
    assert all(stage_of(lc, f"other{n}") == "new" for n in range(0, 300, 50))


def test_a_purchase_during_lapsed_cancels_the_pending_winback_sms(runtime, engine, run_due, clock, settings):
    lc = Lifecycle(runtime)
    customer(lc, "jo", 95, clock)
    run_due(engine)
    assert stage_of(lc, "jo") == "lapsed"
    assert len(outbox_files(settings.outbox_dir, "email")) == 1          # the 20% coupon
    sms_due = TimerStore(runtime).due_time("jo", step_member("customer-lifecycle", "jo"))
    assert sms_due == pytest.approx(clock.now() + 3 * DAY, abs=1)
    # When jo buys again a day later
    clock.advance(1 * DAY)
    lc.track("jo", "purchase", {"item": "boots"})
    run_due(engine)
    # Then jo is active again and the win-back SMS will never be sent
    assert stage_of(lc, "jo") == "active"
    clock.advance(10 * DAY)
    run_due(engine)
    assert outbox_files(settings.outbox_dir, "sms") == []
    kinds = [f["k"] for _, f in runtime.redis.xrange(runtime.keys.activity)]
    assert "cancelled" in kinds
    assert "customer-lifecycle:lapsed:1:winback-reminder" not in lc.history("jo")


def test_winback_email_then_sms_then_push_when_nothing_happens(runtime, engine, run_due, clock, settings):
    lc = Lifecycle(runtime)
    customer(lc, "kim", 100, clock, push_tokens=["tok-1"])
    run_due(engine)
    clock.advance(3 * DAY)
    run_due(engine)
    clock.advance(4 * DAY)
    run_due(engine)
    (sms,) = outbox_files(settings.outbox_dir, "sms")
    body = json.loads(sms.read_text())
    assert body["to"] == "+14155550100"
    code = lc.coupons("kim")["winback"].code          # issued by the journey, unique to kim
    assert code.startswith("WB-") and "20%" in body["body"] and code in body["body"]
    (push,) = outbox_files(settings.outbox_dir, "push")
    assert json.loads(push.read_text())["to"] == ["tok-1"]
    (coupon,) = outbox_files(settings.outbox_dir, "email")
    html = email.message_from_bytes(coupon.read_bytes(), policy=email.policy.default).get_body(("html",)).get_content()
    assert "<title>Kim, here is 20% off to welcome you back</title>" in html
    assert f">Use code {code} at checkout" in html


def test_no_consent_means_nothing_on_that_channel(runtime, engine, run_due, clock, settings):
    lc = Lifecycle(runtime)
    customer(lc, "liv", 100, clock, consent={"email": True, "sms": False})
    run_due(engine)
    clock.advance(3 * DAY)
    run_due(engine)
    assert outbox_files(settings.outbox_dir, "sms") == []
    outcome = lc.history("liv")["customer-lifecycle:lapsed:1:winback-reminder"]
    assert outcome["state"] == "skipped" and outcome["code"] == "no_consent"


def test_a_redelivered_message_never_sends_twice(runtime, make_engine, settings, clock):
    provider = Provider(settings)
    engine = with_provider(make_engine, settings, provider)
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    timers = TimerStore(runtime)
    recheck, _ = timers.claim(100)
    run_batch(engine, recheck)
    step, _ = timers.claim(100)
    # When the same message is delivered three times (Dramatiq redelivery, lease expiry)
    for _ in range(3):
        run_batch(engine, step)
    # Then the provider was called once
    assert [d.step for d in provider.calls] == ["welcome"]
    assert lc.history("ana")["customer-lifecycle:lead:1:welcome"]["state"] == "sent"


def interrupted_welcome(settings, clock, idempotent: bool):
    """A welcome the provider accepted, with the worker dying before the outcome was recorded;
    a second worker gets the step again (Dramatiq hands a dead worker's messages to others)."""
    runtime = open_runtime(settings, clock=clock)
    provider = Provider(settings, answers=[Crash()], idempotent=idempotent)
    registry = ChannelRegistry(settings, instances={"email": provider})
    dying = Engine.create(runtime, registry)
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    timers = TimerStore(runtime)
    run_batch(dying, timers.claim(100)[0])
    step, _ = timers.claim(100)
    with pytest.raises(Crash):
        run_batch(dying, step)
    assert lc.history("ana")["customer-lifecycle:lead:1:welcome"]["state"] == "sending"
    dying.liveness.stop()       # the worker is gone: its heartbeat stops
    return provider, Engine.create(runtime, registry), lc, step


def test_an_interrupted_send_is_not_repeated_by_a_provider_without_dedupe(settings, clock):
    provider, engine, lc, step = interrupted_welcome(settings, clock, idempotent=False)
    # When the step is delivered again
    run_batch(engine, step)
    # Then it is not sent a second time: the outcome is unknown, waiting for the provider's word
    assert len(provider.calls) == 1
    outcome = lc.history("ana")["customer-lifecycle:lead:1:welcome"]
    assert outcome["state"] == "unknown" and outcome["code"] == "interrupted"
    engine.runtime.close()


def test_an_interrupted_send_is_repeated_when_the_provider_deduplicates(settings, clock):
    provider, engine, lc, step = interrupted_welcome(settings, clock, idempotent=True)
    run_batch(engine, step)
    assert [d.key for d in provider.calls] == [provider.calls[0].key] * 2   # same key: deduplicated upstream
    assert lc.history("ana")["customer-lifecycle:lead:1:welcome"]["state"] == "sent"
    engine.runtime.close()


def test_retry_later_then_sent(runtime, make_engine, settings, clock, run_due):
    provider = Provider(settings, answers=[Retry(120, "429 too many requests"), Sent("p-ok")])
    engine = with_provider(make_engine, settings, provider)
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    run_due(engine)
    outcome = lc.history("ana")["customer-lifecycle:lead:1:welcome"]
    assert outcome["state"] == "retry" and "429" in outcome["reason"]
    # Not before the provider's reset time ...
    clock.advance(60)
    run_due(engine)
    assert len(provider.calls) == 1
    # ... but after it
    clock.advance(61)
    run_due(engine)
    assert len(provider.calls) == 2
    outcome = lc.history("ana")["customer-lifecycle:lead:1:welcome"]
    assert outcome["state"] == "sent" and outcome["attempt"] == 2 and outcome["id"] == "p-ok"


def test_retries_give_up_and_record_why(settings, clock, run_due):
    provider = Provider(settings, answers=[Retry(1, "503 unavailable")] * 3)
    runtime = open_runtime(settings.with_changes(max_send_attempts=3, retry_base_seconds=1), clock=clock)
    engine = with_provider(lambda channels: Engine.create(runtime, channels), settings, provider)
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    for _ in range(4):
        run_due(engine)
        clock.advance(10)
    outcome = lc.history("ana")["customer-lifecycle:lead:1:welcome"]
    assert outcome["state"] == "failed" and outcome["code"] == "gave_up" and "503" in outcome["reason"]
    assert len(provider.calls) == 3
    runtime.close()


def test_permanent_failure_updates_the_contact(runtime, make_engine, settings, clock, run_due):
    provider = Provider(settings, answers=[Sent(), Failed("21610 unsubscribed (STOP)", "unsubscribed",
                                                          {"consent.sms": False})])
    engine = with_provider(make_engine, settings, provider)
    lc = Lifecycle(runtime)
    customer(lc, "sol", 100, clock)
    run_due(engine)
    clock.advance(3 * DAY)
    run_due(engine)
    outcome = lc.history("sol")["customer-lifecycle:lapsed:1:winback-reminder"]
    assert outcome["state"] == "failed" and outcome["code"] == "unsubscribed"
    assert lc.contact("sol").attributes["consent"]["sms"] is False


def test_a_template_that_fails_to_render_is_a_visible_step_error(runtime, engine, run_due, clock, settings):
    write(settings.templates_dir / "email" / "welcome.en.html",
          "{% block subject %}Hi {{ contact.compnay.name }}{% endblock %}{% block html %}x{% endblock %}")
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    run_due(engine)
    assert outbox_files(settings.outbox_dir) == []
    outcome = lc.history("ana")["customer-lifecycle:lead:1:welcome"]
    assert outcome["state"] == "failed" and outcome["code"] == "template_error"
    assert "welcome.en.html" in outcome["reason"]
    failures = collect_status(runtime)["recent_failures"]
    assert failures[0]["c"] == "ana" and "welcome.en.html" in failures[0]["d"]
    # The journey goes on with the next step
    assert lc.contact("ana").enrollments["customer-lifecycle"].step == "demo-offer"


def test_the_demo_offer_goes_only_to_leads_who_are_learning(runtime, engine, run_due, clock, settings):
    lc = Lifecycle(runtime)
    customer(lc, "reader", None, None)
    customer(lc, "skimmer", None, None)
    for page in ("/a", "/b", "/c"):
        lc.track("reader", "page_view", {"page": page})
    run_due(engine)
    clock.advance(2 * DAY)
    run_due(engine)
    offers = outbox_files(settings.outbox_dir, "email")
    assert [p.name.split("--")[0] for p in offers if "demo-offer" in p.name] == ["reader"]
    assert lc.history("skimmer")["customer-lifecycle:lead:1:demo-offer"]["code"] == "condition"


def test_reentering_a_stage_sends_its_messages_again(runtime, engine, run_due, clock, settings):
    lc = Lifecycle(runtime)
    customer(lc, "tara", 80, clock, purchases=6)
    run_due(engine)
    assert stage_of(lc, "tara") == "loyal"
    clock.advance(11 * DAY)
    run_due(engine)
    assert stage_of(lc, "tara") == "lapsed"
    lc.track("tara", "purchase", {"item": "chalk"})
    run_due(engine)
    assert stage_of(lc, "tara") == "loyal"
    welcomes = [p for p in outbox_files(settings.outbox_dir, "email") if "loyalty-welcome" in p.name]
    assert len(welcomes) == 2
    assert set(lc.history("tara")) >= {"customer-lifecycle:loyal:1:loyalty-welcome",
                                       "customer-lifecycle:loyal:3:loyalty-welcome"}


def test_a_broken_journey_file_does_not_stop_the_others(runtime, engine, run_due, settings, clock):
    # Given a second, broken journey next to the shipped one
    write(settings.journeys_dir / "broken.yaml", "journey: broken\nstages:\n  - name: x\n    when: 'a >'\n")
    engine.journeys.refresh(force=True)
    assert "broken" not in engine.journeys.journeys
    assert any("broken.yaml:4:11" in d.format() for d in engine.journeys.diagnostics)
    # Then the shipped journey still serves contacts
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    run_due(engine)
    assert stage_of(lc, "ana") == "lead"


def test_a_bad_edit_keeps_the_last_good_version_serving(runtime, engine, run_due, settings, clock):
    path: Path = settings.journeys_dir / "customer-lifecycle.yaml"
    path.write_text(path.read_text().replace("send: sms", "send: smss"))
    engine.journeys.refresh(force=True)
    assert "customer-lifecycle" in engine.journeys.journeys
    assert any("unknown channel 'smss'" in d.message for d in engine.journeys.diagnostics)
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    run_due(engine)
    assert stage_of(lc, "ana") == "lead"


def test_a_reevaluation_for_a_deleted_contact_does_not_recreate_it(runtime, engine, run_due, clock):
    lc = Lifecycle(runtime)
    customer(lc, "gone", None, None)
    runtime.redis.delete(runtime.keys.contact("gone"))
    run_due(engine)
    assert not lc.contact("gone").exists
    assert runtime.redis.exists(runtime.keys.contact("gone")) == 0
    assert TimerStore(runtime).counts() == {"pending": 0, "leased": 0}


def test_a_missing_first_name_falls_back_to_the_locale_greeting(runtime, engine, run_due, settings, project):
    # Given no Russian welcome (say it is not translated yet)
    (project / "templates" / "email" / "welcome.ru.html").unlink()
    lc = Lifecycle(runtime)
    lc.identify("anon", {"email": "anon@example.com", "consent": {"email": True}})
    lc.identify("olga", {"email": "olga@example.com", "locale": "ru", "consent": {"email": True}})
    lc.identify("ewa", {"email": "ewa@example.com", "locale": "pl-PL", "consent": {"email": True}})
    run_due(engine)
    bodies = {path.name.split("--")[0]: email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
              for path in outbox_files(settings.outbox_dir, "email")}
    assert bodies["anon"]["Subject"] == "Welcome to Northwind Outfitters!"
    assert "Hi there," in bodies["anon"].get_body(("html",)).get_content()
    # Then olga gets the English one, with the Russian default name
    assert "Hi друг," in bodies["olga"].get_body(("html",)).get_content()
    # and pl-PL falls back to the Polish template (the language of the locale)
    assert bodies["ewa"]["Subject"] == "Witaj w Northwind Outfitters!"


def test_while_a_journey_file_is_broken_its_contacts_keep_being_rechecked(runtime, settings, clock, make_engine,
                                                                          run_due):
    # Given a contact in 'new' whose lapse is 40 days away
    lc = Lifecycle(runtime)
    customer(lc, "pat", 50, clock)
    run_due(make_engine())
    assert stage_of(lc, "pat") == "new"
    # When a worker starts while the journey file is broken (so it has no good version of it)
    path: Path = settings.journeys_dir / "customer-lifecycle.yaml"
    good = path.read_text()
    path.write_text(good.replace("send: sms", "send: smss"))
    broken = make_engine()
    assert "customer-lifecycle" not in broken.journeys.journeys
    lc.track("pat", "page_view")
    run_due(broken)
    # Then pat keeps a re-check within a minute instead of losing the 40-day one
    due = TimerStore(runtime).due_time("pat", recheck_member("pat"))
    assert due is not None and due <= clock.now() + 60
    # And once the file is fixed, the lapse happens on time
    path.write_text(good)
    broken.journeys.refresh(force=True)
    clock.advance(41 * DAY)
    run_due(broken)
    assert stage_of(lc, "pat") == "lapsed"


@pytest.mark.parametrize("fraction", [0.0001, 0.4996, 0.9999])
def test_a_step_due_on_entry_runs_in_the_same_pass_whatever_the_clock_reads(runtime, engine, run_due, clock,
                                                                           fraction, settings):
    # Due times are kept to the millisecond; rounding up would leave them just out of reach.
    clock.set(int(clock.now()) + fraction)
    lc = Lifecycle(runtime)
    customer(lc, "ana", None, None)
    run_due(engine)
    assert len(outbox_files(settings.outbox_dir, "email")) == 1


def test_events_and_changes_sent_before_any_worker_ran_still_start_their_journeys(runtime, lc, settings, clock,
                                                                                   start, run_due, provider):
    # An app sends its first events to a fresh installation before the first worker has started
    # (and so before any worker has said which events journeys react to).
    for name in ("cart-abandonment.yaml", "sms-opt-in.yaml"):
        shutil.copy(ROOT / "journeys" / name, settings.journeys_dir / name)
    lc.identify("cart", {"email": "cart@example.com", "consent": {"email": True}})
    lc.track("cart", "checkout_started", {"total": 80})
    lc.identify("opt-in", {"phone": "+14155550123", "consent": {"sms": True}})
    engine = start()
    run_due(engine)

    def triggered() -> list[tuple[str, str]]:
        return [(d.contact_id, d.template) for d in provider.calls if d.journey != "customer-lifecycle"]

    assert triggered() == [("opt-in", "sms-welcome")]
    clock.advance(3601)
    run_due(engine)
    assert triggered() == [("opt-in", "sms-welcome"), ("cart", "cart-reminder")]
    # Once published, an event no journey reacts to no longer waits in the inbox.
    lc.track("cart", "page_view", {"path": "/"})
    assert runtime.redis.llen(runtime.keys.inbox("cart")) == 0


def test_once_a_worker_published_what_journeys_watch_other_changes_stay_out_of_the_inbox(runtime, lc, engine):
    # The customer lifecycle watches no attribute: after its worker said so, changes are not queued
    assert runtime.redis.smembers(runtime.keys.watched_attributes) == {""}
    lc.identify("ana", {"first_name": "Ana"})
    lc.identify("ana", {"first_name": "Anna", "plan": "pro"})
    lc.track("ana", "page_view", {"path": "/"})
    assert runtime.redis.llen(runtime.keys.inbox("ana")) == 0
