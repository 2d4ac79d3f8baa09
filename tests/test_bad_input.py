"""Bad input loses nothing (issue 10, item 8): a bad line of an import is that line's error and
every other line imports; attribute values and event properties have a size limit; a crash while
the outbox writes a message never leaves part of it under the message's name."""

from __future__ import annotations

import dataclasses
import email
import json
import os
import signal
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest

from automation.api import Lifecycle
from automation.channels.base import Delivery, Sent
from automation.channels.outbox import OutboxChannel
from automation.config import Settings
from automation.errors import InputError
from automation.ops.importer import MAX_ROW_CHARS, MAX_ROW_LINES, import_file
from automation.store.contacts import ContactStore
from tests.conftest import ROOT, outbox_files

NOT_UTF8 = "not UTF-8 text (byte 0xE9 at column {}); save the file as UTF-8"


@pytest.fixture
def store(runtime) -> ContactStore:
    return ContactStore(runtime)


def lifecycle(settings: Settings, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the `lifecycle` command on the test's Redis and namespace."""
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_HOME": str(settings.home)}
    return subprocess.run([sys.executable, "-m", "automation", *args], cwd=settings.journeys_dir.parent, env=env,
                          input=input, capture_output=True, text=True, timeout=120)


def existing(store: ContactStore, *ids: str) -> set[str]:
    return {contact_id for contact_id in ids if store.load(contact_id).exists}


# -- 1. import: a line that is not UTF-8 is that line's error -------------------------------------

def test_a_csv_row_that_is_not_utf8_is_reported_and_every_other_row_imports(store, tmp_path: Path):
    # 1,200 rows, so good rows are written in several batches before and after the bad one
    rows = [f"c{n},Name {n}\n".encode() for n in range(1, 1201)]
    rows[699] = b"c700,Chlo\xe9\n"                      # Latin-1, as a spreadsheet may save it
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"id,first_name\n" + b"".join(rows))
    report = import_file(store, path)
    assert report.format_errors() == [f"{path}:701: {NOT_UTF8.format(10)}"]
    assert report.imported == 1199
    assert existing(store, "c1", "c699", "c701", "c1200") == {"c1", "c699", "c701", "c1200"}
    assert not store.load("c700").exists


def test_a_jsonl_line_that_is_not_utf8_is_reported_and_every_other_line_imports(store, tmp_path: Path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type": "identify", "contact_id": "c1", "attributes": {"first_name": "Ana"}}\n'
                     b'{"contact_id": "c2", "event": "purchase", "properties": {"item": "Caf\xe9"}}\n'
                     b'{"contact_id": "c3", "event": "purchase"}\n')
    report = import_file(store, path)
    assert report.format_errors() == [f"{path}:2: {NOT_UTF8.format(70)}"]
    assert report.imported == 2
    assert existing(store, "c1", "c2", "c3") == {"c1", "c3"}


def test_the_command_reports_lines_that_are_not_utf8_and_imports_the_rest(settings: Settings, store,
                                                                           tmp_path: Path):
    contacts = tmp_path / "contacts.csv"
    contacts.write_bytes(b"id,city\nc1,Lisbon\nc2,S\xe3o Paulo\nc3,Porto\n")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"contact_id": "c1", "event": "visit"}\n'
                       b'{"contact_id": "c4", "event": "visit", "properties": {"city": "M\xfcnchen"}}\n')
    result = lifecycle(settings, "import", str(contacts), str(events))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"{contacts}:3: not UTF-8 text (byte 0xE3 at column 5); save the file as UTF-8",
        f"{events}:2: not UTF-8 text (byte 0xFC at column 65); save the file as UTF-8",
    ]
    assert result.stdout.splitlines() == [f"{contacts}: imported 2, rejected 1", f"{events}: imported 1, rejected 1"]
    assert existing(store, "c1", "c2", "c3", "c4") == {"c1", "c3"}
    assert store.load("c1").events["visit"].count == 1


def test_jsonl_lines_that_cannot_be_stored_are_reported_and_the_rest_imports(store, tmp_path: Path):
    # Valid UTF-8 and valid JSON, but a lone surrogate cannot be stored, and Python's json gives up on
    # deep nesting: both stopped the whole import with a traceback.
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "identify", "contact_id": "c1", "attributes": {"name": "\\udc80"}}\n'
                    '{"contact_id": "c2", "event": "visit", "properties": {"p": "\\ud800"}}\n'
                    '{"contact_id": "c\\udc80", "event": "visit"}\n'
                    '{"contact_id": "c4", "event": "vis\\udc80it"}\n'
                    '{"contact_id": "c5", "event": "visit", "id": "\\udc80"}\n'
                    + "[" * 100_000 + "\n"
                    + '{"contact_id": "c7", "event": "visit"}\n', encoding="utf-8")
    report = import_file(store, path)
    assert report.format_errors() == [
        f"{path}:1: attribute 'name' holds text that is not valid Unicode (a lone surrogate)",
        f"{path}:2: properties holds text that is not valid Unicode (a lone surrogate)",
        f"{path}:3: contact id 'c\\udc80' is not valid Unicode text",
        f"{path}:4: event name 'vis\\udc80it' is not valid Unicode text",
        f"{path}:5: id must be valid text of at most 256 characters",
        f"{path}:6: not JSON: nested too deeply",
    ]
    assert existing(store, "c1", "c2", "c4", "c5", "c7") == {"c7"}


def test_a_line_too_long_to_be_a_row_is_reported_unread_and_the_rest_imports(store, tmp_path: Path):
    path = tmp_path / "contacts.csv"
    path.write_text("id,notes\nc1,short\nc2," + "x" * 3_000_000 + "\nc3,short\n", encoding="utf-8")
    report = import_file(store, path)
    assert report.format_errors() == [f"{path}:3: the line is longer than {MAX_ROW_CHARS:,} characters"]
    assert existing(store, "c1", "c2", "c3") == {"c1", "c3"}


def test_a_binary_file_is_still_refused_as_a_whole(store, tmp_path: Path):
    path = tmp_path / "contacts.csv"
    path.write_bytes("id,first_name\nc1,Ana\n".encode("utf-16"))
    with pytest.raises(InputError, match=f"^{path}: not UTF-8 text$"):
        import_file(store, path)


def test_import_reads_a_pipe_from_its_first_line(settings: Settings, store):
    # The check that the file is text must not eat the start of a pipe before the import reads it.
    result = lifecycle(settings, "import", "--type", "csv", "/dev/stdin", input="id,first_name\nc1,Ana\nc2,Ben\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/dev/stdin: imported 2, rejected 0\n"
    assert existing(store, "c1", "c2") == {"c1", "c2"}


# -- 1. import: a CSV quote that never closes -----------------------------------------------------

def unclosed(where: str) -> str:
    return f"a quote that opens on this line does not close {where}; the lines after this one are read as rows"


def test_an_unclosed_quote_is_reported_where_it_opens_and_the_rows_after_it_import(store, tmp_path: Path):
    path = tmp_path / "contacts.csv"
    path.write_text(
        "id,first_name,city\n"
        "c1,Ana,Lisbon\n"
        'c2,"Ben,Porto\n'                   # 3: a stray quote, closed by chance on line 5
        "c3,Chloé,Paris\n"
        'c4,"Dan\n'                         # 5: a value over two lines, as it should be
        'Jr.",Rome\n'
        "c5,Eve,Berlin\n"
        'c6,"Fay,Oslo\n'                    # 8: never closed before the end of the file
        "c7,Gil,Faro\n", encoding="utf-8")
    report = import_file(store, path)
    assert report.format_errors() == [
        f"{path}:3: " + unclosed("where it should (the row would run over 3 lines and have 2 values, not 3)"),
        f"{path}:8: " + unclosed("before the end of the file"),
    ]
    assert report.imported == 5
    assert existing(store, *(f"c{n}" for n in range(1, 8))) == {"c1", "c3", "c4", "c5", "c7"}
    assert store.load("c4").attributes["first_name"] == "Dan\nJr."


def test_a_quoted_value_runs_over_at_most_max_row_lines(store, tmp_path: Path):
    rows = "".join(f"c{n},Name {n}\n" for n in range(3, 3 + 2 * MAX_ROW_LINES))
    path = tmp_path / "contacts.csv"
    path.write_text('id,first_name\nc1,Ana\nc2,"Ben\n' + rows + 'c9999,"Zoë\n', encoding="utf-8")
    report = import_file(store, path)
    assert report.format_errors() == [
        f"{path}:3: " + unclosed(f"within {MAX_ROW_LINES} lines"),
        f"{path}:{4 + 2 * MAX_ROW_LINES}: " + unclosed("before the end of the file"),
    ]
    assert report.imported == 1 + 2 * MAX_ROW_LINES


# -- 2. size limits ------------------------------------------------------------------------------

ATTRIBUTE_LIMIT = "the limit is 8,192 bytes (8 KB) per value"


def test_attribute_values_have_a_size_limit(runtime, store):
    lc = Lifecycle(runtime)
    lc.identify("c1", {"notes": "x" * (8192 - 2)})            # 8,192 bytes as JSON, quotes included
    assert len(store.load("c1").attributes["notes"]) == 8190
    with pytest.raises(InputError) as refused:
        lc.identify("c2", {"first_name": "Ana", "profile": {"notes": "é" * 5000}})
    assert str(refused.value) == f"attribute 'profile.notes' is 10,002 bytes as JSON; {ATTRIBUTE_LIMIT}"
    with pytest.raises(InputError) as refused:
        lc.identify("c2", {f"part{n}": "x" * 7000 for n in range(5)})
    assert str(refused.value) == ("the attributes are 35,035 bytes as JSON in all; "
                                  "the limit is 32,768 bytes (32 KB) per identify")
    assert not store.load("c2").exists


def test_event_properties_have_a_size_limit(runtime, store):
    lc = Lifecycle(runtime)
    with pytest.raises(InputError) as refused:
        lc.track("c1", "purchase", {"note": "x" * 9000})
    assert str(refused.value) == "properties are 9,012 bytes as JSON; the limit is 8,192 bytes (8 KB) per event"
    assert not store.load("c1").exists


def test_the_command_refuses_oversized_attributes_and_properties_with_the_limit(settings: Settings, store):
    result = lifecycle(settings, "identify", "c1", "notes=" + "x" * 9000)
    assert (result.returncode, result.stderr) == (
        2, f"lifecycle identify: attribute 'notes' is 9,002 bytes as JSON; {ATTRIBUTE_LIMIT}\n")
    result = lifecycle(settings, "track", "c1", "purchase", "note=" + "x" * 9000)
    assert (result.returncode, result.stderr) == (
        2, "lifecycle track: properties are 9,012 bytes as JSON; the limit is 8,192 bytes (8 KB) per event\n")
    assert not store.load("c1").exists


def test_import_refuses_oversized_values_line_by_line(store, tmp_path: Path):
    path = tmp_path / "contacts.csv"
    path.write_text("id,notes\nc1,short\nc2," + "x" * 9000 + "\nc3,short\n", encoding="utf-8")
    report = import_file(store, path)
    assert report.format_errors() == [f"{path}:3: attribute 'notes' is 9,002 bytes as JSON; {ATTRIBUTE_LIMIT}"]
    assert existing(store, "c1", "c2", "c3") == {"c1", "c3"}


# -- 3. the outbox: a message is whole under its name, or not there ------------------------------

def message(html: str) -> Delivery:
    return Delivery(key="welcome:lead:1:welcome:c1", contact_id="c1", journey="welcome", stage="lead", step="welcome",
                    channel="email", template="welcome", locale="en", to="ana@example.com",
                    parts={"subject": "Welcome", "html": html, "text": "Welcome"}, at=1_780_000_000.0)


#: A worker killed while it writes a message: the kernel stops it once the file reaches 4 KB.
CRASHING_WRITER = """
import json, resource, signal, sys
from pathlib import Path
from automation.channels.base import Delivery
from automation.channels.outbox import OutboxChannel
from automation.config import Settings
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
OutboxChannel(Settings(), directory=Path(sys.argv[1])).send(Delivery(**json.loads(sys.argv[2])))
"""


def test_a_crash_while_writing_leaves_no_partial_message_and_the_retry_writes_it_whole(tmp_path: Path):
    outbox = tmp_path / "outbox"
    delivery = message("<p>" + "Welcome aboard! " * 2000 + "</p>")
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(outbox),
                              json.dumps(dataclasses.asdict(delivery))],
                             cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True)
    assert crashed.returncode == -signal.SIGXFSZ, crashed.stderr
    # What the crash left is a temporary file, 4 KB of the message, that is not a message
    (left,) = (outbox / "email").iterdir()
    assert left.name.startswith(".tmp-") and left.stat().st_size == 4096
    assert outbox_files(outbox) == []
    # A retry of the same step writes the whole message under its name
    result = OutboxChannel(Settings(), directory=outbox).send(delivery)
    (path,) = outbox_files(outbox)
    assert result == Sent(provider_id=path.name, detail=str(path))
    written = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert written.get_body(("html",)).get_content().strip() == delivery.parts["html"]


def test_a_message_is_written_at_most_once_and_leaves_no_temporary_file(tmp_path: Path):
    adapter = OutboxChannel(Settings(), directory=tmp_path)
    first = adapter.send(message("<p>first</p>"))
    (path,) = outbox_files(tmp_path)
    assert first == Sent(provider_id=path.name, detail=str(path))
    # The same step again (a redelivery), rendered differently meanwhile: the first message stays
    again = adapter.send(message("<p>second</p>"))
    assert again == Sent(provider_id=path.name, detail="already in the outbox")
    assert b"<p>first</p>" in path.read_bytes() and b"second" not in path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "email").iterdir()) == [path.name]
