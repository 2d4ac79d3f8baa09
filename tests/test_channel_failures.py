"""What the engine does with what providers say: pauses, shared rate limits, effects, segment warnings."""

from __future__ import annotations

import time

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry, Misconfigured, Remove, Sent
from automation.engine.services import Engine
from automation.ops.cli import main
from automation.ops.status import collect_status, format_status
from automation.runtime import open_runtime
from automation.store.pauses import ChannelPauses
from automation.store.timers import TimerStore
from tests.conftest import write
from tests.providers.recording import Provider


def lead(lc: Lifecycle, contact_id: str) -> None:
    lc.identify(contact_id, {"email": f"{contact_id}@example.com", "first_name": contact_id.title(),
                             "consent": {"email": True}})


def test_refused_credentials_pause_the_channel_and_nothing_is_lost(runtime, make_engine, run_due, settings, clock):
    # Given a provider that refuses our credentials (one request per message)
    provider = Provider(settings, answers=[Misconfigured("401 bad API key")])
    engine = make_engine(ChannelRegistry(settings, instances={"email": provider}))
    lc = Lifecycle(runtime)
    for name in ("ana", "ben", "cid"):
        lead(lc, name)
    # When their welcome emails fall due
    run_due(engine)
    # Then the channel is paused after the first refusal, ops can see why, the provider is not
    # asked again, and every welcome waits instead of failing
    pauses = ChannelPauses(runtime).active()
    assert list(pauses) == ["email"] and "401 bad API key" in pauses["email"].reason
    status = collect_status(runtime)
    assert "PAUSED         email" in format_status(status) and "lifecycle resume email" in format_status(status)
    assert len(provider.calls) == 1
    clock.advance(60)
    run_due(engine)
    assert len(provider.calls) == 1            # nothing is tried while the channel is paused
    for name in ("ana", "ben", "cid"):
        assert lc.history(name).get("customer-lifecycle:lead:1:welcome", {}).get("state") in (None, "paused")
        assert lc.contact(name).enrollments["customer-lifecycle"].step == "welcome"
    assert TimerStore(runtime).counts()["pending"] >= 3
    # When ops fix the key and resume the channel
    assert main_resume(settings, "email") == 0
    clock.advance(settings.pause_seconds + 1)
    run_due(engine)
    # Then all three go out
    assert sorted(d.contact_id for d in provider.calls[1:]) == ["ana", "ben", "cid"]
    assert all(lc.history(n)["customer-lifecycle:lead:1:welcome"]["state"] == "sent" for n in ("ana", "ben", "cid"))


def main_resume(settings, channel: str) -> int:
    import os

    saved = dict(os.environ)
    os.environ.update(settings.to_env())
    try:
        return main(["resume", channel])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_rate_limits_are_shared_and_hold_the_rest_back(settings, clock):
    # Given the provider limited to 2 messages a second, for every worker
    limited = settings.with_changes(rate_limits={"provider": 2})
    runtime = open_runtime(limited, clock=clock)
    provider = Provider(limited)
    engine = Engine.create(runtime, ChannelRegistry(limited, instances={"email": provider}))
    lc = Lifecycle(runtime)
    for n in range(5):
        lead(lc, f"c{n}")
    from automation.engine.executor import run_batch
    from automation.engine.scheduler import Scheduler, run_until_idle

    run_until_idle(Scheduler(runtime, lambda claims: run_batch(engine, claims)))
    # Then two went out in this second, and three wait
    assert len(provider.calls) == 2
    waiting = [n for n in range(5) if lc.history(f"c{n}")["customer-lifecycle:lead:1:welcome"]["state"] == "throttled"]
    assert len(waiting) == 3
    assert collect_status(runtime)["stats"]["throttled"] == 3
    # And they go out in the next windows, without using up an attempt
    deadline = time.time() + 5
    while len(provider.calls) < 5 and time.time() < deadline:
        clock.advance(1)
        time.sleep(0.3)
        run_until_idle(Scheduler(runtime, lambda claims: run_batch(engine, claims)))
    assert len(provider.calls) == 5
    assert all(lc.history(f"c{n}")["customer-lifecycle:lead:1:welcome"]["attempt"] == 1 for n in range(5))
    engine.close()
    runtime.close()


def test_a_dead_push_token_is_removed_and_the_live_one_kept(runtime, make_engine, run_due, settings, clock):
    dead = Sent("push", effect={"push_tokens": Remove(("dead",))})
    provider = Provider(settings, answers=[Sent("p1"), Sent("p2"), dead])
    engine = make_engine(ChannelRegistry(settings, instances={"email": provider, "sms": provider, "push": provider}))
    lc = Lifecycle(runtime)
    lc.identify("kim", {"email": "k@example.com", "phone": "+14155550100", "push_tokens": ["live", "dead"],
                        "consent": {"email": True, "sms": True, "push": True}})
    lc.track("kim", "purchase", at=clock.now() - 100 * 86400)
    run_due(engine)
    clock.advance(7 * 86400)
    run_due(engine)
    assert lc.contact("kim").attributes["push_tokens"] == ["live"]


def test_a_new_phone_number_is_tried_again(runtime):
    lc = Lifecycle(runtime)
    lc.identify("sol", {"phone": "+14155550100"})
    lc.store.apply_effects("sol", {"phone_invalid": True})
    assert lc.contact("sol").attributes["phone_invalid"] is True
    lc.identify("sol", {"phone": "+14155550199"})
    assert "phone_invalid" not in lc.contact("sol").attributes


@pytest.mark.parametrize("locale, body, warned", [
    ("en", "{{ brand }}: {{ first_name }}, your code {{ coupon.code }} is waiting.", False),
    ("ru", "{{ brand }}: " + "Ваш промокод ждёт вас, приходите скорее за покупками! " * 3, True),
])
def test_validate_warns_when_an_sms_takes_too_many_segments(capsys, project, locale, body, warned):
    write(project / "templates" / "sms" / f"winback-reminder.{locale}.txt", body)
    path = project / "journeys" / "customer-lifecycle.yaml"
    code = main(["validate", str(path), "--templates", str(project / "templates")])
    out = capsys.readouterr().out
    assert code == 0  # a warning, not an error
    message = "sms template winback-reminder.ru renders to"
    assert (message in out) is warned, out
    if warned:
        line = next(line for line in out.splitlines() if message in line)
        at = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "template: winback-reminder" in text)
        assert line.startswith(f"{path}:{at}:29: warning: ") and "UCS-2" in line and "more than the 2 allowed" in line


def test_a_step_due_while_its_channel_is_paused_goes_out_after_the_pause(runtime, make_engine, run_due, settings,
                                                                          clock):
    # Given a channel that ops paused (refused credentials found by another worker)
    provider = Provider(settings, answers=[Sent("ok-1")])
    engine = make_engine(ChannelRegistry(settings, instances={"email": provider}))
    pause = ChannelPauses(runtime).pause("email", "401 bad API key")
    lc = Lifecycle(runtime)
    lead(lc, "ana")
    # When the welcome falls due during the pause
    run_due(engine)
    # Then nothing is sent, and the step waits without an outcome in the ledger
    assert provider.calls == []
    assert "customer-lifecycle:lead:1:welcome" not in lc.history("ana")
    assert lc.contact("ana").enrollments["customer-lifecycle"].step == "welcome"
    # When the pause ends (ops resumed the channel) and the step is due again
    assert ChannelPauses(runtime).resume("email")
    clock.advance(pause.until - pause.since + 1)
    run_due(engine)
    # Then it goes out once
    assert [d.contact_id for d in provider.calls] == ["ana"]
    assert lc.history("ana")["customer-lifecycle:lead:1:welcome"]["state"] == "sent"
