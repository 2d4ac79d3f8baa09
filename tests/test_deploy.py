"""Editing live journeys: versions, `lifecycle plan`, `deploy` and `--rollback`, on a real Redis.

Most tests run the engine in this process on a manual clock; the deploy under load starts real
worker processes sending to the SendGrid stand-in, because what it checks (nothing lost, nothing
sent twice while runs move) depends on them.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from automation.api import Lifecycle
from automation.channels import ChannelRegistry
from automation.clock import SystemClock
from automation.config import Settings
from automation.engine.dispatch import DramatiqDispatcher
from automation.channels.sendgrid import SendGridChannel
from automation.engine.migration import deploy, plan
from automation.engine.runs import run_key
from automation.engine.scheduler import Scheduler
from automation.engine.services import Engine
from automation.events import check_attributes
from automation.language.diff import diff_journeys
from automation.language.journey import RUN
from automation.language.loader import load_journey
from automation.runtime import Runtime, open_runtime
from automation.ops.deploys import file_candidates
from automation.store import versions
from automation.store.contacts import ContactStore
from tests.conftest import lifecycle_command as lifecycle, DAY, wait_for, write
from tests.providers.recording import Provider
from tests.providers.sendgrid_api import API_KEY, SendGridStandIn

VARS = 'vars: {brand: Acme, shop_url: "https://acme.test"}\n'
ONBOARDING = VARS + """\
journey: onboarding
trigger: {event: signup}
steps:
  - wait: 2d
    send: email
    template: welcome
  - wait: 1d
    send: email
    template: check-in
"""


def only(project: Path, **files: str) -> None:
    for path in (project / "journeys").glob("[!_]*.yaml"):
        path.unlink()
    for name, text in files.items():
        write(project / "journeys" / f"{name}.yaml", text)


def signed_up(lc: Lifecycle, *contacts: str) -> None:
    for contact_id in contacts:
        lc.identify(contact_id, {"email": f"{contact_id}@example.com", "consent": {"email": True}})
        lc.track(contact_id, "signup")


def sent(provider: Provider) -> list[tuple[str, str]]:
    return sorted((d.contact_id, d.template) for d in provider.calls)


def test_a_changed_template_keeps_the_waiting_contacts_at_their_step_and_they_get_the_new_one(
        project, settings, runtime, clock, lc, start, provider, run_due):
    # Given two contacts waiting two days for the welcome email (the version the worker serves recorded)
    only(project, onboarding=ONBOARDING)
    engine = start()
    signed_up(lc, "ana", "ben")
    run_due(engine)
    first = versions.deployed(runtime)["onboarding"]
    assert lc.contact("ana").enrollments["onboarding"].version == first.version
    # When only the step's template changes in the file
    write(project / "journeys" / "onboarding.yaml", ONBOARDING.replace("template: welcome", "template: thank-you"))
    # Then the plan says they stay at that step, now with the new content
    candidates, problems = file_candidates(settings, ChannelRegistry(settings), [])
    shown = plan(runtime, candidates, ChannelRegistry(settings).adapters).to_json()
    [journey] = shown["journeys"]
    assert [(s["change"], s["step"], s.get("waiting")) for s in journey["steps"]] == [("changed", "welcome", 2)]
    assert journey["steps"][0]["outcomes"] == {"stay (now step thank-you)": 2} and shown["stranded"] == 0
    assert "template welcome -> thank-you" in journey["steps"][0]["what"]
    # and when the worker reloads the file (as on its next batch), both keep their place and get the new
    # template, then the next step
    assert engine.journeys.refresh()
    assert versions.deployed(runtime)["onboarding"].version != first.version
    assert lc.contact("ana").enrollments["onboarding"].step == "thank-you"
    clock.advance(2 * DAY)
    run_due(engine)
    assert sent(provider) == [("ana", "thank-you"), ("ben", "thank-you")]
    clock.advance(DAY)
    run_due(engine)
    assert Counter(template for _, template in sent(provider)) == {"thank-you": 2, "check-in": 2}


def test_a_shorter_wait_releases_those_who_waited_long_enough(project, settings, runtime, clock, lc, start,
                                                              provider, run_due):
    only(project, onboarding=ONBOARDING)
    engine = start()
    signed_up(lc, "early")
    run_due(engine)
    clock.advance(DAY + 3600)
    signed_up(lc, "late")
    run_due(engine)
    # When the first wait shrinks from 2 days to 1
    write(project / "journeys" / "onboarding.yaml", ONBOARDING.replace("wait: 2d", "wait: 1d"))
    assert engine.journeys.refresh()
    run_due(engine)
    # Then who waited a day already gets the welcome now; the other one a day after signing up
    assert sent(provider) == [("early", "welcome")]
    assert lc.contact("late").enrollments["onboarding"].due == clock.now() + DAY


def test_a_step_added_before_and_a_longer_wait_keep_them_until_the_new_length(project, settings, runtime, clock, lc,
                                                                               start, provider, run_due):
    only(project, onboarding=ONBOARDING)
    engine = start()
    signed_up(lc, "ana")
    run_due(engine)
    signed_up_at = clock.now()
    clock.advance(DAY)
    # When a step is added at the top and the welcome's wait grows from 2 days to 4
    write(project / "journeys" / "onboarding.yaml", ONBOARDING.replace(
        "steps:\n  - wait: 2d\n", "steps:\n  - send: email\n    template: thank-you\n  - wait: 4d\n"))
    assert engine.journeys.refresh()
    # Then she stays at the welcome, due four days after she started waiting, and never gets the new first step
    assert lc.contact("ana").enrollments["onboarding"].step == "welcome"
    assert lc.contact("ana").enrollments["onboarding"].due == signed_up_at + 4 * DAY
    clock.advance(2 * DAY)
    run_due(engine)
    assert sent(provider) == []
    clock.advance(DAY)
    run_due(engine)
    assert sent(provider) == [("ana", "welcome")]


REMOVED = VARS + """\
journey: onboarding
trigger: {event: signup}
steps:
  - wait: 1d
    send: email
    template: check-in
"""


def test_a_removed_step_without_a_mapping_fails_the_plan_and_replaces_sends_them_on(project, settings, runtime,
                                                                                    clock, lc, start, provider,
                                                                                    run_due):
    # Given contacts waiting at the welcome step of the deployed version
    only(project, onboarding=ONBOARDING)
    engine = start()
    signed_up(lc, "ana", "ben")
    run_due(engine)
    engine.close()
    # When the welcome step is removed
    write(project / "journeys" / "onboarding.yaml", REMOVED)
    # Then plan exits 1 and says who would be dropped
    refused = lifecycle(settings, "plan")
    assert refused.returncode == 1, refused.stderr
    assert "removed welcome" in refused.stdout and "2 waiting: exit: step removed 2" in refused.stdout
    assert "2 contact(s) would be dropped" in refused.stdout
    assert lifecycle(settings, "deploy").returncode == 1
    # When a new step says it replaces the old one
    write(project / "journeys" / "onboarding.yaml",
          REMOVED.replace("steps:\n", "steps:\n  - send: email\n    template: thank-you\n    replaces: welcome\n"))
    planned = lifecycle(settings, "plan", "--json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    steps = json.loads(planned.stdout)["journeys"][0]["steps"]
    assert {"scope": "run", "change": "replaced", "step": "welcome", "now": "thank-you",
            "what": ["removed; continues at thank-you"], "waiting": 2,
            "outcomes": {"continue at thank-you": 2}} in steps
    deployed = lifecycle(settings, "deploy", "--plan-hash", json.loads(planned.stdout)["plan_hash"])
    assert deployed.returncode == 0, deployed.stderr
    # Then they continue there, when their old step was due, and go on from there
    assert lc.contact("ana").enrollments["onboarding"].step == "thank-you"
    clock.advance(2 * DAY)
    engine = start()
    run_due(engine)
    assert sent(provider) == [("ana", "thank-you"), ("ben", "thank-you")]
    clock.advance(DAY)
    run_due(engine)
    assert Counter(template for _, template in sent(provider)) == {"thank-you": 2, "check-in": 2}


def test_replaces_and_migrate_are_checked_at_their_line(project, settings):
    only(project, onboarding=REMOVED.replace("template: check-in", "template: check-in\n    replaces: check-in")
         + "migrate: {gone: nowhere}\n")
    checked = lifecycle(settings, "validate", "journeys/onboarding.yaml")
    assert checked.returncode == 1
    assert "onboarding.yaml:8:15: step 'check-in' still exists: it cannot be replaced" in checked.stdout
    assert "onboarding.yaml:9:17: migrate: there is no step 'nowhere' to send contacts to" in checked.stdout


STAGES = VARS + """\
journey: tiers
stages:
  - name: vip
    when: contact.lifetime_value >= 100
  - name: everyone
"""


def test_a_stage_rule_change_counts_the_contacts_that_would_change_stage(project, settings, runtime, lc):
    # Given 2,000 contacts with values 0..399 and the deployed tiers
    only(project, tiers=STAGES)
    ContactStore(runtime).identify_many((f"c{n}", {"lifetime_value": n % 400}) for n in range(2000))
    channels = ChannelRegistry(settings)
    candidates, problems = file_candidates(settings, channels, [])
    assert candidates, [p.format() for p in problems]
    versions.record(runtime, "tiers", candidates[0].journey.version, "journeys/tiers.yaml", candidates[0].text)
    # When the VIP threshold goes up to 250
    write(project / "journeys" / "tiers.yaml", STAGES.replace(">= 100", ">= 250"))
    candidates, _ = file_candidates(settings, channels, [])
    shown = plan(runtime, candidates, channels.adapters).to_json()
    # Then those with 100..249 would leave vip: 150 values, 5 contacts each
    [journey] = shown["journeys"]
    assert journey["stage_rules"] == \
        ["stage vip: when contact.lifetime_value >= 100 -> contact.lifetime_value >= 250"]
    assert journey["stage_changes"] == [{"from": "vip", "to": "everyone", "contacts": 750}]


def test_rollback_goes_back_to_the_previous_version(project, settings, clock, lc, run_due, provider):
    # Given workers that serve only deployed versions, and a contact waiting at the welcome step
    only(project, onboarding=ONBOARDING)
    required = {"LIFECYCLE_DEPLOY": "required"}
    assert lifecycle(settings, "deploy", "--by", "first", **required).returncode == 0
    runtime = open_runtime(settings.with_changes(deploy="required"), clock=clock)
    engine = Engine.create(runtime, ChannelRegistry(settings, instances={"email": provider}))
    try:
        signed_up(Lifecycle(runtime), "ana")
        run_due(engine)
        first = versions.deployed(runtime)["onboarding"]
        write(project / "journeys" / "onboarding.yaml",
              ONBOARDING.replace("template: welcome", "template: thank-you"))
        assert engine.journeys.get("onboarding").version == first.version     # not deployed: not served
        assert lifecycle(settings, "deploy", "--by", "second", **required).returncode == 0
        second = versions.deployed(runtime)["onboarding"]
        assert engine.journeys.get("onboarding").version == second.version
        assert lc.contact("ana").enrollments["onboarding"].step == "thank-you"
        # When the deploy is rolled back
        back = lifecycle(settings, "deploy", "--rollback", **required)
        assert back.returncode == 0, back.stderr
        # Then the first version is deployed again, served, and the contact is back at its step
        assert [v.version for v in versions.history(runtime, "onboarding")] == \
            [first.version, second.version, first.version]
        assert engine.journeys.get("onboarding").version == first.version
        assert lc.contact("ana").enrollments["onboarding"].step == "welcome"
        clock.advance(2 * DAY)
        run_due(engine)
        assert sent(provider) == [("ana", "welcome")]
        status = lifecycle(settings, "status", "--json")
        assert json.loads(status.stdout)["journeys"]["onboarding"]["version"] == first.version
    finally:
        engine.close()
        runtime.close()
    # and without LIFECYCLE_DEPLOY=required the workers follow the files, so a rollback is refused
    refused = lifecycle(settings, "deploy", "--rollback")
    assert refused.returncode == 2 and "LIFECYCLE_DEPLOY=required" in refused.stderr


WAITING = VARS + """\
journey: follow-up
trigger: {event: signup}
steps:
  - wait_for: {event: purchase, timeout: 5d}
    on_event:
      - send: email
        template: thank-you
"""


def test_a_worker_on_the_new_version_reads_a_run_of_the_old_one_step_by_step(project, settings, clock, provider,
                                                                              run_due):
    # Given a contact waiting for a purchase in the deployed version, served by workers that follow deploys
    only(project, **{"follow-up": WAITING})
    channels = ChannelRegistry(settings)
    runtime = open_runtime(settings.with_changes(deploy="required"), clock=clock)
    first, _ = file_candidates(settings, channels, [])
    versions.record(runtime, "follow-up", first[0].journey.version, first[0].journey.path, first[0].text)
    engine = Engine.create(runtime, ChannelRegistry(settings, instances={"email": provider}))
    try:
        lc = Lifecycle(runtime)
        signed_up(lc, "ana")
        run_due(engine)
        assert lc.contact("ana").enrollments["follow-up"].step == "wait-for-purchase"
        # When a version that waits for a differently named event is recorded, and the run is not moved
        # (a deploy still under way), the step the run waits at has another id in the version served
        write(project / "journeys" / "follow-up.yaml", WAITING.replace("event: purchase", "event: contract_signed"))
        second, _ = file_candidates(settings, channels, [])
        versions.record(runtime, "follow-up", second[0].journey.version, second[0].journey.path, second[0].text)
        assert engine.journeys.get("follow-up").version == second[0].journey.version
        # Then the new event still wakes it, and the thank-you goes out
        lc.track("ana", "contract_signed")
        run_due(engine)
        assert sent(provider) == [("ana", "thank-you")]
    finally:
        engine.close()
        runtime.close()


LIVE = VARS + """\
journey: onboarding
stages:
  - name: everyone
    steps:
      - send: email
        template: welcome
      - wait: 2s
        send: email
        template: check-in
"""


@pytest.fixture
def live(settings: Settings) -> Iterator[tuple[Settings, Runtime]]:
    live_settings = settings.with_changes(lease_seconds=3.0, heartbeat_timeout_ms=3000, batch_size=20,
                                          poll_interval=0.05, deploy="required")
    runtime = open_runtime(live_settings, clock=SystemClock())
    yield live_settings, runtime
    runtime.close()


@pytest.fixture
def live_scheduler(live: tuple[Settings, Runtime]) -> Iterator[None]:
    live_settings, runtime = live
    dispatcher = DramatiqDispatcher(live_settings)
    scheduler = Scheduler(runtime, dispatcher, dispatcher.queue_depth)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)
    dispatcher.close()


@pytest.mark.integration
def test_a_deploy_while_workers_send_loses_and_duplicates_nothing(project, live, live_scheduler, workers):
    live_settings, runtime = live
    # Given the first version deployed, and workers sending over SendGrid (its stand-in) that serve only deployed
    # versions
    only(project, onboarding=LIVE)
    channels = ChannelRegistry(live_settings)
    candidates, _ = file_candidates(live_settings, channels, [])
    deploy(runtime, candidates, channels.adapters, "test")
    with SendGridStandIn() as stand_in:
        workers(processes=2, threads=4, LIFECYCLE_DEPLOY="required", LIFECYCLE_CHANNEL_EMAIL="sendgrid",
                SENDGRID_API_KEY=API_KEY, LIFECYCLE_SENDGRID_HOST=stand_in.url, LIFECYCLE_LEASE_SECONDS="3",
                LIFECYCLE_HEARTBEAT_TIMEOUT_MS="3000")
        # and 400 new contacts, so that welcomes go out and check-ins are due two seconds later
        store = ContactStore(runtime)
        contacts = [f"p{n:03d}" for n in range(400)]
        store.identify_many((contact_id, check_attributes({"email": f"{contact_id}@example.com",
                                                           "consent": {"email": True}}))
                            for contact_id in contacts)
        wait_for(lambda: len(stand_in.delivered()) >= 100, timeout=60, what="sending to start")
        # When the check-in's template changes and is deployed while they send
        write(project / "journeys" / "onboarding.yaml", LIVE.replace("template: check-in", "template: thank-you"))
        candidates, _ = file_candidates(live_settings, channels, [])
        done = deploy(runtime, candidates, channels.adapters, "test")
        assert done.recorded and done.plan.stranded == 0
        # Then every contact gets exactly one welcome and one second message, the new one if it was still waiting
        def finished() -> bool:
            return len(stand_in.delivered()) >= 800 and all(
                state.enrollments["onboarding"].step is None for state in store.load_many(contacts).values())

        wait_for(finished, timeout=120, what="every run to finish")
        per_contact = Counter((m["personalization"]["custom_args"]["lc_contact"],
                               m["personalization"]["custom_args"]["lc_key"].split(":")[3])
                              for m in stand_in.delivered())
    assert set(per_contact.values()) == {1}
    steps = Counter(step for _, step in per_contact)
    assert steps["welcome"] == 400 and steps["check-in"] + steps["thank-you"] == 400
    assert steps["thank-you"] > 0
    assert len(per_contact) == 800


@pytest.mark.parametrize("entry", ["sending", "sent"])
def test_a_step_tried_before_a_deploy_renamed_it_is_not_sent_again(project, settings, clock, run_due, entry):
    # Given workers that serve deployed versions and send over SendGrid (its stand-in), and a contact whose
    # welcome was tried already: handed to SendGrid by a worker that died during the request, or sent with its
    # run not yet moved on
    only(project, onboarding=ONBOARDING)
    channels = ChannelRegistry(settings)
    runtime = open_runtime(settings.with_changes(deploy="required"), clock=clock)
    first, _ = file_candidates(settings, channels, [])
    deploy(runtime, first, channels.adapters, "first")
    with SendGridStandIn() as stand_in:
        sendgrid = SendGridChannel(Settings(email_from="Acme <hello@acme.test>"),
                                   env={"SENDGRID_API_KEY": API_KEY, "LIFECYCLE_SENDGRID_HOST": stand_in.url})
        engine = Engine.create(runtime, ChannelRegistry(settings, instances={"email": sendgrid}))
        try:
            lc = Lifecycle(runtime)
            signed_up(lc, "ana")
            run_due(engine)
            welcome = f"{run_key('onboarding', RUN, lc.contact('ana').enrollments['onboarding'].occurrence)}:welcome"
            runtime.redis.hset(runtime.keys.ledger("ana"), welcome, json.dumps(
                {"state": entry, "w": 1.0, "at": clock.now(), "attempt": 1, "o": "gone-worker", "b": "wave"}))
            # When the step's template changes (so its id, welcome -> thank-you) and is deployed
            write(project / "journeys" / "onboarding.yaml",
                  ONBOARDING.replace("template: welcome", "template: thank-you"))
            second, _ = file_candidates(settings, channels, [])
            done = deploy(runtime, second, channels.adapters, "second")
            assert engine.journeys.get("onboarding").version == second[0].journey.version
            # Then the step keeps its ledger entry and idempotency key: SendGrid gets no request for it
            clock.advance(2 * DAY)
            run_due(engine)
            assert stand_in.requests == []
            assert done.left == 1       # the deploy left the run to the workers
            assert json.loads(runtime.redis.hget(runtime.keys.ledger("ana"), welcome))["state"] == \
                ("unknown" if entry == "sending" else "sent")
            assert runtime.redis.hget(runtime.keys.ledger("ana"), welcome.replace("welcome", "thank-you")) is None
        finally:
            engine.close()
            runtime.close()


def test_the_deploy_lock_is_held_as_long_as_the_deploy_runs(runtime):
    # Given the deploy lock, held for a second at a time
    key = runtime.keys.deploying
    with versions.locked(runtime, "long-deploy", hold=1.0) as took:
        assert took
        # Then it is renewed before it runs out, for as long as the deploy runs
        lowest = [runtime.redis.pttl(key)]

        def renewed() -> bool:
            left = runtime.redis.pttl(key)
            assert left > 0, "the lock ran out while the deploy held it"
            lowest.append(left)
            return left > min(lowest[:-1])

        wait_for(renewed, timeout=30, what="the lock to be renewed")
        assert not versions.lock(runtime, "worker", wait=0) and runtime.redis.get(key) == "long-deploy"
    # and free once it is done
    assert runtime.redis.get(key) is None


def test_a_journey_whose_file_is_removed_is_retired_by_a_confirmed_deploy(project, settings, clock, run_due,
                                                                          provider):
    # Given two deployed journeys served by workers that serve only deployed versions, a contact in both
    only(project, onboarding=ONBOARDING, **{"follow-up": WAITING})
    required = {"LIFECYCLE_DEPLOY": "required"}
    assert lifecycle(settings, "deploy", **required).returncode == 0
    runtime = open_runtime(settings.with_changes(deploy="required"), clock=clock)
    engine = Engine.create(runtime, ChannelRegistry(settings, instances={"email": provider}))
    try:
        lc = Lifecycle(runtime)
        signed_up(lc, "ana")
        run_due(engine)
        follow_up = versions.deployed(runtime)["follow-up"].version
        # When the follow-up's file is deleted, the plan of the folder shows it removed, with its run
        (project / "journeys" / "follow-up.yaml").unlink()
        shown = lifecycle(settings, "plan", "--json", **required)
        assert shown.returncode == 0, shown.stderr
        shown = json.loads(shown.stdout)
        assert shown["removed"] == [{"journey": "follow-up", "deployed": follow_up, "runs": 1}]
        # and a deploy without that plan's hash is refused, still serving it
        refused = lifecycle(settings, "deploy", **required)
        assert refused.returncode == 1 and "--plan-hash" in refused.stderr and "Traceback" not in refused.stderr
        assert "follow-up" in versions.deployed(runtime)
        # Then the deploy of that plan retires it: not served any more, its history kept, its run ended
        done = lifecycle(settings, "deploy", "--plan-hash", shown["plan_hash"], **required)
        assert done.returncode == 0, done.stderr
        assert f"follow-up: removed (no file; {follow_up} deployed), 1 run(s) would end" in done.stdout
        assert "retired follow-up" in done.stdout
        assert set(versions.deployed(runtime)) == {"onboarding"}
        assert [v.version for v in versions.history(runtime, "follow-up")] == [follow_up]
        assert engine.journeys.get("follow-up") is None and engine.journeys.get("onboarding") is not None
        clock.advance(5 * DAY)
        run_due(engine)
        assert lc.contact("ana").enrollments["follow-up"].step is None
        assert sent(provider) == [("ana", "check-in"), ("ana", "welcome")]     # the other journey goes on
    finally:
        engine.close()
        runtime.close()


def test_a_rollback_leaves_out_journeys_with_no_earlier_version(project, settings):
    # Given a deploy that changed one journey and added another
    required = {"LIFECYCLE_DEPLOY": "required"}
    only(project, onboarding=ONBOARDING)
    assert lifecycle(settings, "deploy", **required).returncode == 0
    write(project / "journeys" / "onboarding.yaml", ONBOARDING.replace("template: welcome", "template: thank-you"))
    write(project / "journeys" / "follow-up.yaml", WAITING)
    assert lifecycle(settings, "deploy", **required).returncode == 0
    # When the new journey alone is rolled back: refused in one line, nothing to go back to
    alone = lifecycle(settings, "deploy", "--rollback", "follow-up", **required)
    assert alone.returncode == 1 and "Traceback" not in alone.stderr
    assert "follow-up: no earlier version" in alone.stderr
    # Then rolling back the latest deploy takes the changed journey back and says the new one stays
    back = lifecycle(settings, "deploy", "--rollback", **required)
    assert back.returncode == 0, back.stderr
    assert "not rolled back: follow-up: no earlier version" in back.stdout
    assert "deployed onboarding" in back.stdout


WEBHOOK_AB = """\
journey: crm-ab
trigger: {event: signup}
steps:
  - split:
      name: crm
      variants:
        - {name: old, weight: 50, vars: {crm: "https://old.example.com/hook"}}
        - {name: new, weight: 50, vars: {crm: "https://new.example.com/hook"}}
  - send: webhook
    id: notify
    url: vars.crm
"""


def test_the_plan_shows_an_option_read_from_vars_as_written(settings, tmp_path):
    def journey(text: str):
        path = write(tmp_path / "crm-ab.yaml", text)
        loaded, diagnostics = load_journey(path, ChannelRegistry(settings).adapters, None, text=text)
        assert loaded is not None, diagnostics
        return loaded

    literal = journey(WEBHOOK_AB.replace("url: vars.crm", "url: https://old.example.com/hook"))
    by_vars = journey(WEBHOOK_AB)
    # Reading the url from the run's vars is a change of the step, said as the file says it
    [change] = diff_journeys(literal, by_vars).steps
    assert change.what == ('options {"url": "https://old.example.com/hook"} -> {"url": "vars.crm"}',)
    # A variant's value changing is a change of the split, not of the step (its runs read the new value)
    [change] = diff_journeys(by_vars, journey(WEBHOOK_AB.replace("old.example.com", "older.example.com"))).steps
    assert change.old == "split-crm" and "(name old, weight 50, holdout false" in change.what[0]
