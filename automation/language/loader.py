"""Read a journey file into a Journey, or explain precisely what is wrong with it.

Three passes, all reported together so a marketer fixes everything in one go:
1. YAML syntax (ruamel.yaml keeps every key's line and column);
2. structure, checked against the published JSON Schema (the same file editors
   use for autocomplete), with its messages rewritten for people;
3. meaning: rules compile, durations parse, channels and templates exist, names
   are unique, nothing is unreachable, weights add up (automation.flowbuild builds
   and checks the steps).

Checks that need every journey at once (stage triggers, trigger cycles, events no
one produces) are in automation.crosscheck.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping
from zoneinfo import available_timezones

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from ruamel.yaml.comments import CommentedMap

from automation.calendar import CalendarError, check_cron, parse_time_of_day, zone
from automation.channels.base import Channel
from automation.durations import HINT as DURATION_HINT
from automation.durations import DurationError, parse_duration
from automation.expressions import RULE_NAMES, TEMPLATE_EXTRA_NAMES, Expression, did_you_mean, references
from automation.language.diagnostics import Diagnostic, has_errors
from automation.language.flow import Flow
from automation.language.flowbuild import FlowContext, build_flow, parse_offset, sample_limits
from automation.language.hints import keys_meant_for, misplaced_key_hint, strayed
from automation.language.journey import (
    RUN,
    ExitRule,
    Goal,
    Journey,
    ReEntry,
    Reference,
    ScoreDef,
    ScoreRule,
    Stage,
    Trigger,
)
from automation.language.runvars import check_vars, collect_assigned, collect_run_vars
from automation.language.sourcemap import Report, compile_at, display_path, plain, pos, read_text, read_yaml
from automation.language.sources import Sources, declared
from automation.language.workspace import MESSAGE_TYPES, quiet_hours_of
from automation.messages.templates import TemplateCheck, locale_chain

#: Journey channel -> the adapter serving it (None where only the name is known).
Channels = Mapping[str, "Channel | None"]
DEFAULT_MAX_SMS_SEGMENTS = 2
DEFAULT_EVENT_MAX_AGE = 86400.0
#: Hex digits of a version's name: enough to tell a journey's versions apart, short in the contact hash.
VERSION_LENGTH = 12
TRIGGER_KINDS = ("event", "enters", "leaves", "attribute", "date", "schedule", "broadcast", "when")

SCHEMA: dict[str, Any] = json.loads(
    (resources.files("automation.language") / "schema" / "journey.schema.json").read_text())
_VALIDATOR = Draft202012Validator(SCHEMA)

_REQUIRED_HINTS = {
    "journey": "give the journey a name, e.g. journey: customer-lifecycle",
    "name": "every stage and variant needs a name, e.g. name: lead",
    "steps": "list the steps of this path under steps:",
    "event": "name the event, e.g. event: purchase",
    "timeout": "how long to wait before taking the on_timeout path, e.g. timeout: 1d",
    "variants": "list the variants with their weights, e.g. [{name: a, weight: 50}, {name: b, weight: 50}]",
    "weight": "a percentage of contacts; the weights of a split add up to 100",
    "rules": "list the events that earn points, e.g. [{event: page_view, points: 2}]",
    "points": "how many points the event earns, e.g. points: 5",
    "after": "a cooldown such as after: 30d",
}


# -- pass 2: the schema ---------------------------------------------------------------------------

def _node_at(doc: Any, path: Iterable[Any]) -> tuple[Any, Any]:
    """(parent, key) for a JSON-Schema error path; (None, None) for the root."""
    parent, key = None, None
    node = doc
    for part in path:
        parent, key = node, part
        node = node[part]
    return parent, key


def _where(doc: Any, path: Iterable[Any]) -> tuple[int, int]:
    parent, key = _node_at(doc, path)
    if parent is None:
        return (1, 1)
    return pos(parent, key)


def _describe(path: Iterable[Any]) -> str:
    parts = [p for p in path if isinstance(p, str)]
    return f"'{parts[-1]}'" if parts else "this"


def _schema_diagnostics(doc: Any, report: Report) -> None:
    for error in sorted(_VALIDATOR.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        _explain(error, doc, report)


def _explain(error: ValidationError, doc: Any, report: Report) -> None:
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    kind = error.validator
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                report.add(pos(instance, key, of_key=True), f"unknown key {key!r} in {_container_name(path)}",
                           misplaced_key_hint(SCHEMA, doc, path, str(key), _container_name(path[:-1]))
                           or did_you_mean(str(key), allowed) or f"allowed keys: {', '.join(allowed)}")
        return
    if kind == "required":
        where = _where(doc, path)
        for missing in error.validator_value:
            if isinstance(instance, dict) and missing not in instance and not strayed(SCHEMA, doc, path, missing):
                report.add(where, f"missing required key {missing!r} in {_container_name(path)}",
                           _REQUIRED_HINTS.get(missing))
        return
    if kind == "dependentRequired" and isinstance(instance, dict):
        for given, needs in error.validator_value.items():
            if given in instance:
                for need in needs:
                    if need not in instance:
                        hint = ("a sending step names both the channel and the template: send: email, template: "
                                "welcome") if need == "send" else "on_event and on_timeout belong to a wait_for step"
                        report.add(pos(instance, given, of_key=True), f"{given!r} needs {need!r} in the same step",
                                   hint)
        return
    if kind == "type" and instance is None and keys_meant_for(SCHEMA, doc, path):
        return  # `wait_for:` with its keys unindented below it: each key's hint says to indent it
    if kind == "minProperties":
        what = "step" if _container_name(path) == "step" else _describe(path)
        report.add(_where(doc, path), f"empty {what}",
                   "a step does one thing: send, wait, wait_until, wait_for, branch, split, coupon, track, set "
                   "or exit" if what == "step" else None)
        return
    if kind == "oneOf" and path and path[-1] == "re_entry":
        report.add(_where(doc, path), "re_entry must be once, every_time or {after: 30d}")
        return
    if kind == "oneOf" and path and path[-1] == "track":
        # A mapping that fails the mapping form: say what is wrong in it (a misspelt key, say).
        inner = [e for e in error.context or () if e.validator != "type"] if isinstance(instance, dict) else []
        for sub in inner:
            _explain(sub, doc, report)
        if inner:
            return
        report.add(_where(doc, path), "track needs an event name, e.g. track: lead_qualified",
                   "or track: {event: lead_qualified, properties: {source: scoring}}")
        return
    message = schema.get("x-message")
    if message and kind == "oneOf" and isinstance(instance, (int, float)) and not isinstance(instance, bool):
        # A number or vars.<name> (a coupon's percent): a number out of range says what its range is.
        inner = [e for e in error.context or () if e.validator != "type"]
        for sub in inner:
            _explain(sub, doc, report)
        if inner:
            return
    if message and kind in {"pattern", "type", "minLength", "minItems", "enum", "minimum", "maximum",
                            "exclusiveMinimum", "oneOf"}:
        report.add(_where(doc, path), f"{_describe(path)} {message}" if not message[0].isupper() else message,
                   schema.get("x-hint"))
        return
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        report.add(_where(doc, path), f"{_describe(path)} must be {_article(expected)}")
        return
    report.add(_where(doc, path), f"{_describe(path)}: {error.message}")


def _article(kind: str) -> str:
    names = {"object": "a mapping of keys", "array": "a list", "string": "text", "number": "a number",
             "integer": "a whole number", "boolean": "true or false"}
    return names.get(kind, kind)


def _container_name(path: list[Any]) -> str:
    if not path:
        return "the journey"
    if len(path) >= 2 and path[-2] == "stages":
        return "stage"
    if len(path) >= 2 and path[-2] in ("steps", "on_event", "on_timeout"):
        return "step"
    if len(path) >= 2 and path[-2] == "variants":
        return "variant"
    if len(path) >= 2 and path[-2] == "branch":
        return "path"
    if len(path) >= 2 and path[-2] == "exit_on":
        return "exit_on"
    return f"'{path[-1]}'"


# -- pass 3: meaning ------------------------------------------------------------------------------

def version_of(text: str) -> str:
    """A journey version's name: the start of its source text's SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:VERSION_LENGTH]


def load_journey(path: Path, channels: Channels, templates: TemplateCheck | None,
                 sources: "Sources | None" = None,
                 default_timezone: str = "UTC", text: str | None = None) -> tuple[Journey | None, list[Diagnostic]]:
    """Read and check one journey file (or `text`, a deployed version of it). The journey is None
    when there is any error.

    `default_timezone` (the workspace's) is the journey's zone when its file names none."""
    journey, diagnostics = read_journey(path, channels, templates, sources, default_timezone, text)
    return (None if has_errors(diagnostics) else journey), diagnostics


def read_journey(path: Path, channels: Channels, templates: TemplateCheck | None,
                 sources: "Sources | None" = None,
                 default_timezone: str = "UTC", text: str | None = None) -> tuple[Journey | None, list[Diagnostic]]:
    """Like load_journey, but the journey is as much of it as could be built, errors or not (None only
    when the file is no YAML mapping): `lifecycle validate` checks its names against the other
    journeys beside its other errors. Never serve it when there are errors."""
    report = Report(display_path(path))
    if text is None:
        text = read_text(path, report)
    doc = read_yaml(path, report, text) if text is not None else None
    if report.items:
        return None, report.items
    if not isinstance(doc, dict):
        report.add((1, 1), "a journey file must be a mapping with 'journey:' and 'stages:' or 'trigger:'",
                   "start the file with  journey: my-journey")
        return None, report.items
    _schema_diagnostics(doc, report)
    journey = _Builder(doc, Path(path), report, channels, templates, sources, default_timezone).build()
    if text is not None:
        journey = replace(journey, version=version_of(text))
    return journey, sorted(set(report.items))


class _Builder:
    def __init__(self, doc: CommentedMap, path: Path, report: Report, channels: Channels,
                 templates: TemplateCheck | None, sources: "Sources | None", default_timezone: str = "UTC") -> None:
        self.doc, self.path, self.report = doc, path, report
        self.default_timezone = default_timezone
        self.channels, self.templates, self.sources = channels, templates, sources
        self.name = doc.get("journey") if isinstance(doc.get("journey"), str) else path.stem
        variables = doc.get("vars") if isinstance(doc.get("vars"), dict) else {}
        reserved = (RULE_NAMES | TEMPLATE_EXTRA_NAMES | {"event", "change", "coupon"}) & set(variables)
        for var in sorted(reserved):
            report.add(pos(variables, var, of_key=True), f"vars name {var!r} is reserved",
                       f"rename it; {var!r} already means something in rules and templates")
        self.variables = plain(variables)
        self.names = frozenset(set(variables) - reserved)
        journey_vars = {k: v for k, v in self.variables.items() if k not in reserved}
        self.run_vars = collect_run_vars(doc, journey_vars)
        self.assigned = collect_assigned(doc, journey_vars)
        self.locale = doc.get("locale") if isinstance(doc.get("locale"), str) else "en"
        max_segments = doc.get("max_sms_segments")
        self.max_segments = max_segments if isinstance(max_segments, int) and max_segments > 0 \
            else DEFAULT_MAX_SMS_SEGMENTS
        self.references: list[Reference] = []
        self.emits: set[str] = set()
        self.sets: set[str] = set()
        self.fallbacks: dict[tuple[str, str], None] = {}   # templates not in the journey's locale, in order

    # expressions, with what they read noted for the cross-journey checks
    def rule(self, node: Any, key: str, extra: Iterable[str] = ()) -> Expression | None:
        where = pos(node, key)
        expression = compile_at(node[key], where, self.names | set(extra), self.report, *declared(self.sources))
        if expression is not None:
            check_vars(references(expression.source).vars, where, self.run_vars, self.report)
            self.note(expression, where)
        return expression

    def note(self, expression: Expression, where: tuple[int, int]) -> None:
        found = references(expression.source)
        for kind, names in (("attribute", found.attributes), ("event", found.events), ("score", found.scores),
                            ("journey", found.journeys)):
            self.references.extend(Reference(kind, name, where[0], where[1]) for name in sorted(names))

    def duration(self, node: Any, key: str, default: float) -> float:
        if key not in node:
            return default
        try:
            return parse_duration(node[key])
        except DurationError as exc:
            self.report.add_once(pos(node, key), f"bad duration: {exc}", DURATION_HINT)
            return default

    def _migrate(self, stages: tuple[Stage, ...], flow: Flow | None) -> tuple[tuple[Stage, ...], Flow | None]:
        """`migrate: {old: new}`: contacts waiting at a removed step `old` continue at step `new`, in
        the stage (or triggered journey) that has it."""
        spec = self.doc.get("migrate")
        if not isinstance(spec, CommentedMap):
            return stages, flow
        flows: list[tuple[str, Flow]] = [(stage.name, stage.flow) for stage in stages]
        if flow is not None:
            flows.append((RUN, flow))
        added: dict[str, dict[str, str]] = {}
        known = sorted({node for _, f in flows for node in f.nodes})
        for old, new in spec.items():
            if not isinstance(old, str) or not isinstance(new, str):
                continue  # the schema reports it
            home = next((scope for scope, f in flows if new in f.nodes), None)
            if home is None:
                self.report.add(pos(spec, old), f"migrate: there is no step {new!r} to send contacts to",
                                did_you_mean(new, known) or "name the id of a step of this file")
                continue
            if any(old in f.nodes for scope, f in flows if scope == home):
                self.report.add(pos(spec, old, of_key=True), f"migrate: step {old!r} still exists",
                                "migrate: maps the id of a step you removed to the step its contacts continue at")
                continue
            added.setdefault(home, {})[old] = new

        def with_aliases(scope: str, f: Flow) -> Flow:
            extra = added.get(scope)
            return replace(f, aliases={**f.aliases, **extra}) if extra else f

        stages = tuple(replace(stage, flow=with_aliases(stage.name, stage.flow)) for stage in stages)
        return stages, (with_aliases(RUN, flow) if flow is not None else None)

    def flow_context(self, scope: str) -> FlowContext:
        return FlowContext(report=self.report, journey=self.name, channels=self.channels, templates=self.templates,
                           locale=self.locale, names=self.names, variables=self.variables,
                           max_segments=self.max_segments, scope=scope, sources=self.sources,
                           note=self.note, run_vars=self.run_vars, assigned=self.assigned)

    def absorb(self, ctx: FlowContext) -> None:
        self.emits |= ctx.tracked
        self.sets |= ctx.set_attributes
        for event, where, kind in ctx.events:
            self.references.append(Reference(kind, event, where[0], where[1]))
        self.fallbacks.update(dict.fromkeys(ctx.fallbacks))

    def build(self) -> Journey:
        doc, report = self.doc, self.report
        timezone = self._timezone()
        audience = self.rule(doc, "audience") if "audience" in doc else None
        has_stages, has_trigger = "stages" in doc, "trigger" in doc
        if has_stages and has_trigger:
            report.add(pos(doc, "trigger", of_key=True), "a journey has either stages or a trigger, not both",
                       "move the triggered steps into a journey file of their own")
        if "steps" in doc and not has_trigger:
            report.add(pos(doc, "steps", of_key=True),
                       "steps at the top of the file belong to a triggered journey: add a trigger"
                       if not has_stages else "steps at the top of a stage journey are never run",
                       "e.g. trigger: {event: checkout_started}" if not has_stages
                       else "put them under the stage that should run them")
        if has_trigger and "steps" not in doc:
            report.add(pos(doc, "trigger", of_key=True), "a triggered journey needs steps",
                       "list what happens when the trigger fires under steps:")
        if not has_stages and not has_trigger and "scores" not in doc:
            report.add((1, 1), "missing 'stages' or 'trigger'",
                       "a journey lists lifecycle stages under stages:, or starts on a trigger: with steps:")
        if has_stages:
            for key, why in (("re_entry", "a contact re-enters a stage whenever its rule holds again"),
                             ("exit_on", "a stage ends when its rule stops holding"),
                             ("goal", "put goal: on the stage it belongs to")):
                if key in doc:
                    report.add(pos(doc, key, of_key=True), f"{key} is for triggered journeys", why)
        stages = self._stages() if has_stages else ()
        trigger, flow = None, None
        if has_trigger:
            trigger = self._trigger(doc["trigger"]) if isinstance(doc["trigger"], CommentedMap) else None
            ctx = self.flow_context(RUN)
            flow = build_flow(doc.get("steps"), ctx, trailing_wait_warning=False)
            self.absorb(ctx)
        self._check_fallbacks()
        stages, flow = self._migrate(tuple(stages), flow)
        journey_args: dict[str, Any] = {}
        if flow is not None:
            journey_args["flow"] = flow
        return Journey(
            name=self.name, path=report.path, stages=tuple(stages), trigger=trigger,
            re_entry=self._re_entry(), goal=self._goal(doc["goal"]) if isinstance(doc.get("goal"), CommentedMap)
            and not has_stages else None,
            exits=self._exits(), audience=audience, locale=self.locale, timezone=timezone,
            description=str(doc.get("description", "")), vars=self.variables, max_sms_segments=self.max_segments,
            message_type=doc["type"] if doc.get("type") in MESSAGE_TYPES else "marketing",
            priority=doc["priority"] if isinstance(doc.get("priority"), int) and not isinstance(doc.get("priority"),
                                                                                                 bool) else 0,
            quiet_hours=quiet_hours_of(doc, "quiet_hours", report) if "quiet_hours" in doc else None,
            scores=self._scores(), references=tuple(self.references), emits=frozenset(self.emits),
            sets=frozenset(self.sets), name_at=pos(doc, "journey", of_key=True) if "journey" in doc else (1, 1),
            **journey_args)

    def _check_fallbacks(self) -> None:
        """Warn, at `locale:`, about the templates this journey uses that have no version in its locale
        (after negotiation: `zh-Hant` is written in `zh-TW`): they fall back to English."""
        if not self.fallbacks or self.templates is None:
            return
        catalog, locale = self.templates.catalog, self.locale
        found = {(channel, name): catalog.fallback_of(channel, name, locale) for channel, name in self.fallbacks}
        used = {key: file.locale for key, file in sorted(found.items()) if file is not None and file.locale is not None}
        if not used:
            return
        names = ", ".join(f"{channel}/{name}" for channel, name in used)
        fallbacks = ", ".join(sorted(set(used.values())))
        channel, name = next(iter(used))
        example = display_path(catalog.root / channel / f"{name}.{locale}.<ext>")
        common = frozenset.intersection(*(catalog.locales(ch, n) for ch, n in used))
        hint = f"add {locale} versions (e.g. {example})" + \
            (f", or set locale: to one they are written in: {', '.join(sorted(common))}" if common else "")
        where = pos(self.doc, "locale") if "locale" in self.doc else (1, 1)
        self.report.warn(where, f"no version in {locale!r} of {names}: "
                                f"{'it falls' if len(used) == 1 else 'they fall'} back to {fallbacks}", hint)

    def _timezone(self) -> str:

        value = self.doc.get("timezone")
        if not isinstance(value, str):
            return self.default_timezone
        if zone(value, default="").key != value and value != "UTC":
            self.report.add(pos(self.doc, "timezone"), f"unknown time zone {value!r}",
                            did_you_mean(value, sorted(available_timezones()))
                            or "use an IANA name such as Europe/Warsaw, Asia/Tehran or America/New_York")
            return "UTC"
        return value

    def _stages(self) -> list[Stage]:
        report = self.report
        stages_doc = self.doc.get("stages") if isinstance(self.doc.get("stages"), list) else []
        stages: list[Stage] = []
        seen: dict[str, int] = {}
        catch_all: str | None = None
        for index, stage_doc in enumerate(stages_doc):
            if not isinstance(stage_doc, CommentedMap):
                continue
            name = stage_doc.get("name") if isinstance(stage_doc.get("name"), str) else None
            ctx = self.flow_context(name or "?")
            # A stage without a (valid) name still gets its steps checked, so every problem shows at once.
            flow = build_flow(stage_doc.get("steps"), ctx, trailing_wait_warning=True)
            self.absorb(ctx)
            if name is None:
                continue
            where = pos(stages_doc, index)
            if name in seen:
                report.add(pos(stage_doc, "name"), f"stage {name!r} is defined twice",
                           f"the first one is on line {seen[name]}")
                continue
            seen[name] = where[0]
            if name == RUN:
                report.add(pos(stage_doc, "name"), f"stage name {RUN!r} is reserved", "pick another name")
            if catch_all is not None:
                report.warn(pos(stage_doc, "name"), f"stage {name!r} can never be reached",
                            f"stage {catch_all!r} above has no 'when' rule and catches every contact first; "
                            "move it to the end")
            rule = self.rule(stage_doc, "when") if "when" in stage_doc else None
            if "when" not in stage_doc and catch_all is None:
                catch_all = name
            goal = self._goal(stage_doc["goal"]) if isinstance(stage_doc.get("goal"), CommentedMap) else None
            stages.append(Stage(name, rule, flow, str(stage_doc.get("description", "")), where[0], goal))
        return stages

    def _trigger(self, spec: CommentedMap) -> Trigger | None:
        report = self.report
        kinds = [key for key in TRIGGER_KINDS if key in spec]
        where = pos(self.doc, "trigger")
        if not kinds:
            report.add(where, "the trigger does not say what starts a run",
                       "use one of: " + ", ".join(TRIGGER_KINDS))
            return None
        if len(kinds) > 1:
            report.add(pos(spec, kinds[1], of_key=True),
                       f"a trigger has one kind: {kinds[0]!r} and {kinds[1]!r} are both given",
                       "use a second journey for a second trigger, or a `where:` filter")
        kind = kinds[0]
        line = where[0]
        extra = {"event": {"event"}, "attribute": {"change"}}.get(kind, set())
        filter_ = self.rule(spec, "where", extra) if "where" in spec else None
        for key, allowed in (("journey", ("enters", "leaves")), ("yearly", ("date",)), ("offset", ("date",)),
                             ("time", ("date",)), ("max_age", ("event",))):
            if key in spec and kind not in allowed:
                report.add(pos(spec, key, of_key=True), f"{key!r} does not apply to a {kind!r} trigger",
                           f"{key!r} goes with " + " or ".join(allowed))
        if kind == "event":
            if not isinstance(spec["event"], str):
                return None
            self.references.append(Reference("trigger-event", spec["event"], *pos(spec, "event")))
            return Trigger("event", line, event=spec["event"], where=filter_,
                           max_age=self.duration(spec, "max_age", DEFAULT_EVENT_MAX_AGE))
        if kind in ("enters", "leaves"):
            if not isinstance(spec[kind], str):
                return None
            journey = spec.get("journey") if isinstance(spec.get("journey"), str) else None
            self.references.append(Reference(f"stage-{kind}", f"{journey or ''}/{spec[kind]}", *pos(spec, kind)))
            return Trigger(kind, line, journey=journey, stage=spec[kind], where=filter_)
        if kind == "attribute":
            if not isinstance(spec["attribute"], str):
                return None
            self.references.append(Reference("attribute", spec["attribute"].split(".")[0], *pos(spec, "attribute")))
            return Trigger("attribute", line, attribute=spec["attribute"], where=filter_)
        if kind == "date":
            date = self.rule(spec, "date")
            at = None
            if "time" in spec:
                try:
                    at = parse_time_of_day(spec["time"])
                except CalendarError as exc:
                    report.add(pos(spec, "time"), str(exc))
            return Trigger("date", line, date=date, at=at, offset_days=parse_offset(spec, report),
                           yearly=bool(spec.get("yearly", False)), where=filter_)
        if kind == "schedule":
            expression = spec["schedule"]
            if not isinstance(expression, str):
                return None
            problem = check_cron(expression)
            if problem:
                report.add(pos(spec, "schedule"), problem,
                           'five fields: minute hour day-of-month month day-of-week, e.g. "0 10 * * mon"')
                return None
            return Trigger("schedule", line, schedule=expression.strip(), where=filter_)
        if kind == "broadcast":
            if spec["broadcast"] is not True:
                report.add(pos(spec, "broadcast"), "`broadcast:` takes `true`",
                           "`broadcast: true` makes a journey that `lifecycle broadcast` sends; "
                           "for a repeating one, use `schedule:`")
                return None
            return Trigger("broadcast", line, where=filter_)
        condition = self.rule(spec, "when")
        return Trigger("when", line, condition=condition, where=filter_)

    def _re_entry(self) -> ReEntry:
        value = self.doc.get("re_entry")
        if isinstance(value, str) and value in ("once", "every_time"):
            return ReEntry(value)
        if isinstance(value, CommentedMap) and "after" in value:
            return ReEntry("after", self.duration(value, "after", 0.0))
        return ReEntry()

    def _goal(self, spec: CommentedMap) -> Goal | None:
        if not isinstance(spec.get("event"), str):
            return None
        self.references.append(Reference("goal-event", spec["event"], *pos(spec, "event")))
        where = self.rule(spec, "where", {"event"}) if "where" in spec else None
        return Goal(spec["event"], where, self.duration(spec, "within", 30 * 86400.0), pos(spec, "event")[0],
                    bool(spec.get("exit", True)))

    def _exits(self) -> tuple[ExitRule, ...]:
        items = self.doc.get("exit_on") if isinstance(self.doc.get("exit_on"), list) else []
        rules = []
        for index, item in enumerate(items):
            if not isinstance(item, CommentedMap):
                continue
            line = pos(items, index)[0]
            if "event" in item and "when" in item:
                self.report.add(pos(item, "when", of_key=True), "an exit_on entry is an event or a rule, not both",
                                "write them as two entries")
            if isinstance(item.get("event"), str):
                self.references.append(Reference("exit-event", item["event"], *pos(item, "event")))
                where = self.rule(item, "where", {"event"}) if "where" in item else None
                rules.append(ExitRule(line, event=item["event"], where=where))
            elif "when" in item:
                rules.append(ExitRule(line, when=self.rule(item, "when")))
        return tuple(rules)

    def _scores(self) -> tuple[ScoreDef, ...]:
        spec = self.doc.get("scores")
        if not isinstance(spec, CommentedMap):
            return ()
        scores = []
        for name, score in spec.items():
            if not isinstance(score, CommentedMap):
                continue
            half_life = self.duration(score, "half_life", 0.0) or None
            if "half_life" in score and half_life is not None and half_life <= 0:
                self.report.add(pos(score, "half_life"), "half_life must be longer than 0")
            rules = []
            for index, rule in enumerate(score.get("rules") or []):
                if not isinstance(rule, CommentedMap) or not isinstance(rule.get("event"), str):
                    continue
                points = rule.get("points")
                if not isinstance(points, (int, float)) or isinstance(points, bool):
                    continue
                self.references.append(Reference("score-event", rule["event"], *pos(rule, "event")))
                where = self.rule(rule, "where", {"event"}) if "where" in rule else None
                rules.append(ScoreRule(rule["event"], float(points), where, pos(score["rules"], index)[0]))
            scores.append(ScoreDef(str(name), half_life, tuple(rules), *pos(spec, name, of_key=True)))
        return tuple(scores)


def check_template_files(templates: TemplateCheck) -> list[Diagnostic]:
    """Problems of every template on disk, used or not: syntax, unsafe attributes, and the render
    budget with sample data."""
    found: list[Diagnostic] = []
    for variant in templates.catalog.files():
        problems = templates.renderer.check(variant)
        found.extend(Diagnostic(display_path(p.path), p.line, p.column, p.message, p.hint) for p in problems)
        if not problems:
            found.extend(sample_limits(templates, variant))
    return found


__all__ = ["load_journey", "read_journey", "check_template_files", "TemplateCheck", "SCHEMA", "locale_chain",
           "display_path", "Channels"]
