"""The `lifecycle` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from automation.config import Settings
from automation.errors import InputError, LifecycleError

logger = logging.getLogger("lifecycle")


def _setup_logging(verbose: int) -> None:
    from automation.logs import setup_logging

    # LIFECYCLE_LOG_FORMAT=json: one JSON object per line, here and in every process we start.
    setup_logging(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


def _settings() -> Settings:
    settings = Settings.from_env()
    if settings.clock_speed != 1.0 and settings.clock_origin is None:
        # Every process must share one origin or their clocks disagree.
        settings = settings.with_changes(clock_origin=time.time())
    return settings


def _pairs(items: Sequence[str]) -> dict[str, Any]:
    """key=value (text) and key:=json pairs, as in httpie."""
    data: dict[str, Any] = {}
    for item in items:
        key, typed, raw = item.partition(":=")
        if typed and "=" not in key:
            try:
                data[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"{item!r}: value after ':=' is not JSON ({exc.msg})") from None
        elif "=" in item:
            key, _, value = item.partition("=")
            data[key] = value
        else:
            raise InputError(f"{item!r}: write key=value (text) or key:=json")
    return data


def _json_object(text: str | None, what: str) -> dict[str, Any]:
    """The value of a --json option: a JSON object, or {} when the option is not given."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--json is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise InputError(f"--json: {what} must be a JSON object, like '{{\"key\": \"value\"}}'")
    return value


def _positive(text: str) -> float:
    """argparse type of --days and --speed: a number above zero (argparse reports anything else)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


# -- commands -----------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from automation.channels import ChannelRegistry
    from automation.language.diagnostics import has_errors
    from automation.language.registry import validate_paths
    from automation.messages.templates import Renderer, TemplateCatalog, TemplateCheck
    from automation.sandbox import RenderBudget

    settings = _settings()
    channels = ChannelRegistry(settings)
    templates_dir = Path(args.templates) if args.templates else settings.templates_dir
    catalog = TemplateCatalog(templates_dir)
    check = TemplateCheck(catalog, Renderer(catalog, channels.parts_for, RenderBudget.of(settings)))
    paths = [Path(p) for p in args.paths] or [settings.journeys_dir]
    journeys, diagnostics = validate_paths(paths, channels.adapters, check, include_all_templates=not args.paths)
    errors = [d for d in diagnostics if d.is_error]
    warnings = [d for d in diagnostics if not d.is_error]
    if args.format == "json":
        print(json.dumps([{"path": d.path, "line": d.line, "column": d.column, "severity": d.severity.value,
                           "message": d.message, "hint": d.hint} for d in diagnostics], indent=2))
    else:
        for diagnostic in diagnostics:
            print(diagnostic.format())
        for problem in channels.problems:
            print(f"configuration: {problem}")
        summary = f"{len(journeys)} journey(s) OK" if not errors else f"{len(errors)} error(s)"
        if warnings:
            summary += f", {len(warnings)} warning(s)"
        print(summary)   # on the same stream as the findings it counts, after them
    if has_errors(diagnostics) or (args.strict and warnings):
        return 1
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    from automation.api import Lifecycle

    attributes = _json_object(args.json, "attributes")
    attributes.update(_pairs(args.attributes))
    with Lifecycle.connect(_settings()) as lc:
        lc.identify(args.contact_id, attributes)
    print(f"identified {args.contact_id}")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from automation.api import Lifecycle

    properties = _json_object(args.json, "properties")
    properties.update(_pairs(args.properties))
    with Lifecycle.connect(_settings()) as lc:
        recorded = lc.track(args.contact_id, args.event, properties, at=args.at, id=args.id)
    print(f"tracked {args.event} for {args.contact_id}" if recorded else f"duplicate event id {args.id}; ignored")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from automation.api import Lifecycle
    from automation.ops.importer import check_readable

    # Every file must be readable before any is imported: a typo in the last name must not
    # leave the first files imported and the command failed.
    for path in args.files:
        check_readable(Path(path))
    total_errors = 0
    with Lifecycle.connect(_settings()) as lc:
        for path in args.files:
            report = lc.import_file(path, args.type, triggers=not args.backfill)
            for line in report.format_errors():
                print(line, file=sys.stderr)
            total_errors += len(report.errors)
            extra = f", {report.duplicates} duplicate(s) skipped" if report.duplicates else ""
            print(f"{path}: imported {report.imported}, rejected {len(report.errors)}{extra}")
    return 1 if total_errors else 0


def cmd_status(args: argparse.Namespace) -> int:
    from automation.ops.status import collect_status, format_status
    from automation.runtime import open_runtime

    runtime = open_runtime(_settings())
    try:
        status = collect_status(runtime)
        print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    finally:
        runtime.close()
    return 0


def _print_diagnostics(diagnostics: Any) -> bool:
    """Print them; True when any is an error."""
    for diagnostic in diagnostics:
        print(diagnostic.format(), file=sys.stderr)
    return any(d.is_error for d in diagnostics)


def cmd_plan(args: argparse.Namespace) -> int:
    from automation.channels import ChannelRegistry
    from automation.engine.migration import format_plan, plan
    from automation.ops.deploys import file_candidates, removed_journeys
    from automation.runtime import open_runtime

    settings = _settings()
    channels = ChannelRegistry(settings)
    candidates, diagnostics = file_candidates(settings, channels, args.paths)
    if _print_diagnostics(diagnostics):
        return 1
    runtime = open_runtime(settings)
    try:
        # The whole folder: a deployed journey without a file is one to retire.
        retire = [] if args.paths else removed_journeys(runtime, candidates)
        shown = plan(runtime, candidates, channels.adapters, retire=retire)
    finally:
        runtime.close()
    print(json.dumps(shown.to_json(), indent=2, ensure_ascii=False) if args.json else format_plan(shown))
    return 1 if shown.stranded else 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from automation.channels import ChannelRegistry
    from automation.engine.migration import Refused, deploy, format_plan
    from automation.ops.deploys import file_candidates, removed_journeys, rollback_candidates
    from automation.runtime import open_runtime
    from automation.store.versions import deployer

    settings = _settings()
    channels = ChannelRegistry(settings)
    if args.rollback and settings.deploy != "required":
        raise InputError("--rollback needs LIFECYCLE_DEPLOY=required: with automatic reloads the workers serve "
                         "the files as they are, so put the old file back instead")
    candidates = []
    if not args.rollback:
        candidates, diagnostics = file_candidates(settings, channels, args.paths)
        if _print_diagnostics(diagnostics):
            return 1
    runtime = open_runtime(settings)
    skipped: list[str] = []
    try:
        by = args.by or ("rollback by " if args.rollback else "") + deployer(settings.journeys_dir)
        try:
            retire = []
            if args.rollback:
                candidates, skipped = rollback_candidates(runtime, channels, args.paths)
            elif not args.paths:
                retire = removed_journeys(runtime, candidates)
            done = deploy(runtime, candidates, channels.adapters, by, args.plan_hash, retire=retire)
        except Refused as exc:
            print(f"lifecycle deploy: refused: {exc}", file=sys.stderr)
            return 1
    finally:
        runtime.close()
    if args.json:
        print(json.dumps({**done.plan.to_json(), "recorded": [v.__dict__ for v in done.recorded],
                          "retired": done.retired, "not_rolled_back": skipped,
                          "moved": done.moved, "ended": done.ended, "left_to_workers": done.left,
                          "reevaluated": done.reevaluated}, indent=2, ensure_ascii=False))
        return 0
    for note in skipped:
        print(f"not rolled back: {note}")
    print(format_plan(done.plan))
    for entry in done.recorded:
        print(f"deployed {entry.journey} {entry.version} ({entry.by})")
    for name in done.retired:
        print(f"retired {name}: no longer served")
    if not done.recorded and not done.retired:
        print("nothing new to deploy: the deployed versions are these")
    print(f"runs moved {done.moved}, ended {done.ended}, left to the workers {done.left}; "
          f"contacts re-evaluated for a stage change {done.reevaluated}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from automation.ops.status import format_contact, inspect_contact
    from automation.runtime import open_runtime

    runtime = open_runtime(_settings())
    try:
        info = inspect_contact(runtime, args.contact_id)
        print(json.dumps(info, indent=2, ensure_ascii=False, default=str) if args.json else format_contact(info))
    finally:
        runtime.close()
    return 0 if info["exists"] else 1


def cmd_reevaluate(args: argparse.Namespace) -> int:
    from automation.runtime import open_runtime
    from automation.store.contacts import ContactStore

    if not args.all and not args.contact_ids:
        print("name contact ids or pass --all", file=sys.stderr)
        return 2
    runtime = open_runtime(_settings())
    try:
        store = ContactStore(runtime)
        ids = store.all_ids() if args.all else args.contact_ids
        count = store.request_reevaluation(ids)
    finally:
        runtime.close()
    print(f"queued a stage re-evaluation for {count} contact(s)")
    return 0


def cmd_broadcast(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from automation.engine.broadcasts import cancel_one_off, one_offs, parse_when, schedule_one_off
    from automation.engine.dryrun import dry_run
    from automation.engine.services import Engine
    from automation.runtime import open_runtime

    runtime = open_runtime(_settings())

    def iso(instant: float) -> str:
        return datetime.fromtimestamp(instant, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    try:
        if args.list:
            found = one_offs(runtime)
            if args.json:
                print(json.dumps([{**vars(b), "at": iso(b.at), "created": iso(b.created)} for b in found], indent=2))
            for b in [] if args.json else found:
                local = f", {b.local} local" + (f" on {b.day}" if b.day else "") if b.local else ""
                print(f"{b.id}  {b.journey}  {b.state}  from {iso(b.at)}{local}, {b.reached} contact(s) reached")
            return 0
        if args.cancel:
            cancelled = cancel_one_off(runtime, args.cancel)
            print(f"broadcast {cancelled.id} of {cancelled.journey} cancelled "
                  f"({cancelled.reached} contact(s) had been reached)")
            return 0
        if not args.journey:
            raise InputError("name the journey to broadcast: lifecycle broadcast <journey> (or --list, --cancel ID)")
        engine = Engine.create(runtime, publish=False)
        try:
            journey = engine.journeys.get(args.journey)
            if journey is None:
                broken = [str(path) for path in engine.journeys.failed_files]
                raise InputError(f"no journey {args.journey!r} is served"
                                 + (f" (files that do not load: {', '.join(broken)}; lifecycle validate)"
                                    if broken else ""))
            at, local, day = parse_when(args.at, journey.timezone, args.local)
            if args.dry_run:
                result = dry_run(engine, journey, at, local, day)
                print(json.dumps(result.to_json(), indent=2) if args.json else result.format())
                return 0
            broadcast = schedule_one_off(runtime, journey, at, local, day)
        finally:
            engine.close()
        local_text = f"; each contact at {broadcast.local} in their own zone" + \
            (f" on {broadcast.day}" if broadcast.day else "") if broadcast.local else ""
        print(f"broadcast {broadcast.id} of {broadcast.journey}: starts reaching contacts at "
              f"{iso(broadcast.at)}{local_text} (workers send it; lifecycle broadcast --list)")
    finally:
        runtime.close()
    return 0


def _reader(settings: Settings, contact: str | None, sample: str | None) -> Any:
    """Who a preview or a test send is for: a contact read from Redis (never written), or sample data."""
    from automation.ops.preview import contact_reader, sample_reader

    if not contact:
        return sample_reader(sample or "sample")
    from automation.runtime import open_runtime

    runtime = open_runtime(settings)
    try:
        return contact_reader(runtime, contact)
    finally:
        runtime.close()


def cmd_preview(args: argparse.Namespace) -> int:
    from automation.ops.preview import PreviewFailed, Workbench, format_summary, messages_of, preview, write_folder

    settings = _settings()
    reader = _reader(settings, args.contact, args.sample)
    bench = Workbench.open(settings)
    try:
        broken = bench.errors_about(args.target)
        if broken:   # the journey (or one sending the template) does not load: say why, as validate does
            _print_diagnostics(broken)
            return 1
        refs = messages_of(args.target, bench.journeys, bench.catalog)
        try:
            messages = preview(refs, bench.catalog, bench.renderer, reader, args.locale, args.all_locales)
        except PreviewFailed as failed:
            _print_diagnostics(failed.diagnostics)
            return 1
    finally:
        bench.close()
    if args.out:
        try:
            index = write_folder(Path(args.out), args.target, messages, reader)
        except OSError as exc:
            raise InputError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        print(f"{len(messages)} message(s) written to {index}")
    else:
        print(format_summary(messages, reader))
    return 0


def _write(path: Path, text: str) -> None:
    """Write an output file, or stop with a one-line reason (a folder that does not exist, no permission)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _writable(path: Path) -> Path:
    """argparse type of an output file: its folder must exist (checked before any long work)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; name a file")
    return path


def _instant(text: str) -> float:
    """argparse type of --start: ISO 8601 (UTC unless it has an offset) or epoch seconds."""
    from datetime import datetime, timezone

    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an ISO time (2026-01-01T12:00) or epoch seconds") from None
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    if not 0 <= seconds < 253402300800:     # 1970 to the end of year 9999, as dates can be written
        raise argparse.ArgumentTypeError(f"{text!r} is outside 1970-01-01 to 9999-12-31")
    return seconds


def cmd_simulate(args: argparse.Namespace) -> int:
    from automation.ops.simulate import JourneysDoNotLoad, load_script, simulate

    settings = _settings()
    script = load_script(args.events)
    ids = [c for c in args.contact if not _is_file(c)]
    files = [c for c in args.contact if _is_file(c)]
    if len(files) > 1 or (files and ids):
        raise InputError("--contact takes contact ids, or one profile file")
    live = None
    if ids:
        from automation.runtime import open_runtime

        live = open_runtime(settings)
    try:
        result = simulate(settings, args.journeys, args.days, ids, Path(files[0]) if files else None, script,
                          args.start, live=live)
    except JourneysDoNotLoad as failed:
        _print_diagnostics(failed.diagnostics)
        return 1
    finally:
        if live is not None:
            live.close()
    print(json.dumps(result.to_json(), indent=2, ensure_ascii=False) if args.json else result.format())
    return 0


def _is_file(text: str) -> bool:
    return text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file()


def cmd_test_send(args: argparse.Namespace) -> int:
    from automation.channels.base import Sent
    from automation.ops.preview import PreviewFailed, Workbench
    from automation.ops.testsend import send_test

    settings = _settings()
    reader = _reader(settings, args.contact, None)
    bench = Workbench.open(settings)
    try:
        broken = bench.errors_about(args.journey)
        if broken:   # the journey does not load: say why, as validate does
            _print_diagnostics(broken)
            return 1
        try:
            done = send_test(bench, args.journey, args.step, args.to, reader, args.locale)
        except PreviewFailed as failed:
            _print_diagnostics(failed.diagnostics)
            return 1
    finally:
        bench.close()
    delivery, result = done.delivery, done.result
    what = (f"{delivery.channel} {delivery.template or 'step data'} ({delivery.locale}) of {delivery.journey} "
            f"{delivery.stage}/{delivery.step}")
    if isinstance(result, Sent):
        print(f"test {what} sent to {args.to}: {result.detail or result.provider_id or 'accepted'} "
              "(marked as a test; in no ledger and no counter)")
        return 0
    print(f"test {what} to {args.to} not sent: {type(result).__name__.lower()}: "
          f"{getattr(result, 'reason', '')}", file=sys.stderr)
    return 1


def cmd_check_config(args: argparse.Namespace) -> int:
    """What is configured and what is missing, per channel; nothing is sent."""
    from automation.channels import ChannelRegistry
    from automation.channels.base import Check

    settings = _settings()
    checks: list[Check] = []
    if settings.redis_url:
        try:
            import redis

            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
            version = client.info("server")["redis_version"]
            checks.append(Check("ok" if tuple(map(int, version.split(".")[:2])) >= (6, 2) else "error",
                                f"redis: {settings.redis_url} answers, version {version} (6.2 or newer needed)"))
        except Exception as exc:  # any connection problem is the answer here
            checks.append(Check("error", f"redis: {settings.redis_url} does not answer: {exc}"))
    else:
        checks.append(Check("ok", f"redis: embedded, data in {settings.home / 'redis'} (set REDIS_URL for a server)"))
    checks.append(_secret_check(settings))
    registry = ChannelRegistry(settings)
    checks += [Check("error", problem) for problem in registry.problems]
    seen: set[int] = set()
    for channel, adapter in sorted(registry.adapters.items()):
        checks.append(Check("ok", f"channel {channel} -> adapter {adapter.name}"))
        if id(adapter) not in seen:
            seen.add(id(adapter))
            checks += adapter.check()
    for adapter_name, rate in sorted(settings.rate_limits.items()):
        checks.append(Check("ok", f"rate limit: {adapter_name} at most {rate:g} messages/s"))
    marks = {"ok": "ok  ", "warning": "warn", "error": "FAIL"}
    for check in checks:
        print(f"{marks[check.level]}  {check.message}")
    errors = sum(c.level == "error" for c in checks)
    print(f"{errors} problem(s)" if errors else "configuration complete", file=sys.stderr)
    return 1 if errors else 0


def _channel_address(text: str) -> tuple[str, str]:
    channel, _, address = text.partition(":")
    if not address or channel not in ("email", "sms"):
        raise InputError(f"{text!r}: write channel:address, e.g. email:ana@example.com or sms:+48601000000")
    return channel, address


def cmd_suppress(args: argparse.Namespace) -> int:
    """Suppression lists: nothing is sent to these addresses, whatever the journey or message type."""
    from automation.runtime import open_runtime
    from automation.store.suppression import ADDRESS_ATTRIBUTES, Suppressions, read_csv

    if not (args.files or args.add or args.remove or args.list):
        raise InputError("name CSV files to import, or use --add, --remove or --list")
    rows, problems = [], []
    for path in args.files:
        found, errors = read_csv(Path(path), args.channel)
        rows += found
        problems += errors
    runtime = open_runtime(_settings())
    try:
        suppressions = Suppressions(runtime)
        for item in args.add:
            channel, address = _channel_address(item)
            rows.append((channel, address, args.reason))
        if rows:
            added = suppressions.add_many(rows)
            print(f"suppressed {added} new address(es), {len(rows) - added} already listed")
        for item in args.remove:
            channel, address = _channel_address(item)
            print(f"{item}: removed" if suppressions.remove(channel, address) else f"{item}: was not listed")
        if args.list:
            for channel in [args.channel] if args.channel else list(ADDRESS_ATTRIBUTES):
                for entry in suppressions.listed(channel):
                    print(f"{channel}\t{entry.address}\t{entry.reason}")
    finally:
        runtime.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def _secret_check(settings: Settings) -> Any:
    from automation.channels.base import Check
    from automation.secret import HOW_TO_SET, WELL_KNOWN, secret_file

    rotation = " (LIFECYCLE_SECRET_PREVIOUS is accepted too, until you remove it)" if settings.secret_previous else ""
    if settings.secret in WELL_KNOWN:
        return Check("error", f"LIFECYCLE_SECRET is the well-known old default: {HOW_TO_SET}")
    if settings.secret:
        return Check("ok", f"LIFECYCLE_SECRET is set: unsubscribe links are signed{rotation}")
    if settings.redis_url:
        return Check("error", f"LIFECYCLE_SECRET is not set: serve, worker and run refuse to start; {HOW_TO_SET}")
    path = secret_file(settings.home)
    state = "kept in" if path.exists() else "to be generated on first start in"
    return Check("ok", f"LIFECYCLE_SECRET: this embedded install's own random key, {state} {path} (mode 600)")


def cmd_resume(args: argparse.Namespace) -> int:
    from automation.runtime import open_runtime
    from automation.store.pauses import ChannelPauses

    settings = _settings()
    runtime = open_runtime(settings)
    try:
        pauses = ChannelPauses(runtime)
        # A channel no longer routed may still have a pause on record: that one can be ended too.
        if args.channel not in settings.channels and args.channel not in pauses.all():
            raise InputError(f"no channel {args.channel!r}; the channels are "
                             f"{', '.join(sorted(settings.channels))} (LIFECYCLE_CHANNEL_<CHANNEL> adds one)")
        resumed = pauses.resume(args.channel)
    finally:
        runtime.close()
    print(f"channel {args.channel} resumed; waiting steps go out as they come due" if resumed
          else f"channel {args.channel} was not paused")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from automation.secret import require_secret
    from automation.server.serving import serve

    settings = _settings()
    if settings.redis_url:  # a production install: no key, no start (the embedded one generates its own)
        require_secret(settings, f"lifecycle {args.command}")
    settings, embedded = _export(settings)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it
    # found: with Python's default one the process would die before leaving the embedded Redis.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        require_secret(settings, f"lifecycle {args.command}")
        serve(args.host, args.port, args.workers)
    except KeyboardInterrupt:
        pass
    finally:
        _leave(embedded)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from automation.runtime import open_runtime
    from automation.store.apikeys import ApiKeys

    runtime = open_runtime(_settings())
    try:
        keys = ApiKeys(runtime)
        if args.action == "create":
            record, key = keys.create(args.scope, args.name or "")
            print(f"created key {record.id} (scope {record.scope}{', ' + record.name if record.name else ''}); "
                  "it is shown only now:")
            print(key)
        elif args.action == "list":
            for record in keys.list():
                created = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                print(f"{record.id}  {record.scope:<7} {created}  {record.name}")
        else:
            if not args.id:
                raise InputError("name the key to revoke: lifecycle keys revoke <id> (ids: lifecycle keys list)")
            if not keys.revoke(args.id):
                raise InputError(f"no key {args.id!r} (ids: lifecycle keys list)")
            print(f"revoked key {args.id}")
    finally:
        runtime.close()
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from importlib import resources

    path = resources.files("automation.language") / "schema" / "journey.schema.json"
    print(path if args.path else path.read_text(), end="\n" if args.path else "")
    return 0


#: Stops the embedded server's watchdog when the command ends.
_watching = threading.Event()


def _count(text: str) -> int:
    """argparse type of --days and --sample: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not above zero")
    return value


def _file_text(journey: Any) -> str | None:
    """A journey's file as it is on disk (None: no such journey or file)."""
    try:
        return Path(journey.path).read_text(encoding="utf-8") if journey is not None else None
    except OSError:
        return None


def cmd_forecast(args: argparse.Namespace) -> int:
    """Messages per journey, channel and day over the days ahead, if nothing new happens; reads only."""
    import dataclasses

    from automation.engine.forecast import changes_between, forecast, format_changes
    from automation.engine.services import Engine
    from automation.language.registry import JourneyRegistry
    from automation.messages.templates import TemplateCheck
    from automation.insight.forecastpage import forecast_page
    from automation.ops.versions import deployed_journeys, journeys_at
    from automation.runtime import open_runtime

    settings = _settings()
    if args.journeys:
        if not Path(args.journeys).is_dir():
            raise InputError(f"--journeys {args.journeys}: no such folder")
        settings = settings.with_changes(journeys_dir=Path(args.journeys))
    if args.journeys or args.against:
        # The files are what is forecast (and compared with --against), whatever the workers serve.
        settings = settings.with_changes(deploy="auto")
    runtime = open_runtime(settings)
    temporary = None
    try:
        engine = Engine.create(runtime, publish=False)
        try:
            versions = {}
            if args.against:
                folder, temporary = (deployed_journeys(runtime, settings.journeys_dir) if args.against == "deployed"
                                     else journeys_at(args.against, settings.journeys_dir))
                other = JourneyRegistry(folder, engine.channels.adapters,
                                        TemplateCheck(engine.catalog, engine.renderer), reload_seconds=1e9)
                versions["against"] = dataclasses.replace(engine, journeys=other)
            results = forecast(engine, args.days, args.sample, versions)
            result = results[""]
            changes = None
            if args.against:
                mine, theirs = engine.journeys.journeys, versions["against"].journeys.journeys
                edited = {name for name in set(mine) | set(theirs)
                          if _file_text(mine.get(name)) != _file_text(theirs.get(name))}
                changes = changes_between(result, results["against"], mine, theirs, edited)
            print(result.to_csv() if args.csv else result.format(), end="" if args.csv else "\n")
            if changes is not None and not args.csv:
                print(format_changes(changes, args.against))
            if args.html:
                _write(args.html, forecast_page(result, changes, args.against or ""))
                print(f"wrote {args.html}", file=sys.stderr if args.csv else sys.stdout)
        finally:
            engine.close()
    finally:
        if temporary is not None:
            temporary.cleanup()
        runtime.close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The journeys' flow diagrams with counts, A/B results and send charts, as one HTML page."""
    from datetime import date

    from automation.engine.services import Engine
    from automation.insight.report import build_report
    from automation.runtime import open_runtime

    since = None
    if args.since:
        try:
            since = date.fromisoformat(args.since)
        except ValueError:
            raise InputError(f"--since {args.since!r}: write a date as YYYY-MM-DD") from None
    runtime = open_runtime(_settings())
    try:
        engine = Engine.create(runtime, publish=False)
        try:
            journeys = engine.journeys.journeys
            if args.journey and args.journey not in journeys:
                raise InputError(f"no journey {args.journey!r} is served (journeys: {', '.join(sorted(journeys))})")
            html = build_report(runtime, journeys, args.journey, since)
        finally:
            engine.close()
    finally:
        runtime.close()
    _write(args.out, html)
    print(f"wrote {args.out}")
    return 0


def _export(settings: Settings) -> tuple[Settings, Any]:
    """Resolve Redis (starting the embedded server if needed) and export the settings, so that
    child processes see the same deployment. Returns the settings and the embedded server or None.
    A long-running command keeps the embedded server alive: if it dies, it is started again at the
    same address, and every process reconnects by itself."""
    from automation.runtime import resolve_redis

    resolved, embedded = resolve_redis(settings)
    os.environ.update(resolved.to_env())
    if embedded is not None:
        embedded.watch(_watching)
    return resolved, embedded


def _leave(embedded: Any) -> None:
    _watching.set()
    if embedded is not None:
        embedded.stop()


#: How often an idle Dramatiq consumer looks for new messages. Dramatiq's default (1000 ms)
#: would add up to a second to every timer's lateness; Dramatiq reads it at import.
IDLE_POLL_MS = "100"


def _probes(port: int | None, settings: Settings, live: dict[str, Any], journeys: bool) -> None:
    """Serve /healthz and /readyz on `port` (if any) for this process."""
    if not port:
        return
    from automation.server.health import Health, journeys_check, redis_check, serve_probes

    ready = {"redis": redis_check(settings)}
    if journeys:
        ready["journeys"] = journeys_check(settings)
    serve_probes(Health(live=live, ready=ready), port)


def cmd_worker(args: argparse.Namespace) -> int:
    os.environ.setdefault("dramatiq_worker_timeout", IDLE_POLL_MS)
    import multiprocessing

    from dramatiq import cli as dramatiq_cli

    from automation.secret import require_secret

    settings = _settings()
    if settings.redis_url:  # workers sign unsubscribe links: no key, no start
        require_secret(settings, "lifecycle worker")
    settings, embedded = _export(settings)

    def processes_alive() -> str | None:
        alive = len(multiprocessing.active_children())
        return None if alive >= args.processes else f"{alive} of {args.processes} worker processes alive"

    port = args.health_port or settings.health_port

    def probes_after_forks() -> None:
        # Dramatiq forks its worker processes first: the probe server's thread must not exist then.
        deadline = time.monotonic() + 120
        while len(multiprocessing.active_children()) < args.processes and time.monotonic() < deadline:
            time.sleep(0.1)
        _probes(port, settings, {"workers": processes_alive}, journeys=True)

    if port:
        threading.Thread(target=probes_after_forks, name="lifecycle-probes-start", daemon=True).start()
    argv = ["workers", "--processes", str(args.processes), "--threads", str(args.threads),
            "--queues", settings.queue, "--worker-shutdown-timeout", str(int(args.shutdown_timeout * 1000))]
    if args.verbose:
        argv.append("--verbose")
    try:
        return dramatiq_cli.main(dramatiq_cli.make_argument_parser().parse_args(argv)) or 0
    finally:
        _leave(embedded)


#: A scheduler whose loop has not come round for this long is stuck (its liveness probe fails).
SCHEDULER_STUCK_SECONDS = 60.0


def _run_scheduler(settings: Settings, stop: threading.Event, metrics_port: int | None = None,
                   started: list[Any] | None = None) -> None:
    from automation.engine.dispatch import DramatiqDispatcher
    from automation.engine.scheduler import Scheduler
    from automation.runtime import open_runtime

    runtime = open_runtime(settings)
    if metrics_port:
        from automation.server.metrics import serve_metrics

        serve_metrics(runtime, metrics_port)
        logger.warning("metrics on http://0.0.0.0:%d/metrics", metrics_port)
    dispatcher = DramatiqDispatcher(settings)
    try:
        scheduler = Scheduler(runtime, dispatcher, dispatcher.queue_depth)
        if started is not None:
            started.append(scheduler)
        scheduler.run(stop)
    finally:
        dispatcher.close()
        runtime.close()


def _scheduler_ticking(started: list[Any]) -> Any:
    def check() -> str | None:
        if not started:
            return "the scheduler has not started"
        silent = time.monotonic() - started[0].last_round
        return None if silent < SCHEDULER_STUCK_SECONDS else f"the scheduler's loop has not run for {silent:.0f}s"

    return check


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_scheduler(args: argparse.Namespace) -> int:
    settings, embedded = _export(_settings())
    stop = threading.Event()
    _stop_on_signals(stop)
    started: list[Any] = []
    _probes(args.health_port or settings.health_port, settings, {"scheduler": _scheduler_ticking(started)},
            journeys=False)
    try:
        _run_scheduler(settings, stop, args.metrics_port, started)
    finally:
        _leave(embedded)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from automation.ops.processes import start_workers, stop_process
    from automation.secret import require_secret

    settings = _settings()
    if settings.redis_url:  # its workers sign unsubscribe links: no key, no start
        require_secret(settings, "lifecycle run")
    if settings.clock_speed != 1.0 and settings.clock_origin is None:
        # A fast clock runs from one origin for the scheduler and every worker, or they disagree on the time.
        settings = settings.with_changes(clock_origin=time.time())
    settings, embedded = _export(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    workers = start_workers(settings, args.processes, args.threads)
    started: list[Any] = []
    scheduler = threading.Thread(target=_run_scheduler, args=(settings, stop, args.metrics_port, started),
                                 name="scheduler", daemon=True)
    scheduler.start()

    def workers_alive() -> str | None:
        return None if workers.poll() is None else f"the worker processes exited ({workers.returncode})"

    _probes(args.health_port or settings.health_port, settings,
            {"workers": workers_alive, "scheduler": _scheduler_ticking(started)}, journeys=True)
    print(f"lifecycle running: scheduler + {args.processes} worker process(es) x {args.threads} threads "
          f"on {settings.redis_url}; Ctrl-C stops", flush=True)
    timeline, runtime = None, None
    if args.timeline:
        from automation.ops.timeline import Timeline, latest_activity
        from automation.runtime import open_runtime

        runtime = open_runtime(settings)
        origin = runtime.clock.now()
        timeline = Timeline(runtime, origin, since=latest_activity(runtime))
        print(f"timeline: day 0 is {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(origin))} on the journey "
              f"clock ({settings.clock_speed:g}x)", flush=True)
    try:
        while not stop.is_set():
            if workers.poll() is not None:
                logger.error("worker processes exited with code %s; stopping", workers.returncode)
                stop.set()
                break
            if timeline is not None:
                timeline.poll(block_ms=500)
            else:
                stop.wait(0.5)
    finally:
        stop.set()
        scheduler.join(timeout=10)
        stop_process(workers)
        if runtime is not None:
            runtime.close()
        _leave(embedded)
    return 0 if workers.returncode in (0, -signal.SIGTERM, None) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from automation.ops.demo import run_demo

    return run_demo(days=args.days, speed=args.speed, outbox=Path(args.outbox), threads=args.threads,
                    quiet=args.quiet)


# -- parser -------------------------------------------------------------------------------------

HEALTH_HELP = "serve /healthz and /readyz on this port (default: LIFECYCLE_HEALTH_PORT, else none)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifecycle",
        description="Customer-lifecycle journeys from YAML files, executed by Dramatiq workers on Redis. "
                    "Configuration comes from environment variables (docs/operations.md).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the demo: sample contacts, shipped journeys, compressed clock")
    p.add_argument("--days", type=_positive, default=40, help="simulated days to run (default 40)")
    p.add_argument("--speed", type=_positive, default=86400,
                   help="simulated seconds per real second (default 86400: a day a second)")
    p.add_argument("--outbox", default="outbox", help="folder for the messages (default ./outbox)")
    p.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("validate", help="check journey files and templates; exit 1 on errors")
    p.add_argument("paths", nargs="*", help="journey files or folders (default: $LIFECYCLE_JOURNEYS or ./journeys)")
    p.add_argument("--templates", help="templates folder (default: $LIFECYCLE_TEMPLATES or ./templates)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("identify", help="create or update a contact")
    p.add_argument("contact_id")
    p.add_argument("attributes", nargs="*", help="key=value (text) or key:=json, e.g. email=a@b.c consent.email:=true")
    p.add_argument("--json", help="attributes as a JSON object")
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("track", help="record an event for a contact")
    p.add_argument("contact_id")
    p.add_argument("event")
    p.add_argument("properties", nargs="*", help="key=value (text) or key:=json, e.g. item=shirt value:=59")
    p.add_argument("--json", help="properties as a JSON object")
    p.add_argument("--at", help="when it happened: ISO 8601 or epoch seconds (default now)")
    p.add_argument("--id", help="event id; an id seen in the last 7 days is ignored")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("import", help="import contacts (CSV) or events and identifies (JSONL)")
    p.add_argument("files", nargs="+")
    p.add_argument("--type", choices=["csv", "jsonl"], help="default: by file extension")
    p.add_argument("--backfill", action="store_true",
                   help="history: record it (stages follow it) but start no triggered journey with it")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("worker", help="run Dramatiq worker processes")
    p.add_argument("--processes", "-p", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", "-t", type=int, default=8)
    p.add_argument("--shutdown-timeout", type=float, default=30, help="seconds to finish running batches on stop")
    p.add_argument("--health-port", type=int, help=HEALTH_HELP)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("scheduler", help="run the timer scheduler")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--health-port", type=int, help=HEALTH_HELP)
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("run", help="scheduler and workers in one command, for small installs")
    p.add_argument("--timeline", action="store_true",
                   help="print what happens to contacts as it happens, as the demo does (rehearse with "
                        "LIFECYCLE_CLOCK_SPEED)")
    p.add_argument("--processes", "-p", type=int, default=1)
    p.add_argument("--threads", "-t", type=int, default=8)
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--health-port", type=int, help=HEALTH_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="timers, queue, workers, counters and recent failures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("plan", help="what deploying the journey files would change for the contacts in them; "
                                    "exit 1 if some would be dropped")
    p.add_argument("paths", nargs="*", help="journey files or folders (default: $LIFECYCLE_JOURNEYS or ./journeys)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("deploy", help="make the journey files the versions workers serve, moving waiting "
                                      "contacts as `plan` says; --rollback goes back one version")
    p.add_argument("paths", nargs="*", help="journey files or folders (default: $LIFECYCLE_JOURNEYS or ./journeys); "
                                            "with --rollback, journey names (default: those of the latest deploy)")
    p.add_argument("--plan-hash", help="refuse unless the plan is still this one (from `lifecycle plan`)")
    p.add_argument("--by", help="who deploys (default: the git commit of the journeys' checkout, else $USER)")
    p.add_argument("--rollback", action="store_true", help="go back to the previous deployed version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("inspect", help="everything about one contact: attributes, stages, messages")
    p.add_argument("contact_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("reevaluate", help="re-run stage rules (e.g. after adding a journey)")
    p.add_argument("contact_ids", nargs="*")
    p.add_argument("--all", action="store_true", help="every contact (scans all contacts once)")
    p.set_defaults(func=cmd_reevaluate)

    p = sub.add_parser("broadcast", help="send a broadcast journey once: now, at a time, or at a local time "
                                         "in each contact's zone; --dry-run counts who would get it")
    p.add_argument("journey", nargs="?", help="a journey with `trigger: {broadcast: true}` (or a `schedule:`)")
    p.add_argument("--at", help="when: ISO time (2026-12-24T10:00, in the journey's zone unless it has an "
                                "offset), or with --local the day (2026-12-24); default now")
    p.add_argument("--local", metavar="HH:MM", help="send at this time in each contact's own zone")
    p.add_argument("--dry-run", action="store_true",
                   help="send nothing: count per channel and locale who would get it, after consent, "
                        "suppression, quiet hours and frequency caps")
    p.add_argument("--list", action="store_true", help="list one-off broadcasts and their progress")
    p.add_argument("--cancel", metavar="ID", help="stop a one-off broadcast (contacts not reached yet are not)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_broadcast)

    p = sub.add_parser("preview", help="render a template or a journey's messages as they would go out, "
                                       "in every locale (sends nothing)")
    p.add_argument("target", metavar="TEMPLATE|JOURNEY")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--contact", metavar="ID", help="a real contact (read from Redis, never written)")
    who.add_argument("--sample", metavar="NAME", help="sample data: 'sample' (default) or a demo contact, e.g. farid")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--locale", help="this locale only (negotiated as for a contact: zh-HK gets zh-TW)")
    where.add_argument("--all-locales", action="store_true",
                       help="every locale the template has (the default without --contact)")
    p.add_argument("--out", metavar="DIR", help="write an index.html with the messages side by side here")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("simulate", help="time travel: run journeys for a contact or a few on the real engine, "
                                        "in a sandbox, and print the timeline (sends nothing, changes nothing)")
    p.add_argument("journeys", nargs="+", metavar="JOURNEY")
    p.add_argument("--contact", action="append", default=[], metavar="ID|FILE",
                   help="a live contact to copy (read only; repeatable), or a YAML/JSON profile file "
                        "(default: the shipped sample profile)")
    p.add_argument("--events", action="append", default=[], metavar="SCRIPT",
                   help="what happens: a script file, or lines like 'day 3: purchase value=40' (repeatable)")
    p.add_argument("--days", type=_positive, required=True, help="simulated days to run")
    p.add_argument("--start", type=_instant, help="when day 0 is: ISO time, UTC unless it has an offset "
                                                  "(default: now)")
    p.add_argument("--json", action="store_true", help="the timeline as JSON")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("test-send", help="send one step's message to a test address through the configured "
                                         "channel, marked as a test (no ledger, no counters)")
    p.add_argument("journey")
    p.add_argument("step", help="the step's id, as `lifecycle inspect` shows it (winback-coupon), or stage/id")
    p.add_argument("--to", required=True, metavar="ADDRESS",
                   help="the test address: email, phone (+E.164), push token, or for a webhook step a URL of yours")
    p.add_argument("--contact", metavar="ID", help="render it for this contact (read only; default: sample data)")
    p.add_argument("--locale", help="with sample data: the locale to send (default: the journey's)")
    p.set_defaults(func=cmd_test_send)

    p = sub.add_parser("check-config", help="what is configured and what is missing, per channel (sends nothing)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("suppress", help="suppression lists: import CSV files, add, remove or list addresses")
    p.add_argument("files", nargs="*", help="CSV files with an address (or email / phone) column, optional "
                                            "channel and reason columns")
    p.add_argument("--add", action="append", default=[], metavar="CHANNEL:ADDRESS",
                   help="suppress one address, e.g. email:ana@example.com (repeatable)")
    p.add_argument("--remove", action="append", default=[], metavar="CHANNEL:ADDRESS",
                   help="take one address off its list (repeatable)")
    p.add_argument("--list", action="store_true", help="print the listed addresses")
    p.add_argument("--channel", choices=["email", "sms"], help="the channel of the files' rows, or to list")
    p.add_argument("--reason", default="added by hand", help="why, for --add (shown by inspect)")
    p.set_defaults(func=cmd_suppress)

    p = sub.add_parser("resume", help="end the pause of a channel after fixing its configuration")
    p.add_argument("channel")
    p.set_defaults(func=cmd_resume)

    for name, text in (("serve", "serve the HTTP API: event ingest (Segment-compatible), provider webhooks, "
                                  "one-click unsubscribe, metrics, health"),
                       ("webhooks", "the same as `serve` (its former name)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
        p.add_argument("--port", type=int, default=8025, help="port (default 8025)")
        p.add_argument("--workers", type=int, default=1, help="server processes (default 1; one per core)")
        p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", help="write keys of the HTTP API: create, list, revoke")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("id", nargs="?", help="the key to revoke (its id, from `keys list`)")
    p.add_argument("--scope", choices=["ingest", "admin"], default="ingest",
                   help="ingest: send contacts and events; admin: that and /metrics (default ingest)")
    p.add_argument("--name", help="a note saying who uses the key")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("forecast", help="messages per journey, channel and day over the days ahead if nothing "
                                        "new happens (caps and quiet hours applied); writes nothing")
    p.add_argument("--days", type=_count, default=30, help="how many days ahead (default 30)")
    p.add_argument("--sample", type=_count, metavar="N", help="follow a random sample of N contacts, scaled up")
    p.add_argument("--journeys", metavar="PATH", help="forecast these journey files instead of the served ones")
    p.add_argument("--csv", action="store_true", help="print day,journey,channel,messages rows")
    p.add_argument("--html", type=_writable, metavar="FILE", help="also write the forecast as a page with charts")
    p.add_argument("--against", metavar="REF",
                   help="name the journey files that change the forecast against another version: `deployed` "
                        "(the versions workers serve), a git ref (HEAD, main) or a folder")
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("report", help="one HTML page: each journey's flow with counts, A/B lift with 95% "
                                      "intervals, sends per day, delivery/open/click rates per step")
    p.add_argument("--journey", metavar="J", help="only this journey")
    p.add_argument("--since", metavar="DATE", help="sends per day from this date (YYYY-MM-DD)")
    p.add_argument("--out", type=_writable, default=Path("report.html"), help="the page to write (default report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("schema", help="print the JSON Schema of journey files (for editors)")
    p.add_argument("--path", action="store_true", help="print its file path instead")
    p.set_defaults(func=cmd_schema)
    return parser


#: Exit status when whoever reads our output stops reading (`lifecycle inspect c1 | head -1`):
#: 128 + SIGPIPE, what a shell reports for any command a closed pipe cut short, so a pipeline
#: under `set -o pipefail` still knows the output was not read to the end.
EXIT_PIPE_CLOSED = 141


def _stdout_closed() -> int:
    # Python flushes stdout once more at exit; pointed at devnull, that flush cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE_CLOSED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a pipe's reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except LifecycleError as exc:
        print(f"lifecycle {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
