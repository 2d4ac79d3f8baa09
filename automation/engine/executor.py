"""Execute a batch of claimed timers: re-evaluate contacts' stages and run due steps.

This is what a Dramatiq message does (workers/actors.py is a thin wrapper), and
it is batch-shaped on purpose: contacts are loaded with one pipelined round
trip, marks and outcomes are written with one round trip each, and adapters get
all deliveries of a channel at once.

A step is idempotent by its key (journey, stage, occurrence, step, contact):
- before calling the provider its ledger entry is marked "sending";
- the outcome, the move to the next step and the lease release are written
  atomically afterwards;
- a redelivered message finds the outcome and sends nothing; one that finds an
  abandoned "sending" mark (the process died mid-call) sends again only if the
  adapter deduplicates by key, else records the step as "unknown" for
  reconciliation from the provider's delivery events.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from automation.channels import Delivery, Failed, Misconfigured, Retry, Sent
from automation.channels.base import Result
from automation.engine import runs
from automation.engine.context import rule_context, step_data, template_context
from automation.engine.evaluation import date_may_start, evaluate
from automation.engine.runs import START, Changes
from automation.engine.services import Engine
from automation.events import Event
from automation.expressions import RuleError, TimeTracker
from automation.language.flow import SendNode, resume_after
from automation.language.journey import RUN, Journey
from automation.messages.templates import TemplateRenderError
from automation.messages.unsubscribe import list_unsubscribe_headers, unsubscribe_url
from automation.store.contacts import ContactState
from automation.store.coupons import CouponError, CouponStore, issued_in_run
from automation.store.keys import ACTIVITY_LENGTH, due, parse_member, recheck_member, seconds, step_member
from automation.store.pauses import Pause
from automation.store.timers import Claim

logger = logging.getLogger(__name__)
#: Outcomes of steps that could not go yet and wait in the timer store, attempts unchanged.
WAITING = frozenset({"paused", "throttled"})
#: When a step's journey failed to load, look again after this many wall-clock seconds.
JOURNEY_RETRY_SECONDS = 60.0


def run_batch(engine: Engine, claims: Iterable[Claim]) -> None:
    rechecks, steps, broadcasts, stale = [], [], [], []
    for claim in claims:
        kind = claim.member[:2]
        {"r|": rechecks, "s|": steps, "b|": broadcasts}.get(kind, stale).append(claim)
    if stale:
        logger.error("unknown timer kind(s): %s", [c.member for c in stale])
        engine.timers.ack(stale)
    if rechecks:
        reevaluate(engine, rechecks)
    if steps:
        execute_steps(engine, steps)
    if broadcasts:
        from automation.engine.broadcasts import run_broadcasts

        run_broadcasts(engine, broadcasts)


# -- stages -------------------------------------------------------------------------------------


def reevaluate(engine: Engine, claims: list[Claim]) -> None:
    """Evaluate the contacts in `claims` (automation.evaluation) and apply what changed."""
    ids = [claim.member[2:] for claim in claims]
    states = engine.store.load_many(ids, inbox=True)
    served = engine.journeys.journeys
    scores = engine.scores()
    now = engine.runtime.clock.now()
    # While a journey file fails to load, contacts in its stages keep being re-checked, so its
    # time-based changes are not lost; they happen once the file is fixed.
    retry_at = now + engine.runtime.clock.to_clock_seconds(JOURNEY_RETRY_SECONDS)
    unloaded = bool(engine.journeys.failed_files)
    plans: list[tuple[Claim, Changes]] = []
    missing = []
    rule_errors = 0
    for claim, contact_id in zip(claims, ids, strict=True):
        state = states[contact_id]
        if not state.exists:
            missing.append(claim)  # deleted meanwhile: evaluating would recreate it
            continue
        changes = evaluate(state, served, now, scores)
        for error in changes.errors:
            _log_rule_error(contact_id, error)
        rule_errors += len(changes.errors)
        recheck_at = changes.tracker.next_change if changes.tracker else None
        if unloaded and any(e.stage and name not in served for name, e in state.enrollments.items()):
            recheck_at = min(recheck_at or retry_at, retry_at)
        changes.timers[recheck_member(contact_id)] = recheck_at
        plans.append((claim, changes))
    # Each evaluation applies only if the contact is as it was read; if not, it is simply due again.
    guarded = []
    for claim, changes in plans:
        member = recheck_member(changes.state.id)
        guarded.append((claim, changes, {"v": changes.state.version, "r": member}, member))
    applied = apply_changes(engine, guarded)
    if rule_errors:
        engine.runtime.redis.hincrby(engine.runtime.keys.stats, "rule_errors", rule_errors)
    if missing:
        engine.timers.ack(missing)
    after_apply(engine, [changes for (_, changes), ok in zip(plans, applied, strict=True) if ok])


def apply_changes(engine: Engine, plans: list[tuple[Claim, Changes, dict[str, Any], str]]) -> list[bool]:
    """Write contacts' changes (apply.lua), each under its guard (a version, or field values);
    coupons the runs asked for are issued first, so the messages that show them find them."""
    if not plans:
        return []
    keys = engine.runtime.keys
    issue_coupons(engine, [changes for _, changes, _, _ in plans])
    script_keys: list[str] = [keys.activity, keys.stats]
    args: list[Any] = [seconds(engine.runtime.clock.now()), ACTIVITY_LENGTH]
    for claim, changes, guard, lease_member in plans:
        cid = changes.state.id
        script_keys += [keys.contact(cid), keys.timers_for(cid), keys.leases_for(cid), keys.ledger(cid),
                        keys.inbox(cid)]
        plan = {"c": cid, "v": guard.get("v", ""), "ops": changes.ops(),
                "lease": repr(claim.lease) if claim.lease is not None else "", "lm": lease_member}
        for extra in ("g", "r"):
            if extra in guard:
                plan[extra] = guard[extra]
        args.append(json.dumps(plan, separators=(",", ":"), ensure_ascii=False))
    return [bool(reply) for reply in engine.scripts.call("apply", script_keys, args)]


def issue_coupons(engine: Engine, all_changes: Iterable[Changes]) -> None:
    store: CouponStore | None = None
    for changes in all_changes:
        for run, spec in changes.coupons:
            store = store or CouponStore(engine.runtime)
            try:
                store.issue(changes.state.id, spec, run, changes.now)
            except (CouponError, LookupError) as exc:
                logger.error("coupon %s for %s: %s", spec.name, changes.state.id, exc)
                engine.runtime.redis.hincrby(engine.runtime.keys.stats, f"coupon:{spec.name}:failed", 1)


def after_apply(engine: Engine, all_changes: Iterable[Changes]) -> None:
    """What runs did that goes through the contact store: attributes set, events recorded."""
    for changes in all_changes:
        if changes.sets:
            engine.store.identify(changes.state.id, changes.sets)
        if changes.emits:
            engine.store.track_many(Event(changes.state.id, name, changes.now, properties, event_id)
                                    for name, properties, event_id in changes.emits)


_rule_errors_logged: dict[str, float] = {}


def _log_rule_error(contact_id: str, error: str) -> None:
    """Log each distinct rule error at most once a minute: one broken rule must not flood the logs."""
    now = time.monotonic()
    if now - _rule_errors_logged.get(error, -60.0) >= 60.0:
        if len(_rule_errors_logged) > 1000:
            _rule_errors_logged.clear()
        _rule_errors_logged[error] = now
        logger.warning("rule error treated as false (contact %s; repeats for a minute are not logged): %s",
                       contact_id, error)


# -- steps --------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One due send of one contact, as it moves through the phases of a batch."""

    claim: Claim
    state: ContactState
    journey: Journey
    scope: str                # the stage, or RUN for a triggered journey
    node: SendNode
    occurrence: int
    due: float
    outcome: dict[str, Any] = field(default_factory=dict)
    kind: str = ""            # sent, skipped, failed, retry, unknown; "" while undecided
    code: str = ""            # short reason code for stats: no_consent, template_error ...
    detail: str = ""
    delivery: Delivery | None = None
    attempt: int = 1
    retry_at: float | None = None
    effect: dict[str, Any] = field(default_factory=dict)
    changes: Changes | None = None   # what the run does after this step, up to its next wait

    @property
    def step(self) -> SendNode:
        return self.node

    @property
    def ledger_field(self) -> str:
        return f"{self.journey.name}:{self.scope}:{self.occurrence}:{self.node.id}"

    def decide(self, kind: str, code: str = "", detail: str = "") -> None:
        self.kind, self.code, self.detail = kind, code, detail


@dataclass
class _Resume:
    """A run whose wait ended (or a date trigger whose day came): it moves on, sending nothing now."""

    claim: Claim
    state: ContactState
    journey: Journey


def execute_steps(engine: Engine, claims: list[Claim]) -> None:
    runtime = engine.runtime
    now = runtime.clock.now()
    states = engine.store.load_many((parse_member(c.member)[2] for c in claims), recent=True)
    jobs: list[_Job] = []
    resumes: list[_Resume] = []
    done: list[Claim] = []          # nothing to do: release the lease only
    postponed: list[Claim] = []     # journey not loaded right now: try again later
    for claim in claims:
        job = _prepare(engine, claim, states, now, done, postponed, resumes)
        if job is not None:
            jobs.append(job)
    if done:
        engine.timers.ack(done)
    if postponed:
        _postpone(engine, postponed, now)
    if resumes:
        _resume(engine, resumes, now)
    paused = engine.pauses.active() if jobs else {}
    for job in jobs:
        _check_and_render(engine, job, now, paused)
    _mark_and_send(engine, [job for job in jobs if not job.kind], now)
    _record(engine, [job for job in jobs if job.kind], now)


def _prepare(engine: Engine, claim: Claim, states: dict[str, ContactState], now: float,
             done: list[Claim], postponed: list[Claim], resumes: list[_Resume]) -> _Job | None:
    _, journey_name, contact_id = parse_member(claim.member)
    state = states[contact_id]
    enrollment = state.enrollments.get(journey_name or "")
    if enrollment is None or enrollment.step is None or enrollment.due is None:
        done.append(claim)      # the run ended or the contact left the stage
        return None
    if enrollment.due > now + 0.001:
        done.append(claim)      # a redelivery of an earlier step; the next one has its own timer
        return None
    journey = engine.journeys.get(journey_name or "")
    if journey is None:
        if engine.journeys.failed_files:
            postponed.append(claim)
            return None
        journey = _gone(journey_name or "")
    if enrollment.step == START:
        resumes.append(_Resume(claim, state, journey))
        return None
    if enrollment.stage is None:
        done.append(claim)
        return None
    flow = journey.flow_of(enrollment.stage)
    node = flow.get(enrollment.step) if flow else None
    if isinstance(node, SendNode):
        return _Job(claim, state, journey, enrollment.stage, node, enrollment.occurrence, enrollment.due)
    if node is not None:
        resumes.append(_Resume(claim, state, journey))
        return None
    gone = SendNode(id=enrollment.step, next=None, line=0, condition=None, channel="", template="")
    job = _Job(claim, state, journey, enrollment.stage, gone, enrollment.occurrence, enrollment.due)
    job.decide("skipped", "step_removed", "the journey no longer has this step")
    return job


def _resume(engine: Engine, resumes: list[_Resume], now: float) -> None:
    """Move runs past waits that ended, and start the runs of date triggers whose moment came."""
    scores = engine.scores()
    plans = []
    for item in resumes:
        journey, state = item.journey, item.state
        name = journey.name
        enrollment = state.enrollments[name]
        prefix = f"j:{name}:"
        guards: list[list[Any]] = [[prefix + part, state.raw.get(prefix + part, False)]
                                   for part in ("st", "oc", "sp", "du")]
        changes = Changes(state, now, scores)
        if enrollment.step == START:
            trigger = journey.trigger
            # Checked again at the moment itself: the contact may have changed since it was armed.
            if trigger is not None and trigger.kind == "date" and date_may_start(changes, journey):
                runs.start(changes, journey, RUN, "date", base=enrollment.due)
            else:
                changes.jset(name, sp=None, du=None)
        else:
            flow = journey.flow_of(enrollment.stage)
            node = flow.get(enrollment.step) if flow else None
            assert node is not None and enrollment.stage is not None and enrollment.due is not None
            runs.advance(changes, journey, enrollment.stage, resume_after(node), enrollment.due)
        for error in changes.errors:
            _log_rule_error(state.id, error)
        plans.append((item.claim, changes, {"g": guards}, item.claim.member))
    applied = apply_changes(engine, plans)
    after_apply(engine, [changes for (_, changes, _, _), ok in zip(plans, applied, strict=True) if ok])


def _gone(name: str) -> Journey:
    return Journey(name=name, path="")


def _postpone(engine: Engine, claims: list[Claim], now: float) -> None:
    logger.warning("%d step(s) wait for a journey file that does not load; retrying in %.0fs",
                   len(claims), JOURNEY_RETRY_SECONDS)
    later = now + engine.runtime.clock.to_clock_seconds(JOURNEY_RETRY_SECONDS)
    pipe = engine.runtime.redis.pipeline(transaction=False)
    for claim in claims:
        contact_id = claim.member.rsplit("|", 1)[-1]
        pipe.zadd(engine.runtime.keys.timers_for(contact_id), {claim.member: later})
    pipe.execute()
    engine.timers.ack(claims)


def _wait(engine: Engine, job: _Job, now: float, kind: str, code: str, detail: str, wall_seconds: float) -> None:
    """The step cannot go now (channel paused, rate limit): it waits in the timer store."""
    job.retry_at = now + engine.runtime.clock.to_clock_seconds(max(wall_seconds, 0.0))
    job.decide(kind, code, detail)


def _check_and_render(engine: Engine, job: _Job, now: float, paused: dict[str, Pause]) -> None:
    """Decide skips and failures that need no provider call; otherwise build the Delivery."""
    if job.kind:
        return
    step, state, journey = job.step, job.state, job.journey
    if step.condition is not None:
        try:
            if not step.condition.evaluate(rule_context(state, journey, TimeTracker(now), engine.scores())):
                return job.decide("skipped", "condition", f"if: {step.condition.source}")
        except RuleError as exc:
            return job.decide("failed", "rule_error", str(exc))
    adapter = engine.channels.get(step.channel)
    settings = engine.runtime.settings
    if adapter is None:
        # This worker's configuration does not route the channel (others may): wait, do not fail.
        return _wait(engine, job, now, "paused", "channel_not_configured",
                     f"no adapter serves channel {step.channel!r} in this worker", settings.pause_seconds)
    if step.channel in paused:
        pause = paused[step.channel]
        return _wait(engine, job, now, "paused", "channel_paused", f"channel paused: {pause.reason}",
                     pause.until - time.time())
    contact = {**state.attributes, "id": state.id}
    if adapter.consent_needed(step.channel):
        consent = state.attributes.get("consent", {})
        if not (isinstance(consent, dict) and consent.get(step.channel) is True):
            return job.decide("skipped", "no_consent", f"no consent for {step.channel}")
    to = adapter.address(step.channel, contact, step.options)
    if not to:
        why = {"email": "no valid email address", "sms": "no valid phone number"}.get(
            step.channel, f"no {step.channel} address")
        return job.decide("skipped", "no_address", why)
    key = f"{job.ledger_field}:{state.id}"
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if step.channel == "email":
        url = unsubscribe_url(settings.unsubscribe_url, settings.secret, state.id, step.channel)
        extra["unsubscribe_url"] = url
        headers.update(list_unsubscribe_headers(url, settings.unsubscribe_mailto))
    locale = state.attributes.get("locale")
    parts: dict[str, str] = {}
    used_locale = locale or journey.locale
    if any(name.startswith("k:") for name in state.raw):
        extra.update(_coupons(engine, job))
    if step.template:
        defaults = engine.catalog.defaults_for(locale, journey.locale)
        context = template_context(state, journey, job.scope, step.id, step.channel, now, defaults, extra,
                                   engine.scores())
        try:
            rendered = engine.renderer.render(step.channel, step.template, locale, journey.locale, context)
        except TemplateRenderError as exc:
            return job.decide("failed", "template_error", str(exc))
        parts, used_locale = dict(rendered.parts), rendered.locale
    metadata = {"journey": journey.name, "stage": job.scope, "step": step.id, "contact_id": state.id,
                "key": key}
    headers.update({"X-Lifecycle-Journey": journey.name, "X-Lifecycle-Step": f"{job.scope}/{step.id}",
                    "X-Lifecycle-Key": key})
    # Steps without a template (webhooks, provider-side templates) send the step's data instead.
    data = {} if step.template else {**step_data(state, journey, job.scope, step.id, now, engine.scores()),
                                         **_plain(extra)}
    job.delivery = Delivery(key=key, contact_id=state.id, journey=journey.name, stage=job.scope, step=step.id,
                            channel=step.channel, template=step.template, locale=used_locale, to=to,
                            parts=parts, at=now, headers=headers, metadata=metadata, options=step.options,
                            data=data)


def _coupons(engine: Engine, job: _Job) -> dict[str, Any]:
    """`coupons` (all of the contact's) and `coupon` (the one this run issued last) for templates."""
    coupons = CouponStore(engine.runtime).coupons_of(job.state.id, job.state.raw)
    found: dict[str, Any] = {"coupons": {name: c.as_template_value() for name, c in coupons.items()}}
    name = issued_in_run(job.state.raw, runs.run_key(job.journey.name, job.scope, job.occurrence))
    if name in coupons:
        found["coupon"] = coupons[name].as_template_value()
    return found


def _plain(extra: dict[str, Any]) -> dict[str, Any]:
    """Template extras as JSON for steps that send data (times as ISO text)."""
    return json.loads(json.dumps(extra, default=lambda value: value.isoformat() if hasattr(value, "isoformat")
                                 else str(value)))


def _mark_and_send(engine: Engine, jobs: list[_Job], now: float) -> None:
    if not jobs:
        return
    runtime = engine.runtime
    replies = engine.scripts.call(
        "mark", [runtime.keys.ledger(job.state.id) for job in jobs],
        [repr(time.time()), runtime.settings.lease_seconds, repr(now), *(job.ledger_field for job in jobs)])
    to_send: dict[str, list[_Job]] = {}
    untouched: list[Claim] = []
    for job, reply in zip(jobs, replies, strict=True):
        state, _, rest = reply.partition(":")
        if state == "busy":
            # Another worker is sending this step now; its outcome will release everything.
            job.kind = "busy"
        elif state == "done":
            job.kind = "done"
            untouched.append(job.claim)
        else:
            job.attempt = int(rest)
            adapter = engine.channels.get(job.step.channel)
            assert adapter is not None and job.delivery is not None
            if state == "ambiguous" and not adapter.idempotent:
                logger.warning("step %s: an earlier attempt may have been sent before its worker died; "
                               "not sending again (recorded as unknown)", job.delivery.key)
                job.decide("unknown", "interrupted", "an earlier attempt was interrupted mid-send")
                continue
            to_send.setdefault(job.step.channel, []).append(job)
    if untouched:
        engine.timers.ack(untouched)
    for channel, batch in to_send.items():
        adapter = engine.channels.get(channel)
        assert adapter is not None
        granted, wait = engine.limiter.take(adapter.name, len(batch))
        for job in batch[granted:]:
            _wait(engine, job, now, "throttled", "rate_limited",
                  f"{adapter.name} is limited to {engine.limiter.limits[adapter.name]:g} messages/s", wait)
        batch = batch[:granted]
        if not batch:
            continue
        try:
            results = adapter.send_many([job.delivery for job in batch if job.delivery is not None])
            if len(results) != len(batch):
                raise RuntimeError(f"send_many returned {len(results)} results for {len(batch)} deliveries")
        except Exception as exc:  # an adapter bug must not lose the batch: retry it like a 5xx
            logger.exception("adapter for %s raised", channel)
            results = [Retry(engine.runtime.settings.retry_base_seconds, f"adapter error: {exc}")] * len(batch)
        pause = None
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, Misconfigured):
                pause = pause or engine.pauses.pause(channel, result.reason)
                _wait(engine, job, now, "paused", "misconfigured", f"channel paused: {result.reason}",
                      pause.until - time.time())
            else:
                _classify(engine, job, result, now)


def _classify(engine: Engine, job: _Job, result: Result, now: float) -> None:
    settings = engine.runtime.settings
    if isinstance(result, Sent):
        job.decide("sent", "", result.detail or result.provider_id)
        job.outcome["id"] = result.provider_id
        job.outcome.update(result.info)
        job.effect = dict(result.effect)
    elif isinstance(result, Retry):
        if job.attempt >= settings.max_send_attempts:
            job.decide("failed", "gave_up", f"gave up after {job.attempt} attempts: {result.reason}")
            return
        backoff = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (job.attempt - 1))
        delay = max(backoff, result.after)
        job.retry_at = now + engine.runtime.clock.to_clock_seconds(delay)
        job.decide("retry", "", f"attempt {job.attempt}: {result.reason}; next in {delay:.0f}s")
    elif isinstance(result, Failed):
        job.decide("failed", result.code, result.reason)
        job.effect = dict(result.effect)


def _record(engine: Engine, jobs: list[_Job], now: float) -> None:
    runtime = engine.runtime
    keys = runtime.keys
    wall = time.time()
    script_keys: list[str] = [keys.activity, keys.stats]
    args: list[Any] = [seconds(now), ACTIVITY_LENGTH]
    effects: list[_Job] = []
    scores = engine.scores()
    recorded: list[_Job] = []
    for job in jobs:
        if job.kind in ("busy", "done"):
            continue
        step = job.step
        outcome = {"state": job.kind, "at": now, "w": wall, "ch": step.channel, "tpl": step.template,
                   "attempt": job.attempt, **job.outcome}
        if job.kind in WAITING and job.code in ("channel_paused", "channel_not_configured"):
            # Never marked: leave the ledger as it is (an earlier retry keeps its attempt count).
            outcome = {}
        if job.delivery is not None:
            outcome["loc"] = job.delivery.locale
        if job.kind != "sent" and job.detail:
            outcome["reason"] = job.detail
        if job.code:
            outcome["code"] = job.code
        more = ""
        if job.kind == "retry" or job.kind in WAITING:
            mode, next_id, next_due = "retry", "", job.retry_at
        elif step.next is None and job.scope != RUN:
            # The last step of a stage: nothing to walk, and record_step ends the steps (the common case).
            mode, next_id, next_due = "advance", "", None
        else:
            # The run moves on from this step to its next wait, doing what takes no time on the way.
            mode, next_id, next_due = "advance", "", None
            changes = job.changes = Changes(job.state, now, scores)
            result = runs.advance(changes, job.journey, job.scope, step.next, job.due)
            member = step_member(job.journey.name, job.state.id)
            changes.timers.pop(member, None)
            changes.fields.pop(f"j:{job.journey.name}:sp", None)
            changes.fields.pop(f"j:{job.journey.name}:du", None)
            if result.pending is not None:
                next_id, next_due = result.pending
            more = changes.encoded_ops()
            for error in changes.errors:
                _log_rule_error(job.state.id, error)
        contact_id = job.state.id
        script_keys += [keys.contact(contact_id), keys.timers_for(contact_id), keys.leases_for(contact_id),
                        keys.ledger(contact_id)]
        args += [contact_id, job.journey.name, job.scope, job.occurrence, step.id, job.ledger_field,
                 json.dumps(outcome, ensure_ascii=False) if outcome else "", mode, next_id,
                 due(next_due) if next_due is not None else "",
                 repr(job.claim.lease) if job.claim.lease is not None else "",
                 job.kind, step.channel, job.code, job.detail[:500], more]
        recorded.append(job)
        if job.kind in ("sent", "skipped") or job.kind in WAITING:
            # Every outcome is in the ledger and the activity log; per-message lines only when asked.
            logger.debug("%s %s/%s/%s -> %s: %s %s", job.kind, job.journey.name, job.scope, step.id,
                         contact_id, job.code, job.detail)
        else:
            logger.warning("%s %s/%s/%s -> %s: %s %s", job.kind, job.journey.name, job.scope, step.id,
                           contact_id, job.code, job.detail)
        if job.effect:
            effects.append(job)
    if len(script_keys) > 2:
        issue_coupons(engine, [job.changes for job in recorded if job.changes is not None])
        replies = engine.scripts.call("record_step", script_keys, args)
        after_apply(engine, [job.changes for job, ok in zip(recorded, replies, strict=True)
                             if ok and job.changes is not None])
    for job in effects:
        engine.store.apply_effects(job.state.id, job.effect)
