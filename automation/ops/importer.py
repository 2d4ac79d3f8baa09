"""`lifecycle import`: contacts from CSV, events (and identifies) from JSON Lines.

Every bad line is reported with its line number and reason; every good line in
the same file is imported. Writes are pipelined in chunks so large files load
at Redis speed.

CSV: a header row with `id` (or `contact_id`) and attribute columns. Values are
text unless the header gives a type: `lifetime_value:number`, `vip:bool`,
`signed_up_at:date`, `tags:json`. Dotted names nest: `consent.email`. Empty
cells are left out (they do not erase what is stored).

JSONL: one object per line, either an event
`{"contact_id": "c1", "event": "purchase", "timestamp": "2026-05-01T10:00:00Z", "properties": {...}}`
or an identify `{"type": "identify", "contact_id": "c1", "attributes": {...}}`.
"""

from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, TextIO

from automation.events import Event, InputError, check_attributes, check_contact_id, parse_event, parse_time
from automation.store.contacts import ContactStore

CHUNK = 500
TYPES = ("text", "number", "bool", "date", "json")


@dataclass
class ImportReport:
    path: str
    imported: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def format_errors(self) -> list[str]:
        return [f"{self.path}:{line}: {reason}" for line, reason in self.errors]


@contextmanager
def open_text(path: Path, **options: Any) -> Iterator[TextIO]:
    """The file opened for reading as UTF-8 text; a file that cannot be opened or decoded is an
    InputError naming it (a missing file, a folder, no permission, binary data), not a traceback."""
    try:
        handle = open(path, encoding="utf-8-sig", **options)
    except OSError as exc:
        raise InputError(f"{path}: {_reason(exc)}") from None
    with handle:
        try:
            yield handle
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def check_readable(path: Path) -> None:
    """Refuse a file that cannot be read before anything is imported (InputError)."""
    with open_text(Path(path)):
        pass


def import_file(store: ContactStore, path: Path, kind: str | None = None, triggers: bool = True) -> ImportReport:
    """Import a file; `triggers=False` is a backfill of history that starts no triggered journey."""
    path = Path(path)
    kind = kind or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    check_readable(path)
    if kind == "csv":
        return import_csv(store, path, triggers)
    if kind in ("jsonl", "ndjson", "json"):
        return import_jsonl(store, path, triggers)
    raise InputError(f"unknown import type {kind!r}: use csv or jsonl")


def _convert(value: str, kind: str, column: str, now: float) -> Any:
    if kind == "text":
        return value
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"column {column!r}: {value!r} is not a number") from None
        return int(number) if number.is_integer() and "." not in value else number
    if kind == "bool":
        lowered = value.strip().lower()
        if lowered in {"true", "yes", "1", "y"}:
            return True
        if lowered in {"false", "no", "0", "n"}:
            return False
        raise InputError(f"column {column!r}: {value!r} is not true or false")
    if kind == "date":
        return _iso(parse_time(value, now, what=f"column {column!r}"))
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputError(f"column {column!r}: not JSON: {exc.msg}") from None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _columns(header: list[str]) -> list[tuple[str, str]]:
    columns = []
    for raw in header:
        name, _, kind = raw.strip().partition(":")
        kind = kind.strip().lower() or "text"
        if kind not in TYPES:
            raise InputError(f"column {raw!r}: unknown type {kind!r} (use {', '.join(TYPES)})")
        columns.append((name.strip(), kind))
    return columns


def import_csv(store: ContactStore, path: Path, triggers: bool = True) -> ImportReport:
    report = ImportReport(str(path))
    now = store.runtime.clock.now()
    batch: list[tuple[str, dict[str, Any]]] = []
    with open_text(path, newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
            columns = _columns(header)
        except StopIteration:
            report.errors.append((1, "the file is empty; the first line must name the columns"))
            return report
        except InputError as exc:
            report.errors.append((1, str(exc)))
            return report
        names = [name for name, _ in columns]
        id_column = "id" if "id" in names else "contact_id" if "contact_id" in names else None
        if id_column is None:
            report.errors.append((1, "no 'id' column: the first line must name the contact id column 'id'"))
            return report
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                report.errors.append((line, f"CSV error: {exc}"))
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                report.errors.append((line, f"expected {len(columns)} values, found {len(row)}"))
                continue
            try:
                attributes: dict[str, Any] = {}
                contact_id = ""
                for (name, kind), cell in zip(columns, row, strict=True):
                    if name == id_column:
                        contact_id = check_contact_id(cell)
                    elif cell.strip() != "":
                        attributes[name] = _convert(cell.strip(), kind, name, now)
                batch.append((contact_id, check_attributes(attributes)))
            except InputError as exc:
                report.errors.append((line, str(exc)))
                continue
            if len(batch) >= CHUNK:
                report.imported += store.identify_many(batch, triggers=triggers)
                batch.clear()
    report.imported += store.identify_many(batch, triggers=triggers)
    return report


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                yield number, text


def import_jsonl(store: ContactStore, path: Path, triggers: bool = True) -> ImportReport:
    report = ImportReport(str(path))
    now = store.runtime.clock.now()
    events: list[Event] = []
    identifies: list[tuple[str, dict[str, Any]]] = []

    def flush() -> None:
        if identifies:
            report.imported += store.identify_many(identifies, triggers=triggers)
            identifies.clear()
        if events:
            results = store.track_many(events, triggers=triggers)
            report.imported += sum(results)
            report.duplicates += len(results) - sum(results)
            events.clear()

    for number, text in _lines(path):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            report.errors.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))
            continue
        try:
            if isinstance(data, dict) and data.get("type", "track") == "identify":
                unknown = sorted(set(data) - {"type", "contact_id", "attributes"})
                if unknown:
                    raise InputError(f"unknown field {unknown[0]!r} in an identify (fields: contact_id, attributes)")
                identifies.append((check_contact_id(data.get("contact_id")),
                                   check_attributes(data.get("attributes") or {})))
            else:
                if isinstance(data, dict):
                    if data.get("type", "track") != "track":
                        raise InputError(f"unknown type {data.get('type')!r} (use track or identify)")
                    data = {k: v for k, v in data.items() if k != "type"}
                event = parse_event(data, now)
                # An identify earlier in the file must land before events that depend on it.
                if identifies:
                    flush()
                events.append(event)
        except InputError as exc:
            report.errors.append((number, str(exc)))
            continue
        if len(events) + len(identifies) >= CHUNK:
            flush()
    flush()
    return report
