"""Read a journey file into a Journey, or explain precisely what is wrong with it.

Three passes, all reported together so a marketer fixes everything in one go:
1. YAML syntax (ruamel.yaml keeps every key's line and column);
2. structure, checked against the published JSON Schema (the same file editors
   use for autocomplete), with its messages rewritten for people;
3. meaning: rules compile, durations parse, channels and templates exist,
   stage and step names are unique, nothing is unreachable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from .diagnostics import Diagnostic, Severity, has_errors
from .durations import HINT as DURATION_HINT
from .durations import DurationError, parse_duration
from .expressions import RULE_NAMES, TEMPLATE_EXTRA_NAMES, ExpressionError, compile_rule, did_you_mean
from .journey import Journey, Stage, Step
from .samples import sample_context
from .sms import segments
from .templates import Renderer, TemplateCatalog, TemplateRenderError, locale_chain

if TYPE_CHECKING:
    from .channels.base import Channel

#: Journey channel -> the adapter serving it (None where only the name is known).
Channels = Mapping[str, "Channel | None"]
DEFAULT_MAX_SMS_SEGMENTS = 2

SCHEMA: dict[str, Any] = json.loads((resources.files("automation") / "schema" / "journey.schema.json").read_text())
_VALIDATOR = Draft202012Validator(SCHEMA)

_REQUIRED_HINTS = {
    "journey": "give the journey a name, e.g. journey: customer-lifecycle",
    "stages": "list the lifecycle stages under stages:",
    "name": "every stage needs a name, e.g. name: lead",
}


@dataclass(frozen=True)
class TemplateCheck:
    """What the loader needs to know about templates: the catalog and a renderer to compile them."""

    catalog: TemplateCatalog
    renderer: Renderer


def display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _Report:
    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[Diagnostic] = []

    def add(self, where: tuple[int, int], message: str, hint: str | None = None,
            severity: Severity = Severity.ERROR) -> None:
        self.items.append(Diagnostic(self.path, where[0], where[1], message, hint, severity))


def _pos(node: Any, key: Any = None, *, of_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of a mapping value/key or a sequence item."""
    try:
        if key is None:
            line, col = node.lc.line, node.lc.col
        elif isinstance(node, CommentedMap):
            line, col = node.lc.key(key) if of_key else node.lc.value(key)
        elif isinstance(node, CommentedSeq):
            line, col = node.lc.item(key)
        else:
            return (1, 1)
        return (line + 1, col + 1)
    except (AttributeError, KeyError, IndexError, TypeError):
        return (1, 1)


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
    return _pos(parent, key)


def _describe(path: Iterable[Any]) -> str:
    parts = [p for p in path if isinstance(p, str)]
    return f"'{parts[-1]}'" if parts else "this"


def _schema_diagnostics(doc: Any, report: _Report) -> None:
    for error in sorted(_VALIDATOR.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        _explain(error, doc, report)


def _explain(error: ValidationError, doc: Any, report: _Report) -> None:
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    kind = error.validator
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                parent_name = _container_name(path)
                report.add(_pos(instance, key, of_key=True), f"unknown key {key!r} in {parent_name}",
                           did_you_mean(str(key), allowed) or f"allowed keys: {', '.join(allowed)}")
        return
    if kind == "required":
        parent, key = _node_at(doc, path)
        where = (1, 1) if parent is None else _pos(parent, key)
        for missing in error.validator_value:
            if isinstance(instance, dict) and missing not in instance:
                report.add(where, f"missing required key {missing!r} in {_container_name(path)}",
                           _REQUIRED_HINTS.get(missing))
        return
    if kind == "dependentRequired" and isinstance(instance, dict):
        for given, needs in error.validator_value.items():
            if given in instance:
                for need in needs:
                    if need not in instance:
                        report.add(_pos(instance, given, of_key=True),
                                   f"{given!r} needs {need!r} in the same step",
                                   "a sending step names both the channel and the template: "
                                   "send: email, template: welcome")
        return
    if kind == "minProperties" and not path[-2:-1] == ["stages"]:
        report.add(_where(doc, path), "empty step", "a step has send: + template:, or wait:, or both")
        return
    message = schema.get("x-message")
    if message and kind in {"pattern", "type", "minLength", "minItems", "enum"}:
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
    if len(path) >= 2 and path[-2] == "steps":
        return "step"
    return f"'{path[-1]}'"


def read_yaml(path: Path, report: _Report) -> Any:
    yaml = YAML(typ="rt")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        report.add((1, 1), f"file is not UTF-8 text: {exc}", "save the file as UTF-8")
        return None
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        hint = "check indentation and quote text that contains ':' or starts with '{' or '*'"
        if "found duplicate key" in str(exc) or type(exc).__name__ == "DuplicateKeyError":
            hint = "each key may appear only once in a mapping"
        report.add(where, f"YAML syntax error: {problem}", hint)
        return None


def load_journey(path: Path, channels: Channels,
                 templates: TemplateCheck | None) -> tuple[Journey | None, list[Diagnostic]]:
    """Read and check one journey file. The journey is None when there is any error."""
    report = _Report(display_path(path))
    doc = read_yaml(path, report)
    if report.items:
        return None, report.items
    if not isinstance(doc, dict):
        report.add((1, 1), "a journey file must be a mapping with 'journey:' and 'stages:'",
                   "start the file with  journey: my-journey")
        return None, report.items
    _schema_diagnostics(doc, report)
    journey = _build(doc, path, report, channels, templates)
    return (None if has_errors(report.items) else journey), sorted(set(report.items))


def _compile(source: Any, where: tuple[int, int], names: Iterable[str], report: _Report):
    if not isinstance(source, str):
        return None  # the schema already reported the wrong type
    try:
        return compile_rule(source, names)
    except ExpressionError as exc:
        report.add(where, exc.message, exc.hint)
        return None


def _build(doc: CommentedMap, path: Path, report: _Report, channels: Channels,
           templates: TemplateCheck | None) -> Journey | None:
    name = doc.get("journey") if isinstance(doc.get("journey"), str) else path.stem
    variables = doc.get("vars") if isinstance(doc.get("vars"), dict) else {}
    reserved = (RULE_NAMES | TEMPLATE_EXTRA_NAMES) & set(variables)
    for var in sorted(reserved):
        report.add(_pos(variables, var, of_key=True), f"vars name {var!r} is reserved",
                   f"rename it; {var!r} already means something in rules and templates")
    names = set(variables) - reserved
    locale = doc.get("locale") if isinstance(doc.get("locale"), str) else "en"
    max_segments = doc.get("max_sms_segments")
    max_segments = max_segments if isinstance(max_segments, int) and max_segments > 0 else DEFAULT_MAX_SMS_SEGMENTS
    audience = None
    if "audience" in doc:
        audience = _compile(doc["audience"], _pos(doc, "audience"), names, report)
    stages_doc = doc.get("stages") if isinstance(doc.get("stages"), list) else []
    stages: list[Stage] = []
    seen_stages: dict[str, int] = {}
    catch_all: str | None = None
    for index, stage_doc in enumerate(stages_doc):
        if not isinstance(stage_doc, dict):
            continue
        if not isinstance(stage_doc.get("name"), str):
            # Reported by the schema; its steps still get checked, so every problem shows at once.
            _build_steps(stage_doc, report, channels, templates, locale, names, _plain(variables), max_segments)
            continue
        stage_name = stage_doc["name"]
        where = _pos(stages_doc, index)
        if stage_name in seen_stages:
            report.add(_pos(stage_doc, "name"), f"stage {stage_name!r} is defined twice",
                       f"the first one is on line {seen_stages[stage_name]}")
            continue
        seen_stages[stage_name] = where[0]
        if catch_all is not None:
            report.add(_pos(stage_doc, "name"), f"stage {stage_name!r} can never be reached",
                       f"stage {catch_all!r} above has no 'when' rule and catches every contact first; "
                       "move it to the end", Severity.WARNING)
        rule = None
        if "when" in stage_doc:
            rule = _compile(stage_doc["when"], _pos(stage_doc, "when"), names, report)
        elif catch_all is None:
            catch_all = stage_name
        steps = _build_steps(stage_doc, report, channels, templates, locale, names,
                             _plain(variables), max_segments)
        stages.append(Stage(stage_name, rule, tuple(steps), str(stage_doc.get("description", "")), where[0]))
    return Journey(
        name=name,
        path=report.path,
        stages=tuple(stages),
        audience=audience,
        locale=locale,
        description=str(doc.get("description", "")),
        vars=_plain(variables),
        max_sms_segments=max_segments,
    )


def _plain(value: Any) -> Any:
    """ruamel's round-trip types turned into plain Python for templates."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _build_steps(stage_doc: CommentedMap, report: _Report, channels: Channels,
                 templates: TemplateCheck | None, locale: str, names: Iterable[str],
                 variables: Mapping[str, Any], journey_max_segments: int) -> list[Step]:
    steps_doc = stage_doc.get("steps") if isinstance(stage_doc.get("steps"), list) else []
    steps: list[Step] = []
    used_ids: set[str] = set()
    pending_wait = 0.0
    trailing_wait: tuple[int, int] | None = None
    for index, step_doc in enumerate(steps_doc):
        if not isinstance(step_doc, dict):
            continue
        if "wait" in step_doc:
            try:
                pending_wait += parse_duration(step_doc["wait"])
            except DurationError as exc:
                report.add(_pos(step_doc, "wait"), f"bad duration: {exc}", DURATION_HINT)
        channel = step_doc.get("send")
        template = step_doc.get("template") if isinstance(step_doc.get("template"), str) else ""
        if not isinstance(channel, str):
            if "send" not in step_doc and "template" not in step_doc and "wait" in step_doc:
                trailing_wait = _pos(steps_doc, index)
            continue
        trailing_wait = None
        options = dict(_plain(step_doc["options"])) if isinstance(step_doc.get("options"), dict) else {}
        if isinstance(step_doc.get("url"), str):
            options["url"] = step_doc["url"]
        max_segments = step_doc.get("max_segments") if isinstance(step_doc.get("max_segments"), int) else None
        if channel not in channels:
            report.add(_pos(step_doc, "send"), f"unknown channel {channel!r}",
                       did_you_mean(channel, channels) or f"channels: {', '.join(sorted(channels))}")
        else:
            adapter = channels[channel]
            if adapter is not None:
                _check_options(step_doc, channel, adapter, options, report)
            if not template and "template" not in step_doc and (adapter is None
                                                               or adapter.template_required(channel, options)):
                report.add(_pos(step_doc, "send", of_key=True), "'send' needs 'template' in the same step",
                           "a sending step names both the channel and the template: send: email, template: welcome")
            elif template and templates is not None:
                _check_template(step_doc, channel, template, locale, report, templates)
                if channel == "sms":
                    _check_segments(step_doc, template, locale, report, templates, variables,
                                    max_segments or journey_max_segments)
        step_id = step_doc.get("id") if isinstance(step_doc.get("id"), str) else None
        if step_id is not None and step_id in used_ids:
            report.add(_pos(step_doc, "id"), f"step id {step_id!r} is used twice in this stage",
                       "step ids must be unique within a stage")
        if step_id is None:
            base = template or channel
            step_id, n = base, 2
            while step_id in used_ids:
                step_id, n = f"{base}-{n}", n + 1
        used_ids.add(step_id)
        condition = _compile(step_doc["if"], _pos(step_doc, "if"), names, report) if "if" in step_doc else None
        steps.append(Step(step_id, pending_wait, channel, template, condition, _pos(steps_doc, index)[0],
                          options, max_segments))
        pending_wait = 0.0
    if trailing_wait is not None:
        report.add(trailing_wait, "a wait at the end of a stage does nothing",
                   "add a step after it or remove it", Severity.WARNING)
    return steps


def _check_template(step_doc: CommentedMap, channel: str, template: str, locale: str, report: _Report,
                    templates: TemplateCheck) -> None:
    variants = templates.catalog.variants(channel, template)
    where = _pos(step_doc, "template")
    if not variants:
        existing = templates.catalog.names(channel)
        report.add(where, f"no template {template!r} for channel {channel!r}",
                   did_you_mean(template, existing)
                   or f"create {display_path(templates.catalog.root / channel / f'{template}.{locale}.<ext>')}")
        return
    if templates.catalog.resolve(channel, template, None, locale) is None:
        have = ", ".join(sorted(v or "(no locale)" for v in variants))
        report.add(where, f"template {channel}/{template} has no version for the journey locale {locale!r}",
                   f"found: {have}; add {template}.{locale}.<ext> (the fallback for contacts without a match)")
    for variant in variants.values():
        for line, message in templates.renderer.check(variant):
            report.items.append(Diagnostic(display_path(variant.path), line, 1, message,
                                           f"used by {report.path}:{where[0]}:{where[1]}"))


def _check_options(step_doc: CommentedMap, channel: str, adapter: "Channel", options: Mapping[str, Any],
                   report: _Report) -> None:
    allowed = dict(adapter.options)
    where = _pos(step_doc, "options") if "options" in step_doc else _pos(step_doc, "send")
    for key in options:
        if key not in allowed:
            if key == "url" and "url" in step_doc:
                report.add(_pos(step_doc, "url", of_key=True), f"channel {channel!r} does not take a url",
                           "url: is for webhook steps")
                continue
            report.add(where, f"unknown option {key!r} for channel {channel!r}",
                       did_you_mean(key, allowed) or (f"options: {', '.join(sorted(allowed))}" if allowed
                                                      else f"channel {channel!r} takes no options"))
    for problem in adapter.check_options(channel, options):
        report.add(where, problem)


def _check_segments(step_doc: CommentedMap, template: str, locale: str, report: _Report, templates: TemplateCheck,
                    variables: Mapping[str, Any], limit: int) -> None:
    """Warn when a sample rendering of an SMS template takes more segments than allowed."""
    for variant_locale in sorted(templates.catalog.variants("sms", template), key=str):
        try:
            rendered = templates.renderer.render("sms", template, variant_locale, locale,
                                                 sample_context(variables, "sms"))
        except TemplateRenderError:
            continue  # reported by the template checks
        kind, count, length = segments(rendered.parts.get("body", ""))
        if count > limit:
            name = f"{template}.{variant_locale}" if variant_locale else template
            report.add(_pos(step_doc, "template"),
                       f"sms template {name} renders to {count} segments ({length} {kind} characters), "
                       f"more than the {limit} allowed",
                       "shorten it, or raise max_segments on the step or max_sms_segments on the journey; "
                       "one non-GSM character (Cyrillic, Chinese, emoji) makes a segment 70 characters",
                       Severity.WARNING)


def check_template_files(templates: TemplateCheck) -> list[Diagnostic]:
    """Syntax problems of every template on disk, used or not."""
    found: list[Diagnostic] = []
    for variant in templates.catalog.files():
        for line, message in templates.renderer.check(variant):
            found.append(Diagnostic(display_path(variant.path), line, 1, message))
    return found


__all__ = ["load_journey", "check_template_files", "TemplateCheck", "SCHEMA", "locale_chain"]
