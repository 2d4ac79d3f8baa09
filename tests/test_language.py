"""Every construct of the journey language, end to end on a real Redis with a controllable clock.

Each test writes the journeys it needs, feeds contacts and events through the public API,
and lets the scheduler's claims run in this process (tests/test_workers.py covers what
depends on worker processes). Times are checked against due times the engine recorded
and against the instants the clock was set to, never against how long anything took.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from automation.api import Lifecycle
from automation.engine.runs import START
from automation.store.keys import recheck_member
from automation.store.timers import TimerStore
from tests.conftest import DAY, write
from tests.providers.recording import Provider

HOUR = 3600.0
VARS = ('vars: {brand: Acme, shop_url: "https://acme.test", survey_url: "https://acme.test/survey",\n'
        '       review_url: "https://reviews.test/acme"}\n')


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()


def local(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()


def only(project: Path, **files: str) -> None:
    """The project's journeys are exactly these (name -> YAML)."""
    for path in (project / "journeys").glob("[!_]*.yaml"):
        path.unlink()
    for name, text in files.items():
        write(project / "journeys" / f"{name}.yaml", text)


def person(lc: Lifecycle, contact_id: str, **attributes) -> None:
    lc.identify(contact_id, {"email": f"{contact_id}@example.com", "phone": "+14155550100",
                             "consent": {"email": True, "sms": True, "push": True}, **attributes})


def sent(provider: Provider, contact_id: str | None = None) -> list[tuple[str, str]]:
    return [(d.contact_id, d.step) for d in provider.calls if contact_id in (None, d.contact_id)]


def due_of(lc: Lifecycle, contact_id: str, journey: str) -> float | None:
    return lc.contact(contact_id).enrollments[journey].due


def stats(runtime) -> dict[str, int]:
    return {k: int(v) for k, v in runtime.redis.hgetall(runtime.keys.stats).items()}


# -- waits until a time of day, in the contact's own time zone ------------------------------------

NINE_LOCAL = VARS + """\
journey: nine
timezone: Europe/Warsaw
trigger: {event: signup}
steps:
  - wait_until: {time: "09:00"}
  - send: email
    template: welcome
"""


def test_nine_local_is_nine_in_tehran_and_in_taipei(project, lc, start, run_due, clock, provider):
    only(project, nine=NINE_LOCAL)
    engine = start()
    clock.set(utc(2026, 1, 1, 0, 0))
    # Given contacts in Tehran (UTC+3:30), Taipei (UTC+8) and one without a zone (the journey's: Warsaw)
    person(lc, "tehran", timezone="Asia/Tehran")
    person(lc, "taipei", timezone="Asia/Taipei")
    person(lc, "warsaw")
    # When they sign up at midnight UTC
    for contact in ("tehran", "taipei", "warsaw"):
        lc.track(contact, "signup")
    run_due(engine)
    # Then each waits for 09:00 on their own clock
    assert due_of(lc, "taipei", "nine") == utc(2026, 1, 1, 1, 0)
    assert due_of(lc, "tehran", "nine") == utc(2026, 1, 1, 5, 30)
    assert due_of(lc, "warsaw", "nine") == utc(2026, 1, 1, 8, 0)
    # and gets the email then, not before
    clock.set(utc(2026, 1, 1, 5, 29))
    run_due(engine)
    assert sent(provider) == [("taipei", "welcome")]
    clock.set(utc(2026, 1, 1, 5, 30))
    run_due(engine)
    assert sent(provider, "tehran") == [("tehran", "welcome")]
    assert provider.calls[-1].at == utc(2026, 1, 1, 5, 30)
    clock.set(utc(2026, 1, 1, 8, 0))
    run_due(engine)
    assert [c for c, _ in sent(provider)] == ["taipei", "tehran", "warsaw"]


DAILY_NINE = VARS + """\
journey: daily
trigger: {event: signup}
steps:
  - wait_until: {time: "09:00"}
  - send: email
    template: welcome
  - wait_until: {time: "09:00", days: [mon, tue, wed, thu, fri]}
  - send: email
    template: demo-offer
"""


@pytest.mark.parametrize("signup, first, second", [
    # Spring forward in New York (2026-03-08 02:00 -> 03:00): 09:00 is 14:00 UTC before, 13:00 UTC after
    (utc(2026, 3, 7, 20, 0), utc(2026, 3, 8, 13, 0), utc(2026, 3, 9, 13, 0)),
    # Fall back (2026-11-01 02:00 -> 01:00): 09:00 is 13:00 UTC before, 14:00 UTC after
    (utc(2026, 10, 31, 20, 0), utc(2026, 11, 1, 14, 0), utc(2026, 11, 2, 14, 0)),
])
def test_nine_local_stays_nine_across_daylight_saving_changes(project, lc, start, run_due, clock, provider,
                                                             signup, first, second):
    only(project, daily=DAILY_NINE)
    engine = start()
    person(lc, "ny", timezone="America/New_York")
    clock.set(signup)
    lc.track("ny", "signup")
    run_due(engine)
    # Then the first wait ends at 09:00 New York time on the Sunday of the change
    assert due_of(lc, "ny", "daily") == first
    assert datetime.fromtimestamp(first, ZoneInfo("America/New_York")).hour == 9
    clock.set(first)
    run_due(engine)
    # and the weekday wait skips to Monday 09:00, in the new offset
    assert due_of(lc, "ny", "daily") == second
    clock.set(second)
    run_due(engine)
    assert [(step, d.at) for d, (_, step) in zip(provider.calls, sent(provider), strict=True)] == [
        ("welcome", first), ("demo-offer", second)]


DATES = VARS + """\
journey: renewal
timezone: UTC
trigger:
  date: contact.renewal_date
  offset: -7d
  time: "09:00"
steps:
  - send: email
    template: renewal-reminder
  - wait_until: {date: contact.renewal_date, offset: -1d, time: "12:00"}
  - send: sms
    template: renewal-tomorrow
"""


def test_a_date_trigger_fires_days_before_a_date_in_the_contacts_zone(project, lc, start, run_due, clock, provider):
    only(project, renewal=DATES)
    engine = start()
    clock.set(utc(2026, 6, 1))
    # Given a subscriber in Taipei whose plan renews on 20 June
    person(lc, "mei", timezone="Asia/Taipei", renewal_date="2026-06-20", plan="Team")
    run_due(engine)
    # Then the run is armed for 13 June, 09:00 Taipei time
    enrollment = lc.contact("mei").enrollments["renewal"]
    assert (enrollment.step, enrollment.due) == (START, local("Asia/Taipei", 2026, 6, 13, 9))
    # When the renewal date moves, the run moves with it
    lc.identify("mei", {"renewal_date": "2026-06-25"})
    run_due(engine)
    assert due_of(lc, "mei", "renewal") == local("Asia/Taipei", 2026, 6, 18, 9)
    clock.set(local("Asia/Taipei", 2026, 6, 18, 9))
    run_due(engine)
    assert sent(provider) == [("mei", "renewal-reminder")]
    # and the SMS waits until noon the day before
    assert due_of(lc, "mei", "renewal") == local("Asia/Taipei", 2026, 6, 24, 12)
    clock.set(local("Asia/Taipei", 2026, 6, 24, 12))
    run_due(engine)
    assert sent(provider) == [("mei", "renewal-reminder"), ("mei", "renewal-tomorrow")]
    # and a one-off date does not start a second run
    clock.advance(30 * DAY)
    run_due(engine)
    assert lc.contact("mei").enrollments["renewal"].step is None


BIRTHDAY = VARS + """\
journey: birthday
timezone: UTC
trigger: {date: contact.birthday, yearly: true, time: "09:00"}
steps:
  - coupon: {name: birthday, amount: 10, currency: EUR, expires: 30d}
  - send: email
    template: birthday
"""


def test_a_yearly_date_trigger_greets_every_year_and_feb_29_on_feb_28(project, lc, start, run_due, clock, provider):
    only(project, birthday=BIRTHDAY)
    engine = start()
    clock.set(utc(2027, 2, 1))
    person(lc, "leap", timezone="Europe/Warsaw", birthday="1992-02-29")
    run_due(engine)
    assert due_of(lc, "leap", "birthday") == local("Europe/Warsaw", 2027, 2, 28, 9)
    clock.set(local("Europe/Warsaw", 2027, 2, 28, 9))
    run_due(engine)
    first = lc.coupons("leap")["birthday"].code
    assert sent(provider) == [("leap", "birthday")]
    # Then the run is armed again, for the next birthday (a leap year: 29 February)
    assert due_of(lc, "leap", "birthday") == local("Europe/Warsaw", 2028, 2, 29, 9)
    clock.set(local("Europe/Warsaw", 2028, 2, 29, 9))
    run_due(engine)
    assert sent(provider) == [("leap", "birthday")] * 2
    assert lc.coupons("leap")["birthday"].code != first     # a new coupon for a new run


def test_a_date_trigger_honours_its_where_filter_and_re_entry(project, lc, start, run_due, clock, provider):
    # Given a birthday greeting for members only, at most once, and a renewal notice at most every 400 days
    only(project, birthday=BIRTHDAY.replace('time: "09:00"}', 'time: "09:00", where: contact.member == true}')
         + "re_entry: once\n",
         renewal=DATES.replace("steps:\n", "re_entry: {after: 400d}\nsteps:\n", 1))
    engine = start()
    clock.set(utc(2027, 3, 1))
    person(lc, "member", birthday="1990-03-10", member=True)
    person(lc, "guest", birthday="1990-03-10", member=False)
    person(lc, "renews", renewal_date="2027-03-20")
    run_due(engine)
    # Then only the member is armed for the birthday
    assert due_of(lc, "member", "birthday") == utc(2027, 3, 10, 9)
    assert lc.contact("guest").enrollments.get("birthday") is None or due_of(lc, "guest", "birthday") is None
    # and a member who cancels before the day gets nothing: `where` is checked again at the moment
    lc.identify("member", {"member": False})
    clock.set(utc(2027, 3, 10, 9))
    run_due(engine)
    assert sent(provider) == []
    lc.identify("member", {"member": True})
    run_due(engine)
    assert sent(provider) == [("member", "birthday")]     # less than a day late: still greeted
    clock.set(utc(2027, 3, 13, 9))
    run_due(engine)
    assert sent(provider, "renews") == [("renews", "renewal-reminder")]
    # When a year passes, once means once; and a renewal date moved 200 days on is inside the cooldown
    lc.identify("renews", {"renewal_date": "2027-10-06"})
    clock.set(utc(2028, 3, 11, 12))           # daytime: its pending SMS is not held by quiet hours
    run_due(engine)
    assert due_of(lc, "member", "birthday") is None
    assert [s for s in sent(provider) if s[1] == "birthday"] == [("member", "birthday")]
    assert due_of(lc, "renews", "renewal") is None
    # but one moved past the cooldown arms it again
    lc.identify("renews", {"renewal_date": "2028-06-01"})
    run_due(engine)
    assert due_of(lc, "renews", "renewal") == utc(2028, 5, 25, 9)


# -- waiting for an event ---------------------------------------------------------------------------

CART = VARS + """\
journey: cart
trigger:
  event: checkout_started
  where: event.properties.total > 0
steps:
  - wait_for: {event: purchase, timeout: 1h}
    on_event:
      - send: email
        template: thank-you
    on_timeout:
      - send: email
        template: cart-reminder
  - send: email
    template: survey
"""


def test_wait_for_takes_the_event_path_or_the_timeout_path(project, lc, start, run_due, clock, provider):
    only(project, cart=CART)
    engine = start()
    t0 = clock.now()
    for contact in ("buyer", "browser", "free"):
        person(lc, contact)
    # Given three checkouts (one of an empty cart: the filter keeps it out)
    lc.track("buyer", "checkout_started", {"total": 120})
    lc.track("browser", "checkout_started", {"total": 80})
    lc.track("free", "checkout_started", {"total": 0})
    run_due(engine)
    assert due_of(lc, "buyer", "cart") == t0 + HOUR
    assert "cart" not in lc.contact("free").enrollments
    # When the buyer buys half an hour later
    clock.advance(HOUR / 2)
    lc.track("buyer", "purchase", {"item": "boots"})
    run_due(engine)
    # Then the buyer takes the event path at once, then the steps after the wait
    assert sent(provider, "buyer") == [("buyer", "thank-you"), ("buyer", "survey")]
    # and when the hour is up, the browser takes the timeout path
    clock.advance(HOUR / 2)
    run_due(engine)
    assert sent(provider, "browser") == [("browser", "cart-reminder"), ("browser", "survey")]
    clock.advance(DAY)
    run_due(engine)
    assert len(provider.calls) == 4
    # and a purchase after the run ended changes nothing
    lc.track("browser", "purchase")
    run_due(engine)
    assert len(provider.calls) == 4


def test_old_events_do_not_trigger_and_neither_does_a_backfill(project, lc, start, run_due, clock, provider, runtime):
    only(project, cart=CART)
    engine = start()
    person(lc, "old")
    person(lc, "history")
    # An event two days old (imported history) is older than the trigger's max_age (1 day)
    lc.track("old", "checkout_started", {"total": 50}, at=clock.now() - 2 * DAY)
    # and a backfill records events without any journey reacting to them
    from automation.events import Event

    lc.store.track_many([Event("history", "checkout_started", clock.now(), {"total": 50})], triggers=False)
    run_due(engine)
    assert "cart" not in lc.contact("old").enrollments
    assert "cart" not in lc.contact("history").enrollments
    assert lc.contact("history").events["checkout_started"].count == 1


# -- A/B splits, holdout and goals ------------------------------------------------------------------

SPLIT = VARS + """\
journey: offer
trigger: {event: lapsed}
goal: {event: purchase, within: 14d}
steps:
  - split:
      name: coupon-test
      variants:
        - name: twenty
          weight: 50
          steps:
            - send: email
              template: welcome
        - name: ten
          weight: 30
          steps:
            - send: email
              template: demo-offer
        - name: holdout
          weight: 20
          holdout: true
"""


def test_split_weights_hold_over_many_contacts_and_the_holdout_is_counted(project, lc, start, run_due, clock,
                                                                         provider, runtime):
    only(project, offer=SPLIT)
    engine = start()
    ids = [f"c{n:04d}" for n in range(2000)]
    lc.store.identify_many((cid, {"email": f"{cid}@example.com", "consent.email": True}) for cid in ids)
    for cid in ids:
        lc.track(cid, "lapsed")
    run_due(engine)
    counts = stats(runtime)
    entered = {v: counts.get(f"split:offer:coupon-test:{v}:entered", 0) for v in ("twenty", "ten", "holdout")}
    # Then the variants get 50/30/20 of 2,000 contacts, within 3 points (assignment is a fixed hash of the
    # contact, so this run is reproducible; 3 points is more than 4 standard deviations here)
    assert sum(entered.values()) == 2000
    for variant, weight in (("twenty", 0.5), ("ten", 0.3), ("holdout", 0.2)):
        assert abs(entered[variant] / 2000 - weight) < 0.03, entered
    # and the holdout received nothing, while the others got their variant's message
    by_step = Counter(step for _, step in sent(provider))
    assert by_step == {"welcome": entered["twenty"], "demo-offer": entered["ten"]}
    # When every fourth contact buys within the goal's window, holdout included
    buyers = ids[::4]
    clock.advance(3 * DAY)
    for cid in buyers:
        lc.track(cid, "purchase")
    run_due(engine)
    counts = stats(runtime)
    variant_of = {cid: lc.contact(cid).enrollments["offer"].variants.split("=")[1] for cid in buyers}
    expected = Counter(variant_of.values())
    # Then each variant's conversions are counted, the holdout's too, so lift can be measured
    for variant in ("twenty", "ten", "holdout"):
        assert counts.get(f"split:offer:coupon-test:{variant}:converted", 0) == expected[variant]
    assert counts["goal:offer:run:entered"] == 2000
    assert counts["goal:offer:run:converted"] == len(buyers)
    # and a second purchase is not a second conversion
    lc.track(buyers[0], "purchase")
    run_due(engine)
    assert stats(runtime)["goal:offer:run:converted"] == len(buyers)


def test_the_same_contact_always_gets_the_same_variant(project, lc, start, run_due, clock, provider):
    only(project, offer=SPLIT.replace("trigger: {event: lapsed}", "trigger: {event: lapsed}\nre_entry: every_time"))
    engine = start()
    person(lc, "ana")
    seen = set()
    for _ in range(3):
        lc.track("ana", "lapsed")
        run_due(engine)
        seen.add(lc.contact("ana").enrollments["offer"].variants)
        clock.advance(DAY)
    assert len(seen) == 1


GOALS = VARS + """\
journey: nurture
trigger: {event: signup}
goal: {event: purchase, where: "event.properties.value >= 50", within: 10d}
exit_on:
  - event: unsubscribed
  - when: contact.do_not_contact
steps:
  - send: email
    template: welcome
  - wait: 2d
    send: email
    template: demo-offer
  - wait: 2d
    send: email
    template: trial-offer
"""


def test_goals_end_the_run_and_count_exit_rules_end_it_without(project, lc, start, run_due, clock, provider,
                                                               runtime):
    only(project, nurture=GOALS)
    engine = start()
    for contact in ("small", "big", "quits", "blocked"):
        person(lc, contact)
        lc.track(contact, "signup")
    run_due(engine)
    clock.advance(DAY)
    lc.track("small", "purchase", {"value": 10})     # under the goal's filter
    lc.track("big", "purchase", {"value": 90})
    lc.track("quits", "unsubscribed")
    lc.identify("blocked", {"do_not_contact": True})
    run_due(engine)
    clock.advance(10 * DAY)
    run_due(engine)
    # Then only "small" got the whole series; the goal and the exit rules ended the others' runs
    assert Counter(c for c, _ in sent(provider)) == {"small": 3, "big": 1, "quits": 1, "blocked": 1}
    counts = stats(runtime)
    assert counts["goal:nurture:run:entered"] == 4 and counts["goal:nurture:run:converted"] == 1
    assert counts["end:nurture:goal"] == 1 and counts["end:nurture:exit"] == 2
    assert counts["end:nurture:finished"] == 1


STAGE_GOAL = VARS + """\
journey: stages
stages:
  - name: lapsed
    when: events.purchase.count > 0 and days_since('purchase') >= 30
    goal: {event: email_clicked, within: 7d}
    steps:
      - send: email
        template: welcome
      - wait: 3d
        send: email
        template: demo-offer
  - name: customer
    when: events.purchase.count > 0
"""


def test_a_stage_goal_stops_the_stages_steps_but_the_contact_stays_in_the_stage(project, lc, start, run_due,
                                                                                clock, provider, runtime):
    only(project, stages=STAGE_GOAL)
    engine = start()
    person(lc, "kim")
    lc.track("kim", "purchase", at=clock.now() - 40 * DAY)
    run_due(engine)
    lc.track("kim", "email_clicked")
    run_due(engine)
    clock.advance(5 * DAY)
    run_due(engine)
    assert sent(provider) == [("kim", "welcome")]
    enrollment = lc.contact("kim").enrollments["stages"]
    assert (enrollment.stage, enrollment.step) == ("lapsed", None)
    assert stats(runtime)["goal:stages:lapsed:converted"] == 1


# -- branches and value-based paths -------------------------------------------------------------------

BRANCH = VARS + """\
journey: winback
trigger: {event: lapsed}
steps:
  - branch:
      - when: contact.lifetime_value >= 500
        steps:
          - coupon: {name: vip, percent: 30}
          - send: email
            template: winback-vip
      - when: contact.lifetime_value >= 100
        steps:
          - coupon: {name: regular, percent: 20}
          - send: email
            template: winback-coupon
      - steps:
          - send: email
            template: we-miss-you
  - track: winback_sent
"""


def test_a_branch_takes_the_first_true_path_value_based_offers(project, lc, start, run_due, provider):
    only(project, winback=BRANCH)
    engine = start()
    for contact, value in (("vip", 800), ("regular", 150), ("small", 20), ("unknown", None)):
        person(lc, contact, lifetime_value=value)
        lc.track(contact, "lapsed")
    run_due(engine)
    assert sorted(sent(provider)) == [("regular", "winback-coupon"), ("small", "we-miss-you"),
                                      ("unknown", "we-miss-you"), ("vip", "winback-vip")]
    # Then the generous coupon went only to the high-value customer, and every path went on to the track
    assert lc.coupons("vip")["vip"].percent == 30 and "vip" not in lc.coupons("regular")
    assert lc.coupons("regular")["regular"].percent == 20 and lc.coupons("small") == {}
    assert all(lc.contact(c).events["winback_sent"].count == 1 for c in ("vip", "regular", "small", "unknown"))
    vip_email = next(d for d in provider.calls if d.contact_id == "vip")
    assert lc.coupons("vip")["vip"].code in vip_email.parts["html"]


# -- re-entry ---------------------------------------------------------------------------------------

def reentry(policy: str) -> str:
    return VARS + f"""\
journey: ping-{policy.split(':')[0].strip('{ ')}
trigger: {{event: ping}}
re_entry: {policy}
steps:
  - send: email
    template: welcome
"""


def test_re_entry_once_after_a_cooldown_and_every_time(project, lc, start, run_due, clock, provider):
    only(project, once=reentry("once"), after=reentry("{after: 2d}"), every=reentry("every_time"))
    engine = start()
    person(lc, "pat")
    # When pat pings on day 0, day 1 and day 3
    for day in (0, 1, 3):
        clock.set(utc(2026, 1, 1) + day * DAY)
        lc.track("pat", "ping")
        run_due(engine)
    runs = Counter(d.journey for d in provider.calls)
    # Then "once" ran once, "after 2d" on days 0 and 3, "every_time" every time
    assert runs == {"ping-once": 1, "ping-after": 2, "ping-every_time": 3}


def test_a_trigger_does_not_restart_a_run_in_progress(project, lc, start, run_due, clock, provider):
    only(project, cart=CART)
    engine = start()
    person(lc, "sam")
    lc.track("sam", "checkout_started", {"total": 10})
    run_due(engine)
    clock.advance(HOUR / 4)
    lc.track("sam", "checkout_started", {"total": 20})   # still waiting in the first run
    run_due(engine)
    assert lc.contact("sam").enrollments["cart"].occurrence == 1


# -- scores -----------------------------------------------------------------------------------------

SCORES = VARS + """\
journey: hot
scores:
  lead:
    half_life: 1d
    rules:
      - event: page_view
        points: 30
      - event: page_view
        where: event.properties.page == '/pricing'
        points: 20
trigger:
  when: scores.lead >= 50
steps:
  - send: email
    template: demo-offer
"""


def test_scores_add_points_decay_by_half_life_and_cross_thresholds_on_time(project, lc, start, run_due, clock,
                                                                          provider, runtime):
    only(project, hot=SCORES)
    engine = start()
    t0 = clock.now()
    person(lc, "lee")
    # When lee views a page (30) and the pricing page (30 + 20)
    lc.track("lee", "page_view", {"page": "/blog"})
    lc.track("lee", "page_view", {"page": "/pricing"})
    run_due(engine)
    # Then the score is 80 and the hot-lead journey started
    assert lc.contact("lee").raw["s:lead"] == f"80,{int(t0)}"
    assert sent(provider) == [("lee", "demo-offer")]
    # and the engine knows when 80 fades below 50: t0 + 1d * log2(80/50), and checks again then
    crossing = t0 + DAY * math.log2(80 / 50)
    recheck = TimerStore(runtime).due_time("lee", recheck_member("lee"))
    assert recheck == pytest.approx(crossing, abs=1)
    assert lc.contact("lee").enrollments["hot"].condition is True
    clock.set(recheck)
    run_due(engine)
    assert lc.contact("lee").enrollments["hot"].condition is False
    # When a day later (score 80 faded to ~40) lee views one page: ~40 * 0.5... + 30 crosses 50 again
    clock.set(t0 + DAY)
    lc.track("lee", "page_view", {"page": "/blog"})
    run_due(engine)
    value, at = lc.contact("lee").raw["s:lead"].split(",")
    assert float(value) == pytest.approx(80 / 2 + 30, abs=0.01) and int(at) == int(t0 + DAY)
    assert sent(provider) == [("lee", "demo-offer")] * 2


# -- triggers on stages, attributes, schedules --------------------------------------------------------

TIERS = """\
journey: tiers
stages:
  - name: vip
    when: events.purchase.count >= 2
  - name: regular
"""
WELCOME_VIP = VARS + """\
journey: welcome-vip
trigger: {enters: vip}
steps:
  - send: email
    template: loyalty-welcome
"""
LOST_VIP = VARS + """\
journey: lost-vip
trigger: {leaves: vip, journey: tiers}
steps:
  - track: vip_lost
"""
PLAN = VARS + """\
journey: upgrade
trigger:
  attribute: plan
  where: change.new == 'pro' and change.old != 'pro'
steps:
  - send: email
    template: b2b-onboarding
"""


def test_entering_and_leaving_a_stage_and_changing_an_attribute_start_runs(project, lc, start, run_due, clock,
                                                                            provider):
    only(project, tiers=TIERS, welcome=WELCOME_VIP, lost=LOST_VIP, upgrade=PLAN)
    engine = start()
    person(lc, "ada", plan="free")
    run_due(engine)
    lc.track("ada", "purchase")
    lc.track("ada", "purchase")
    run_due(engine)
    assert sent(provider) == [("ada", "loyalty-welcome")]
    lc.identify("ada", {"plan": "pro"})
    run_due(engine)
    lc.identify("ada", {"plan": "pro", "first_name": "Ada"})   # the same value again: no change
    run_due(engine)
    assert sent(provider) == [("ada", "loyalty-welcome"), ("ada", "b2b-onboarding")]
    assert lc.contact("ada").events["vip_lost"].count == 0


BROADCAST = VARS + """\
journey: monthly
timezone: Asia/Tokyo
trigger:
  schedule: "0 10 1 * *"
  where: contact.member
steps:
  - send: email
    template: loyalty-points
"""


def test_a_scheduled_broadcast_reaches_every_matching_contact_once_per_occurrence(project, lc, start, run_due,
                                                                                 clock, provider, runtime,
                                                                                 monkeypatch):
    import automation.engine.broadcasts

    monkeypatch.setattr(automation.engine.broadcasts, "SCAN_COUNT", 5)    # many small chunks
    only(project, monthly=BROADCAST)
    clock.set(utc(2026, 1, 20))
    engine = start()
    for n in range(30):
        person(lc, f"m{n:02d}", member=n % 3 != 0, loyalty_points=100 + n)
    run_due(engine)
    # Then the broadcast is due at 10:00 Tokyo time on 1 February
    first = local("Asia/Tokyo", 2026, 2, 1, 10)
    assert TimerStore(runtime).due_time("monthly", "b|monthly") == first
    clock.set(first)
    run_due(engine)
    members = {f"m{n:02d}" for n in range(30) if n % 3 != 0}
    assert Counter(c for c, _ in sent(provider)) == {m: 1 for m in members}
    # and the next one is on 1 March
    assert TimerStore(runtime).due_time("monthly", "b|monthly") == local("Asia/Tokyo", 2026, 3, 1, 10)
    clock.set(local("Asia/Tokyo", 2026, 3, 1, 10))
    run_due(engine)
    assert Counter(c for c, _ in sent(provider)) == {m: 2 for m in members}
    assert stats(runtime)["broadcast:monthly:runs"] == 2


def test_a_broadcast_batch_handed_out_twice_reaches_nobody_twice(project, lc, start, run_due, clock, provider,
                                                                runtime):
    only(project, monthly=BROADCAST)
    clock.set(utc(2026, 1, 20))
    engine = start()
    person(lc, "ann", member=True, loyalty_points=5)
    run_due(engine)
    first = local("Asia/Tokyo", 2026, 2, 1, 10)
    clock.set(first)
    # When the broadcast item reaches the contact twice (a chunk redelivered after a worker died)
    for _ in range(2):
        runtime.redis.rpush(runtime.keys.inbox("ann"), f'b["monthly","{first!r}"]')
    lc.store.request_reevaluation(["ann"])
    run_due(engine)
    assert sent(provider) == [("ann", "loyalty-points")]


# -- what runs do on the way: coupons, events, attributes --------------------------------------------

def test_track_and_set_steps_start_other_journeys(project, lc, start, run_due, provider):
    qualify = VARS + """\
journey: qualify
trigger: {event: form_submitted}
steps:
  - set: {lead_status: hot}
  - track: {event: lead_qualified, properties: {source: form}}
"""
    sales = VARS + """\
journey: sales
trigger: {event: lead_qualified, where: "event.properties.source == 'form'"}
steps:
  - send: email
    template: demo-offer
"""
    status = VARS + """\
journey: status
trigger: {attribute: lead_status}
steps:
  - send: email
    template: b2b-intro
"""
    only(project, qualify=qualify, sales=sales, status=status)
    engine = start()
    person(lc, "liz")
    lc.track("liz", "form_submitted")
    for _ in range(3):
        run_due(engine)
    assert lc.contact("liz").attributes["lead_status"] == "hot"
    assert sorted(sent(provider)) == [("liz", "b2b-intro"), ("liz", "demo-offer")]


def test_coupons_are_unique_per_contact_once_per_run_and_redeemed_by_a_purchase(project, lc, start, run_due,
                                                                               provider, runtime):
    only(project, winback=BRANCH)
    engine = start()
    ids = [f"v{n:03d}" for n in range(200)]
    for cid in ids:
        person(lc, cid, lifetime_value=900)
        lc.track(cid, "lapsed")
    run_due(engine)
    codes = {cid: lc.coupons(cid)["vip"].code for cid in ids}
    assert len(set(codes.values())) == 200
    # Each email shows its own contact's code
    for delivery in provider.calls:
        assert codes[delivery.contact_id] in delivery.parts["html"]
    # A redelivered step (the same run) does not issue another code
    engine.store.request_reevaluation(ids)
    run_due(engine)
    assert {cid: lc.coupons(cid)["vip"].code for cid in ids} == codes
    # A purchase carrying the code redeems it, once; so does a coupon_redeemed event from the shop
    lc.track("v007", "purchase", {"coupon": codes["v007"].lower()})
    again = lc.redeem(codes["v007"], "v007")
    assert again.status == "already_redeemed"
    lc.track("v008", "coupon_redeemed", {"code": codes["v008"]})
    counts = stats(runtime)
    assert counts["coupon:vip:issued"] == 200 and counts["coupon:vip:redeemed"] == 2
    assert counts["coupon:vip:already_redeemed"] == 1
