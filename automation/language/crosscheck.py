"""Checks that need every journey at once.

One file can be fine on its own and still wrong next to the others: a trigger on a
stage no journey has, two journeys that start each other without end, a rule reading
a score nobody defines, a wait for an event that nothing sends. `lifecycle validate`
reports these with the same `path:line:col` as the rest; workers log them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from automation.expressions import did_you_mean
from automation.language.diagnostics import Diagnostic
from automation.language.journey import Journey
from automation.language.sources import BUILT_IN_ATTRIBUTES, BUILT_IN_EVENTS, Sources

#: Reference kinds that name an event the journey waits for or reads.
EVENT_KINDS = {"event": "reads", "trigger-event": "is triggered by", "goal-event": "has the goal",
               "exit-event": "exits on", "wait-event": "waits for", "score-event": "scores"}


def check_journeys(journeys: Iterable[Journey], sources: Sources | None) -> list[Diagnostic]:
    journeys = list(journeys)
    found: list[Diagnostic] = []
    found += _duplicate_names(journeys)
    found += _stage_triggers(journeys)
    found += _scores(journeys)
    found += _cycles(journeys)
    if sources is not None:
        found += _unknown_names(journeys, sources)
    return found


def _duplicate_names(journeys: list[Journey]) -> list[Diagnostic]:
    # Every file with the name is told, so validating any one of them alone finds it.
    paths: dict[str, list[Journey]] = defaultdict(list)
    for journey in journeys:
        paths[journey.name].append(journey)
    found = []
    for name, same in paths.items():
        if len(same) < 2:
            continue
        for journey in same[1:]:
            found.append(Diagnostic(journey.path, *journey.name_at, f"journey name {name!r} is already used by "
                                    f"{same[0].path}", "journey names must be unique"))
        others = ", ".join(j.path for j in same[1:])
        found.append(Diagnostic(same[0].path, *same[0].name_at, f"journey name {name!r} is also used by {others}",
                                "journey names must be unique"))
    return found


def resolve_stage(journeys: Iterable[Journey], journey_name: str | None, stage: str) -> list[Journey]:
    """The stage journeys a stage trigger can mean (one when the trigger is well formed)."""
    return [j for j in journeys if j.stages and (journey_name is None or j.name == journey_name)
            and j.stage(stage) is not None]


def _stage_triggers(journeys: list[Journey]) -> list[Diagnostic]:
    found = []
    by_name = {j.name: j for j in journeys}
    for journey in journeys:
        for ref in journey.references:
            if ref.kind == "journey" and ref.name not in by_name:
                found.append(Diagnostic(journey.path, ref.line, ref.column, f"no journey named {ref.name!r}",
                                        did_you_mean(ref.name, by_name) or "stages['<journey>'] names a stage journey"))
            if not ref.kind.startswith("stage-"):
                continue
            wanted_journey, _, stage = ref.name.partition("/")
            verb = ref.kind.removeprefix("stage-")
            if wanted_journey and wanted_journey not in by_name:
                found.append(Diagnostic(journey.path, ref.line, ref.column,
                                        f"{verb}: no journey named {wanted_journey!r}",
                                        did_you_mean(wanted_journey, by_name)))
                continue
            matches = resolve_stage(journeys, wanted_journey or None, stage)
            if not matches:
                stages = sorted({s.name for j in journeys if j.stages
                                 and (not wanted_journey or j.name == wanted_journey) for s in j.stages})
                where = f"journey {wanted_journey!r}" if wanted_journey else "any stage journey"
                found.append(Diagnostic(journey.path, ref.line, ref.column, f"{verb}: {where} has no stage {stage!r}",
                                        did_you_mean(stage, stages) or f"stages: {', '.join(stages)}"))
            elif len(matches) > 1:
                found.append(Diagnostic(journey.path, ref.line, ref.column,
                                        f"{verb}: stage {stage!r} is in several journeys: "
                                        + ", ".join(j.name for j in matches),
                                        "name the journey: journey: " + matches[0].name))
    return found


def _scores(journeys: list[Journey]) -> list[Diagnostic]:
    found = []
    defined: dict[str, Journey] = {}
    also: dict[str, list[str]] = defaultdict(list)
    for journey in journeys:
        for score in journey.scores:
            if score.name in defined:
                also[score.name].append(journey.path)
                found.append(Diagnostic(journey.path, score.line, score.column, f"score {score.name!r} is already "
                                        f"defined in {defined[score.name].path}",
                                        "a score is defined once; rename one of them"))
            else:
                defined[score.name] = journey
    for name, paths in also.items():
        # The first definition is told too, so validating that file alone finds the clash.
        score = next(s for s in defined[name].scores if s.name == name)
        found.append(Diagnostic(defined[name].path, score.line, score.column, f"score {name!r} is also defined in "
                                + ", ".join(paths), "a score is defined once; rename one of them"))
    for journey in journeys:
        for ref in journey.references:
            if ref.kind == "score" and ref.name not in defined:
                found.append(Diagnostic(journey.path, ref.line, ref.column, f"no journey defines score {ref.name!r}",
                                        did_you_mean(ref.name, defined) or "define it under scores: in a journey file"))
    return found


def _cycles(journeys: list[Journey]) -> list[Diagnostic]:
    """Journeys that start each other (track -> event trigger, set -> attribute trigger) in a loop
    with no re-entry limit would message a contact without end."""
    edges: dict[str, set[str]] = defaultdict(set)
    by_name = {j.name: j for j in journeys}
    for source in journeys:
        for target in journeys:
            trigger = target.trigger
            if trigger is None:
                continue
            if trigger.kind == "event" and trigger.event in source.emits:
                edges[source.name].add(target.name)
            if trigger.kind == "attribute" and any(trigger.attribute == name or trigger.attribute.startswith(name + ".")
                                                    or name.startswith(trigger.attribute + ".")
                                                    for name in source.sets):
                edges[source.name].add(target.name)
    found, reported = [], set()
    for start in sorted(edges):
        path = _cycle_from(start, edges)
        if path is None or frozenset(path) in reported:
            continue
        reported.add(frozenset(path))
        if any(by_name[name].re_entry.policy != "every_time" for name in path):
            continue   # once / a cooldown ends the loop
        # Each journey of the loop is told, so validating any one file alone finds it.
        for index, name in enumerate(path):
            journey = by_name[name]
            line = journey.trigger.line if journey.trigger else 1
            loop = " -> ".join([*path[index:], *path[:index], name])
            found.append(Diagnostic(journey.path, line, 1, f"journeys trigger each other without end: {loop}",
                                    "give one of them re_entry: once or re_entry: {after: 1d}, or break the loop"))
    return found


def _cycle_from(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _unknown_names(journeys: list[Journey], sources: Sources) -> list[Diagnostic]:
    """Errors: with the sources file present, a name it does not declare is a typo or a source
    nobody added, and the rule or wait would never be true."""
    events = set(sources.events) | BUILT_IN_EVENTS
    attributes = set(sources.attributes) | BUILT_IN_ATTRIBUTES
    for journey in journeys:
        events |= journey.emits
        attributes |= {name.split(".")[0] for name in journey.sets}
    found = []
    for journey in journeys:
        for ref in journey.references:
            if ref.kind in EVENT_KINDS and ref.name not in events:
                found.append(Diagnostic(
                    journey.path, ref.line, ref.column,
                    f"event {ref.name!r} is not sent by any source or journey", _hint(ref.name, events, "events")))
            elif ref.kind == "attribute" and ref.name not in attributes:
                found.append(Diagnostic(
                    journey.path, ref.line, ref.column, f"contact attribute {ref.name!r} is not known",
                    _hint(ref.name, attributes, "attributes")))
    return found


def _hint(name: str, known: set[str], kind: str) -> str:
    return did_you_mean(name, sorted(known)) or (f"if a source sends it, add it to the {kind} in "
                                                  "journeys/_contact.yaml")
