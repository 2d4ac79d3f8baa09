"""One-off broadcasts (`lifecycle broadcast`): now, at a time, at a local time in each contact's zone,
cancelled; and the dry run, whose counts must be what the provider then receives.

Runs go through the engine in this process on a manual clock (tests/test_language.py does the
same for scheduled broadcasts); messages are counted at the recording provider.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry
from automation.engine.broadcasts import CANCELLED, SENT, cancel_one_off, one_offs, parse_when, schedule_one_off
from automation.engine.dryrun import dry_run
from automation.engine.forecast import forecast
from automation.engine.runs import START
from automation.errors import InputError
from automation.store import fields
from automation.store.suppression import Suppressions
from tests.conftest import lifecycle_command as lifecycle, DAY, write
from tests.providers.recording import Provider

HOUR = 3600.0
VARS = 'vars: {brand: Acme, shop_url: "https://acme.test"}\n'
PROMO = VARS + """\
journey: promo
trigger:
  broadcast: true
  where: contact.member == true
re_entry: every_time
steps:
  - branch:
      - when: contact.prefers_sms == true
        steps:
          - send: sms
            template: sms-welcome
      - steps:
          - send: email
            template: loyalty-points
"""
WORKSPACE = """\
timezone: UTC
quiet_hours:
  sms: {from: "21:00", to: "08:00"}
frequency_caps:
  - {channel: email, max: 1, per: 1d}
"""


@pytest.fixture(autouse=True)
def journeys(project) -> None:
    for path in (project / "journeys").glob("[!_]*.yaml"):
        path.unlink()
    write(project / "journeys" / "promo.yaml", PROMO)
    write(project / "journeys" / "_workspace.yaml", WORKSPACE)


@pytest.fixture
def engine(make_engine, settings, provider):
    return make_engine(ChannelRegistry(settings, instances={c: provider for c in ("email", "sms", "push")}))


def member(lc: Lifecycle, contact_id: str, **attributes) -> None:
    lc.identify(contact_id, {"email": f"{contact_id}@example.com", "phone": "+14155550100", "member": True,
                             "loyalty_points": 120, "consent": {"email": True, "sms": True}, **attributes})


def at_local(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()


def received(provider: Provider) -> Counter:
    """Messages the provider got, per (channel, locale)."""
    return Counter((d.channel, d.locale) for d in provider.calls)


def test_a_broadcast_now_reaches_every_matching_contact_once_and_again_when_sent_again(lc, engine, run_due,
                                                                                       provider, runtime):
    for n in range(12):
        member(lc, f"m{n}", member=n % 4 != 0)
    run_due(engine)
    first = schedule_one_off(runtime, engine.journeys.get("promo"))
    run_due(engine)
    members = {f"m{n}" for n in range(12) if n % 4 != 0}
    assert Counter(d.contact_id for d in provider.calls) == {m: 1 for m in members}
    assert [(b.id, b.state, b.reached) for b in one_offs(runtime)] == [(first.id, SENT, 12)]
    # A second broadcast of the same journey is a new occurrence: everyone matching gets it again
    # (the frequency cap of 1 email a day defers it to tomorrow)
    schedule_one_off(runtime, engine.journeys.get("promo"))
    runtime.clock.advance(DAY + 1)
    run_due(engine)
    assert Counter(d.contact_id for d in provider.calls) == {m: 2 for m in members}


def test_a_broadcast_at_a_later_time_waits_for_it(lc, engine, run_due, provider, runtime):
    member(lc, "ann")
    run_due(engine)
    at, local, day = parse_when("2026-01-03T09:30", "Europe/Warsaw", None)
    assert at == at_local("Europe/Warsaw", 2026, 1, 3, 9, 30) and local is None and day is None
    schedule_one_off(runtime, engine.journeys.get("promo"), at)
    runtime.clock.set(at - 1)
    run_due(engine)
    assert provider.calls == []
    runtime.clock.set(at)
    run_due(engine)
    assert [(d.contact_id, d.at) for d in provider.calls] == [("ann", at)]


def test_a_local_time_broadcast_goes_at_ten_in_each_contacts_own_zone(lc, engine, run_due, provider, runtime):
    zones = {"kiri": "Pacific/Kiritimati", "tokyo": "Asia/Tokyo", "warsaw": "Europe/Warsaw",
             "ny": "America/New_York"}
    for contact_id, zone in zones.items():
        member(lc, contact_id, timezone=zone)
    member(lc, "nozone")                                  # the journey's zone (the workspace's: UTC)
    run_due(engine)
    broadcast = schedule_one_off(runtime, engine.journeys.get("promo"), local=time(10, 0), day=date(2026, 1, 2))
    # It starts reaching contacts when 10:00 on 2 January first comes anywhere (UTC+14)
    assert broadcast.at == at_local("Pacific/Kiritimati", 2026, 1, 2, 10)
    runtime.clock.set(broadcast.at)
    run_due(engine)
    assert [d.contact_id for d in provider.calls] == ["kiri"]
    # Everyone else waits, armed for 10:00 on their own clock
    expected = {contact_id: at_local(zone, 2026, 1, 2, 10) for contact_id, zone in zones.items()}
    expected["nozone"] = at_local("UTC", 2026, 1, 2, 10)
    for contact_id in ("tokyo", "warsaw", "ny", "nozone"):
        enrollment = lc.contact(contact_id).enrollments["promo"]
        assert (enrollment.step, enrollment.due) == (START, expected[contact_id])
    for contact_id in ("tokyo", "warsaw", "nozone", "ny"):            # in the order their 10:00 comes
        runtime.clock.set(expected[contact_id])
        run_due(engine)
        assert provider.calls[-1].contact_id == contact_id and provider.calls[-1].at == expected[contact_id]
    assert len(provider.calls) == 5


def test_a_contact_reached_after_ten_local_gets_it_at_the_next_ten(lc, engine, run_due, provider, runtime):
    member(lc, "late", timezone="Europe/Warsaw")
    run_due(engine)
    runtime.clock.set(at_local("Europe/Warsaw", 2026, 1, 1, 13))     # 13:00 in Warsaw already
    schedule_one_off(runtime, engine.journeys.get("promo"), local=time(10, 0))
    run_due(engine)
    assert lc.contact("late").enrollments["promo"].due == at_local("Europe/Warsaw", 2026, 1, 2, 10)


def test_an_armed_contact_who_no_longer_matches_at_ten_gets_nothing(lc, engine, run_due, provider, runtime):
    member(lc, "ny", timezone="America/New_York")
    run_due(engine)
    schedule_one_off(runtime, engine.journeys.get("promo"), local=time(10, 0), day=date(2026, 1, 2))
    runtime.clock.set(at_local("Pacific/Kiritimati", 2026, 1, 2, 10))
    run_due(engine)
    assert lc.contact("ny").enrollments["promo"].step == START
    lc.identify("ny", {"member": False})                        # checked again when the time comes
    run_due(engine)
    runtime.clock.set(at_local("America/New_York", 2026, 1, 2, 10))
    run_due(engine)
    assert provider.calls == [] and lc.contact("ny").enrollments["promo"].step is None


def test_cancelling_a_local_time_broadcast_stops_the_runs_it_armed(lc, engine, run_due, provider, runtime):
    member(lc, "tokyo", timezone="Asia/Tokyo")
    member(lc, "ny", timezone="America/New_York")
    run_due(engine)
    broadcast = schedule_one_off(runtime, engine.journeys.get("promo"), local=time(10, 0), day=date(2026, 1, 2))
    runtime.clock.set(at_local("Asia/Tokyo", 2026, 1, 2, 10))
    run_due(engine)
    assert [d.contact_id for d in provider.calls] == ["tokyo"]
    assert cancel_one_off(runtime, broadcast.id).state == CANCELLED
    # The forecast no longer counts ny's armed run (it did, though the workers drop it)
    ahead = forecast(engine, days=2, start=runtime.clock.now(), processes=1)[""]
    assert sum(ahead.sends.values()) == 0, ahead.sends
    runtime.clock.set(at_local("America/New_York", 2026, 1, 2, 10))
    run_due(engine)
    assert [d.contact_id for d in provider.calls] == ["tokyo"]
    assert lc.contact("ny").enrollments["promo"].step is None
    with pytest.raises(InputError, match="cancelled already"):
        cancel_one_off(runtime, broadcast.id)


def test_a_cancelled_broadcast_reaches_nobody(lc, engine, run_due, provider, runtime):
    member(lc, "ann")
    run_due(engine)
    broadcast = schedule_one_off(runtime, engine.journeys.get("promo"), runtime.clock.now() + HOUR)
    cancel_one_off(runtime, broadcast.id)
    runtime.clock.advance(2 * HOUR)
    run_due(engine)
    assert provider.calls == [] and one_offs(runtime)[0].reached == 0


def test_a_cancel_that_lands_while_a_chunk_is_prepared_is_not_undone(lc, engine, run_due, provider, runtime):
    member(lc, "ann")
    run_due(engine)
    broadcast = schedule_one_off(runtime, engine.journeys.get("promo"), runtime.clock.now())
    # The operator's cancel lands while a worker is scanning the broadcast's first chunk of contacts
    scan = runtime.redis.scan

    def scan_then_cancel(*args, **kwargs):
        found = scan(*args, **kwargs)
        runtime.redis.scan = scan
        cancel_one_off(runtime, broadcast.id)
        return found

    runtime.redis.scan = scan_then_cancel
    run_due(engine)
    # The chunk did not happen (it once wrote "sending" over the cancel and went on)
    assert runtime.redis.scan is scan, "the chunk was not scanned"
    assert provider.calls == [] and [b.state for b in one_offs(runtime)] == [CANCELLED]


def test_the_dry_run_counts_what_the_provider_then_gets(lc, engine, run_due, provider, runtime):
    now = runtime.clock.now()                                    # 12:00 UTC
    for n in range(4):
        member(lc, f"en{n}")
    member(lc, "pl1", locale="pl-PL")
    member(lc, "pl2", locale="pl")
    member(lc, "hk", locale="zh-HK")                               # Traditional Chinese: the zh-TW templates
    member(lc, "noconsent", consent={"email": False})
    member(lc, "listed")
    Suppressions(runtime).add("email", "listed@example.com", "imported")
    member(lc, "dnc", do_not_contact=True)
    member(lc, "capped")
    member(lc, "tokyo", prefers_sms=True, timezone="Asia/Tokyo")   # 21:00 there: quiet hours
    member(lc, "saopaulo", prefers_sms=True, timezone="America/Sao_Paulo")   # 09:00 there
    member(lc, "outsider", member=False)
    run_due(engine)
    # an email sent an hour ago: the cap of one a day defers this one
    runtime.redis.hset(runtime.keys.contact("capped"), fields.frequency("email"), str(int(now - HOUR)))
    journey = engine.journeys.get("promo")

    plan = dry_run(engine, journey)

    assert plan.contacts == 14 and plan.taking_part == 13 and plan.not_taking_part == {"where": 1}
    assert plan.reaching() == {
        ("email", "en"): Counter({"sent": 4, "deferred": 1, "not sent": 3}),
        ("email", "pl"): Counter({"sent": 2}),
        ("email", "zh-TW"): Counter({"sent": 1}),
        ("sms", "en"): Counter({"sent": 1, "held": 1}),
    }
    not_sent = Counter(reason for (_, _, outcome, reason), n in plan.messages.items() if outcome == "not sent"
                       for _ in range(n))
    assert not_sent == {"no_consent": 1, "suppressed": 1, "do_not_contact": 1}
    assert runtime.redis.exists(runtime.keys.broadcast("promo", "dry-run")) == 0   # nothing written
    assert provider.calls == []

    schedule_one_off(runtime, journey)
    run_due(engine)
    at_once = Counter({key: n["sent"] for key, n in plan.reaching().items() if n["sent"]})
    assert received(provider) == at_once
    for _ in range(26):                     # a day goes by, hour by hour, with workers at work
        runtime.clock.advance(HOUR)
        run_due(engine)
    eventually = Counter({key: n["sent"] + n["held"] + n["deferred"] for key, n in plan.reaching().items()})
    assert received(provider) == eventually
    assert not {"noconsent", "listed", "dnc", "outsider"} & {d.contact_id for d in provider.calls}


def test_the_dry_run_of_a_local_time_broadcast_counts_quiet_hours_at_that_time(lc, engine, run_due, provider,
                                                                                runtime):
    # At 22:00 local the SMS would be held; at 10:00 local it is not
    member(lc, "tokyo", prefers_sms=True, timezone="Asia/Tokyo")
    run_due(engine)
    journey = engine.journeys.get("promo")
    assert dry_run(engine, journey).reaching() == {("sms", "en"): Counter({"held": 1})}
    assert dry_run(engine, journey, local=time(10, 0)).reaching() == {("sms", "en"): Counter({"sent": 1})}


def test_times_are_read_or_refused_with_a_reason():
    assert parse_when(None, "UTC", None) == (None, None, None)
    assert parse_when("now", "UTC", "10:00") == (None, time(10, 0), None)
    assert parse_when("2026-12-24", "UTC", "10:00") == (None, time(10, 0), date(2026, 12, 24))
    assert parse_when("2026-12-24T10:00+01:00", "Asia/Tokyo", None)[0] == \
        datetime(2026, 12, 24, 9, tzinfo=timezone.utc).timestamp()
    for at, local, reason in (("2026-12-24", None, "give a time of day"), ("tomorrow", None, "ISO time"),
                              ("2026-12-24T10:00", "10:00", "--at is the day"), (None, "25:00", "--local")):
        with pytest.raises(InputError, match=reason):
            parse_when(at, "UTC", local)


def test_only_broadcast_journeys_can_be_broadcast(project, runtime, make_engine):
    write(project / "journeys" / "welcome.yaml", VARS + "journey: welcome\ntrigger: {event: signup}\n"
          "steps:\n  - send: email\n    template: loyalty-points\n")
    engine = make_engine()
    with pytest.raises(InputError, match="not a broadcast"):
        schedule_one_off(runtime, engine.journeys.get("welcome"))


def test_the_command_dry_runs_schedules_lists_and_cancels(lc, settings, runtime):
    member(lc, "ann")
    member(lc, "bob", consent={"email": False})
    dry = lifecycle(settings, "broadcast", "promo", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert (report["contacts"], report["taking_part"]) == (2, 2)
    assert {(m["channel"], m["outcome"], m["reason"], m["contacts"]) for m in report["messages"]} == \
        {("email", "sent", None, 1), ("email", "not sent", "no_consent", 1)}
    assert "email    en" in lifecycle(settings, "broadcast", "promo", "--dry-run").stdout
    scheduled = lifecycle(settings, "broadcast", "promo", "--at", "2030-01-01T10:00Z")
    assert scheduled.returncode == 0 and "starts reaching contacts at 2030-01-01 10:00 UTC" in scheduled.stdout
    listed = json.loads(lifecycle(settings, "broadcast", "--list", "--json").stdout)
    assert [(b["journey"], b["state"], b["at"]) for b in listed] == [("promo", "scheduled", "2030-01-01 10:00 UTC")]
    cancelled = lifecycle(settings, "broadcast", "--cancel", listed[0]["id"])
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    refused = lifecycle(settings, "broadcast", "nope")
    assert refused.returncode == 2 and "no journey 'nope' is served" in refused.stderr
