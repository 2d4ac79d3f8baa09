"""`lifecycle demo`: the whole product on a laptop in about a minute.

It starts the embedded Redis, a scheduler and real Dramatiq worker processes,
loads a sample population (automation/ops/data/demo.yaml) into the shipped journeys,
and runs a compressed clock (a simulated day per real second by default). The
timeline is printed from the engine's activity stream as it happens; messages
land in the outbox folder. Once its days are over it lets the steps due within
them finish (nothing due later starts), then stops and cleans up its processes.

The outbox folder may also hold messages of the user's own `lifecycle run`, so a demo
removes only what an earlier demo wrote: each run lists its files in `.demo-manifest`
in the outbox folder, and the next run removes those and nothing else.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from ruamel.yaml import YAML

from automation.clock import ScaledClock
from automation.config import Settings
from automation.engine.broadcasts import parse_when, schedule_one_off
from automation.engine.dispatch import DramatiqDispatcher, broker_namespace
from automation.engine.scheduler import Scheduler
from automation.engine.services import Engine
from automation.events import Event, check_attributes
from automation.ops.processes import start_workers, stop_process
from automation.runtime import Runtime, check_meta, open_runtime
from automation.store.contacts import ContactStore
from automation.store.timers import TimerStore

DAY = 86400.0
#: In the outbox folder: the files the last demo wrote there, one path (relative to it) a line.
MANIFEST = ".demo-manifest"
#: Real seconds the demo gives itself to get ready (workers up, population evaluated) before simulated
#: time runs; doubled for each new start if that was not enough.
WARMUP_SECONDS = 4.0
#: Real seconds the demo waits at most, once its days are over, for the steps due within them.
DRAIN_SECONDS = 120.0


@dataclass(frozen=True)
class ScriptedEvent:
    """An event (or, with `attributes`, an attribute change) that happens while the demo runs."""

    day: float
    contact: str
    event: str
    properties: dict[str, Any]
    attributes: dict[str, Any] | None = None
    broadcast: str = ""         # a journey marketing sends as a one-off broadcast (`lifecycle broadcast`)
    local: str = ""             # ... at this time in each contact's own zone


class _StopsAt:
    """The demo's own clock (its scheduler's and the script's): the compressed clock, standing still at
    the end of the simulated days, so no step due after them is started while the last ones finish."""

    def __init__(self, clock: ScaledClock, end: float) -> None:
        self.clock = clock
        self.end = end

    def now(self) -> float:
        return min(self.clock.now(), self.end)

    def to_clock_seconds(self, wall_seconds: float) -> float:
        return self.clock.to_clock_seconds(wall_seconds)


def resolve_dates(attributes: dict[str, Any], origin: float) -> dict[str, Any]:
    """Attribute values "@day+N" become the ISO date N days after the demo starts."""
    resolved = {}
    for name, value in attributes.items():
        if isinstance(value, str) and value.startswith("@day"):
            moment = datetime.fromtimestamp(origin + float(value[4:] or 0) * DAY, tz=timezone.utc)
            value = moment.date().isoformat()
        resolved[name] = value
    return resolved


def load_population() -> dict[str, Any]:
    text = (resources.files("automation.ops") / "data" / "demo.yaml").read_text(encoding="utf-8")
    return YAML(typ="safe").load(text)


def clean_outbox(outbox: Path) -> None:
    """Remove the messages an earlier demo wrote to this folder (its manifest lists them) and
    nothing else: the folder may hold messages the user's own `lifecycle run` wrote."""
    manifest = outbox / MANIFEST
    if not manifest.is_file():
        return
    for line in manifest.read_text(encoding="utf-8").splitlines():
        relative = Path(line.strip())
        # Only `<channel>/<file>` inside the folder: a hand-edited line must not reach elsewhere.
        if line.startswith("#") or relative.is_absolute() or len(relative.parts) != 2 or ".." in relative.parts:
            continue
        (outbox / relative).unlink(missing_ok=True)
    manifest.unlink()


def written_files(runtime: Runtime, outbox: Path) -> list[Path]:
    """The files the demo's workers wrote to the outbox, relative to it, from the `sent` entries of
    the demo's own activity stream (read after the workers stopped, so none is missed). A message
    whose file was already there says so instead of naming it, so it is not counted as written."""
    root = outbox.resolve()
    found: set[Path] = set()
    for _, entry in runtime.redis.xrange(runtime.keys.activity):
        if entry.get("k") != "sent" or not entry.get("d"):
            continue
        path = Path(entry["d"]).resolve()
        if path.parent.parent == root and path.is_file():
            found.add(path.relative_to(root))
    return sorted(found)


def write_manifest(outbox: Path, files: list[Path]) -> None:
    lines = ["# Written by `lifecycle demo`: the messages it wrote here. The next demo removes them (only them)."]
    lines += [path.as_posix() for path in files]
    (outbox / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")


class Timeline:
    """Prints activity-stream entries as readable lines, with the simulated day."""

    def __init__(self, runtime: Runtime, origin: float, names: dict[str, str], outbox: Path, out: TextIO,
                 quiet: bool) -> None:
        self.runtime = runtime
        self.origin = origin
        self.names = names
        self.outbox = outbox
        self.out = out
        self.quiet = quiet
        self.last_id = "0-0"
        self.counts: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.failures: list[str] = []

    def line(self, when: float, contact: str, text: str) -> None:
        if not self.quiet:
            day = (when - self.origin) / DAY
            print(f"day {day:5.1f}  {self.names.get(contact, contact):<16} {text}", file=self.out, flush=True)

    def poll(self, block_ms: int | None = 100) -> None:
        """Show what the activity stream has since the last poll; block_ms=None does not wait."""
        replies = self.runtime.redis.xread({self.runtime.keys.activity: self.last_id}, count=500, block=block_ms)
        for _, entries in replies or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                self._show(fields)

    def _show(self, f: dict[str, str]) -> None:
        kind, when, contact = f.get("k", ""), float(f.get("t", 0)), f.get("c", "")
        self.counts[kind] += 1
        step = f"{f.get('ch', '')} {f.get('p', '')}".strip()
        if kind == "enter":
            self.line(when, contact, f"-> enters stage '{f.get('s')}'  ({f.get('d', '')})")
        elif kind == "start":
            self.line(when, contact, f"-> starts journey '{f.get('j')}'  ({f.get('d', '')})")
        elif kind == "converted":
            self.line(when, contact, f"+  converts in '{f.get('j')}'  ({f.get('d', '')})")
        elif kind == "resumed":
            self.line(when, contact, f"   stops waiting in '{f.get('j')}': {f.get('d', '')}")
        elif kind == "end":
            self.line(when, contact, f"<- leaves journey '{f.get('j')}'  ({f.get('d', '')})")
        elif kind == "cancelled":
            self.line(when, contact, f"x  cancelled pending step '{f.get('p')}' (left '{f.get('s')}')")
        elif kind == "sent":
            self.sent[step] += 1
            detail = f.get("d", "")
            try:
                detail = str(Path(detail).resolve().relative_to(Path.cwd()))
            except ValueError:
                pass
            self.line(when, contact, f"   sent {step:<30} {detail}")
        elif kind == "skipped":
            self.skipped[f.get("d", "")] += 1
            self.line(when, contact, f"   skipped {step:<27} {f.get('d', '')}")
        elif kind in ("held", "deferred"):
            self.counts[f"{kind}:{f.get('ch', '')}"] += 1
            self.line(when, contact, f"   {kind} {step:<29} {f.get('d', '')}")
        elif kind in ("failed", "unknown", "retry"):
            self.failures.append(f"{contact} {step}: {f.get('d', '')}")
            self.line(when, contact, f"!  {kind} {step}: {f.get('d', '')}")


def run_demo(days: float = 40, speed: float = DAY, outbox: Path = Path("outbox"), threads: int = 4,
             quiet: bool = False, out: TextIO = sys.stdout) -> int:
    base = Settings.from_env()
    for folder in (base.journeys_dir, base.templates_dir):
        if not Path(folder).is_dir():
            print(f"lifecycle demo: no {folder}/ folder here; run it from the project folder "
                  f"(or set LIFECYCLE_JOURNEYS and LIFECYCLE_TEMPLATES)", file=sys.stderr)
            return 2
    # The story starts at 06:00 UTC today, whenever the demo runs, so it plays at the same times of
    # day (quiet hours hold the same SMS) every time.
    start = time.time() // DAY * DAY + 6 * 3600
    scaled = ScaledClock(speed, time.time() + WARMUP_SECONDS, start)
    clock = _StopsAt(scaled, start + days * DAY)
    settings = base.with_changes(
        redis_url=None, home=Path(base.home) / "demo", namespace="demo", outbox_dir=Path(outbox),
        clock_speed=speed, clock_origin=scaled.origin, clock_start=start, poll_interval=0.05, lease_seconds=30.0,
        reload_seconds=3600.0,
        # Webhooks (to a CRM, to sales) land in the outbox too: the demo runs offline.
        channels={**base.channels, "webhook": "outbox"},
    )
    runtime = open_runtime(settings, clock=clock)
    settings = runtime.settings  # now with the embedded server's URL
    Path(outbox).mkdir(parents=True, exist_ok=True)


    engine = Engine.create(runtime)
    if engine.journeys.has_errors or not engine.journeys.journeys:
        for diagnostic in engine.journeys.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
        print("lifecycle demo: fix the journey files first (lifecycle validate)", file=sys.stderr)
        runtime.close(stop_embedded=True)
        return 1

    data = load_population()
    names = {c["id"]: f"{c['attributes']['first_name']} ({c['id']})" if c["attributes"].get("first_name") else c["id"]
             for c in data["contacts"]}
    script = sorted((ScriptedEvent(s["day"], s.get("contact", ""), s.get("event", ""), s.get("properties", {}),
                                   s.get("set"), s.get("broadcast", ""), s.get("local", ""))
                     for s in data["script"]), key=lambda s: s.day)
    store = ContactStore(runtime)
    print(f"lifecycle demo: {len(data['contacts'])} contacts, journeys: {', '.join(engine.journeys.journeys)}; "
          f"{days:g} simulated days at {speed / DAY:g} day(s) per second; messages go to {outbox}/", file=out)
    log = Path(settings.home) / "worker.log"
    clean_outbox(Path(outbox))
    started = _start_in_time(runtime, engine, settings, clock, days, data, Path(outbox), threads, log)
    if started is None:
        print(f"lifecycle demo: the workers did not start; see {log}", file=sys.stderr)
        engine.close()
        runtime.close(stop_embedded=True)
        return 1
    workers, dispatcher, stop, scheduler_thread = started
    origin, end = clock.clock.start, clock.end
    timeline = Timeline(runtime, origin, names, Path(outbox), out, quiet)
    written: list[Path] = []
    try:
        while runtime.clock.now() < end:
            now = runtime.clock.now()
            while script and origin + script[0].day * DAY <= now:
                item = script.pop(0)
                if item.broadcast:
                    _, local, _ = parse_when(None, "UTC", item.local or None)
                    journey = engine.journeys.get(item.broadcast)
                    assert journey is not None, f"the demo's broadcast {item.broadcast} is not served"
                    schedule_one_off(runtime, journey, local=local)
                    timeline.line(now, "marketing", f"*  sends the {item.broadcast} broadcast"
                                  + (f" for {item.local} in each contact's zone" if item.local else ""))
                    continue
                if item.attributes is not None:
                    store.identify(item.contact, item.attributes)
                    timeline.line(now, item.contact, f"*  sets {json.dumps(item.attributes, ensure_ascii=False)}")
                    continue
                store.track(Event(item.contact, item.event, now, item.properties))
                detail = ", ".join(f"{k}={v}" for k, v in item.properties.items())
                timeline.line(now, item.contact, f"*  {item.event} ({detail})")
            if workers.poll() is not None:
                print(f"lifecycle demo: the workers stopped unexpectedly; see {log}", file=sys.stderr)
                return 1
            timeline.poll(block_ms=50)
        if not _drain(runtime, dispatcher, timeline, end):
            print(f"lifecycle demo: steps due within the {days:g} days were still waiting after "
                  f"{DRAIN_SECONDS:g}s; see {log}", file=sys.stderr)
    finally:
        stop.set()
        if scheduler_thread.is_alive():
            scheduler_thread.join(timeout=5)
        stop_process(workers)
        # Also when the demo fails or is interrupted: the next one must find what this one wrote.
        written = written_files(runtime, Path(outbox))
        write_manifest(Path(outbox), written)
        dispatcher.close()
        engine.close()
        runtime.close(stop_embedded=True)  # the demo's own server
    return _summary(timeline, Path(outbox), written, out)


def load_contacts(runtime: Runtime, data: dict[str, Any], origin: float) -> None:
    """The contacts of `data` (as in demo.yaml) with their history, `day`s counted from `origin`."""
    store = ContactStore(runtime)
    events = []
    identities = []
    for contact in data["contacts"]:
        identities.append((contact["id"], check_attributes(resolve_dates(contact["attributes"], origin))))
        for item in contact.get("history", []):
            events.append(Event(contact["id"], item["event"], origin + item["day"] * DAY, item.get("properties", {})))
    # The population's past is a backfill: it decides stages, but starts no triggered journey.
    store.identify_many(identities, triggers=False)
    store.track_many(events, triggers=False)


def _start_in_time(runtime: Runtime, engine: Any, settings: Settings, clock: _StopsAt, days: float,
                   data: dict[str, Any], outbox: Path, threads: int,
                   log: Path) -> tuple[Any, DramatiqDispatcher, threading.Event, threading.Thread] | None:
    """The population loaded and evaluated, and the workers and the scheduler running, all before
    simulated time starts to run; None if the workers do not start.

    Worker processes compute the time themselves from the clock's origin, so it is fixed before they
    start, and the clock stands still until then. If getting ready took longer than the warm-up (a
    busy machine), everything starts again from a clean slate with a later origin, so the story
    plays on the days it is written for rather than starting days late."""
    scaled = clock.clock
    warmup = WARMUP_SECONDS
    for _ in range(5):
        scaled.origin = time.time() + warmup
        runtime.redis.flushdb()      # the demo's own embedded server: start from a clean slate
        check_meta(runtime)
        engine.publish(engine.journeys.journeys)     # what journeys react to; broadcasts from the start on
        load_contacts(runtime, data, scaled.start)
        timed = settings.with_changes(clock_origin=scaled.origin)
        workers = start_workers(timed, processes=1, threads=threads, log=log)
        if not _wait_for_workers(runtime, timed, workers, timeout=60):
            stop_process(workers)
            return None
        stop = threading.Event()
        dispatcher = DramatiqDispatcher(timed)
        scheduler = Scheduler(runtime, dispatcher, dispatcher.queue_depth)
        thread = threading.Thread(target=scheduler.run, args=(stop,), name="scheduler", daemon=True)
        thread.start()
        timers = TimerStore(runtime)
        while time.time() < scaled.origin:
            next_due = timers.next_due()
            if (dispatcher.queue_depth() == 0 and timers.counts()["leased"] == 0
                    and (next_due is None or next_due > scaled.start)):
                return workers, dispatcher, stop, thread
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=5)
        stop_process(workers)
        dispatcher.close()
        for path in written_files(runtime, outbox):      # what this attempt wrote: it starts again
            (outbox / path).unlink(missing_ok=True)
        warmup *= 2
    return None


def _wait_for_workers(runtime: Runtime, settings: Settings, workers: Any, timeout: float) -> bool:
    key = f"{broker_namespace(settings)}:__heartbeats__"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if workers.poll() is not None:
            return False
        if runtime.redis.zcard(key) > 0:
            return True
        time.sleep(0.1)
    return False


def _drain(runtime: Runtime, dispatcher: DramatiqDispatcher, timeline: Timeline, end: float,
           timeout: float | None = None) -> bool:
    """Let every step due within the simulated days finish, however far behind a busy machine left
    the workers; False if some were still waiting after `timeout` seconds. The scheduler's clock
    stands still at `end`, so nothing due later starts: those timers stay in Redis."""
    timers = TimerStore(runtime)
    deadline = time.monotonic() + (DRAIN_SECONDS if timeout is None else timeout)
    drained = False
    while not drained and time.monotonic() < deadline:
        timeline.poll(block_ms=100)
        next_due = timers.next_due()
        drained = (dispatcher.queue_depth() == 0 and timers.counts()["leased"] == 0
                   and (next_due is None or next_due > end))
    timeline.poll(block_ms=100)
    return drained


def _summary(timeline: Timeline, outbox: Path, written: list[Path], out: TextIO) -> int:
    files = Counter(path.parts[0] for path in written)  # the demo's files, not what else is in the folder
    print("", file=out)
    print(f"sent {sum(timeline.sent.values())} messages: "
          + ", ".join(f"{k} x{v}" for k, v in sorted(timeline.sent.items())), file=out)
    if timeline.skipped:
        print("skipped: " + ", ".join(f"{k} x{v}" for k, v in sorted(timeline.skipped.items())), file=out)
    print(f"cancelled pending steps: {timeline.counts['cancelled']}", file=out)
    print(f"outbox: {outbox}/email ({files['email']} .eml), {outbox}/sms ({files['sms']}), "
          f"{outbox}/push ({files['push']}), {outbox}/webhook ({files['webhook']})", file=out)
    if timeline.counts["converted"]:
        print(f"conversions (goals reached): {timeline.counts['converted']}", file=out)
    if timeline.failures:
        print("failures:\n  " + "\n  ".join(timeline.failures), file=out)
        return 1
    return 0
