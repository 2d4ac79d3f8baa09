"""Build the node tree of a list of steps (a stage's, or a triggered journey's), checking it.

Two passes: every step gets its id first (explicit `id:`, or a stable name derived from
what it does), so nodes can refer to what follows them; then the nodes are built from the
last step to the first, each knowing its `next`. Waits written just before a send are
folded into the send's delay, as they always were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from jinja2 import nodes as jinja_nodes
from ruamel.yaml.comments import CommentedMap

from automation.calendar import CalendarError, parse_time_of_day, parse_weekdays
from automation.channels.base import Channel
from automation.durations import HINT as DURATION_HINT
from automation.durations import DurationError, parse_duration
from automation.events import InputError, check_attributes, check_event_name
from automation.expressions import Expression, did_you_mean, references
from automation.language.couponspec import NAME_PATTERN, check_spec
from automation.language.diagnostics import Diagnostic, Severity
from automation.language.flow import (
    IF_PAST,
    SEND_NOW,
    Arm,
    BranchNode,
    CouponNode,
    ExitNode,
    Flow,
    Node,
    SendNode,
    SetNode,
    SplitNode,
    TrackNode,
    Variant,
    WaitForNode,
    WaitNode,
    WaitUntilNode,
)
from automation.language.hints import closest, split_name
from automation.language.journey import RUN
from automation.language.runvars import VARS_VALUE, check_vars, read_value
from automation.language.samples import sample_context
from automation.language.sourcemap import Report, compile_at, display_path, plain, pos
from automation.language.sources import Sources, declared
from automation.language.workspace import MESSAGE_TYPES
from automation.messages.locales import negotiate
from automation.messages.sms import segments
from automation.messages.templates import TemplateCheck, TemplateFile, TemplateLimitError, TemplateRenderError
from automation.sandbox import MAX_RANGE

#: Steps that may carry `once: true`: those that do something to or for the contact.
ONCE_KINDS = ("send", "coupon", "track", "set")
KINDS = ("send", "wait_until", "wait_for", "branch", "split", "exit", "coupon", "track", "set")


@dataclass
class FlowContext:
    report: Report
    journey: str
    channels: Mapping[str, "Channel | None"]
    templates: "TemplateCheck | None"
    locale: str
    names: frozenset[str]                # names rules may use (built-ins, vars ...)
    variables: Mapping[str, Any]
    max_segments: int
    scope: str = ""                      # the stage name, or RUN
    sources: "Sources | None" = None
    note: Callable[[Expression, tuple[int, int]], None] | None = None   # records what a rule reads
    ids: dict[int, str] = field(default_factory=dict)
    positions: dict[str, str] = field(default_factory=dict)   # step id -> "path:kind"
    explicit: set[str] = field(default_factory=set)           # ids written as `id:`
    replaces: dict[str, tuple[str, tuple[int, int]]] = field(default_factory=dict)   # old id -> (new id, where)
    taken: dict[str, int] = field(default_factory=dict)   # id -> line where it was first used
    tracked: set[str] = field(default_factory=set)       # events this flow records (for cross-checks)
    set_attributes: set[str] = field(default_factory=set)
    events: list[tuple[str, tuple[int, int], str]] = field(default_factory=list)   # (event, where, kind)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)   # (channel, template) not in the locale
    #: `vars.<name>` a step may use: name -> the values the journey's vars and the split variants give it
    run_vars: Mapping[str, list[Any]] = field(default_factory=dict)
    #: id() of a step's mapping -> the names every run reaching it has a value for (runvars.collect_assigned)
    assigned: Mapping[int, frozenset[str]] = field(default_factory=dict)

    def rule(self, node: Any, key: str, extra: Iterable[str] = ()) -> Expression | None:
        where = pos(node, key)
        expression = compile_at(node[key], where, self.names | set(extra), self.report, *declared(self.sources))
        if expression is not None:
            check_vars(references(expression.source).vars, where, self.run_vars, self.report)
            if self.note is not None:
                self.note(expression, where)
        return expression


def kind_of(step: Mapping[str, Any]) -> str | None:
    found = [key for key in KINDS if key in step]
    if found:
        return found[0]
    return "wait" if "wait" in step else None


def _slug(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-")[:48] or "step"


def _derived_id(step: Mapping[str, Any], kind: str) -> str:
    if kind == "send":
        return _slug(step.get("template") or step.get("send"))
    if kind == "wait":
        return f"wait-{_slug(step.get('wait'))}"
    if kind == "wait_until":
        spec = step.get("wait_until") if isinstance(step.get("wait_until"), Mapping) else {}
        return "wait-until" + (f"-{_slug(spec.get('time'))}" if spec.get("time") else "")
    if kind == "wait_for":
        spec = step.get("wait_for") if isinstance(step.get("wait_for"), Mapping) else {}
        return f"wait-for-{_slug(spec.get('event'))}"
    if kind == "split":
        spec = step.get("split") if isinstance(step.get("split"), Mapping) else {}
        return f"split-{_slug(spec.get('name', 'ab'))}"
    if kind == "coupon":
        spec = step.get("coupon") if isinstance(step.get("coupon"), Mapping) else {}
        return f"coupon-{_slug(spec.get('name', 'coupon'))}"
    if kind == "track":
        track = step.get("track")
        return f"track-{_slug(track.get('event') if isinstance(track, Mapping) else track)}"
    return kind


def _children(step: Mapping[str, Any], kind: str) -> Iterable[tuple[str, Any]]:
    """The nested lists of steps, each with the label of its place in the position path."""
    if kind == "wait_for":
        yield "e", step.get("on_event")
        yield "t", step.get("on_timeout")
    elif kind == "branch" and isinstance(step.get("branch"), list):
        for index, arm in enumerate(step["branch"]):
            if isinstance(arm, Mapping):
                yield str(index + 1), arm.get("steps")
    elif kind == "split" and isinstance(step.get("split"), Mapping):
        for variant in step["split"].get("variants") or []:
            if isinstance(variant, Mapping):
                yield str(variant.get("name", "")), variant.get("steps")


def assign_ids(items: Any, ctx: FlowContext, prefix: str = "") -> None:
    """First pass: an id for every step, unique in the flow, and its place (position path and kind),
    which identifies a step across versions of the file when its derived id changed with its content."""
    if not isinstance(items, list):
        return
    for index, step in enumerate(items):
        if not isinstance(step, CommentedMap):
            continue
        kind = kind_of(step)
        if kind is None:
            continue
        explicit = step.get("id") if isinstance(step.get("id"), str) else None
        if explicit is not None:
            if explicit in ctx.taken:
                ctx.report.add(pos(step, "id"), f"step id {explicit!r} is used twice",
                               f"the first one is on line {ctx.taken[explicit]}; ids must be unique in a stage "
                               "or triggered journey")
            step_id = explicit
            ctx.explicit.add(explicit)
        else:
            base = _derived_id(step, kind)
            step_id, n = base, 2
            while step_id in ctx.taken:
                step_id, n = f"{base}-{n}", n + 1
        ctx.taken.setdefault(step_id, pos(items, index)[0])
        ctx.ids[id(step)] = step_id
        path = f"{prefix}{index + 1}"
        ctx.positions.setdefault(step_id, f"{path}:{kind}")
        if "wait" in step and kind not in ("wait", "send"):
            ctx.positions.setdefault(f"{step_id}-wait", f"{path}:wait-before")
        old = step.get("replaces")
        if isinstance(old, str) and old:
            ctx.replaces[old] = (step_id, pos(step, "replaces"))
        for label, child in _children(step, kind):
            assign_ids(child, ctx, f"{path}.{label}.")


def build_flow(items: Any, ctx: FlowContext, trailing_wait_warning: bool = True) -> Flow:
    """The nodes of a list of steps. A wait at the very end of a stage does nothing (warned); at the end
    of a triggered journey it keeps the contact in the run, which holds off re-entry."""
    assign_ids(items, ctx)
    nodes: dict[str, Node] = {}
    first = _build_list(items, None, ctx, nodes, top=trailing_wait_warning)
    aliases: dict[str, str] = {}
    for old, (new, where) in ctx.replaces.items():
        if old in nodes:
            ctx.report.add(where, f"step {old!r} still exists: it cannot be replaced",
                           "replaces: names the id of a step you removed, so that contacts waiting at it "
                           "continue here")
        else:
            aliases[old] = new
    return Flow(first, nodes, {k: v for k, v in ctx.positions.items() if k in nodes}, aliases,
                frozenset(ctx.explicit & set(nodes)))


def _build_list(items: Any, continuation: str | None, ctx: FlowContext, nodes: dict[str, Node],
                top: bool = False) -> str | None:
    """Build the nodes of a list of steps; returns the id of its first node (or `continuation`)."""
    if not isinstance(items, list):
        return continuation
    report = ctx.report
    # Waits written just before a send become its delay; other waits become wait nodes, and a
    # `wait:` on any other kind of step becomes a wait node of its own before it.
    units: list[tuple[CommentedMap, str, float, int]] = []
    for index, step in enumerate(items):
        if not isinstance(step, CommentedMap):
            continue
        kind = kind_of(step)
        if kind is None:
            continue  # the schema reports an empty step
        if step.get("once") is True and kind not in ONCE_KINDS:
            report.add(pos(step, "once"), f"once is for steps that do something, not for {kind}",
                       "put once: true on the send, coupon, track or set step itself")
        seconds = 0.0
        if "wait" in step:
            try:
                seconds = parse_duration(step["wait"])
            except DurationError as exc:
                report.add_once(pos(step, "wait"), f"bad duration: {exc}", DURATION_HINT)
        if kind == "wait":
            units.append((step, "wait", seconds, index))
        elif kind == "send":
            delay = seconds
            while units and units[-1][1] == "wait" and "if" not in units[-1][0]:
                delay += units.pop()[2]
            units.append((step, "send", delay, index))
        else:
            if "wait" in step:
                units.append((step, "wait-before", seconds, index))
            units.append((step, kind, 0.0, index))
    exit_seen: int | None = None
    for step, kind, _seconds, index in units:
        if exit_seen is not None and kind != "wait-before":
            report.warn(pos(items, index), "this step can never be reached",
                        f"the run ends at the exit on line {exit_seen}")
        if kind == "exit" and "if" not in step:  # a conditional exit lets the others through
            exit_seen = pos(items, index)[0]
    if top and units and units[-1][1] == "wait" and continuation is None:
        step, _, _, index = units[-1]
        report.warn(pos(items, index), "a wait at the end of a stage does nothing", "add a step after it or remove it")
        units.pop()
    next_id = continuation
    for step, kind, seconds, index in reversed(units):
        node = _build_node(step, kind, seconds, next_id, pos(items, index)[0], ctx, nodes)
        if node is not None:
            nodes[node.id] = node
            next_id = node.id
    return next_id


def _build_node(step: CommentedMap, kind: str, seconds: float, next_id: str | None, line: int, ctx: FlowContext,
                nodes: dict[str, Node]) -> Node | None:
    step_id = ctx.ids.get(id(step))
    if step_id is None:
        return None
    if kind == "wait-before":
        return WaitNode(id=f"{step_id}-wait", next=next_id, line=line, condition=None, seconds=seconds)
    condition = ctx.rule(step, "if") if "if" in step else None
    common: dict[str, Any] = {"id": step_id, "next": next_id, "line": line, "condition": condition}
    if step.get("once") is True and kind in ONCE_KINDS:
        common["once"] = True
    if kind == "wait":
        return WaitNode(**common, seconds=seconds)
    if kind == "send":
        return _send(step, common, seconds, ctx)
    if kind == "wait_until":
        return _wait_until(step, common, ctx)
    if kind == "wait_for":
        return _wait_for(step, common, ctx, nodes)
    if kind == "branch":
        return _branch(step, common, ctx, nodes)
    if kind == "split":
        return _split(step, common, ctx, nodes)
    if kind == "exit":
        value = step.get("exit")
        return ExitNode(**common, reason=str(value) if isinstance(value, str) else "exit")
    if kind == "coupon":
        return _coupon(step, common, ctx)
    if kind == "track":
        return _track(step, common, ctx)
    if kind == "set":
        return _set(step, common, ctx)
    return None


# -- the kinds ------------------------------------------------------------------------------------

def _send(step: CommentedMap, common: dict[str, Any], delay: float, ctx: FlowContext) -> SendNode | None:
    report = ctx.report
    channel = step.get("send")
    if not isinstance(channel, str):
        return None
    template = step.get("template") if isinstance(step.get("template"), str) else ""
    options = dict(plain(step["options"])) if isinstance(step.get("options"), dict) else {}
    if isinstance(step.get("url"), str):
        options["url"] = step["url"]
    from_vars: dict[str, str] = {}
    max_segments = step.get("max_segments") if isinstance(step.get("max_segments"), int) else None
    if channel not in ctx.channels:
        report.add(pos(step, "send"), f"unknown channel {channel!r}",
                   did_you_mean(channel, ctx.channels) or f"channels: {', '.join(sorted(ctx.channels))}")
    else:
        adapter = ctx.channels[channel]
        options, from_vars, checkable = _options_from_vars(step, channel, adapter, options, ctx)
        if adapter is not None and checkable:
            _check_options(step, channel, adapter, options, report)
        if not template and "template" not in step and (adapter is None
                                                           or adapter.template_required(channel, options)):
            report.add(pos(step, "send", of_key=True), "'send' needs 'template' in the same step",
                       "a sending step names both the channel and the template: send: email, template: welcome")
        elif template and ctx.templates is not None:
            _check_template(step, channel, template, ctx)
            if channel == "sms":
                _check_segments(step, template, ctx, max_segments or ctx.max_segments)
    message_type = step.get("type") if step.get("type") in MESSAGE_TYPES else None
    return SendNode(**common, channel=channel, template=template, delay=delay, options=options,
                    max_segments=max_segments, message_type=message_type, options_from_vars=from_vars)


def _wait_until(step: CommentedMap, common: dict[str, Any], ctx: FlowContext) -> WaitUntilNode | None:
    spec = step.get("wait_until")
    if not isinstance(spec, CommentedMap):
        return None
    report = ctx.report
    at = weekdays = date = None
    try:
        # A time that is not text (YAML 1.1 reads 9:00 as 540) is reported by the schema.
        at = parse_time_of_day(spec["time"]) if isinstance(spec.get("time"), str) else None
    except CalendarError as exc:
        report.add(pos(spec, "time"), str(exc), "write the time as 09:00 (24-hour clock, the contact's own time)")
    try:
        weekdays = parse_weekdays(spec["days"]) if isinstance(spec.get("days"), list) else None
    except CalendarError:
        pass  # the schema names each bad day at the day itself
    if "date" in spec:
        date = ctx.rule(spec, "date")
    offset = parse_offset(spec, report)
    if at is None and date is None and "time" not in spec and "date" not in spec:
        report.add(pos(step, "wait_until"), "wait_until needs a time, a date or both",
                   "e.g. wait_until: {time: '09:00', days: [mon, tue, wed, thu, fri]} "
                   "or wait_until: {date: contact.renewal_date, offset: -7d, time: '09:00'}")
    if_past = spec.get("if_past") if spec.get("if_past") in IF_PAST else SEND_NOW   # the schema names bad ones
    if "if_past" in spec and "date" not in spec:
        report.add(pos(spec, "if_past"), "if_past is for waits until a date",
                   "e.g. wait_until: {date: contact.trial_ends_at, offset: -3d, time: '10:00', if_past: skip}")
    return WaitUntilNode(**common, at=at, weekdays=weekdays, date=date, offset_days=offset,
                         yearly=bool(spec.get("yearly", False)), if_past=if_past)


def parse_offset(spec: CommentedMap, report: Report) -> int:
    """`offset: -7d` as whole days (negative: before the date)."""
    if "offset" not in spec:
        return 0
    raw = spec["offset"]
    text = str(raw).strip()
    sign = -1 if text.startswith("-") else 1
    try:
        seconds = parse_duration(text.lstrip("+-"))
    except DurationError as exc:
        report.add(pos(spec, "offset"), f"bad offset: {exc}", "an offset is whole days: -7d, 1d, 2w")
        return 0
    if seconds % 86400:
        report.add(pos(spec, "offset"), "an offset is a whole number of days", "e.g. offset: -7d")
    return sign * int(seconds // 86400)


def _wait_for(step: CommentedMap, common: dict[str, Any], ctx: FlowContext,
              nodes: dict[str, Node]) -> WaitForNode | None:
    spec = step.get("wait_for")
    if not isinstance(spec, CommentedMap) or not isinstance(spec.get("event"), str):
        return None
    report = ctx.report
    timeout = 0.0
    if "timeout" in spec:   # the schema reports a missing one
        try:
            timeout = parse_duration(spec["timeout"])
        except DurationError as exc:
            report.add_once(pos(spec, "timeout"), f"bad duration: {exc}", DURATION_HINT)
    where = ctx.rule(spec, "where", {"event"}) if "where" in spec else None
    ctx.events.append((spec["event"], pos(spec, "event"), "wait-event"))
    after = common["next"]
    on_event = _build_list(step.get("on_event"), after, ctx, nodes)
    on_timeout = _build_list(step.get("on_timeout"), after, ctx, nodes)
    return WaitForNode(**common, event=spec["event"], where=where, timeout=timeout, on_event=on_event,
                       on_timeout=on_timeout)


def _branch(step: CommentedMap, common: dict[str, Any], ctx: FlowContext, nodes: dict[str, Node]) -> BranchNode:
    arms_doc = step.get("branch") if isinstance(step.get("branch"), list) else []
    arms: list[Arm] = []
    otherwise: int | None = None
    for index, arm in enumerate(arms_doc):
        if not isinstance(arm, CommentedMap):
            continue
        where = pos(arms_doc, index)
        if otherwise is not None:
            ctx.report.warn(where, "this path can never be taken",
                            f"the path on line {otherwise} has no 'when' and takes every contact first")
        when = ctx.rule(arm, "when") if "when" in arm else None
        if "when" not in arm and otherwise is None:
            otherwise = where[0]
        arms.append(Arm(when, _build_list(arm.get("steps"), common["next"], ctx, nodes), where[0]))
    return BranchNode(**common, arms=tuple(arms))


def _split(step: CommentedMap, common: dict[str, Any], ctx: FlowContext, nodes: dict[str, Node]) -> SplitNode | None:
    spec = step.get("split")
    if not isinstance(spec, CommentedMap):
        return None
    report = ctx.report
    title = f"split {spec['name']!r}" if isinstance(spec.get("name"), str) else "this split"
    if "name" not in spec and not any(did_you_mean(str(key), ["name"]) for key in spec):   # a misspelt one is told
        # Its stats are filed under the name: an unnamed split would count under a name nobody chose.
        number = re.fullmatch(r"split-ab(?:-(\d+))?", common["id"])
        suggested = split_name(ctx.journey, None if ctx.scope == RUN else ctx.scope,
                               int(number.group(1) or 1) if number else 1)
        report.add(pos(step, "split", of_key=True), "this split has no name",
                   f"every split needs a name, which files its results: add  name: {suggested}")
    variants_doc = spec.get("variants") if isinstance(spec.get("variants"), list) else []
    variants: list[Variant] = []
    where: list[tuple[int, int]] = []
    names: set[str] = set()
    for index, variant in enumerate(variants_doc):
        if not isinstance(variant, CommentedMap) or not isinstance(variant.get("name"), str):
            continue
        name = variant["name"]
        if name in names:
            report.add(pos(variant, "name"), f"variant {name!r} is named twice")
        names.add(name)
        weight = variant.get("weight", 0)
        weight = float(weight) if isinstance(weight, (int, float)) and not isinstance(weight, bool) else 0.0
        holdout = bool(variant.get("holdout", False))
        if holdout and variant.get("steps"):
            report.add(pos(variant, "steps", of_key=True), "a holdout receives nothing: it cannot have steps",
                       "remove the steps, or make it a normal variant")
        values = dict(plain(variant["vars"])) if isinstance(variant.get("vars"), CommentedMap) else {}
        first = None if holdout else _build_list(variant.get("steps"), common["next"], ctx, nodes)
        where.append(pos(variants_doc, index))
        variants.append(Variant(name, weight, holdout, first, where[-1][0], values))
    total = sum(v.weight for v in variants)
    if variants and abs(total - 100) > 1e-6:
        report.add(pos(spec, "variants"), f"the weights of {title} add up to {total:g}, not 100",
                   "weights are percentages of contacts: " + " + ".join(f"{v.name} {v.weight:g}" for v in variants))
    for variant, at in zip(variants, where, strict=True):
        if variant.weight <= 0:
            report.warn(at, f"variant {variant.name!r} has no weight: no contact will get it")
    return SplitNode(**common, name=str(spec.get("name", common["id"])), variants=tuple(variants))


def _coupon(step: CommentedMap, common: dict[str, Any], ctx: FlowContext) -> CouponNode | None:
    spec = step.get("coupon")
    if not isinstance(spec, CommentedMap):
        return None
    data = dict(plain(spec))
    if not isinstance(data.get("name"), str) or not NAME_PATTERN.match(data["name"]):
        return None  # the schema reports the name at the name itself
    if any(ctx.report.told(pos(spec, key)) for key in spec):
        return None  # the schema told a value at itself (percent: 20%): one finding per mistake
    from_vars: dict[str, str] = {}
    for key in ("percent", "amount"):
        if not isinstance(data.get(key), str):
            continue
        if VARS_VALUE.match(data[key]) is None:
            return None     # the schema reports it
        read = read_value(data[key], pos(spec, key), ctx.run_vars, ctx.report,
                          lambda value, key=key: _coupon_problems({**data, key: value, "expires": None}), key)
        if read is None:
            return None
        from_vars[key], data[key] = read
    if "expires" in data:
        try:
            data["expires"] = parse_duration(data["expires"])
        except DurationError as exc:
            ctx.report.add_once(pos(spec, "expires"), f"bad duration: {exc}", DURATION_HINT)
            data.pop("expires")
    try:
        return CouponNode(**common, spec=check_spec(data), from_vars=from_vars)
    except ValueError as exc:
        ctx.report.add(pos(step, "coupon"), str(exc),
                       "e.g. coupon: {name: winback, percent: 20, expires: 14d}")
        return None


def _coupon_problems(data: dict[str, Any]) -> list[str]:
    try:
        check_spec(data)
    except ValueError as exc:
        return [str(exc)]
    return []


def _track(step: CommentedMap, common: dict[str, Any], ctx: FlowContext) -> TrackNode | None:
    value = step.get("track")
    event, properties = (value.get("event"), plain(value.get("properties") or {})) if isinstance(value, CommentedMap) \
        else (value, {})
    try:
        name = check_event_name(event)
    except InputError as exc:
        ctx.report.add(pos(step, "track"), f"track: {exc}", "e.g. track: lead_qualified")
        return None
    ctx.tracked.add(name)
    return TrackNode(**common, event=name, properties=properties if isinstance(properties, dict) else {})


def _set(step: CommentedMap, common: dict[str, Any], ctx: FlowContext) -> SetNode | None:
    value = step.get("set")
    if not isinstance(value, CommentedMap):
        return None
    try:
        attributes = check_attributes(plain(value))
    except InputError as exc:
        ctx.report.add(pos(step, "set"), f"set: {exc}")
        return None
    ctx.set_attributes.update(attributes)
    return SetNode(**common, attributes=attributes)


# -- send checks ----------------------------------------------------------------------------------

def _check_template(step: CommentedMap, channel: str, template: str, ctx: FlowContext) -> None:
    templates = ctx.templates
    assert templates is not None
    report, locale = ctx.report, ctx.locale
    variants = templates.catalog.variants(channel, template)
    where = pos(step, "template")
    if not variants:
        existing = templates.catalog.names(channel)
        report.add(where, f"no template {template!r} for channel {channel!r}",
                   closest(template, existing)
                   or f"create {display_path(templates.catalog.root / channel / f'{template}.{locale}.<ext>')}")
        return
    fallback = templates.catalog.resolve(channel, template, None, locale)
    if fallback is None:
        have = ", ".join(sorted(v or "(no locale)" for v in variants))
        report.add(where, f"template {channel}/{template} has no version for the journey locale {locale!r}",
                   f"found: {have}; add {template}.{locale}.<ext> (the fallback for contacts without a match)")
    else:
        if templates.catalog.fallback_of(channel, template, locale) is not None:
            ctx.fallbacks.append((channel, template))   # one warning for the journey, at its locale
        written = templates.catalog.locales(channel, template)
        missing = [wanted for wanted in (ctx.sources.locales if ctx.sources else ())
                   if negotiate(wanted, written) is None]
        if missing:
            got = f"the {fallback.locale} one" if fallback.locale else fallback.path.name
            report.warn(where, f"template {channel}/{template} has no version for {', '.join(missing)}: "
                               f"those contacts get {got}",
                        f"add {template}.<locale>.<ext>, or take the locale out of journeys/_contact.yaml")
    for variant in variants.values():
        problems = templates.renderer.check(variant)
        for problem in problems:
            used_by = f"used by {report.path}:{where[0]}:{where[1]}"
            report.items.append(Diagnostic(display_path(problem.path), problem.line, problem.column,
                                           problem.message, f"{problem.hint}; {used_by}" if problem.hint else used_by))
        if not problems:
            _check_names(variant, channel, template, where, ctx)
            _check_template_vars(variant, where, ctx)


def _check_template_vars(variant: Any, where: tuple[int, int], ctx: FlowContext) -> None:
    """`{{ vars.discount }}` in a template that no variant (nor the journey) sets would print nothing."""
    assert ctx.templates is not None
    try:
        ast = ctx.templates.renderer.env.parse(variant.path.read_text(encoding="utf-8"))
    except Exception:   # noqa: BLE001 - syntax problems are reported by the template check
        return
    used = {node.attr for node in ast.find_all(jinja_nodes.Getattr)
            if isinstance(node.node, jinja_nodes.Name) and node.node.name == "vars"}
    check_vars(used, where, ctx.run_vars, ctx.report, template=display_path(variant.path))


def _check_names(variant: Any, channel: str, template: str, where: tuple[int, int], ctx: FlowContext) -> None:
    """A sample rendering finds names the template uses that this journey does not define (a `vars` value
    it forgot), which would fail every message at send time."""
    assert ctx.templates is not None
    try:
        ctx.templates.renderer.render(channel, template, variant.locale, ctx.locale,
                                      sample_context(ctx.variables, channel, _sample_vars(ctx)))
    except TemplateLimitError as exc:
        ctx.report.items.append(limit_diagnostic(variant, exc))
    except TemplateRenderError as exc:
        match = re.search(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined", str(exc))
        if match:
            name = match.group(1)
            ctx.report.add(where, f"template {display_path(variant.path)} uses {name!r}, which this journey "
                                  "does not define", f"add it under vars: (e.g. {name}: ...) or change the template")


def _sample_vars(ctx: FlowContext) -> dict[str, Any]:
    return {name: values[-1] for name, values in ctx.run_vars.items() if values}


def sample_limits(templates: TemplateCheck, variant: TemplateFile) -> list[Diagnostic]:
    """A template that goes over the render budget with sample data would fail every message it makes."""
    try:
        templates.renderer.render(variant.channel, variant.name, variant.locale, variant.locale or "en",
                                  sample_context({}, variant.channel))
    except TemplateLimitError as exc:
        return [limit_diagnostic(variant, exc)]
    except TemplateRenderError:
        pass   # names a journey's vars would define: checked with each journey that uses the template
    return []


def limit_diagnostic(variant: TemplateFile, exc: TemplateLimitError) -> Diagnostic:
    reason = str(exc).removeprefix(f"{variant.path}: ")
    return Diagnostic(display_path(variant.path), 1, 1, f"{reason}, rendered with sample data",
                      f"range() makes at most {MAX_RANGE} items and loops stop at the deadline; the budget is "
                      "LIFECYCLE_TEMPLATE_TIME_MS and LIFECYCLE_TEMPLATE_MAX_BYTES (docs/templates.md, Limits)")


def _options_from_vars(step: CommentedMap, channel: str, adapter: "Channel | None", options: dict[str, Any],
                       ctx: FlowContext) -> tuple[dict[str, Any], dict[str, str], bool]:
    """Options (and `url`) written `vars.<name>`: the run's value, a split variant's say. Returns the options
    with each such value's stand-in (see runvars.read_value), option -> var name, and whether the rest
    can be checked (False once a `vars.<name>` is reported: one finding per mistake)."""
    from_vars: dict[str, str] = {}
    checkable = True
    for key, text in list(options.items()):
        if not isinstance(text, str) or VARS_VALUE.match(text) is None:
            continue
        written = step["options"] if key != "url" or "url" not in step else step
        where = pos(written, key) if isinstance(written, CommentedMap) and key in written else pos(step, "send")
        problems = (lambda value, key=key: adapter.check_options(channel, {**options, key: value})) \
            if adapter is not None else (lambda value: [])
        read = read_value(text, where, ctx.run_vars, ctx.report, problems, key, check_first=False)
        if read is None:
            checkable = False
            continue
        from_vars[key], options[key] = read
        _check_unset(read[0], step, where, ctx)
    return options, from_vars, checkable


def _check_unset(name: str, step: CommentedMap, where: tuple[int, int], ctx: FlowContext) -> None:
    """A send option read from a variable that not every run reaching the step has (a variant that does not
    set it, or a split that comes later): those runs fail the step."""
    if name in ctx.assigned.get(id(step), frozenset({name})):
        return
    ctx.report.warn(where, f"not every run that reaches this step has vars.{name}: the step fails for those that "
                           "do not", f"set vars: {{{name}: ...}} in every variant of a split before this step, or "
                                     "give it a default in the journey's vars")


def _check_options(step: CommentedMap, channel: str, adapter: "Channel", options: Mapping[str, Any],
                   report: Report) -> None:
    allowed = dict(adapter.options)
    where = pos(step, "options") if "options" in step else pos(step, "send")
    for key in options:
        if key not in allowed:
            if key == "url" and "url" in step:
                report.add(pos(step, "url", of_key=True), f"channel {channel!r} does not take a url",
                           "url: is for webhook steps")
                continue
            report.add(where, f"unknown option {key!r} for channel {channel!r}",
                       did_you_mean(key, allowed) or (f"options: {', '.join(sorted(allowed))}" if allowed
                                                      else f"channel {channel!r} takes no options"))
    for problem in adapter.check_options(channel, options):
        report.add(where, problem)


def _check_segments(step: CommentedMap, template: str, ctx: FlowContext, limit: int) -> None:
    """Warn when a sample rendering of an SMS template takes more segments than allowed."""
    templates = ctx.templates
    assert templates is not None
    for variant_locale in sorted(templates.catalog.variants("sms", template), key=str):
        try:
            rendered = templates.renderer.render("sms", template, variant_locale, ctx.locale,
                                                 sample_context(ctx.variables, "sms", _sample_vars(ctx)))
        except TemplateRenderError:
            continue  # reported by the template checks
        kind, count, length = segments(rendered.parts.get("body", ""))
        if count > limit:
            name = f"{template}.{variant_locale}" if variant_locale else template
            ctx.report.add(pos(step, "template"),
                           f"sms template {name} renders to {count} segments ({length} {kind} characters), "
                           f"more than the {limit} allowed",
                           "shorten it, or raise max_segments on the step or max_sms_segments on the journey; "
                           "one non-GSM character (Cyrillic, Chinese, emoji) makes a segment 70 characters",
                           Severity.WARNING)
