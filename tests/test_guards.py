"""The guards that keep a message from going out twice or after an opt-out, each driven directly.

Early filters (a step whose run moved on is dropped before it reaches the ledger) hide what the
ledger's own guards do, so these tests take two workers past the filters at once: both prepare
the same due step, then go through the send phase one after the other, or at the same time. What
reached the provider is counted at the provider stand-in (`Provider.calls`), never from our own
records. docs/reliability.md lists each guard with the test here that fails when it is removed.
"""

from __future__ import annotations

import threading
from typing import Any

from automation.api import Lifecycle
from automation.channels import ChannelRegistry, Sent
from automation.engine import steps
from automation.engine.executor import run_batch
from automation.engine.scheduler import Scheduler, run_until_idle
from automation.engine.services import Engine
from automation.runtime import open_runtime
from automation.store.deliveries import DeliveryLog, DeliveryReport
from automation.store.doubt import in_doubt, settle_abandoned
from automation.store.timers import Claim, TimerStore
from tests.conftest import wait_for
from tests.providers.recording import Provider

WELCOME = "customer-lifecycle:lead:1:welcome"


def lead(lc: Lifecycle, contact_id: str, **attributes: Any) -> None:
    lc.identify(contact_id, {"email": f"{contact_id}@example.com", "first_name": contact_id.title(),
                             "consent": {"email": True}, **attributes})


def engine_with(runtime, settings, provider: Provider) -> Engine:
    return Engine.create(runtime, ChannelRegistry(settings, instances={"email": provider}))


def due_welcome(runtime, engine: Engine) -> list[Claim]:
    """The contacts enter their stage; their welcome emails are due: claim them."""
    timers = TimerStore(runtime)
    run_batch(engine, timers.claim(100)[0])
    claims, _ = timers.claim(100)
    assert claims and all(claim.member.startswith("s|") for claim in claims)
    return claims


def prepared(engine: Engine, claims: list[Claim], now: float) -> list[steps.Job]:
    """A worker's batch up to the send phase: loaded, checked and rendered."""
    batch = steps.prepare(engine, claims, now)
    paused = engine.pauses.active()
    for job in batch.jobs:
        steps.check(engine, job, now, paused)
        if not job.kind:
            steps.render(engine, job, now)
    return batch.jobs


def test_a_step_another_worker_finished_is_not_sent_again(runtime, settings, clock):
    # Given two workers that both loaded the same due welcome (a message handed out twice)
    provider = Provider(settings)
    first, second = engine_with(runtime, settings, provider), engine_with(runtime, settings, provider)
    lc = Lifecycle(runtime)
    lead(lc, "ana")
    claims = due_welcome(runtime, first)
    now = clock.now()
    jobs_a, jobs_b = prepared(first, claims, now), prepared(second, claims, now)
    # When the first sends and records it, and then the second goes through its send phase
    steps.send(first, jobs_a, now)
    steps.send(second, jobs_b, now)
    steps.record(second, [job for job in jobs_b if job.kind not in ("", "busy") and not job.recorded], now)
    # Then the provider got it once (the ledger's "already finished" guard), and the run moved on once
    assert [d.contact_id for d in provider.calls] == ["ana"]
    assert lc.history("ana")[WELCOME]["state"] == "sent"
    assert lc.contact("ana").enrollments["customer-lifecycle"].step != "welcome"


class Blocking(Provider):
    """A provider whose answer waits until the test lets it go: a request in flight."""

    def __init__(self, settings: Any, idempotent: bool = False) -> None:
        super().__init__(settings, idempotent=idempotent)
        self.arrived = threading.Event()
        self.release = threading.Event()

    def send(self, delivery):
        self.calls.append(delivery)
        self.arrived.set()
        self.release.wait(60)
        return Sent(f"p-{len(self.calls)}")


def test_a_step_a_live_worker_is_sending_is_left_to_it(runtime, settings, clock):
    # Given a worker in the middle of a request for a welcome (a provider that deduplicates, so
    # a second worker would otherwise send it again at once)
    provider = Blocking(settings, idempotent=True)
    first, second = engine_with(runtime, settings, provider), engine_with(runtime, settings, provider)
    lc = Lifecycle(runtime)
    lead(lc, "ana")
    claims = due_welcome(runtime, first)
    now = clock.now()
    jobs_a, jobs_b = prepared(first, claims, now), prepared(second, claims, now)
    sending = threading.Thread(target=steps.send, args=(first, jobs_a, now))
    sending.start()
    assert provider.arrived.wait(30)
    # When a second worker reaches the same step meanwhile
    steps.send(second, jobs_b, now)
    # Then it leaves it alone: busy, not sent, nothing recorded by it
    assert [job.kind for job in jobs_b] == ["busy"]
    assert len(provider.calls) == 1
    provider.release.set()
    sending.join(30)
    assert len(provider.calls) == 1 and lc.history("ana")[WELCOME]["state"] == "sent"


def test_no_message_is_marked_after_consent_is_withdrawn(runtime, settings, clock):
    # Given a worker that loaded, checked and rendered a welcome while the contact had consent
    provider = Provider(settings)
    engine = engine_with(runtime, settings, provider)
    lc = Lifecycle(runtime)
    lead(lc, "ana")
    claims = due_welcome(runtime, engine)
    now = clock.now()
    jobs = prepared(engine, claims, now)
    assert [job.kind for job in jobs] == [""] and jobs[0].delivery is not None
    # When the contact opts out before the step is marked for the provider
    lc.identify("ana", {"consent": {"email": False}})
    steps.send(engine, jobs, now)
    # Then nothing reaches the provider: the mark re-checks consent in the same script
    assert provider.calls == []
    outcome = lc.history("ana")[WELCOME]
    assert outcome["state"] == "skipped" and outcome["code"] == "no_consent"


def test_a_contact_without_any_consent_recorded_gets_nothing(runtime, settings, clock, run_due):
    provider = Provider(settings)
    engine = engine_with(runtime, settings, provider)
    lc = Lifecycle(runtime)
    lc.identify("ana", {"email": "ana@example.com", "first_name": "Ana"})   # no consent at all
    run_due(engine)
    assert provider.calls == []
    assert lc.history("ana")[WELCOME]["code"] == "no_consent"


def test_no_message_goes_to_a_contact_deleted_meanwhile(runtime, settings, clock):
    provider = Provider(settings)
    engine = engine_with(runtime, settings, provider)
    lc = Lifecycle(runtime)
    lead(lc, "ana")
    claims = due_welcome(runtime, engine)
    now = clock.now()
    jobs = prepared(engine, claims, now)
    runtime.redis.delete(runtime.keys.contact("ana"))        # erased (a data-deletion request)
    steps.send(engine, jobs, now)
    assert provider.calls == []
    assert lc.history("ana")[WELCOME]["code"] == "contact_deleted"


def crashed_in_request(runtime, settings, channel_provider: Provider) -> tuple[Engine, list[Claim]]:
    """A welcome marked "sending" by a worker that then died inside its request."""
    dying = engine_with(runtime, settings, channel_provider)
    lc = Lifecycle(runtime)
    lead(lc, "ana")
    claims = due_welcome(runtime, dying)
    now = runtime.clock.now()
    jobs = prepared(dying, claims, now)
    assert steps.mark(dying, jobs, now, idempotent=False) == jobs
    dying.liveness.stop()           # the worker is gone; its mark stays
    return engine_with(runtime, settings, channel_provider), claims


def test_a_send_in_doubt_waits_for_the_provider_then_the_policy_resends_email(runtime, settings, clock, run_due):
    # Given a welcome in doubt (its worker died during the request), its message handed to another
    provider = Provider(settings)
    engine, claims = crashed_in_request(runtime, settings, provider)
    run_batch(engine, claims)
    lc = Lifecycle(runtime)
    # Then it is not sent again at once: "unknown", in doubt, the run waiting at it
    assert provider.calls == []
    assert lc.history("ana")[WELCOME]["state"] == "unknown" and in_doubt(runtime)[0] == 1
    assert lc.contact("ana").enrollments["customer-lifecycle"].step == "welcome"
    # When no confirmation comes within the window, email's policy sends it again (at least once)
    clock.advance(settings.reconcile_seconds + 1)
    run_due(engine)
    assert [d.contact_id for d in provider.calls] == ["ana"]
    assert lc.history("ana")[WELCOME]["state"] == "sent" and in_doubt(runtime)[0] == 0


def test_a_send_in_doubt_confirmed_by_the_provider_is_not_sent_again(runtime, settings, clock, run_due):
    provider = Provider(settings)
    engine, claims = crashed_in_request(runtime, settings, provider)
    lc = Lifecycle(runtime)
    welcome_due = lc.contact("ana").enrollments["customer-lifecycle"].due
    run_batch(engine, claims)
    # When SendGrid's event webhook reports the message processed, two minutes later
    clock.advance(120)
    DeliveryLog(runtime).record(DeliveryReport("email", f"{WELCOME}:ana", "ana", "processed", clock.now()))
    # Then it is sent, out of doubt, and its run moves on now (not at the end of the window)
    assert lc.history("ana")[WELCOME]["state"] == "sent" and in_doubt(runtime)[0] == 0
    run_due(engine)
    assert provider.calls == []
    run = lc.contact("ana").enrollments["customer-lifecycle"]
    # to the demo offer, two days after the welcome was due: the doubt moved nothing
    assert run.step == "demo-offer" and run.due == welcome_due + 2 * 86400


def test_a_send_in_doubt_fails_when_the_channel_sends_at_most_once(settings, clock):
    # Given email configured "at most once" (LIFECYCLE_AMBIGUOUS_EMAIL=fail) and a welcome in doubt
    once = settings.with_changes(ambiguous={**settings.ambiguous, "email": "fail"})
    runtime = open_runtime(once, clock=clock)
    provider = Provider(once)
    engine, claims = crashed_in_request(runtime, once, provider)
    run_batch(engine, claims)
    # When its window passes without a word from the provider
    clock.advance(once.reconcile_seconds + 1)
    run_until_idle(Scheduler(runtime, lambda batch: run_batch(engine, batch)), timeout=600)
    # Then it fails with the reason, and is never sent again
    outcome = Lifecycle(runtime).history("ana")[WELCOME]
    assert provider.calls == []
    assert outcome["state"] == "failed" and outcome["code"] == "unconfirmed"
    assert in_doubt(runtime)[0] == 0
    runtime.close()


def test_a_send_in_doubt_whose_run_moved_on_is_settled_by_the_sweep(runtime, settings, clock):
    provider = Provider(settings)
    engine, claims = crashed_in_request(runtime, settings, provider)
    run_batch(engine, claims)
    lc = Lifecycle(runtime)
    # When the contact leaves the stage (a purchase) before the provider confirms anything
    lc.track("ana", "purchase", {"item": "shirt"})
    wait_for(lambda: run_batch(engine, TimerStore(runtime).claim(100)[0]) is None and
             lc.contact("ana").enrollments["customer-lifecycle"].stage != "lead", what="the stage change")
    # Then, after twice the window, the sweep fails it (at most once: its run will not ask again)
    assert settle_abandoned(runtime) == 0                # not yet
    clock.advance(2 * settings.reconcile_seconds + 1)
    assert settle_abandoned(runtime) == 1
    outcome = lc.history("ana")[WELCOME]
    assert outcome["state"] == "failed" and outcome["code"] == "unconfirmed" and in_doubt(runtime)[0] == 0
    assert provider.calls == []


def test_a_live_workers_mark_whose_wave_is_over_is_in_doubt_not_busy(runtime, settings, clock):
    # Given a live worker whose wave was marked but never recorded (its outcome lost: Redis lost
    # an acknowledged write in a restart, or the wave raised on its way)
    provider = Provider(settings)
    first, second = engine_with(runtime, settings, provider), engine_with(runtime, settings, provider)
    lc = Lifecycle(runtime)
    lead(lc, "ana")
    claims = due_welcome(runtime, first)
    now = clock.now()
    jobs = prepared(first, claims, now)
    assert steps.mark(first, jobs, now, idempotent=False, token="wave-1") == jobs
    steps._end_wave(first, "wave-1")
    first.liveness.beat()
    # When another worker gets the step
    run_batch(second, claims)
    # Then it does not wait on it as if it were being sent: it is in doubt, waiting for the provider
    assert provider.calls == []
    assert lc.history("ana")[WELCOME]["state"] == "unknown"
