"""Moving live runs to a new version of their journey: the plan (what would happen to whom) and
the deploy that carries it out while workers keep running.

A plan reads every contact once, in chunks (`scan_runs.lua`: a SCAN step and the run fields of
its keys in one short script, so workers are never held up), and counts for each journey the
runs waiting at each step that changed, moved or was removed, and what happens to them
(`diff.Fate`). When stage rules changed, it evaluates the old and the new rules on every
contact and counts who would change stage.

A deploy recomputes the plan, refuses it when it is not the plan that was shown (`--plan-hash`)
or leaves contacts at a removed step with nowhere to go, records the new versions
(`store/versions.py`), then moves each waiting run with `migrate.lua`: atomically per contact,
only if the run is still where the plan saw it and no worker holds its step; the others are
planned again until none is left. Contacts whose stage would change are re-evaluated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from automation.engine.runs import run_key
from automation.engine.scores import definitions
from automation.engine.stages import current_stage
from automation.expressions import TimeTracker
from automation.language.diff import Fate, JourneyDiff, diff_journeys
from automation.language.journey import RUN, Journey
from automation.language.loader import Channels, load_journey
from automation.runtime import Runtime
from automation.store import fields, versions
from automation.store.contacts import ContactState, ContactStore
from automation.store.keys import ACTIVITY_LENGTH, step_member
from automation.store.keys import due as due_text
from automation.store.scripts import Scripts

logger = logging.getLogger(__name__)

#: Contacts read per SCAN step and pipeline.
CHUNK = 1000
#: Rounds of planning again the runs that moved (or were held by a worker) while a deploy wrote.
ROUNDS = 100
#: Why a run ends when its step was removed and the file says nowhere to go.
REMOVED = "exit: step removed"


@dataclass(frozen=True)
class Candidate:
    """A journey version to deploy: the checked journey and the text it was read from."""

    journey: Journey
    text: str


@dataclass
class JourneyPlan:
    journey: Journey
    deployed: versions.Version | None
    diff: JourneyDiff
    waiting: dict[tuple[str, str], Counter] = field(default_factory=dict)   # (scope, old step) -> why -> runs
    runs: int = 0                                                          # runs waiting in the journey
    stage_moves: Counter = field(default_factory=Counter)                  # (from, to) -> contacts

    @property
    def changed(self) -> bool:
        return self.deployed is None or self.deployed.version != self.journey.version

    @property
    def stranded(self) -> int:
        """Runs at a removed step that the file sends nowhere (`replaces:` or `migrate:` would)."""
        return sum(counts[REMOVED] for counts in self.waiting.values())

    def summary(self) -> dict[str, Any]:
        diff = self.diff
        steps = []
        for change in diff.steps:
            entry: dict[str, Any] = {"scope": change.scope, "change": change.kind, "step": change.old or change.new}
            if change.new and change.old and change.new != change.old:
                entry["now"] = change.new
            if change.what:
                entry["what"] = list(change.what)
            if change.old is not None:
                counts = self.waiting.get((change.scope, change.old), Counter())
                entry["waiting"] = sum(counts.values())
                entry["outcomes"] = dict(sorted(counts.items()))
            steps.append(entry)
        return {
            "journey": self.journey.name,
            "path": self.journey.path,
            "deployed": self.deployed.version if self.deployed else None,
            "version": self.journey.version,
            "runs": self.runs,
            "steps": steps,
            "stage_rules": list(diff.stages),
            "stage_changes": [{"from": a, "to": b, "contacts": n} for (a, b), n in sorted(self.stage_moves.items())],
            "stranded": self.stranded,
        }


@dataclass
class Retired:
    """A deployed journey whose file is gone: deploying the folder stops serving it."""

    journey: str
    deployed: str
    runs: int = 0       # runs in it, which end when workers next reach them

    def summary(self) -> dict[str, Any]:
        return {"journey": self.journey, "deployed": self.deployed, "runs": self.runs}


@dataclass
class Plan:
    journeys: list[JourneyPlan]
    seconds: float = 0.0
    removed: list[Retired] = field(default_factory=list)

    @property
    def stranded(self) -> int:
        return sum(plan.stranded for plan in self.journeys)

    @property
    def hash(self) -> str:
        """Names what the plan does: the versions, and the numbers of runs and contacts it moves."""
        content = []
        for plan in self.journeys:
            summary = plan.summary()
            content.append([summary["journey"], summary["deployed"], summary["version"],
                            [[s["scope"], s["change"], s["step"], s.get("outcomes", {})] for s in summary["steps"]],
                            summary["stage_changes"]])
        content.extend([["removed", r.journey, r.deployed, r.runs] for r in self.removed])
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {"plan_hash": self.hash, "stranded": self.stranded, "journeys": [p.summary() for p in self.journeys],
                "removed": [r.summary() for r in self.removed]}


@dataclass(frozen=True)
class Move:
    """One waiting run to write, as read and as planned."""

    contact_id: str
    journey: str
    read: tuple[str, str, str, str]     # st, sp, du, vr as read ("" for none)
    fate: Fate
    version: str
    occurrence: str = ""                # oc as read: names the step's ledger entry


class Versions:
    """Old versions of journeys (from their stored text) and the diffs from them, loaded once."""

    def __init__(self, runtime: Runtime, channels: Channels) -> None:
        self.runtime, self.channels = runtime, channels
        self._journeys: dict[tuple[str, str], Journey | None] = {}
        self._diffs: dict[tuple[str, str, str], JourneyDiff] = {}

    def journey(self, name: str, version: str, path: str = "") -> Journey | None:
        key = (name, version)
        if key not in self._journeys:
            text = versions.source(self.runtime, name, version)
            journey = None
            if text is not None:
                journey, _ = load_journey(Path(path or f"{name}.yaml"), self.channels, None, text=text)
            self._journeys[key] = journey
        return self._journeys[key]

    def diff(self, old_version: str | None, new: Journey) -> JourneyDiff:
        key = (new.name, old_version or "", new.version)
        if key not in self._diffs:
            old = self.journey(new.name, old_version) if old_version else None
            self._diffs[key] = diff_journeys(old, new)
        return self._diffs[key]


def _contact_chunks(runtime: Runtime) -> Iterator[list[str]]:
    prefix = runtime.keys.contact("")
    cursor = 0
    while True:
        cursor, keys = runtime.redis.scan(cursor, match=runtime.keys.contact_pattern, count=CHUNK)
        if keys:
            yield [key[len(prefix):] for key in keys]
        if cursor == 0:
            return


_PARTS = ("st", "sp", "du", "vr", "oc")


def _read(runtime: Runtime, wanted: list[str], full: bool,
          only: Iterable[str] | None) -> Iterator[tuple[list[str], list[Any]]]:
    """(contact ids, their hashes or `wanted` fields) chunk by chunk: whole hashes when stage rules
    are evaluated; else the run fields, read by `scan_runs.lua` with the SCAN step itself."""
    client = runtime.redis
    if full or only is not None:
        for chunk in ([list(only)] if only is not None else _contact_chunks(runtime)):
            pipe = client.pipeline(transaction=False)
            for contact_id in chunk:
                key = runtime.keys.contact(contact_id)
                pipe.hgetall(key) if full else pipe.hmget(key, wanted)
            yield chunk, pipe.execute()
        return
    scripts = Scripts(client)
    prefix = len(runtime.keys.contact(""))
    width = len(wanted)
    cursor = "0"
    while True:
        cursor, keys, values = scripts.call("scan_runs", [], [cursor, runtime.keys.contact_pattern, CHUNK, *wanted])
        if keys:
            yield [key[prefix:] for key in keys], [values[i * width:(i + 1) * width] for i in range(len(keys))]
        if str(cursor) == "0":
            return


def plan(runtime: Runtime, candidates: Iterable[Candidate], channels: Channels,
         moves: list[Move] | None = None, only: Iterable[str] | None = None, retire: Iterable[str] = ()) -> Plan:
    """What deploying these journey versions would do to the live population (`moves`: collect the
    runs to write, for a deploy; `only`: read just these contacts; `retire`: deployed journeys to stop
    serving, whose runs are counted)."""
    started = time.perf_counter()
    now = runtime.clock.now()
    cache = Versions(runtime, channels)
    deployed = versions.deployed(runtime)
    plans = []
    for candidate in candidates:
        current = deployed.get(candidate.journey.name)
        diff = cache.diff(current.version if current else None, candidate.journey)
        plans.append(JourneyPlan(candidate.journey, current, diff))
    removed = [Retired(name, deployed[name].version) for name in retire if name in deployed]
    full = [p for p in plans if p.diff.stages and p.diff.old is not None]
    scores = definitions([p.journey for p in plans]) if full else {}
    names = [p.journey.name for p in plans]
    wanted = [fields.run(name, part) for name in names for part in _PARTS]
    width = len(_PARTS)
    wanted += [fields.run(r.journey, "sp") for r in removed]
    for chunk, replies in _read(runtime, wanted, full, only):
        for contact_id, reply in zip(chunk, replies, strict=True):
            raw = [reply.get(name) for name in wanted] if full else reply
            for index, jp in enumerate(plans):
                st, sp, du, vr, oc = (value or "" for value in raw[index * width:(index + 1) * width])
                if sp and sp != "^start" and st and du:
                    _count(jp, cache, contact_id, (st, sp, du, vr), oc, now, moves)
            for index, retired in enumerate(removed, len(plans) * width):
                if raw[index]:
                    retired.runs += 1
            if full and reply:
                state = ContactState.from_hash(contact_id, reply)
                for jp in full:
                    _count_stage(jp, state, now, scores)
    return Plan(plans, time.perf_counter() - started, removed)


def _count(jp: JourneyPlan, cache: Versions, contact_id: str, read: tuple[str, str, str, str], occurrence: str,
           now: float, moves: list[Move] | None) -> None:
    st, sp, du, vr = read
    jp.runs += 1
    new = jp.journey
    if not jp.changed and vr == new.version:
        return
    old_version = vr or (jp.deployed.version if jp.deployed else None)
    diff = jp.diff if old_version == (jp.deployed.version if jp.deployed else None) else cache.diff(old_version, new)
    fate = diff.fate(st, sp, float(du), now)
    change = diff.affected(st, sp)
    if change is not None or fate.action != "stay" or fate.step != sp:
        counts = jp.waiting.get((st, sp))
        if counts is None:
            counts = jp.waiting[(st, sp)] = Counter()
        counts[fate.why] += 1
    # Only runs whose step or due time changes are written: the others keep the version they are on,
    # whose step ids stay readable (workers match them step by step, Engine.step_of).
    if moves is not None and (fate.action == "exit" or fate.step != sp or fate.due != float(du)):
        moves.append(Move(contact_id, new.name, read, fate, new.version, occurrence))


def _stage_change(jp: JourneyPlan, state: ContactState, now: float,
                  scores: Mapping[str, Any]) -> tuple[str, str] | None:
    """(old stage, new stage) when the new rules put the contact in another stage than the old ones."""
    errors: list[str] = []
    old = jp.diff.old
    assert old is not None
    before = current_stage(old, state, TimeTracker(now), errors, scores)
    after = current_stage(jp.journey, state, TimeTracker(now), errors, scores)
    names = (before.name if before else "-", after.name if after else "-")
    return names if names[0] != names[1] else None


def _count_stage(jp: JourneyPlan, state: ContactState, now: float, scores: Mapping[str, Any]) -> None:
    change = _stage_change(jp, state, now, scores)
    if change is not None:
        jp.stage_moves[change] += 1


# -- deploy ---------------------------------------------------------------------------------------

class Refused(Exception):
    """The deploy was not done: why, for people."""


@dataclass
class Deployed:
    plan: Plan
    recorded: list[versions.Version]
    moved: int = 0
    ended: int = 0
    left: int = 0                       # runs whose step was tried or kept busy (workers translate them)
    reevaluated: int = 0
    retired: list[str] = field(default_factory=list)    # journeys no longer served


def deploy(runtime: Runtime, candidates: list[Candidate], channels: Channels, by: str = "",
           plan_hash: str | None = None, allow_exits: bool = False, rounds: int = ROUNDS,
           retire: Iterable[str] = ()) -> Deployed:
    """Record the versions and move the waiting runs as planned (see the module's doc); stop serving
    the `retire` journeys (their files are gone), only with the `plan_hash` of a plan that showed it."""
    with versions.locked(runtime, f"deploy:{uuid.uuid4().hex[:8]}") as took:
        if not took:
            raise Refused("another deploy is moving runs right now; try again when it is done")
        return _deploy(runtime, candidates, channels, by, plan_hash, allow_exits, rounds, retire)


def follow(runtime: Runtime, candidates: list[Candidate], channels: Channels, owner: str) -> Deployed | None:
    """A worker serving the files as they change (LIFECYCLE_DEPLOY=auto) deploys what it loaded, by
    the same rules, unless another process already did; contacts at removed steps that the files
    send nowhere end their runs. Few rounds: this worker's own batch may hold some of the steps, and
    workers move what is left as they run it."""
    with versions.locked(runtime, owner, wait=30.0) as took:
        if not took:
            logger.warning("another deploy holds the lock; journeys %s were not recorded",
                           ", ".join(c.journey.name for c in candidates))
            return None
        current = versions.pointers(runtime)
        fresh = [c for c in candidates if current.get(c.journey.name) != c.journey.version]
        for first in [c for c in fresh if c.journey.name not in current]:
            # Nothing deployed before: the runs in it (if any) are read as this version.
            versions.record(runtime, first.journey.name, first.journey.version, first.journey.path, first.text,
                            "worker")
        fresh = [c for c in fresh if c.journey.name in current]
        if not fresh:
            return None
        result = _deploy(runtime, fresh, channels, "worker", None, True, 2)
    for line in format_plan(result.plan).splitlines():
        (logger.warning if result.plan.stranded else logger.info)("deploy: %s", line)
    return result


def _deploy(runtime: Runtime, candidates: list[Candidate], channels: Channels, by: str, plan_hash: str | None,
            allow_exits: bool, rounds: int, retire: Iterable[str] = ()) -> Deployed:
    moves: list[Move] = []
    shown = plan(runtime, candidates, channels, moves, retire=retire)
    if plan_hash and shown.hash != plan_hash:
        raise Refused(f"the live state changed since plan {plan_hash}: it is now {shown.hash}; "
                      "run `lifecycle plan` again and check the numbers")
    if shown.removed and not plan_hash:
        # Retiring a journey ends every run in it: only as a plan showed it.
        names = ", ".join(f"{r.journey} ({r.runs} run(s))" for r in shown.removed)
        raise Refused(f"deployed journeys have no file any more: {names}; to stop serving them, check "
                      "`lifecycle plan` and deploy with its --plan-hash, or put their files back")
    if shown.stranded and not allow_exits:
        raise Refused(f"{shown.stranded} contact(s) wait at removed steps that the files send nowhere: "
                      "add `replaces: <old step id>` to the step they should continue at, or `migrate:`")
    recorded = []
    for candidate in candidates:
        entry = versions.record(runtime, candidate.journey.name, candidate.journey.version, candidate.journey.path,
                                candidate.text, by)
        if entry is not None:
            recorded.append(entry)
    result = Deployed(shown, recorded)
    for retired in shown.removed:
        versions.forget(runtime, retired.journey)
        result.retired.append(retired.journey)
    _write(runtime, moves, candidates, channels, result, rounds)
    movers = [p for p in shown.journeys if p.stage_moves]
    if movers:
        # The workers' own evaluation moves them (and starts or ends their runs), as for any change.
        store = ContactStore(runtime)
        result.reevaluated = store.request_reevaluation(_stage_movers(runtime, movers))
    return result


def _stage_movers(runtime: Runtime, plans: list[JourneyPlan]) -> Iterator[str]:
    now = runtime.clock.now()
    scores = definitions([p.journey for p in plans])
    for chunk in _contact_chunks(runtime):
        pipe = runtime.redis.pipeline(transaction=False)
        for contact_id in chunk:
            pipe.hgetall(runtime.keys.contact(contact_id))
        for contact_id, raw in zip(chunk, pipe.execute(), strict=True):
            state = ContactState.from_hash(contact_id, raw)
            if any(_stage_change(jp, state, now, scores) for jp in plans):
                yield contact_id


def _write(runtime: Runtime, moves: list[Move], candidates: list[Candidate], channels: Channels,
           result: Deployed, rounds: int) -> None:
    scripts = Scripts(runtime.redis)
    by_name = {c.journey.name: c for c in candidates}
    for round_number in range(rounds):
        again: list[Move] = []
        for start in range(0, len(moves), 500):
            chunk = moves[start:start + 500]
            calls = [_call(runtime, move) for move in chunk]
            for move, done in zip(chunk, scripts.run(calls), strict=True):
                if done == 2:
                    result.left += 1        # its step was tried: workers go on under its stored id
                elif not done:
                    again.append(move)
                elif move.fate.action == "exit":
                    result.ended += 1
                elif _action(move) == "move":
                    result.moved += 1
        if not again:
            return
        # Those runs moved (or a worker holds their step): plan them again from what they are now.
        time.sleep(min(0.05 * (round_number + 1), 0.5))
        moves = []
        for name in {move.journey for move in again}:
            contacts = [move.contact_id for move in again if move.journey == name]
            plan(runtime, [by_name[name]], channels, moves, only=contacts)
    result.left += len(moves)
    if moves:
        logger.warning("%d run(s) were busy through every round; workers move them when they next run", len(moves))


def _action(move: Move) -> str:
    return "exit" if move.fate.action == "exit" else "move"


def _call(runtime: Runtime, move: Move) -> tuple[str, list[str], list[Any]]:
    keys = runtime.keys
    st, sp, du, vr = move.read
    fate, action = move.fate, _action(move)
    ended = fields.encode_end(runtime.clock.now(), "step_removed") if action == "exit" and st == RUN else ""
    return ("migrate",
            [keys.contact(move.contact_id), keys.timers_for(move.contact_id), keys.activity, keys.stats,
             keys.ledger(move.contact_id)],
            [fields.run(move.journey, ""), step_member(move.journey, move.contact_id), st, sp, du, vr, action,
             fate.step or "", due_text(fate.due) if fate.due is not None else "", move.version,
             due_text(runtime.clock.now()), ACTIVITY_LENGTH, move.contact_id, ended,
             f"{run_key(move.journey, st, int(move.occurrence or 0))}:{sp}"])


# -- for people -----------------------------------------------------------------------------------

def format_plan(shown: Plan) -> str:
    """The plan as `lifecycle plan` prints it."""
    lines: list[str] = []
    changing = [p for p in shown.journeys if p.changed]
    for jp in shown.journeys:
        summary = jp.summary()
        before = summary["deployed"] or "nothing deployed"
        if not jp.changed and not jp.waiting:
            lines.append(f"{summary['journey']}: unchanged ({summary['version']}, {summary['runs']} run(s) waiting)")
            continue
        lines.append(f"{summary['journey']} ({summary['path']}): {before} -> {summary['version']}, "
                     f"{summary['runs']} run(s) waiting")
        for step in summary["steps"]:
            where = "" if step["scope"] == RUN else f"stage {step['scope']}: "
            text = f"  {where}{step['change']} {step['step']}"
            if step.get("what"):
                text += ": " + "; ".join(step["what"])
            lines.append(text)
            if step.get("waiting"):
                outcomes = ", ".join(f"{why} {n}" for why, n in step["outcomes"].items())
                lines.append(f"      {step['waiting']} waiting: {outcomes}")
        for (scope, step), counts in sorted(jp.waiting.items()):
            if jp.diff.affected(scope, step) is None:    # runs on an older version, at a step this one lacks
                where = "" if scope == RUN else f"stage {scope}: "
                outcomes = ", ".join(f"{why} {n}" for why, n in sorted(counts.items()))
                lines.append(f"  {where}{step} (an older version's step): {sum(counts.values())} waiting: {outcomes}")
        for note in summary["stage_rules"]:
            lines.append(f"  stage rules: {note}")
        if summary["stage_rules"]:
            moves = ", ".join(f"{m['from']} -> {m['to']} {m['contacts']}" for m in summary["stage_changes"])
            lines.append(f"      contacts changing stage: {moves or 'none'}")
        if jp.stranded:
            lines.append(f"  ERROR {jp.stranded} contact(s) wait at removed steps with nowhere to go: add "
                         "`replaces: <old step id>` to the step they continue at, or `migrate: {old: new}`")
    for retired in shown.removed:
        lines.append(f"{retired.journey}: removed (no file; {retired.deployed} deployed), "
                     f"{retired.runs} run(s) would end")
    verdict = f"{len(changing)} journey(s) change" if changing else "nothing to deploy"
    if shown.removed:
        verdict = (f"{len(changing)} journey(s) change" if changing else "no journey changes") + \
            f", {len(shown.removed)} removed"
    if shown.stranded:
        verdict += f"; {shown.stranded} contact(s) would be dropped"
    lines.append(f"plan {shown.hash}: {verdict} ({shown.seconds:.1f}s)")
    return "\n".join(lines)
