"""Due steps (`s|<journey>|<contact>` timers): sends go out, waits that ended move their runs on.

A batch of due steps goes through named phases, each over the whole batch, so every phase
costs one Redis round trip or one provider call per channel, not one per contact:

1. prepare   load the contacts; sort each claim into a send, a run to move on (a wait that
             ended, a date trigger whose moment came), or nothing left to do;
2. check     decide what needs no provider call: the step's `if:`, a paused or unrouted
             channel, consent, an address;
3. render    the message in the contact's language, as a `Delivery`;
4. send      mark the ledger entries (mark.lua), take rate-limit permits, call the adapters,
             classify what they answer;
5. record    write each outcome and move each run on to its next wait (apply.lua, one plan
             per contact, automation.engine.apply).

A step is idempotent by its key (journey, stage, occurrence, step, contact): a redelivered
message finds the outcome in the ledger and sends nothing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Mapping

from automation.channels import Delivery, Failed, Misconfigured, Remove, Retry, Sent
from automation.channels.base import Result
from automation.engine import runs
from automation.engine.apply import Plan, apply_plans, log_rule_errors
from automation.engine.context import plain_data, rule_context, send_options, step_data, template_context
from automation.engine.broadcasts import cancelled
from automation.engine.caps import caps_plan
from automation.engine.evaluation import start_armed
from automation.engine.runs import START, Changes
from automation.engine.services import Engine
from automation.calendar import quiet_until, zone
from automation.expressions import RuleError, TimeTracker
from automation.language.flow import SendNode, resume_after
from automation.language.journey import RUN, Journey
from automation.language.workspace import Workspace
from automation.messages.templates import TemplateRenderError
from automation.messages.unsubscribe import list_unsubscribe_headers, unsubscribe_url
from automation.store import fields
from automation.store.contacts import ContactState
from automation.store.coupons import issued_in_run
from automation.store.keys import due as due_text
from automation.store.keys import parse_member, sent_day_stat, step_member, step_reason_stat, step_stat
from automation.store.patience import REDIS_DOWN, until_redis_answers
from automation.store.pauses import Pause
from automation.store.suppression import ADDRESS_ATTRIBUTES, normalize
from automation.store.timers import Claim

logger = logging.getLogger(__name__)
#: Outcomes of steps that could not go yet and wait in the timer store, attempts unchanged.
WAITING = frozenset({"paused", "throttled", "held", "deferred"})
#: Waits that were never marked for sending: the ledger is left as it is (an earlier retry keeps its
#: attempt count).
UNMARKED = frozenset({"channel_paused", "channel_not_configured"})
#: When a step's journey failed to load, look again after this many wall-clock seconds.
JOURNEY_RETRY_SECONDS = 60.0
#: The shortest time limit a batch runs under (workers/actors.py: the longer of this and the lease).
BATCH_TIME_LIMIT = 60.0


@dataclass
class Job:
    """One due send of one contact, as it moves through the phases of a batch."""

    claim: Claim
    state: ContactState
    journey: Journey
    scope: str                # the stage, or RUN for a triggered journey
    step: SendNode
    occurrence: int
    due: float
    outcome: dict[str, Any] = field(default_factory=dict)
    kind: str = ""            # sent, skipped, failed, retry, unknown, paused, throttled; "" while undecided
    code: str = ""            # short reason code for stats: no_consent, template_error ...
    detail: str = ""
    delivery: Delivery | None = None
    attempt: int = 1
    retry_at: float | None = None
    effect: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False
    marketing: bool = True    # marketing or transactional (automation.language.workspace)
    address: str = ""         # what the channel's suppression list is checked for ("": none)
    caps: list[list[Any]] = field(default_factory=list)   # frequency caps for mark.lua
    #: The id the run stored for this step when the version served names it otherwise and the step was
    #: tried under that id already: its ledger entry (and idempotency key) stay under it.
    ledger_step: str = ""

    @property
    def ledger_field(self) -> str:
        return f"{runs.run_key(self.journey.name, self.scope, self.occurrence)}:{self.ledger_step or self.step.id}"

    @cached_property
    def options(self) -> Mapping[str, Any]:
        """The step's options, those written `vars.<name>` read from the run's vars (a split variant's);
        None where the run has no value (`check` fails the step then)."""
        enrollment = self.state.enrollments.get(self.journey.name)
        return send_options(self.journey, self.scope, self.step, enrollment.assignments if enrollment else {})

    def decide(self, kind: str, code: str = "", detail: str = "") -> None:
        self.kind, self.code, self.detail = kind, code, detail

    def wait(self, engine: Engine, now: float, kind: str, code: str, detail: str, wall_seconds: float) -> None:
        """The step cannot go now (channel paused, rate limit): it waits in the timer store."""
        self.retry_at = now + engine.runtime.clock.to_clock_seconds(max(wall_seconds, 0.0))
        self.decide(kind, code, detail)


@dataclass
class Batch:
    """The claims of one message, sorted by what they need."""

    jobs: list[Job] = field(default_factory=list)
    resumes: list[tuple[Claim, ContactState, Journey]] = field(default_factory=list)
    done: list[Claim] = field(default_factory=list)         # nothing to do: release the lease only
    postponed: list[Claim] = field(default_factory=list)    # journey not loaded right now: try later


def execute_steps(engine: Engine, claims: list[Claim]) -> None:
    now = engine.runtime.clock.now()
    batch = prepare(engine, claims, now)
    if batch.done:
        engine.timers.ack(batch.done)
    if batch.postponed:
        postpone(engine, batch.postponed, now)
    if batch.resumes:
        resume(engine, batch.resumes, now)
    jobs = batch.jobs
    paused = engine.pauses.active() if jobs else {}
    for job in jobs:
        if not job.kind:
            check(engine, job, now, paused)
        if not job.kind:
            render(engine, job, now)
    send(engine, [job for job in jobs if not job.kind], now)
    record(engine, [job for job in jobs if job.kind not in ("", "busy") and not job.recorded], now)


# -- 1. prepare -----------------------------------------------------------------------------------

def prepare(engine: Engine, claims: list[Claim], now: float) -> Batch:
    members = [parse_member(claim.member) for claim in claims]
    states = engine.store.load_many((contact_id for _, _, contact_id in members), recent=True)
    batch = Batch()
    for claim, (_, name, contact_id) in zip(claims, members, strict=True):
        state = states[contact_id]
        journey_name = name or ""
        enrollment = state.enrollments.get(journey_name)
        if enrollment is None or enrollment.step is None or enrollment.due is None:
            batch.done.append(claim)      # the run ended or the contact left the stage
            continue
        if enrollment.due > now + 0.001:
            batch.done.append(claim)      # a redelivery of an earlier step; the next one has its own timer
            continue
        journey = engine.journeys.get(journey_name)
        if journey is None:
            if engine.journeys.failed_files:
                batch.postponed.append(claim)
                continue
            journey = Journey(name=journey_name, path="")     # the journey is gone
        if enrollment.step == START:
            batch.resumes.append((claim, state, journey))
            continue
        if enrollment.stage is None:
            batch.done.append(claim)
            continue
        flow = journey.flow_of(enrollment.stage)
        node = flow.get(engine.step_of(journey, enrollment) or "") if flow else None
        if isinstance(node, SendNode):
            job = Job(claim, state, journey, enrollment.stage, node, enrollment.occurrence, enrollment.due)
            if node.id != enrollment.step:
                job.ledger_step = enrollment.step       # kept only if tried under it (below)
            batch.jobs.append(job)
        elif node is not None:
            batch.resumes.append((claim, state, journey))
        else:
            gone = SendNode(id=enrollment.step, next=None, line=0, condition=None, channel="", template="")
            job = Job(claim, state, journey, enrollment.stage, gone, enrollment.occurrence, enrollment.due)
            job.decide("skipped", "step_removed", "the journey no longer has this step")
            batch.jobs.append(job)
    _keep_tried_ids(engine, [job for job in batch.jobs if job.ledger_step and not job.kind])
    return batch


def _keep_tried_ids(engine: Engine, jobs: list[Job]) -> None:
    """A step the run stored under another id (an older version's) that was tried under that id (sent,
    in doubt, to retry) goes on under it: a fresh entry under the new id would send it again."""
    if not jobs:
        return
    pipe = engine.runtime.redis.pipeline(transaction=False)
    for job in jobs:
        pipe.hexists(engine.runtime.keys.ledger(job.state.id), job.ledger_field)
    for job, tried in zip(jobs, pipe.execute(), strict=True):
        if not tried:
            job.ledger_step = ""


def resume(engine: Engine, resumes: list[tuple[Claim, ContactState, Journey]], now: float) -> None:
    """Move runs past waits that ended, and start runs armed for a moment that came (date triggers,
    local-time broadcasts)."""
    scores = engine.scores()
    plans = []
    stopped = cancelled(engine.runtime, [(journey.name, state.enrollments[journey.name].broadcast or "")
                                         for _, state, journey in resumes
                                         if state.enrollments[journey.name].step == START
                                         and journey.trigger is not None and journey.trigger.broadcasts])
    for claim, state, journey in resumes:
        name = journey.name
        enrollment = state.enrollments[name]
        guards = [[fields.run(name, part), state.raw.get(fields.run(name, part), False)]
                  for part in ("st", "oc", "sp", "du")]
        changes = Changes(state, now, scores)
        if enrollment.step == START:
            assert enrollment.due is not None
            if (name, enrollment.broadcast or "") in stopped or not start_armed(changes, journey, enrollment.due):
                changes.jset(name, sp=None, du=None)
        else:
            flow = journey.flow_of(enrollment.stage)
            node = flow.get(engine.step_of(journey, enrollment) or "") if flow else None
            assert node is not None and enrollment.stage is not None and enrollment.due is not None
            runs.advance(changes, journey, enrollment.stage, resume_after(node), enrollment.due)
        log_rule_errors(state.id, changes.errors)
        plans.append(Plan(claim, changes, guards=guards))
    apply_plans(engine, plans)


def postpone(engine: Engine, claims: list[Claim], now: float) -> None:
    logger.warning("%d step(s) wait for a journey file that does not load; retrying in %.0fs",
                   len(claims), JOURNEY_RETRY_SECONDS)
    later = now + engine.runtime.clock.to_clock_seconds(JOURNEY_RETRY_SECONDS)
    pipe = engine.runtime.redis.pipeline(transaction=False)
    for claim in claims:
        _, _, contact_id = parse_member(claim.member)
        pipe.zadd(engine.runtime.keys.timers_for(contact_id), {claim.member: later})
    pipe.execute()
    engine.timers.ack(claims)


# -- 2. check -------------------------------------------------------------------------------------

def check(engine: Engine, job: Job, now: float, paused: dict[str, Pause]) -> None:
    """Decide skips, failures and waits that need no provider call."""
    step, state, journey = job.step, job.state, job.journey
    if step.once and fields.once_done(state.raw.get(fields.run(journey.name, "on")),
                                      fields.once_tag(job.scope, step.id)):
        return job.decide("skipped", "once", "sent before (once: true)")
    if step.condition is not None:
        try:
            if not step.condition.evaluate(rule_context(state, journey, TimeTracker(now), engine.scores())):
                return job.decide("skipped", "condition", f"if: {step.condition.source}")
        except RuleError as exc:
            return job.decide("failed", "rule_error", str(exc))
    missing = [name for key, name in step.options_from_vars.items() if job.options.get(key) is None]
    if missing:
        return job.decide("failed", "missing_var", f"vars.{missing[0]} has no value in this run (set it in every "
                                                   "variant of the split, or in the journey's vars)")
    adapter = engine.channels.get(step.channel)
    if adapter is None:
        # This worker's configuration does not route the channel (others may): wait, do not fail.
        return job.wait(engine, now, "paused", "channel_not_configured",
                        f"no adapter serves channel {step.channel!r} in this worker",
                        engine.runtime.settings.pause_seconds)
    if step.channel in paused:
        pause = paused[step.channel]
        return job.wait(engine, now, "paused", "channel_paused", f"channel paused: {pause.reason}",
                        pause.until - time.time())
    job.marketing = journey.type_of(step) == "marketing"
    # Transactional messages (receipts, password resets) need no marketing consent.
    if job.marketing and adapter.consent_needed(step.channel):
        consent = state.attributes.get("consent", {})
        if not (isinstance(consent, dict) and consent.get(step.channel) is True):
            return job.decide("skipped", "no_consent", f"no consent for {step.channel}")
    address = adapter.address(step.channel, {**state.attributes, "id": state.id}, job.options)
    if not address:
        return job.decide("skipped", "no_address", adapter.missing_address(step.channel))
    if step.channel in ADDRESS_ATTRIBUTES and isinstance(address, str):
        job.address = normalize(step.channel, address)
    if job.marketing:
        workspace = engine.journeys.workspace
        if state.attributes.get("do_not_contact") is True:
            return job.decide("skipped", "do_not_contact", "the contact asked for no marketing")
        quiet = _quiet_hours(job, workspace, now)
        if quiet is not None:
            return quiet
        job.caps = caps_plan(engine.journeys.journeys, workspace, job.state, job.journey, job.step, now)
    return None


def _quiet_hours(job: Job, workspace: Workspace, now: float) -> None:
    """Hold (or skip) a marketing message that falls due in the contact's quiet hours."""
    windows = job.journey.quiet_hours if job.journey.quiet_hours is not None else workspace.quiet_hours
    window = windows.get(job.step.channel)
    if window is None:
        return None
    tz = zone(job.state.attributes.get("timezone"), job.journey.timezone)
    until = quiet_until(now, tz, window.start, window.end)
    if until is None:
        return None
    hours = f"{window.start:%H:%M}-{window.end:%H:%M} {tz.key}"
    if window.action == "skip":
        return job.decide("skipped", "quiet_hours", f"quiet hours ({hours})")
    job.retry_at = until
    return job.decide("held", "quiet_hours", f"quiet hours ({hours}); held until {window.end:%H:%M} local")


# -- 3. render ------------------------------------------------------------------------------------

def render(engine: Engine, job: Job, now: float) -> None:
    """The message as a Delivery, in the contact's language (or a template failure)."""
    step, state, journey = job.step, job.state, job.journey
    adapter = engine.channels.get(step.channel)
    assert adapter is not None
    settings = engine.runtime.settings
    options = job.options
    to = adapter.address(step.channel, {**state.attributes, "id": state.id}, options)
    key = f"{job.ledger_field}:{state.id}"
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if adapter.unsubscribe_link(step.channel):
        url = unsubscribe_url(settings.unsubscribe_url, settings.secret, state.id, step.channel)
        extra["unsubscribe_url"] = url
        headers.update(list_unsubscribe_headers(url, settings.unsubscribe_mailto))
    locale = state.attributes.get("locale")
    parts: dict[str, str] = {}
    used_locale = locale or journey.locale
    if any(name.startswith(fields.COUPON) for name in state.raw):
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
                                     **plain_data(extra)}
    job.delivery = Delivery(key=key, contact_id=state.id, journey=journey.name, stage=job.scope, step=step.id,
                            channel=step.channel, template=step.template, locale=used_locale, to=to,
                            parts=parts, at=now, headers=headers, metadata=metadata, options=options,
                            data=data)
    return None


def _coupons(engine: Engine, job: Job) -> dict[str, Any]:
    """`coupons` (all of the contact's) and `coupon` (the one this run issued last) for templates."""
    coupons = engine.store.coupons.coupons_of(job.state.id, job.state.raw)
    found: dict[str, Any] = {"coupons": {name: c.as_template_value() for name, c in coupons.items()}}
    name = issued_in_run(job.state.raw, runs.run_key(job.journey.name, job.scope, job.occurrence))
    if name in coupons:
        found["coupon"] = coupons[name].as_template_value()
    return found


# -- 4. send --------------------------------------------------------------------------------------

def send(engine: Engine, jobs: list[Job], now: float) -> None:
    """Send per channel, in waves of provider requests, each marked just before it is made."""
    by_channel: dict[str, list[Job]] = {}
    for job in jobs:
        by_channel.setdefault(job.step.channel, []).append(job)
    for channel, batch in by_channel.items():
        _send_channel(engine, channel, batch, now)


def _send_channel(engine: Engine, channel: str, batch: list[Job], now: float) -> None:
    adapter = engine.channels.get(channel)
    assert adapter is not None
    granted, wait = engine.limiter.take(adapter.name, len(batch))
    for job in batch[granted:]:
        job.wait(engine, now, "throttled", "rate_limited",
                 f"{adapter.name} is limited to {engine.limiter.limits[adapter.name]:g} messages/s", wait)
    batch = batch[:granted]
    if not batch:
        return
    requests = _requests(adapter, batch)
    width = max(1, int(adapter.concurrency))
    pause: Pause | None = None
    for start in range(0, len(requests), width):
        wave = [batch[index] for request in requests[start:start + width] for index in request]
        if pause is not None:
            # The provider refused our credentials in an earlier wave: the rest wait, unmarked.
            for job in wave:
                job.wait(engine, now, "paused", "channel_paused", f"channel paused: {pause.reason}",
                         pause.until - time.time())
            continue
        token = uuid.uuid4().hex
        ended = False
        try:
            ready = mark(engine, wave, now, adapter.idempotent, token)
            if ready:
                pause = _send_wave(engine, channel, adapter, ready, now, pause)
            # Recorded at once: a crash now leaves in doubt only the requests of the next wave.
            ended = record(engine, [job for job in wave if job.kind and job.kind != "busy"], now, wave=token)
        finally:
            if not ended:
                _end_wave(engine, token)


def _send_wave(engine: Engine, channel: str, adapter: Any, ready: list[Job], now: float,
               pause: Pause | None) -> Pause | None:
    """Call the adapter for a marked wave and classify what it answers; the channel's pause, if any."""
    try:
        results = adapter.send_many([job.delivery for job in ready if job.delivery is not None])
        if len(results) != len(ready):
            raise RuntimeError(f"send_many returned {len(results)} results for {len(ready)} deliveries")
    except Exception as exc:  # an adapter bug must not lose the batch: retry it like a 5xx
        logger.exception("adapter for %s raised", channel)
        results = [Retry(engine.runtime.settings.retry_base_seconds, f"adapter error: {exc}")] * len(ready)
    for job, result in zip(ready, results, strict=True):
        if isinstance(result, Misconfigured):
            pause = pause or engine.pauses.pause(channel, result.reason)
            job.wait(engine, now, "paused", "misconfigured", f"channel paused: {result.reason}",
                     pause.until - time.time())
        else:
            classify(engine, job, result, now)
    return pause


def _requests(adapter: Any, batch: list[Job]) -> list[list[int]]:
    """The adapter's provider requests for these jobs; one per message if its answer is not a partition."""
    requests = adapter.requests([job.delivery for job in batch])
    if sorted(index for request in requests for index in request) != list(range(len(batch))):
        logger.error("adapter %s: requests() must use each delivery once; sending one per request", adapter.name)
        return [[index] for index in range(len(batch))]
    return requests


def _end_wave(engine: Engine, token: str) -> None:
    """The wave is over (recorded, or failed on the way): its marks are no longer a send in progress.
    Recording removes it already; this covers a wave that raised (best effort: if Redis is gone,
    its marks count as busy only until the mark is a batch's longest run old)."""
    try:
        engine.runtime.redis.hdel(engine.runtime.keys.waves, token)
    except REDIS_DOWN:
        logger.warning("could not end wave %s; its marks stay busy for at most %.0fs", token,
                       max(BATCH_TIME_LIMIT, engine.runtime.settings.lease_seconds))


def mark(engine: Engine, wave: list[Job], now: float, idempotent: bool, token: str | None = None) -> list[Job]:
    """Mark a wave's steps "sending" (mark.lua) and return those to send now.

    Consent and the contact's existence are checked again in the same script, so no message is
    marked, and none sent, after an opt-out has returned. A step an earlier attempt left in doubt
    (its worker died during the request) is sent again at once only if the adapter's provider
    deduplicates by our key; otherwise it waits for the provider's confirmation, and after
    `reconcile_seconds` the channel's policy sends it again or fails it.
    """
    runtime = engine.runtime
    settings = runtime.settings
    keys: list[str] = [runtime.keys.liveness, runtime.keys.ambiguous, runtime.keys.waves]
    marked = time.time()
    args: list[Any] = [repr(marked), settings.liveness_seconds, repr(now), engine.worker_id, token or uuid.uuid4().hex,
                       max(BATCH_TIME_LIMIT, settings.lease_seconds), fields.attribute("do_not_contact")]
    for job in wave:
        channel = job.step.channel
        adapter = engine.channels.get(channel)
        consent = fields.attribute(f"consent.{channel}") \
            if job.marketing and adapter is not None and adapter.consent_needed(channel) else ""
        flags = ("d" if idempotent else "") + ("r" if settings.ambiguous.get(channel) == "resend" else "") + \
            ("m" if job.marketing else "")
        keys += [runtime.keys.ledger(job.state.id), runtime.keys.contact(job.state.id),
                 runtime.keys.suppressed(channel)]
        args += [job.ledger_field, consent, flags, job.state.id, job.address,
                 json.dumps(job.caps, separators=(",", ":")) if job.caps else "[]"]
    ready = []
    replies = until_redis_answers(lambda: engine.scripts.call("mark", keys, args), settings.redis_patience_seconds,
                                  "marking the steps")
    for job, reply in zip(wave, replies, strict=True):
        state, _, rest = reply.partition(":")
        if state == "new":
            job.attempt = int(rest)
            job.outcome["mw"] = marked     # when it was handed to the provider (wall clock)
            ready.append(job)
        elif state == "busy":
            job.kind = "busy"       # another live worker is sending it; its outcome moves the run on
        elif state == "done":
            job.kind = "continue"   # recorded already (a redelivery, or confirmed by the provider)
        elif state == "ambiguous":
            job.attempt = int(rest) - 1
            job.retry_at = now + runtime.clock.to_clock_seconds(settings.reconcile_seconds)
            job.decide("unknown", "interrupted",
                       "the worker sending this died during its provider request; waiting up to "
                       f"{settings.reconcile_seconds:.0f}s for the provider to confirm it")
            logger.warning("step %s: in doubt after a crash; waiting for the provider's confirmation",
                           job.ledger_field)
        elif state == "unconfirmed":
            job.attempt = int(rest) - 1
            job.decide("failed", "unconfirmed",
                       f"a send interrupted by a crash was not confirmed by the provider within "
                       f"{settings.reconcile_seconds:.0f}s; not sent again (at most once for {job.step.channel})")
        elif state == "gone":
            job.decide("skipped", "contact_deleted", "the contact was deleted")
        elif state == "no_consent":
            job.decide("skipped", "no_consent", f"no consent for {job.step.channel}")
        elif state == "do_not_contact":
            job.decide("skipped", "do_not_contact", "the contact asked for no marketing")
        elif state == "suppressed":
            why = json.loads(rest).get("reason", "") if rest.startswith("{") else rest
            job.decide("skipped", "suppressed", f"{job.address} is on the {job.step.channel} suppression list: {why}")
        elif state == "capped":
            until = float(rest)
            if engine.journeys.workspace.cap_action == "skip":
                job.decide("skipped", "frequency_capped", "a frequency cap is reached")
            else:
                job.retry_at = until
                job.decide("deferred", "frequency_capped", "a frequency cap is reached; deferred until a slot frees")
    return ready


def classify(engine: Engine, job: Job, result: Result, now: float) -> None:
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


# -- 5. record ------------------------------------------------------------------------------------

def record(engine: Engine, jobs: list[Job], now: float, wave: str | None = None) -> bool:
    """Write every outcome, and move each run on from its step if the contact is still there;
    `wave` (a token) is the wave of requests these outcomes end. True if anything was written."""
    if not jobs:
        return False
    for job in jobs:
        job.recorded = True
    wall = time.time()
    scores = engine.scores()
    plans = [record_plan(job, now, wall, scores) for job in jobs]
    if wave is not None:
        plans[0].always.append(["wd", wave])
    apply_plans(engine, plans)
    for job in jobs:
        if job.kind in ("sent", "skipped") or job.kind in WAITING:
            # Every outcome is in the ledger and the activity log; per-message lines only when asked.
            logger.debug("%s %s/%s/%s -> %s: %s %s", job.kind, job.journey.name, job.scope, job.step.id,
                         job.state.id, job.code, job.detail, extra=_ids(job))
        else:
            logger.warning("%s %s/%s/%s -> %s: %s %s", job.kind, job.journey.name, job.scope, job.step.id,
                           job.state.id, job.code, job.detail, extra=_ids(job))
        if job.effect:
            sets = {name: value for name, value in job.effect.items() if not isinstance(value, Remove)}
            removals = {name: value.values for name, value in job.effect.items() if isinstance(value, Remove)}
            engine.store.apply_effects(job.state.id, sets, removals)
    return True


def record_plan(job: Job, now: float, wall: float, scores: dict[str, Any]) -> Plan:
    """The step's outcome (written whatever happens) and its run's move (only if still at the step)."""
    step, name, scope = job.step, job.journey.name, job.scope
    always: list[list[Any]] = []
    if job.kind != "continue":      # "continue": the outcome is in the ledger already
        if not (job.kind in WAITING and job.code in UNMARKED):
            outcome = {"state": job.kind, "at": now, "w": wall, "ch": step.channel, "tpl": step.template,
                       "attempt": job.attempt, **job.outcome}
            if job.delivery is not None:
                outcome["loc"] = job.delivery.locale
            if job.kind != "sent" and job.detail:
                outcome["reason"] = job.detail
            if job.code:
                outcome["code"] = job.code
            always.append(["l", job.ledger_field, json.dumps(outcome, ensure_ascii=False)])
        always.append(["x", ["k", job.kind, "j", name, "s", scope, "p", step.id, "ch", step.channel,
                             "d", job.detail[:500]]])
        for stat in (job.kind, f"{job.kind}:{step.channel}" if step.channel else "",
                     f"{job.kind}:{job.code}" if job.code else "", step_stat(name, scope, step.id, job.kind)):
            if stat:
                always.append(["i", stat, "1"])
        # For `lifecycle report`: why a step's messages were not sent, and sends per day.
        if job.kind in ("failed", "skipped") and job.code:
            always.append(["i", step_reason_stat(name, scope, step.id, job.code), "1"])
        elif job.kind == "sent":
            always.append(["i", sent_day_stat(_utc_day(int(now // 86400)), step.channel), "1"])
    if job.kind == "unknown":
        # In doubt until the provider confirms it or its time is up (mark.lua settles it then).
        always.append(["za", f"{job.state.id}|{job.ledger_field}", repr(now)])
    # The run's step as stored: a run of another version of the journey names it by that version's id.
    stored = job.state.enrollments[name].step if name in job.state.enrollments else step.id
    changes = Changes(job.state, now, scores)
    if step.once and job.kind in ("sent", "unknown"):
        # At most once: marked whatever the guard says (the message went out), and in the run's changes
        # too, so a `once` step the run passes next adds to it rather than writing over it.
        done = fields.add_once(job.state.raw.get(fields.run(name, "on")), [fields.once_tag(scope, step.id)])
        always.append(["h", fields.run(name, "on"), done])
        changes.jset(name, on=done)
    if job.kind in ("retry", "unknown") or job.kind in WAITING:
        changes.timers[step_member(name, job.state.id)] = job.retry_at
        if job.kind != "unknown" and job.retry_at is not None:
            # Held (quiet hours, a cap, a pause, a retry): the run waits at the step until it goes, and
            # the steps after it count from then. A late worker or an expired lease moves nothing.
            changes.jset(name, du=due_text(job.retry_at))
    elif step.next is None and scope != RUN:
        changes.jset(name, reload=False, sp=None, du=None,
                     **({"vr": None} if changes.enrollment(name).version else {}))
        # (the last step of a stage: nothing to walk)
    else:
        runs.advance(changes, job.journey, scope, step.next, job.due)
        log_rule_errors(job.state.id, changes.errors)
    guards = [[fields.run(name, "st"), scope], [fields.run(name, "oc"), str(job.occurrence)],
              [fields.run(name, "sp"), stored or step.id]]
    return Plan(job.claim, changes, guards=guards, always=always)


@lru_cache(maxsize=4)
def _utc_day(day_number: int) -> str:
    """`YYYY-MM-DD` of a UTC day (days since the epoch): formatted once per day, not once per message."""
    return datetime.fromtimestamp(day_number * 86400, timezone.utc).strftime("%Y-%m-%d")


def _ids(job: Job) -> dict[str, str]:
    """The ids a structured log line carries for a step (automation.logs)."""
    return {"contact": job.state.id, "journey": job.journey.name, "step": job.step.id}
