"""A forecast: how many messages each journey and channel will send per day if nothing new happens.

It runs the engine's own decisions on each contact (or a random sample, scaled up) over the days
ahead and writes nothing: the contact's pending timers as they are in Redis, evaluations when a
time-based rule flips (automation.engine.evaluation), runs walked through their waits
(automation.engine.runs), the checks of a due step (automation.engine.steps.check: `if:`, consent,
do-not-contact, an address, quiet hours) and what mark.lua would decide (suppression lists;
frequency caps, automation.engine.caps, counted as it counts them). "Nothing new" means no events,
no attribute changes and no broadcasts; providers answer every message "sent"; the events a run
records (`track:`) and the attributes it sets (`set:`) are not replayed, nor are coupons issued.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from automation.engine import runs
from automation.engine.broadcasts import CANCELLED, one_offs
from automation.engine.caps import capped_until
from automation.engine.evaluation import evaluate, start_armed
from automation.engine.runs import START, Changes
from automation.engine.services import Engine
from automation.engine.steps import Job, check
from automation.language.flow import SendNode, resume_after
from automation.language.journey import RUN, Journey, ScoreDef
from automation.store import fields
from automation.store.contacts import ContactState
from automation.store.keys import RECHECK, STEP, parse_member, recheck_member, step_member
from automation.store.keys import due as due_text
from automation.store.pauses import Pause
from automation.store.suppression import ADDRESS_ATTRIBUTES, Suppressions, normalize
from automation.store.timers import Claim

DAY = 86400.0
#: Contacts loaded from Redis per round trip.
CHUNK = 1000
#: A contact whose runs take more moves than this within the forecast stops being simulated
#: (a journey that loops without waiting long); counted under `stopped`.
MAX_MOVES = 5000
#: Why a message the runs reach is not sent (besides the step checks' own codes).
SUPPRESSED, CAPPED, PAUSED = "suppressed", "frequency_capped", "channel_paused"


@dataclass
class Forecast:
    """Messages per (journey, channel, day), and messages not sent per (journey, reason)."""

    start: float
    days: int
    contacts: int = 0                 # contacts in Redis
    simulated: int = 0                # contacts simulated (all, or the sample)
    sends: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    not_sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    stopped: int = 0

    @property
    def scale(self) -> float:
        return self.contacts / self.simulated if self.simulated else 1.0

    @property
    def midnight(self) -> float:
        """The start of the first day (UTC): day 0 is the rest of today."""
        return (self.start // DAY) * DAY

    @property
    def end(self) -> float:
        return self.midnight + self.days * DAY

    def day(self, index: int) -> str:
        return datetime.fromtimestamp(self.midnight + index * DAY, timezone.utc).strftime("%Y-%m-%d")

    def day_of(self, instant: float) -> int:
        return int((instant - self.midnight) // DAY)

    def add(self, other: "Forecast") -> None:
        """Count in another part of the same forecast (other contacts)."""
        self.simulated += other.simulated
        self.stopped += other.stopped
        self.sends.update(other.sends)
        self.not_sent.update(other.not_sent)

    def per_day(self) -> dict[tuple[str, str], list[int]]:
        """(journey, channel) -> messages on each day, scaled to the whole population."""
        table: dict[tuple[str, str], list[float]] = {}
        for (journey, channel, day), count in self.sends.items():
            table.setdefault((journey, channel), [0.0] * self.days)[day] += count
        return {key: [round(value * self.scale) for value in values] for key, values in sorted(table.items())}

    def totals(self) -> dict[str, int]:
        """journey -> messages over the whole forecast, scaled."""
        totals: Counter[str] = Counter()
        for (journey, _), values in self.per_day().items():
            totals[journey] += sum(values)
        return dict(sorted(totals.items()))

    def channel_days(self) -> dict[str, list[int]]:
        """channel -> messages per day, every journey together."""
        table: dict[str, list[int]] = {}
        for (_, channel), values in self.per_day().items():
            row = table.setdefault(channel, [0] * self.days)
            for index, value in enumerate(values):
                row[index] += value
        return dict(sorted(table.items()))

    def to_json(self) -> dict[str, Any]:
        return {"start": self.day(0), "days": self.days, "contacts": self.contacts, "simulated": self.simulated,
                "scale": round(self.scale, 4), "stopped": self.stopped,
                "per_day": [{"journey": journey, "channel": channel, "messages": values}
                            for (journey, channel), values in self.per_day().items()],
                "not_sent": [{"journey": journey, "reason": reason, "messages": round(count * self.scale)}
                             for (journey, reason), count in sorted(self.not_sent.items())]}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["day", "journey", "channel", "messages"])
        for (journey, channel), values in self.per_day().items():
            for index, value in enumerate(values):
                if value:
                    writer.writerow([self.day(index), journey, channel, value])
        return out.getvalue()

    def format(self) -> str:
        sample = f", a sample of {self.simulated} scaled x{self.scale:.2f}" if self.simulated != self.contacts else ""
        lines = [f"forecast from {self.day(0)} for {self.days} day(s): {self.contacts} contact(s){sample}; "
                 "nothing new happens"]
        table = self.per_day()
        if not table:
            lines.append("  no messages")
        else:
            width = max(len("all journeys"), *(len(journey) for journey, _ in table)) + 2
            lines.append(f"  {'journey':<{width}}{'channel':<9}{'total':>8}{'peak/day':>10}  peak day   first 7 days")
            for (journey, channel), values in table.items():
                peak = max(range(self.days), key=lambda i: values[i])
                week = " ".join(str(v) for v in values[:7])
                lines.append(f"  {journey:<{width}}{channel:<9}{sum(values):>8}{values[peak]:>10}  "
                             f"{self.day(peak)} {week}")
            for channel, values in self.channel_days().items():
                lines.append(f"  {'all journeys':<{width}}{channel:<9}{sum(values):>8}{max(values):>10}")
        reasons = Counter({key: round(count * self.scale) for key, count in self.not_sent.items()})
        if reasons:
            lines.append("  not sent: " + ", ".join(f"{journey} {reason} {count}"
                                                    for (journey, reason), count in sorted(reasons.items())))
        if self.stopped:
            lines.append(f"  {self.stopped} contact(s) not followed to the end: more than {MAX_MOVES} moves")
        return "\n".join(lines)


@dataclass(frozen=True)
class Change:
    """A journey whose forecast differs between two versions of the journey files."""

    journey: str
    path: str
    before: int            # messages in the other version (-1: the journey is not there)
    after: int             # in this version (-1: not here)
    edited: bool = True    # False: the file is the same; the journey follows others that changed


def contact_ids(engine: Engine, sample: int | None, seed: int | None = None) -> tuple[int, list[str]]:
    """(contacts in Redis, the ids to simulate: all of them, or a random sample of `sample`)."""
    ids = list(engine.store.all_ids())
    if sample is None or sample >= len(ids):
        return len(ids), ids
    return len(ids), random.Random(seed).sample(ids, sample)


def forecast(engine: Engine, days: int = 30, sample: int | None = None,
             versions: Mapping[str, Engine] | None = None, seed: int | None = None,
             start: float | None = None, processes: int | None = None,
             parallel_from: int | None = None) -> dict[str, Forecast]:
    """Forecast with the engine's journeys ("" in the result) and with each of `versions` (engines
    serving other journey files, by name), over the same contacts.

    Large populations are shared out to `processes` forked processes (default: one per core),
    each loading and following its own contacts (from `parallel_from` contacts, default
    PARALLEL_FROM); the counts are added up."""
    engines = {"": engine, **(versions or {})}
    at = engine.runtime.clock.now() if start is None else start
    total, ids = contact_ids(engine, sample, seed)
    count = max(1, processes or os.cpu_count() or 1)
    smallest = PARALLEL_FROM if parallel_from is None else parallel_from
    if count == 1 or len(ids) < smallest or "fork" not in multiprocessing.get_all_start_methods():
        return _follow(engines, at, days, total, ids)
    global _SHARED
    _SHARED = (engines, at, days, total, ids, count)
    try:
        with multiprocessing.get_context("fork").Pool(count) as pool:
            parts = pool.map(_follow_part, range(count))
    finally:
        _SHARED = None
    results = parts[0]
    for part in parts[1:]:
        for name, result in part.items():
            results[name].add(result)
    return results


#: Fewer contacts than this are followed in this process: forking costs more than it saves.
PARALLEL_FROM = 5000
#: What forked processes inherit: (engines, start, days, contacts in Redis, ids, processes).
_SHARED: tuple[Any, ...] | None = None


def _follow_part(index: int) -> dict[str, Forecast]:
    assert _SHARED is not None
    engines, at, days, total, ids, count = _SHARED
    return _follow(engines, at, days, total, ids[index::count])


def _follow(engines: Mapping[str, Engine], at: float, days: int, total: int, ids: list[str]) -> dict[str, Forecast]:
    engine = engines[""]
    results = {name: Forecast(at, days, contacts=total) for name in engines}
    simulators = [Simulator(other, results[name]) for name, other in engines.items()]
    for first in range(0, len(ids), CHUNK):
        loaded = load(engine, ids[first:first + CHUNK])
        for simulator in simulators:
            for state, timers, listed in loaded:
                # Evaluations change a state in place: each version follows its own copy.
                simulator.run(copy_state(state) if len(simulators) > 1 else state, dict(timers), listed)
    return results


def load(engine: Engine, ids: list[str]) -> list[tuple[ContactState, dict[str, float], set[tuple[str, str]]]]:
    """The contacts with their inboxes, their pending timers and which of their addresses are suppressed."""
    runtime = engine.runtime
    states = [state for state in engine.store.load_many(ids, inbox=True).values() if state.exists]
    pipe = runtime.redis.pipeline(transaction=False)
    members: list[list[str]] = []
    for state in states:
        mine = [recheck_member(state.id)] + [step_member(name, state.id) for name, enrollment
                                             in state.enrollments.items() if enrollment.step is not None]
        members.append(mine)
        pipe.zmscore(runtime.keys.timers_for(state.id), mine)
    replies = pipe.execute()
    pairs = {(channel, normalize(channel, state.attributes.get(attribute)))
             for state in states for channel, attribute in ADDRESS_ATTRIBUTES.items()
             if state.attributes.get(attribute)}
    listed = Suppressions(runtime).which(pairs) if pairs and _any_suppressed(engine) else set()
    loaded = []
    for state, mine, scores in zip(states, members, replies, strict=True):
        timers = {member: float(score) for member, score in zip(mine, scores, strict=True) if score is not None}
        loaded.append((state, timers, listed))
    return loaded


def _any_suppressed(engine: Engine) -> bool:
    pipe = engine.runtime.redis.pipeline(transaction=False)
    for channel in ADDRESS_ATTRIBUTES:
        pipe.exists(engine.runtime.keys.suppressed(channel))
    return any(pipe.execute())


def copy_state(state: ContactState) -> ContactState:
    """A copy the simulation may change (evaluations change the state in place)."""
    copied = ContactState.from_hash(state.id, dict(state.raw))
    copied.inbox = list(state.inbox)
    return copied


class Simulator:
    """Moves one contact at a time through the days ahead, as the scheduler and workers would."""

    def __init__(self, engine: Engine, result: Forecast) -> None:
        self.engine = engine
        self.result = result
        self.served: dict[str, Journey] = engine.journeys.journeys
        self.scores: dict[str, ScoreDef] = engine.scores()
        self.cap_action = engine.journeys.workspace.cap_action
        self.paused: dict[str, Pause] = engine.pauses.active()
        self.end = result.end
        # Runs armed by a one-off broadcast cancelled since: the workers disarm them (steps.resume).
        self.cancelled = {(b.journey, b.id) for b in one_offs(engine.runtime) if b.state == CANCELLED}

    def run(self, state: ContactState, timers: dict[str, float], listed: set[tuple[str, str]]) -> None:
        self.result.simulated += 1
        start = self.result.start
        for _ in range(MAX_MOVES):
            if not timers:
                return
            member = min(timers, key=timers.__getitem__)
            due = timers.pop(member)
            if due >= self.end:
                return
            now = max(due, start)
            kind, journey, _ = parse_member(member)
            if kind == RECHECK:
                self._evaluate(state, timers, now)
            elif kind == STEP and journey:
                self._step(state, journey, timers, now, listed)
        self.result.stopped += 1

    def _evaluate(self, state: ContactState, timers: dict[str, float], now: float) -> None:
        changes = evaluate(state, self.served, now, self.scores)
        state.inbox = []
        _timers(changes, timers)
        recheck = changes.tracker.next_change if changes.tracker else None
        member = recheck_member(state.id)
        if recheck is None:
            timers.pop(member, None)
        else:
            timers[member] = recheck

    def _step(self, state: ContactState, name: str, timers: dict[str, float], now: float,
              listed: set[tuple[str, str]]) -> None:
        """What automation.engine.steps does with a due `s|` timer (prepare, check, mark, record)."""
        enrollment = state.enrollments.get(name)
        journey = self.served.get(name)
        if enrollment is None or enrollment.step is None or enrollment.due is None or journey is None \
                or enrollment.due > now + 0.001:
            return
        changes = Changes(state, now, self.scores)
        if enrollment.step == START:
            if (name, enrollment.broadcast or "") in self.cancelled or \
                    not start_armed(changes, journey, enrollment.due):
                changes.jset(name, sp=None, du=None)
            return _timers(changes, timers)
        if enrollment.stage is None:
            return
        flow = journey.flow_of(enrollment.stage)
        node = flow.get(enrollment.step) if flow else None
        if node is None:
            return
        if not isinstance(node, SendNode):
            runs.advance(changes, journey, enrollment.stage, resume_after(node), enrollment.due)
            return _timers(changes, timers)
        job = Job(Claim(step_member(name, state.id), now), state, journey, enrollment.stage, node,
                  enrollment.occurrence, enrollment.due)
        check(self.engine, job, now, self.paused)
        if job.kind in ("held", "deferred"):
            _hold(changes, name, timers, job.retry_at if job.retry_at is not None else now)
            return
        if job.kind == "paused":
            # Waits until the channel is resumed or configured: nothing it sends within the forecast.
            self.result.not_sent[(name, job.code or PAUSED)] += 1
            return
        if not job.kind and job.address and (node.channel, job.address) in listed:
            job.decide("skipped", SUPPRESSED)
        if not job.kind and job.caps:
            until = capped_until(state.raw, job.caps, now)
            if until is not None:
                if self.cap_action != "skip":
                    _hold(changes, name, timers, until)
                    return
                job.decide("skipped", CAPPED)
            else:
                _count(state, job.caps, now)
        if job.kind:
            self.result.not_sent[(name, job.code or job.kind)] += 1
        else:
            self.result.sends[(name, node.channel, self.result.day_of(now))] += 1
            if node.once:    # as steps.record_plan marks it, so a later turn forecasts no second send
                changes.jset(name, on=fields.add_once(state.raw.get(fields.run(name, "on")),
                                                      [fields.once_tag(job.scope, node.id)]))
        if node.next is None and job.scope != RUN:
            changes.jset(name, sp=None, du=None)
        else:
            runs.advance(changes, journey, job.scope, node.next, job.due)
        _timers(changes, timers)


def _hold(changes: Changes, name: str, timers: dict[str, float], until: float) -> None:
    """A held or deferred step waits until `until`, and the steps after it count from then (as
    steps.record_plan moves its run's due time)."""
    changes.jset(name, du=due_text(until))
    timers[step_member(name, changes.state.id)] = until


def _timers(changes: Changes, timers: dict[str, float]) -> None:
    """Apply the timer changes an evaluation or a walk made (as apply.lua's `z`, `zr` and `zl`)."""
    for member, when in changes.timers.items():
        if when is None:
            timers.pop(member, None)
        else:
            timers[member] = when
    if changes.recheck is not None:
        member = recheck_member(changes.state.id)
        timers[member] = min(timers.get(member, changes.recheck), changes.recheck)


def _count(state: ContactState, caps: list[list[Any]], now: float) -> None:
    """Count one more message in the fields the caps read (mark.lua's `count`)."""
    keep: dict[str, int] = {}
    span: dict[str, float] = {}
    for name, window, limit, _ in caps:
        keep[name] = max(keep.get(name, 0), int(limit))
        span[name] = max(span.get(name, 0.0), float(window))
    for name, most in keep.items():
        times = [at for at in fields.decode_frequency(state.raw.get(name)) if at > now - span[name]]
        times.append(float(int(now)))
        state.raw[name] = ",".join(f"{int(at)}" for at in times[-most:])


def changes_between(current: Forecast, other: Forecast, journeys: Mapping[str, Journey],
                    others: Mapping[str, Journey], edited: set[str] | None = None) -> list[Change]:
    """The journeys whose forecast differs between two versions (added and removed ones included);
    `edited` names the journeys whose files differ (None: all of them)."""
    mine, theirs = current.totals(), other.totals()
    found = []
    for name in sorted(set(journeys) | set(others)):
        here, there = journeys.get(name), others.get(name)
        after = mine.get(name, 0) if here is not None else -1
        before = theirs.get(name, 0) if there is not None else -1
        if after != before or _sends_differ(current, other, name):
            path = (here or there).path if (here or there) is not None else name
            found.append(Change(name, Path(path).name, before, after, edited is None or name in edited))
    return found


def _sends_differ(one: Forecast, two: Forecast, journey: str) -> bool:
    def pick(result: Forecast) -> dict[tuple[str, str], list[int]]:
        return {key: values for key, values in result.per_day().items() if key[0] == journey}
    return pick(one) != pick(two)


def format_changes(changes: Iterable[Change], against: str) -> str:
    rows = list(changes)
    if not rows:
        return f"against {against}: no journey forecasts differently"
    edited = sum(1 for change in rows if change.edited)
    lines = [f"against {against}: {len(rows)} journey(s) forecast differently, {edited} of their files edited"]
    for change in rows:
        before = "absent" if change.before < 0 else str(change.before)
        after = "absent" if change.after < 0 else str(change.after)
        note = "" if change.edited else " (file unchanged: it follows journeys that changed)"
        lines.append(f"  {change.path}: {change.journey} {before} -> {after} message(s){note}")
    return "\n".join(lines)
