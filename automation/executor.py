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

from .channels import Delivery, Failed, Misconfigured, Retry, Sent
from .channels.base import Result
from .contacts import ContactState
from .context import rule_context, step_data, template_context
from .engine import Engine
from .expressions import RuleError, TimeTracker
from .journey import Journey, Stage, Step
from .keys import ACTIVITY_LENGTH, due, parse_member, seconds
from .pauses import Pause
from .stages import evaluate
from .templates import TemplateRenderError
from .timers import Claim
from .unsubscribe import list_unsubscribe_headers, unsubscribe_url

logger = logging.getLogger(__name__)
#: Outcomes of steps that could not go yet and wait in the timer store, attempts unchanged.
WAITING = frozenset({"paused", "throttled"})
#: When a step's journey failed to load, look again after this many wall-clock seconds.
JOURNEY_RETRY_SECONDS = 60.0


def run_batch(engine: Engine, claims: Iterable[Claim]) -> None:
    rechecks, steps, stale = [], [], []
    for claim in claims:
        kind = claim.member[:2]
        (rechecks if kind == "r|" else steps if kind == "s|" else stale).append(claim)
    if stale:
        logger.error("unknown timer kind(s): %s", [c.member for c in stale])
        engine.timers.ack(stale)
    if rechecks:
        reevaluate(engine, rechecks)
    if steps:
        execute_steps(engine, steps)


# -- stages -------------------------------------------------------------------------------------


def reevaluate(engine: Engine, claims: list[Claim]) -> None:
    """Re-evaluate the stages of the contacts in `claims` and apply the changes."""
    keys = engine.runtime.keys
    ids = [claim.member[2:] for claim in claims]
    states = engine.store.load_many(ids)
    served = engine.journeys.journeys
    journeys = list(served.values())
    now = engine.runtime.clock.now()
    # While a journey file fails to load, contacts in its stages keep being re-checked, so its
    # time-based changes are not lost; they happen once the file is fixed.
    retry_at = now + engine.runtime.clock.to_clock_seconds(JOURNEY_RETRY_SECONDS)
    unloaded = bool(engine.journeys.failed_files)
    script_keys: list[str] = [keys.activity, keys.stats]
    args: list[Any] = [seconds(now), ACTIVITY_LENGTH]
    missing = []
    rule_errors = 0
    for claim, contact_id in zip(claims, ids, strict=True):
        state = states[contact_id]
        if not state.exists:
            missing.append(claim)  # deleted meanwhile: evaluating would recreate it
            continue
        result = evaluate(state, journeys, now)
        for error in result.errors:
            _log_rule_error(contact_id, error)
        rule_errors += len(result.errors)
        recheck_at = result.recheck_at
        if unloaded and any(e.stage and name not in served for name, e in state.enrollments.items()):
            recheck_at = min(recheck_at or retry_at, retry_at)
        script_keys += [keys.contact(contact_id), keys.timers_for(contact_id), keys.leases_for(contact_id)]
        args += [contact_id, state.version, due(recheck_at) if recheck_at is not None else "",
                 repr(claim.lease) if claim.lease is not None else "", len(result.changes)]
        for change in result.changes:
            args += [change.journey, change.stage or "", change.first_step.id if change.first_step else "",
                     due(change.first_due) if change.first_due is not None else "", change.reason]
    if len(script_keys) > 2:
        engine.scripts.call("transition", script_keys, args)
    if rule_errors:
        engine.runtime.redis.hincrby(keys.stats, "rule_errors", rule_errors)
    if missing:
        engine.timers.ack(missing)


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
    """One due step of one contact, as it moves through the phases of a batch."""

    claim: Claim
    state: ContactState
    journey: Journey
    stage: Stage
    index: int
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

    @property
    def step(self) -> Step:
        return self.stage.steps[self.index]

    @property
    def ledger_field(self) -> str:
        return f"{self.journey.name}:{self.stage.name}:{self.occurrence}:{self.step.id}"

    def decide(self, kind: str, code: str = "", detail: str = "") -> None:
        self.kind, self.code, self.detail = kind, code, detail


def execute_steps(engine: Engine, claims: list[Claim]) -> None:
    runtime = engine.runtime
    now = runtime.clock.now()
    states = engine.store.load_many((parse_member(c.member)[2] for c in claims), recent=True)
    jobs: list[_Job] = []
    done: list[Claim] = []          # nothing to do: release the lease only
    postponed: list[Claim] = []     # journey not loaded right now: try again later
    for claim in claims:
        job = _prepare(engine, claim, states, now, done, postponed)
        if job is not None:
            jobs.append(job)
    if done:
        engine.timers.ack(done)
    if postponed:
        _postpone(engine, postponed, now)
    paused = engine.pauses.active() if jobs else {}
    for job in jobs:
        _check_and_render(engine, job, now, paused)
    _mark_and_send(engine, [job for job in jobs if not job.kind], now)
    _record(engine, [job for job in jobs if job.kind], now)


def _prepare(engine: Engine, claim: Claim, states: dict[str, ContactState], now: float,
             done: list[Claim], postponed: list[Claim]) -> _Job | None:
    _, journey_name, contact_id = parse_member(claim.member)
    state = states[contact_id]
    enrollment = state.enrollments.get(journey_name or "")
    if enrollment is None or enrollment.step is None or enrollment.due is None or enrollment.stage is None:
        done.append(claim)      # the contact left the stage or finished it
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
    stage = journey.stage(enrollment.stage)
    index = stage.step_index(enrollment.step) if stage else None
    if stage is None or index is None:
        stage = Stage(enrollment.stage, None, (Step(enrollment.step, 0, "", ""),))
        job = _Job(claim, state, journey, stage, 0, enrollment.occurrence, enrollment.due)
        job.decide("skipped", "step_removed", "the journey no longer has this step")
        return job
    return _Job(claim, state, journey, stage, index, enrollment.occurrence, enrollment.due)


def _gone(name: str) -> Journey:
    return Journey(name=name, path="", stages=())


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
            if not step.condition.evaluate(rule_context(state, journey, TimeTracker(now))):
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
    if adapter.needs_consent:
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
    if step.template:
        defaults = engine.catalog.defaults_for(locale, journey.locale)
        context = template_context(state, journey, job.stage.name, step.id, step.channel, now, defaults, extra)
        try:
            rendered = engine.renderer.render(step.channel, step.template, locale, journey.locale, context)
        except TemplateRenderError as exc:
            return job.decide("failed", "template_error", str(exc))
        parts, used_locale = dict(rendered.parts), rendered.locale
    metadata = {"journey": journey.name, "stage": job.stage.name, "step": step.id, "contact_id": state.id,
                "key": key}
    headers.update({"X-Lifecycle-Journey": journey.name, "X-Lifecycle-Step": f"{job.stage.name}/{step.id}",
                    "X-Lifecycle-Key": key})
    # Steps without a template (webhooks, provider-side templates) send the step's data instead.
    data = {} if step.template else {**step_data(state, journey, job.stage.name, step.id, now), **extra}
    job.delivery = Delivery(key=key, contact_id=state.id, journey=journey.name, stage=job.stage.name, step=step.id,
                            channel=step.channel, template=step.template, locale=used_locale, to=to,
                            parts=parts, at=now, headers=headers, metadata=metadata, options=step.options,
                            data=data)


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
        if job.kind == "retry" or job.kind in WAITING:
            mode, next_id, next_due = "retry", "", job.retry_at
        else:
            mode = "advance"
            following = job.stage.steps[job.index + 1] if job.index + 1 < len(job.stage.steps) else None
            next_id = following.id if following else ""
            next_due = job.due + following.delay if following else None
        contact_id = job.state.id
        script_keys += [keys.contact(contact_id), keys.timers_for(contact_id), keys.leases_for(contact_id),
                        keys.ledger(contact_id)]
        args += [contact_id, job.journey.name, job.stage.name, job.occurrence, step.id, job.ledger_field,
                 json.dumps(outcome, ensure_ascii=False) if outcome else "", mode, next_id,
                 due(next_due) if next_due is not None else "",
                 repr(job.claim.lease) if job.claim.lease is not None else "",
                 job.kind, step.channel, job.code, job.detail[:500]]
        if job.kind in ("sent", "skipped") or job.kind in WAITING:
            # Every outcome is in the ledger and the activity log; per-message lines only when asked.
            logger.debug("%s %s/%s/%s -> %s: %s %s", job.kind, job.journey.name, job.stage.name, step.id,
                         contact_id, job.code, job.detail)
        else:
            logger.warning("%s %s/%s/%s -> %s: %s %s", job.kind, job.journey.name, job.stage.name, step.id,
                           contact_id, job.code, job.detail)
        if job.effect:
            effects.append(job)
    if len(script_keys) > 2:
        engine.scripts.call("record_step", script_keys, args)
    for job in effects:
        engine.store.apply_effects(job.state.id, job.effect)
