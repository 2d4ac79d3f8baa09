"""`lifecycle simulate`: the production engine on a manual clock in a sandbox, for one contact or a few.

The times asserted are what journeys/customer-lifecycle.yaml implies for a purchase on
Thursday 1 January 2026 at 12:00 UTC by a contact in London: `new` thanks at once and checks
in after `wait: 7d` at the next 10:00 (Friday 9 January); `lapsed` (lapse_days: 90) starts on
1 April at the same instant (13:00 BST), with the 20% coupon email, and `wait: 3d` puts the SMS
on 4 April at 13:00 BST, outside the SMS quiet hours (21:00-08:00).
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone

import pytest
import redis

from automation.api import Lifecycle
from automation.ops.cli import main
from automation.errors import InputError
from automation.ops.simulate import load_profile, load_script, parse_line, simulate
from automation.store.contacts import ContactStore
from automation.store.suppression import Suppressions
from tests.conftest import DAY, ROOT

START = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()
CHECK_IN = START + 7 * DAY + 22 * 3600          # Friday 9 January, 10:00 in London (GMT)
LAPSED = START + 90 * DAY                       # Wednesday 1 April, 13:00 BST
SMS = LAPSED + 3 * DAY                          # Saturday 4 April, 13:00 BST


def sent(timeline: list[dict]) -> list[tuple[str, str]]:
    return [(entry["step"], entry["at"]) for entry in timeline if entry["kind"] == "sent"]


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, timezone.utc).isoformat().replace("+00:00", "Z")


def one_purchase(project, monkeypatch, capsys, days: int, start: str) -> dict:
    """`lifecycle simulate --json` of the shipped customer lifecycle and guardrails for the sample contact,
    who buys once at `start` and then nothing."""
    shutil.copy(ROOT / "journeys" / "_workspace.yaml", project / "journeys")
    monkeypatch.chdir(project)
    code = main(["simulate", "customer-lifecycle", "--days", str(days), "--start", start,
                 "--events", "day 0: purchase item='Merino shirt' value=40", "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_a_purchase_then_silence_lapses_on_day_90_with_the_coupon_and_the_sms_3_days_later(
        project, monkeypatch, capsys):
    # Given the shipped customer lifecycle and guardrails, and the shipped sample contact, who buys on day 0
    # and then nothing
    # When 95 days are simulated (the command line, with machine output)
    result = one_purchase(project, monkeypatch, capsys, 95, "2026-01-01T12:00")
    timeline = result["timeline"]
    # Then the messages go out at exactly the times the journey implies, and nothing else
    assert sent(timeline) == [("thank-you", iso(START)), ("check-in", iso(CHECK_IN)),
                              ("winback-coupon", iso(LAPSED)), ("winback-reminder", iso(SMS))]
    entered = [(e["stage"], e["at"]) for e in timeline if e["kind"] == "enter"]
    assert entered == [("new", iso(START)), ("lapsed", iso(LAPSED))]
    # And the win-back email carries a 20% coupon, which the SMS repeats, both at local times in London
    email, sms = [e for e in timeline if e["kind"] == "sent"][2:]
    assert "20% off" in email["message"]["subject"]
    code_in_email = next(word for word in email["message"]["text"].split() if word.startswith("WB-"))
    assert code_in_email in sms["message"]["body"]
    assert (email["local"], sms["local"]) == ("Wed 2026-04-01 13:00 BST", "Sat 2026-04-04 13:00 BST")
    # And the timeline says what the run waits for next
    assert any(e["kind"] == "wait" and "winback-reminder" in e["text"] and e["at"] == iso(LAPSED)
               for e in timeline)
    assert result["stages"] == {"sample": {"customer-lifecycle": "lapsed"}}


def test_a_message_held_for_the_night_goes_in_the_morning_and_the_next_wait_counts_from_then(
        project, monkeypatch, capsys):
    # Given the same contact whose first purchase is at 21:30, so the win-back falls due at night
    timeline = one_purchase(project, monkeypatch, capsys, 100, "2026-01-01T21:30")["timeline"]
    # Then the SMS is held until 08:00, and the push four days after it goes at 08:00 too, not held
    held = [(e["step"], e["local"]) for e in timeline if e["kind"] == "held"]
    assert held == [("winback-reminder", "Sat 2026-04-04 22:30 BST")]
    local = {e["step"]: e["local"] for e in timeline if e["kind"] == "sent"}
    assert local["winback-reminder"] == "Sun 2026-04-05 08:00 BST"
    assert local["winback-last-chance"] == "Thu 2026-04-09 08:00 BST"
    # and the timeline says once what the run waits for (the hold is its own line)
    waits = [e["text"] for e in timeline if e["kind"] == "wait" and "winback-reminder" in e["text"]]
    assert len(waits) == 1, waits


def test_a_second_purchase_before_the_sms_cancels_it_and_the_live_data_is_untouched(
        runtime, settings, redis_url, project):
    # Given the shipped guardrails (one marketing email a day), a live contact (the runtime's namespace is
    # the live one) and a snapshot of every live key
    shutil.copy(ROOT / "journeys" / "_workspace.yaml", project / "journeys")
    ContactStore(runtime).identify("jo", {"first_name": "Jo", "email": "jo@example.com", "phone": "+447700900123",
                                          "timezone": "Europe/London",
                                          "consent": {"email": True, "sms": True, "push": True}})
    client = redis.Redis.from_url(redis_url)
    live = {key: client.dump(key) for key in client.scan_iter(match=f"{settings.namespace}:*")}
    sandboxes = set(client.scan_iter(match="sim*"))
    # When jo is simulated from the live data: a purchase on day 0, another on day 91 at 09:30 in London
    again = datetime(2026, 4, 2, 8, 30, tzinfo=timezone.utc).timestamp()
    result = simulate(settings, ["customer-lifecycle"], 95, contacts=["jo"], live=runtime,
                      script=load_script(["day 0: purchase value=40", "day 91 09:30: purchase value=12"]),
                      start=START, sandbox_redis=redis_url).to_json()
    timeline = result["timeline"]
    # Then the coupon email went out on day 90 and the SMS due on day 93 was cancelled by the purchase;
    # the thank-you for it waits for the daily email cap, a day after the coupon email
    assert sent(timeline) == [("thank-you", iso(START)), ("check-in", iso(CHECK_IN)),
                              ("winback-coupon", iso(LAPSED)), ("thank-you-again", iso(LAPSED + DAY))]
    deferred = [(e["step"], e["at"]) for e in timeline if e["kind"] == "deferred"]
    assert deferred == [("thank-you-again", iso(again))]
    cancelled = [(e["step"], e["at"], e["local"]) for e in timeline if e["kind"] == "cancelled"]
    assert cancelled == [("winback-reminder", iso(again), "Thu 2026-04-02 09:30 BST")]
    assert any(e["kind"] == "converted" for e in timeline)
    assert result["stages"] == {"jo": {"customer-lifecycle": "active"}}
    # And no live key changed, and the sandbox's keys are gone
    assert {key: client.dump(key) for key in client.scan_iter(match=f"{settings.namespace}:*")} == live
    assert set(client.scan_iter(match="sim*")) == sandboxes
    client.close()


@pytest.mark.parametrize("line, expected", [
    ("day 3: purchase value=40", (3.0, "", "purchase", {"value": 40}, None)),
    ("day 2 18:30: jo: checkout_started total=19.5 url='https://x.test/c'",
     (2, "jo", "checkout_started", {"total": 19.5, "url": "https://x.test/c"}, None)),
    ("day 5: set plan=pro vip=true", (5.0, "", "", {}, {"plan": "pro", "vip": True})),
])
def test_script_lines(line, expected):
    item = parse_line(line)
    assert item.day == pytest.approx(expected[0])
    assert (item.contact, item.event, item.properties, item.attributes) == expected[1:]
    assert item.local == ("18:30" if "18:30" in line else "")


def test_a_bad_script_line_is_one_line_and_exit_2(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["simulate", "customer-lifecycle", "--days", "5", "--events", "day x: purchase"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lifecycle simulate: --events 'day x: purchase': not a script line")
    assert len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exited:        # an instant no clock can hold was a traceback
        main(["simulate", "customer-lifecycle", "--days", "5", "--start", "99999999999999999"])
    assert exited.value.code == 2 and "is outside 1970-01-01 to 9999-12-31" in capsys.readouterr().err


def test_a_live_contact_waiting_for_its_sms_is_simulated_from_where_it_is(
        runtime, settings, redis_url, engine, run_due, clock):
    # Given a live contact who lapsed a moment ago: the coupon email went out, the SMS is due in 3 days;
    # their phone is on the SMS suppression list
    lc = Lifecycle(runtime)
    lc.identify("kim", {"first_name": "Kim", "email": "kim@example.com", "phone": "+447700900456",
                        "consent": {"email": True, "sms": True}})
    lc.track("kim", "purchase", {"item": "Tent"}, at=clock.now() - 90 * DAY)
    run_due(engine)
    assert "customer-lifecycle:lapsed:1:winback-coupon" in lc.history("kim")
    Suppressions(runtime).add("sms", "+447700900456", "complained to the carrier")
    client = redis.Redis.from_url(redis_url)
    live = {key: client.dump(key) for key in client.scan_iter(match=f"{settings.namespace}:*")}
    # When the next 4 days are simulated for kim
    result = simulate(settings, ["customer-lifecycle"], 4, contacts=["kim"], live=runtime, start=clock.now(),
                      sandbox_redis=redis_url).to_json()
    # Then the SMS falls due exactly 3 days on, and is skipped for the suppressed number; the coupon
    # email is not sent again
    outcomes = [(e["kind"], e.get("step"), e["at"]) for e in result["timeline"] if e["kind"] in ("sent", "skipped")]
    assert outcomes == [("skipped", "winback-reminder", iso(clock.now() + 3 * DAY))]
    (skipped,) = [e for e in result["timeline"] if e["kind"] == "skipped"]
    assert "is on the sms suppression list: complained to the carrier" in skipped["text"]
    # And the live data is as it was
    assert {key: client.dump(key) for key in client.scan_iter(match=f"{settings.namespace}:*")} == live
    client.close()


def test_a_profile_file_of_two_contacts_each_in_their_own_language_and_zone(settings, redis_url, tmp_path):
    # Given a profile file with two contacts, one reading Persian in Tehran, with a purchase 10 days ago
    profile = tmp_path / "people.yaml"
    profile.write_text(
        "contacts:\n"
        "  - id: farid\n"
        "    attributes: {first_name: فرید, email: f@example.com, locale: fa, timezone: Asia/Tehran,\n"
        "                 consent: {email: true}}\n"
        "    history: [{event: purchase, day: -10, properties: {item: Beanie}}]\n"
        "  - id: ann\n"
        "    attributes: {first_name: Ann, email: a@example.com, consent: {email: true}}\n"
        "    history: [{event: purchase, day: -10, properties: {item: Beanie}}]\n", encoding="utf-8")
    # When both buy again on day 1 at 09:00 their own time
    result = simulate(settings, ["customer-lifecycle"], 2, profile=profile, start=START, sandbox_redis=redis_url,
                      script=load_script(["day 1 09:00: purchase item=Scarf"])).to_json()
    # Then each is thanked at 09:00 local, in their own language
    thanks = {e["contact"]: e for e in result["timeline"] if e["kind"] == "sent" and e["step"] == "thank-you-again"}
    assert thanks["farid"]["local"] == "Fri 2026-01-02 09:00 +0330"
    assert thanks["ann"]["local"] == "Fri 2026-01-02 09:00 GMT"
    assert "فرید" in thanks["farid"]["message"]["subject"] and "Ann" in thanks["ann"]["message"]["subject"]
    assert thanks["farid"]["message"]["subject"] != thanks["ann"]["message"]["subject"].replace("Ann", "فرید")


def test_a_profile_without_attributes_is_refused_with_its_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("contacts:\n  - id: x\n    attributes: [1, 2]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.yaml: contact 1 needs attributes: as a mapping"):
        load_profile(bad)


def test_a_journey_with_an_error_is_reported_with_its_file_line_and_exit_1(project, monkeypatch, capsys):
    # Given the customer lifecycle with a misspelt channel
    path = project / "journeys" / "customer-lifecycle.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("send: sms", "send: smss", 1), encoding="utf-8")
    line = text[: text.index("send: sms")].count("\n") + 1
    monkeypatch.chdir(project)
    # When it is simulated
    assert main(["simulate", "customer-lifecycle", "--days", "5"]) == 1
    # Then the error says where, as validate does, and nothing ran
    err = capsys.readouterr().err
    assert re.search(rf"journeys/customer-lifecycle\.yaml:{line}:\d+: .*smss", err), err
    assert "hint:" in err


def test_workers_that_serve_only_deployed_versions_do_not_empty_the_sandbox(project, monkeypatch, capsys):
    # Given LIFECYCLE_DEPLOY=required (the sandbox's fresh Redis has nothing deployed)
    monkeypatch.chdir(project)
    monkeypatch.setenv("LIFECYCLE_DEPLOY", "required")
    # When a purchase is simulated, then the journey file is what runs: the thank-you goes out
    assert main(["simulate", "customer-lifecycle", "--days", "1", "--start", "2026-01-01T12:00",
                 "--events", "day 0: purchase item='Merino shirt' value=40", "--json"]) == 0
    assert sent(json.loads(capsys.readouterr().out)["timeline"]) == [("thank-you", iso(START))]
