"""A broadcast's dry run: whom it would reach, per channel and locale, after every guardrail.

It runs the engine's own decisions on each contact and writes nothing: the broadcast's offer and
the run's walk to its first message (automation.engine.evaluation and runs, through timed waits as
the workers would), the checks of a due step (automation.engine.steps.check: the step's `if:`,
consent by message type, do-not-contact, an address, quiet hours), then what mark.lua would decide
(suppression lists; frequency caps, automation.engine.caps). What can differ from the real
broadcast is only what changes meanwhile: contacts' data, other journeys' messages, the clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from typing import Any, Mapping

from automation.engine import runs
from automation.engine.broadcasts import SCAN_COUNT, start_of
from automation.engine.caps import capped_until
from automation.engine.evaluation import offer_broadcast, start_armed
from automation.engine.runs import START, Changes
from automation.engine.services import Engine
from automation.engine.steps import Job, check
from automation.language.flow import SendNode, WaitForNode, resume_after
from automation.language.journey import RUN, Journey, ScoreDef
from automation.store.contacts import ContactState
from automation.store.keys import step_member
from automation.store.suppression import Suppressions
from automation.store.timers import Claim

#: Timed waits a dry run walks through before it stops looking for the first message.
MAX_WAITS = 20
#: Outcomes of the first message: sent when the run starts, held by quiet hours, deferred by a
#: frequency cap, waiting for a paused channel, not sent.
SENT, HELD, DEFERRED, PAUSED, NOT_SENT = "sent", "held", "deferred", "paused", "not sent"


@dataclass
class DryRun:
    """What a broadcast would do: contacts looked at, why some take no part, and the first message
    of each run by (channel, locale, outcome, reason)."""

    journey: str
    at: float
    local: str = ""
    day: str = ""
    contacts: int = 0
    not_taking_part: Counter[str] = field(default_factory=Counter)
    messages: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    no_message: Counter[str] = field(default_factory=Counter)    # runs without a first message to send

    @property
    def taking_part(self) -> int:
        return self.contacts - sum(self.not_taking_part.values())

    def reaching(self) -> dict[tuple[str, str], Counter[str]]:
        """(channel, locale) -> outcome -> contacts."""
        table: dict[tuple[str, str], Counter[str]] = {}
        for (channel, locale, outcome, _), count in self.messages.items():
            table.setdefault((channel, locale), Counter())[outcome] += count
        return dict(sorted(table.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "journey": self.journey, "at": _iso(self.at), "local": self.local or None, "day": self.day or None,
            "contacts": self.contacts, "taking_part": self.taking_part,
            "not_taking_part": dict(sorted(self.not_taking_part.items())),
            "messages": [{"channel": channel, "locale": locale, "outcome": outcome, "reason": reason or None,
                          "contacts": count}
                         for (channel, locale, outcome, reason), count in sorted(self.messages.items())],
            "no_message": dict(sorted(self.no_message.items())),
        }

    def format(self) -> str:
        when = f"{self.local} in each contact's zone" + (f" on {self.day}" if self.day else "") \
            if self.local else _iso(self.at)
        lines = [f"broadcast {self.journey} ({when}), dry run: {self.contacts} contact(s), "
                 f"{self.taking_part} take part"]
        if self.not_taking_part:
            lines.append("  not taking part: " + _reasons(self.not_taking_part))
        table = self.reaching()
        if table:
            lines.append(f"  {'channel':<9}{'locale':<8}{'get it':>8}{'at once':>9}{'held':>7}{'deferred':>10}"
                         f"{'paused':>8}{'not sent':>10}")
            for (channel, locale), outcomes in table.items():
                get = outcomes[SENT] + outcomes[HELD] + outcomes[DEFERRED] + outcomes[PAUSED]
                lines.append(f"  {channel:<9}{locale:<8}{get:>8}{outcomes[SENT]:>9}{outcomes[HELD]:>7}"
                             f"{outcomes[DEFERRED]:>10}{outcomes[PAUSED]:>8}{outcomes[NOT_SENT]:>10}")
        for outcome, title in ((HELD, "held"), (DEFERRED, "deferred"), (NOT_SENT, "not sent")):
            reasons: Counter[str] = Counter()
            for (_, _, kind, reason), count in self.messages.items():
                if kind == outcome:
                    reasons[reason] += count
            if reasons:
                lines.append(f"  {title}: {_reasons(reasons)}")
        if self.no_message:
            lines.append("  no message yet: " + _reasons(self.no_message))
        return "\n".join(lines)


def dry_run(engine: Engine, journey: Journey, at: float | None = None, local: time | None = None,
            day: date | None = None) -> DryRun:
    """What `lifecycle broadcast` with these arguments would send now, contact by contact."""
    runtime = engine.runtime
    keys, client = runtime.keys, runtime.redis
    start = start_of(max(runtime.clock.now(), at if at is not None else runtime.clock.now()), local, day)
    spec = {"local": local.strftime("%H:%M"), "day": day.isoformat() if day else None, "after": start} \
        if local else None
    result = DryRun(journey.name, start, spec["local"] if spec else "", day.isoformat() if day else "")
    scores = engine.scores()
    paused = engine.pauses.active()
    suppressions = Suppressions(runtime)
    cap_action = engine.journeys.workspace.cap_action
    prefix = len(keys.contact(""))
    cursor = 0
    while True:
        cursor, found = client.scan(cursor, match=keys.contact_pattern, count=SCAN_COUNT)
        states = engine.store.load_many([key[prefix:] for key in found])
        jobs: list[tuple[Job, str]] = []
        for state in states.values():
            if not state.exists:
                continue
            result.contacts += 1
            job = _first_message(engine, journey, state, start, spec, scores, result)
            if job is None:
                continue
            if not job.kind:
                check(engine, job, job.due, paused)
            jobs.append((job, _locale(engine, journey, job)))
        listed = suppressions.which((job.step.channel, job.address) for job, _ in jobs if not job.kind and job.address)
        for job, locale in jobs:
            result.messages[(job.step.channel, locale, *_outcome(job, listed, cap_action))] += 1
        if not cursor:
            return result


def _first_message(engine: Engine, journey: Journey, state: ContactState, start: float,
                   spec: Mapping[str, Any] | None, scores: dict[str, ScoreDef], result: DryRun) -> Job | None:
    """The run the broadcast starts for this contact, walked to its first message, as a due Job."""
    changes = Changes(state, start, scores)
    why = offer_broadcast(changes, journey, "dry-run", spec)
    if why:
        result.not_taking_part[why] += 1
        return None
    enrollment = changes.enrollment(journey.name)
    if enrollment.step == START and enrollment.due is not None:
        due = enrollment.due                    # armed for a local time: the run starts then
        if not start_armed(Changes(state, due, scores), journey, due):
            result.not_taking_part["not at the local time"] += 1
            return None
    flow = journey.flow_of(RUN)
    for _ in range(MAX_WAITS):
        enrollment = state.enrollments.get(journey.name)
        if enrollment is None or enrollment.step is None or enrollment.due is None or flow is None:
            result.no_message["the run ends without a message"] += 1
            return None
        node = flow.get(enrollment.step)
        if isinstance(node, SendNode):
            claim = Claim(step_member(journey.name, state.id), enrollment.due)
            return Job(claim, state, journey, RUN, node, enrollment.occurrence, enrollment.due)
        if node is None or isinstance(node, WaitForNode):
            result.no_message[f"waits for {node.event}" if isinstance(node, WaitForNode) else "unknown step"] += 1
            return None
        # A timed wait ends: move on as a worker would (automation.engine.steps.resume).
        runs.advance(Changes(state, enrollment.due, scores), journey, RUN, resume_after(node), enrollment.due)
    result.no_message[f"more than {MAX_WAITS} waits"] += 1
    return None


def _locale(engine: Engine, journey: Journey, job: Job) -> str:
    """The locale the message would be written in (the template file's, as the renderer picks it)."""
    if not job.step.template:
        return journey.locale or "-"
    locale = job.state.attributes.get("locale")
    found = engine.catalog.resolve(job.step.channel, job.step.template, locale if isinstance(locale, str) else None,
                                   journey.locale)
    return (found.locale if found is not None else None) or journey.locale or "-"


def _outcome(job: Job, listed: set[tuple[str, str]], cap_action: str) -> tuple[str, str]:
    """(outcome, reason) of a checked job, with what mark.lua would add: suppression, caps."""
    if job.kind == "held":
        return HELD, job.code
    if job.kind == "paused":
        return PAUSED, job.code
    if job.kind:
        return NOT_SENT, job.code
    if job.address and (job.step.channel, job.address) in listed:
        return NOT_SENT, "suppressed"
    if job.caps and capped_until(job.state.raw, job.caps, job.due) is not None:
        return (NOT_SENT if cap_action == "skip" else DEFERRED), "frequency_capped"
    return SENT, ""


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in counts.most_common())


def _iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
