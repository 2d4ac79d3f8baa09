"""`lifecycle import`: contacts from CSV, events (and identifies) from JSON Lines.

Every bad line is reported with its line number and reason; every good line in
the same file is imported. Writes are pipelined in chunks so large files load
at Redis speed. A line that is not UTF-8 is that line's error, not the file's;
a CSV quote that never closes is reported at the line where it opened, and the
lines after that line are read again as rows (see MAX_ROW_LINES). Only a file
that cannot be read at all, or is not text (binary data, UTF-16), is refused
as a whole, before anything is imported.

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
import io
import json
import re
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, TextIO

from automation.events import Event, InputError, check_attributes, check_contact_id, parse_event, parse_time
from automation.store.contacts import ContactStore

CHUNK = 500
TYPES = ("text", "number", "bool", "date", "json")
#: A CSV row may run over several lines (a quoted value with line breaks: an address, a note),
#: but no further: a quote left open by mistake must not swallow the rest of the file.
MAX_ROW_LINES = 100
#: The longest line, or CSV row, in characters: four times what the size limits of
#: automation.events let one identify hold, and csv's own field limit, so that never cuts a row
#: first. A longer line is reported without being read into memory.
MAX_ROW_CHARS = 128 * 1024
#: A NUL byte among the first bytes means binary data or UTF-16, not a file of lines (as git judges).
SNIFF_BYTES = 8000
#: Bytes that are not UTF-8, as errors="surrogateescape" passes them on.
_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")


@dataclass
class ImportReport:
    path: str
    imported: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def format_errors(self) -> list[str]:
        return [f"{self.path}:{line}: {reason}" for line, reason in self.errors]


@contextmanager
def open_text(path: Path, sniff: bool = True) -> Iterator[TextIO]:
    """The file opened for reading as UTF-8 text, line endings untranslated (as csv wants them).

    Bytes that are not UTF-8 come through as lone surrogates, so that each line can be judged on
    its own (`read_lines`). A file that cannot be opened, or (`sniff`) is not text at all, is an
    InputError naming it (a missing file, a folder, no permission, binary data), not a traceback.
    """
    try:
        raw = open(path, "rb", buffering=64 * 1024)
    except OSError as exc:
        raise InputError(f"{path}: {_reason(exc)}") from None
    with raw:
        try:
            head = raw.peek(SNIFF_BYTES)[:SNIFF_BYTES] if sniff else b""
        except OSError as exc:
            raise InputError(f"{path}: {_reason(exc)}") from None
        if b"\0" in head:
            raise InputError(f"{path}: not UTF-8 text")
        yield io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def check_readable(path: Path) -> None:
    """Refuse a file that cannot be read, or is not text, before anything is imported (InputError)."""
    path = Path(path)
    # A pipe (/dev/stdin) is only opened: the bytes a look at its start took would be lost to the import.
    with open_text(path, sniff=path.is_file()):
        pass


@dataclass(frozen=True)
class Line:
    number: int
    text: str
    problem: str | None = None   # why the line cannot be imported, whatever it says


def read_lines(handle: TextIO) -> Iterator[Line]:
    """The file's lines, numbered from 1, each with what makes it unusable: bytes that are not
    UTF-8, or more than MAX_ROW_CHARS characters (such a line's text is skipped, not kept)."""
    number = 0
    while True:
        text = handle.readline(MAX_ROW_CHARS + 1)
        if not text:
            return
        number += 1
        if len(text) > MAX_ROW_CHARS:
            while text and not text.endswith(("\n", "\r")):
                text = handle.readline(MAX_ROW_CHARS)
            yield Line(number, "\n", f"the line is longer than {MAX_ROW_CHARS:,} characters")
            continue
        bad = _NOT_UTF8.search(text)
        if bad:
            byte = ord(bad.group()) - 0xDC00
            yield Line(number, text, f"not UTF-8 text (byte 0x{byte:02X} at column {bad.start() + 1}); "
                                     "save the file as UTF-8")
            continue
        yield Line(number, text)


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
    except RecursionError:
        raise InputError(f"column {column!r}: not JSON: nested too deeply") from None


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


class _Unclosed(Exception):
    """A CSV row whose quoted value does not close within MAX_ROW_LINES lines (or MAX_ROW_CHARS), or at all."""


class _RowLines:
    """Hands csv.reader the file's lines and keeps those of the row it is reading.

    csv.reader asks for another line only while a quoted value is open, so a row that wants
    more than MAX_ROW_LINES lines (or MAX_ROW_CHARS characters), or runs into the end of the
    file, has a quote that never closes: `_Unclosed`, after which `read_again` puts the row's
    lines after its first back to be read as rows of their own.
    """

    def __init__(self, lines: Iterator[Line]) -> None:
        self._lines = lines
        self._again: deque[Line] = deque()
        self.row: list[Line] = []
        self._chars = 0

    def start_row(self) -> None:
        self.row, self._chars = [], 0

    def __iter__(self) -> "_RowLines":
        return self

    def __next__(self) -> str:
        line = self._again.popleft() if self._again else next(self._lines, None)
        if line is None:
            if self.row:
                raise _Unclosed("before the end of the file")
            raise StopIteration
        if self.row and (len(self.row) >= MAX_ROW_LINES or self._chars + len(line.text) > MAX_ROW_CHARS):
            self._again.appendleft(line)
            raise _Unclosed(f"within {MAX_ROW_LINES} lines")
        self.row.append(line)
        self._chars += len(line.text)
        return line.text

    def read_again(self) -> None:
        self._again.extendleft(reversed(self.row[1:]))
        self.row = self.row[:1]

    @property
    def first(self) -> int:
        return self.row[0].number if self.row else 0

    @property
    def problem(self) -> tuple[int, str] | None:
        """The first of the row's lines that cannot be imported, and why."""
        return next(((line.number, line.problem) for line in self.row if line.problem), None)


def _unclosed(where: object, again: bool = True) -> str:
    text = f"a quote that opens on this line does not close {where}"
    return text + "; the lines after this one are read as rows" if again else text


def import_csv(store: ContactStore, path: Path, triggers: bool = True) -> ImportReport:
    report = ImportReport(str(path))
    now = store.runtime.clock.now()
    batch: list[tuple[str, dict[str, Any]]] = []
    with open_text(path) as handle:
        lines = _RowLines(read_lines(handle))
        reader = csv.reader(lines)
        try:
            header = next(reader)
            if lines.problem:
                report.errors.append(lines.problem)
                return report
            columns = _columns(header)
        except StopIteration:
            report.errors.append((1, "the file is empty; the first line must name the columns"))
            return report
        except _Unclosed as exc:
            report.errors.append((1, _unclosed(exc, again=False)))
            return report
        except (InputError, csv.Error) as exc:
            report.errors.append((1, str(exc)))
            return report
        names = [name for name, _ in columns]
        id_column = "id" if "id" in names else "contact_id" if "contact_id" in names else None
        if id_column is None:
            report.errors.append((1, "no 'id' column: the first line must name the contact id column 'id'"))
            return report
        while True:
            lines.start_row()
            try:
                row = next(reader)
            except StopIteration:
                break
            except _Unclosed as exc:
                report.errors.append((lines.first, _unclosed(exc)))
                lines.read_again()
                continue
            except csv.Error as exc:
                report.errors.append((lines.first, f"CSV error: {exc}"))
                continue
            line = lines.first
            if len(lines.row) > 1 and len(row) != len(columns):
                # A stray quote that a later quote happened to close: the row swallowed lines.
                report.errors.append((line, _unclosed(f"where it should (the row would run over {len(lines.row)} "
                                                      f"lines and have {len(row)} values, not {len(columns)})")))
                lines.read_again()
                continue
            if lines.problem:
                report.errors.append(lines.problem)
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


def _lines(path: Path) -> Iterator[Line]:
    with open_text(path) as handle:
        yield from read_lines(handle)


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

    for line in _lines(path):
        if line.problem:
            report.errors.append((line.number, line.problem))
            continue
        if not line.text.strip():
            continue
        number = line.number
        try:
            data = json.loads(line.text)
        except json.JSONDecodeError as exc:
            report.errors.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))
            continue
        except RecursionError:
            report.errors.append((number, "not JSON: nested too deeply"))
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
