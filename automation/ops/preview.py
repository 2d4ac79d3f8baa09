"""`lifecycle preview`: the messages of a template or a journey as they would go out, in each locale.

Nothing here writes to Redis: a real contact is only read. The messages are rendered by the same
catalog and renderer the workers use (automation.messages.templates), from the same context
(automation.engine.context), so a preview differs from the real message only where the real one
has something the preview cannot know yet (a coupon not issued yet gets the sample coupon).
Without a contact the sample data of `lifecycle validate` is used (automation.language.samples),
or one of the demo population's contacts (`--sample ana`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from jinja2 import Environment

from automation.channels import ChannelRegistry
from automation.engine.context import run_vars, template_context
from automation.errors import InputError, LifecycleError, TemplateRenderError
from automation.expressions import EventStats, EventsView, did_you_mean
from automation.language.diagnostics import Diagnostic
from automation.language.flow import CouponNode, Flow, sample_vars
from automation.language.journey import RUN, Journey
from automation.language.registry import JourneyRegistry
from automation.language.samples import sample_context
from automation.language.sourcemap import display_path
from automation.messages.locales import text_direction
from automation.messages.sms import segments
from automation.messages.templates import Renderer, TemplateCatalog, TemplateCheck
from automation.messages.unsubscribe import unsubscribe_url
from automation.sandbox import RenderBudget
from automation.ops.demo import load_population
from automation.store.contacts import ContactState, ContactStore

DAY = 86400.0
#: The default sample: the contact of `lifecycle validate`'s sample data.
DEFAULT_SAMPLE = "sample"
#: What the sample data's clock reads (automation.language.samples).
SAMPLE_NOW = datetime(2026, 5, 4, 9, 30, tzinfo=timezone.utc).timestamp()


class PreviewFailed(LifecycleError):
    """A template does not render: its diagnostics, as `lifecycle validate` prints them."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        super().__init__("; ".join(d.format() for d in diagnostics))
        self.diagnostics = list(diagnostics)


@dataclass(frozen=True)
class MessageRef:
    """One message to preview: a template on a channel, and the journey step that sends it (if any)."""

    channel: str
    template: str
    journey: Journey | None = None
    stage: str = ""
    step: str = ""

    @property
    def label(self) -> str:
        where = f"  ({self.journey.name} / {self.stage} / {self.step})" if self.journey and self.step else ""
        return f"{self.channel} {self.template}{where}"


@dataclass(frozen=True)
class Reader:
    """Who the preview is for: a real contact (read from Redis), or sample data."""

    label: str
    locale: str | None = None                  # None: every locale the template has
    state: ContactState | None = None          # None: the validate sample data
    coupons: Mapping[str, Any] = field(default_factory=dict)
    secret: str | None = None
    unsubscribe_base: str = "https://example.com/unsubscribe"


@dataclass(frozen=True)
class Previewed:
    ref: MessageRef
    locale: str
    direction: str                             # ltr / rtl
    path: str                                  # the template file used
    parts: Mapping[str, str]

    @property
    def sms(self) -> tuple[str, int, int] | None:
        """(encoding, segments, length) of an SMS body."""
        return segments(self.parts.get("body", "")) if self.ref.channel == "sms" else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": self.ref.channel, "template": self.ref.template,
                                "journey": self.ref.journey.name if self.ref.journey else None,
                                "stage": self.ref.stage or None, "step": self.ref.step or None,
                                "locale": self.locale, "dir": self.direction, "file": self.path,
                                "parts": dict(self.parts)}
        if self.sms is not None:
            data["encoding"], data["segments"], data["length"] = self.sms
        return data


# -- what to preview --------------------------------------------------------------------------------

def flows_of(journey: Journey) -> list[tuple[str, Flow]]:
    """(scope, flow) of each stage of a journey, or its one run's."""
    if journey.trigger is not None:
        return [(RUN, journey.flow)]
    return [(stage.name, stage.flow) for stage in journey.stages]


def messages_of(target: str, journeys: Mapping[str, Journey], catalog: TemplateCatalog) -> list[MessageRef]:
    """The sends of journey `target` in file order, or template `target` on every channel that has it."""
    journey = journeys.get(target)
    if journey is not None:
        refs = [MessageRef(node.channel, node.template, journey, scope, node.id)
                for scope, flow in flows_of(journey)
                for node in sorted(flow.sends(), key=lambda node: node.line) if node.template]
        if not refs:
            raise InputError(f"journey {target!r} sends no message from a template")
        return refs
    channels = sorted({f.channel for f in catalog.files() if f.name == target})
    if not channels:
        names = set(journeys) | {f.name for f in catalog.files()}
        hint = did_you_mean(target, names)
        raise InputError(f"no journey or template named {target!r}" + (f"; {hint}" if hint else
                         " (lifecycle preview takes a journey name or a template name, e.g. welcome)"))
    # A template's journey supplies its `vars` (brand, shop_url ...).
    users: dict[tuple[str, str], tuple[Journey, str, str]] = {}
    for name in sorted(journeys):
        for scope, flow in flows_of(journeys[name]):
            for node in flow.sends():
                users.setdefault((node.channel, node.template), (journeys[name], scope, node.id))
    return [MessageRef(channel, target, *users.get((channel, target), (None, "", "")))
            for channel in channels]


def locales_of(ref: MessageRef, catalog: TemplateCatalog, reader: Reader, locale: str | None,
               all_locales: bool) -> list[str | None]:
    """Which locales to render: `--locale`, the contact's own, or (sample data) every locale the template has."""
    if locale and not all_locales:
        return [locale]
    if reader.state is not None and not all_locales:
        return [reader.locale]      # None: what a contact without a locale gets (the journey's)
    written = sorted(catalog.locales(ref.channel, ref.template))
    return list(written) or [None]


# -- who it is for ----------------------------------------------------------------------------------

def sample_reader(name: str = DEFAULT_SAMPLE) -> Reader:
    """Sample data: `sample` (validate's), or a contact of the demo population (automation/ops/data/demo.yaml)."""
    if name == DEFAULT_SAMPLE:
        return Reader("sample contact (Alexandra)")
    contacts = {c["id"]: c for c in load_population()["contacts"]}
    if name not in contacts:
        hint = did_you_mean(name, [DEFAULT_SAMPLE, *contacts])
        raise InputError(f"no sample contact {name!r}" + (f"; {hint}" if hint else "")
                         + f" (samples: {', '.join([DEFAULT_SAMPLE, *contacts])})")
    data = contacts[name]
    events = EventsView()
    recent = []
    for item in sorted(data.get("history", []), key=lambda h: h["day"]):
        at = SAMPLE_NOW + item["day"] * DAY
        stats = events.get(item["event"])
        events[item["event"]] = EventStats(stats.count + 1, stats.first_ts, at) if stats else EventStats(1, at, at)
        recent.insert(0, {"event": item["event"], "at": at, "properties": dict(item.get("properties", {}))})
    attributes = {k: v for k, v in data["attributes"].items() if not (isinstance(v, str) and v.startswith("@day"))}
    state = ContactState(id=name, attributes=attributes, events=events, recent=recent, created_at=SAMPLE_NOW)
    return Reader(f"sample contact {name}", attributes.get("locale"), state)


def contact_reader(runtime: Any, contact_id: str) -> Reader:
    """A real contact, read (never written) from Redis."""
    store = ContactStore(runtime)
    state = store.load(contact_id, recent=True)
    if not state.exists:
        raise InputError(f"no contact {contact_id!r} (lifecycle inspect {contact_id} shows what is stored)")
    coupons = {name: c.as_template_value() for name, c in store.coupons.coupons_of(contact_id, state.raw).items()}
    locale = state.attributes.get("locale")
    settings = runtime.settings
    return Reader(f"contact {contact_id}", locale if isinstance(locale, str) else None, state, coupons,
                  settings.secret, settings.unsubscribe_url)


def _context(ref: MessageRef, reader: Reader, catalog: TemplateCatalog, locale: str | None,
             unsubscribe: bool) -> dict[str, Any]:
    journey = ref.journey or Journey(name="", path="")
    # `vars.<name>` a split variant sets: the first variant's value, unless the contact has a variant.
    variant_vars = sample_vars(flow for _, flow in flows_of(journey)) if ref.journey else {}
    sample = sample_context(journey.vars, ref.channel, variant_vars)
    if reader.state is None:
        return sample
    contact_id = reader.state.id
    enrollment = reader.state.enrollments.get(journey.name)
    extra: dict[str, Any] = {"coupons": dict(reader.coupons), "coupon": sample["coupon"],
                             "vars": {**sample["vars"], **run_vars(journey, enrollment.stage if enrollment else None,
                                                                   enrollment.assignments if enrollment else {})}}
    for _, flow in flows_of(journey) if ref.journey else []:
        for node in flow.nodes.values():
            if isinstance(node, CouponNode) and node.spec.name in reader.coupons:
                extra["coupon"] = reader.coupons[node.spec.name]
    if unsubscribe:
        extra["unsubscribe_url"] = unsubscribe_url(reader.unsubscribe_base, reader.secret, contact_id, ref.channel) \
            if reader.secret else sample["unsubscribe_url"]
    defaults = catalog.defaults_for(locale, journey.locale)
    now = SAMPLE_NOW if reader.state.raw == {} else datetime.now(timezone.utc).timestamp()
    return template_context(reader.state, journey, ref.stage or "stage", ref.step or "step", ref.channel, now,
                            defaults, extra)


# -- rendering --------------------------------------------------------------------------------------

_WHERE = re.compile(r"^(?P<path>[^:\n]+?)(?::(?P<line>\d+))?: (?P<message>.*)$", re.S)


def render_problem(exc: TemplateRenderError, ref: MessageRef) -> Diagnostic:
    """A render failure as a `file:line:col` diagnostic with a hint."""
    text = str(exc)
    match = _WHERE.match(text)
    path, line, message = (match["path"], int(match["line"] or 1), match["message"]) if match else ("", 1, text)
    hint = "lifecycle validate checks every template"
    column = 1
    undefined = re.search(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined", message)
    if undefined and path and not match["line"]:
        # Jinja does not say where a missing name is printed: the first place the file uses it.
        line, column = _first_use(Path(path), undefined.group(1)) or (1, 1)
    if undefined:
        hint = (f"{undefined.group(1)!r} is not defined: add it under the journey's vars:, or guard it with "
                "{% if ... %} or | default(...)")
    elif "missing value" in message:
        hint = "the contact has no such value: guard it with {% if ... %} or | default(...)"
    if ref.journey is not None:
        hint += f" (sent by {ref.journey.path}, step {ref.step})"
    return Diagnostic(display_path(Path(path)) if path else ref.template, line, column, message, hint)


def _first_use(path: Path, name: str) -> tuple[int, int] | None:
    """(line, column) of the first use of `name` inside `{{ }}` or `{% %}` in a template file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for match in re.finditer(r"{{.*?}}|{%.*?%}", text, re.S):
        found = re.search(rf"(?<![\w.]){re.escape(name)}\b", match.group(0))
        if found:
            offset = match.start() + found.start()
            line = text.count("\n", 0, offset) + 1
            return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
    return None


def check_files(ref: MessageRef, catalog: TemplateCatalog, renderer: Renderer) -> list[Diagnostic]:
    """Syntax problems of the template's files, reported as `lifecycle validate` reports them."""
    return [Diagnostic(display_path(variant.path), line, 1, message, "lifecycle validate checks every template")
            for variant in catalog.variants(ref.channel, ref.template).values()
            for line, message in renderer.check(variant)]


def preview(refs: Sequence[MessageRef], catalog: TemplateCatalog, renderer: Renderer, reader: Reader,
            locale: str | None = None, all_locales: bool = False,
            unsubscribe: Any = lambda channel: channel == "email") -> list[Previewed]:
    """Render every message of `refs` for `reader`; raises PreviewFailed with every problem found."""
    problems: list[Diagnostic] = []
    out: list[Previewed] = []
    for ref in refs:
        found = check_files(ref, catalog, renderer)
        if found:
            problems += found
            continue
        default_locale = ref.journey.locale if ref.journey else None
        for wanted in locales_of(ref, catalog, reader, locale, all_locales):
            try:
                context = _context(ref, reader, catalog, wanted, unsubscribe(ref.channel))
                rendered = renderer.render(ref.channel, ref.template, wanted, default_locale, context)
            except TemplateRenderError as exc:
                problems.append(render_problem(exc, ref))
                continue
            out.append(Previewed(ref, rendered.locale, text_direction(rendered.locale),
                                 display_path(rendered.template.path), dict(rendered.parts)))
    if problems:
        raise PreviewFailed(sorted(set(problems)))
    return out


# -- output -----------------------------------------------------------------------------------------

def format_summary(messages: Sequence[Previewed], reader: Reader) -> str:
    """The text summary printed without `--out`."""
    lines = [f"preview for {reader.label}"]
    last: MessageRef | None = None
    for message in messages:
        if message.ref is not last:
            lines.append("")
            lines.append(message.ref.label)
            last = message.ref
        head = f"  {message.locale:<6} {message.direction}  "
        parts = message.parts
        if message.ref.channel == "email":
            lines.append(f"{head}subject: {parts.get('subject', '')}")
            lines.append(f"{'':<15}html: {len(parts.get('html', ''))} characters, text: "
                         f"{_first_line(parts.get('text', ''))}")
        elif message.sms is not None:
            kind, count, length = message.sms
            lines.append(f"{head}{count} segment(s), {length} {kind} characters: {parts.get('body', '')}")
        elif "title" in parts:
            lines.append(f"{head}{parts['title']} | {parts.get('body', '')}")
        else:
            lines.append(f"{head}{_first_line(parts.get('body', ''))}")
    return "\n".join(lines)


def _first_line(text: str, width: int = 72) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def write_folder(out: Path, target: str, messages: Sequence[Previewed], reader: Reader) -> Path:
    """An `index.html` showing every message side by side per locale; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    groups: list[tuple[MessageRef, list[Previewed]]] = []
    for message in messages:
        if not groups or groups[-1][0] is not message.ref:
            groups.append((message.ref, []))
        groups[-1][1].append(message)
    source = (resources.files("automation.ops") / "data" / "preview.html").read_text(encoding="utf-8")
    # Autoescaping everywhere: the email's HTML goes into srcdoc as an escaped attribute value.
    page = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(source)
    index = out / "index.html"
    index.write_text(page.render(target=target, reader=reader.label, groups=groups), encoding="utf-8")
    return index


@dataclass
class Workbench:
    """What previews and test sends read: the adapters, the templates and the served journeys."""

    channels: ChannelRegistry
    catalog: TemplateCatalog
    renderer: Renderer
    journeys: Mapping[str, Journey]
    #: Errors of the journey files that do not load (their journeys are not previewed).
    errors: list[Diagnostic] = field(default_factory=list)

    def errors_about(self, target: str) -> list[Diagnostic]:
        """The load errors that name `target` (its journey file, or a file of the template)."""
        pattern = re.compile(rf"(?<![\w-]){re.escape(target)}(?![\w-])")
        return [d for d in self.errors if pattern.search(d.path) or pattern.search(d.message)]

    @classmethod
    def open(cls, settings: Any, channels: ChannelRegistry | None = None) -> "Workbench":
        channels = channels or ChannelRegistry(settings)
        catalog = TemplateCatalog(settings.templates_dir)
        renderer = Renderer(catalog, channels.parts_for, RenderBudget.of(settings))   # the budget messages get
        registry = JourneyRegistry(settings.journeys_dir, channels.adapters, TemplateCheck(catalog, renderer),
                                   reload_seconds=3600.0)
        return cls(channels, catalog, renderer, dict(registry.journeys),
                   [d for d in registry.diagnostics if d.is_error])

    def close(self) -> None:
        self.channels.close()
