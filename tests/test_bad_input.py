"""Bad input loses nothing (issue 10, item 8): a bad line of an import is that line's error and
every other line imports; attribute values and event properties have a size limit; a crash while
the outbox writes a message never leaves part of it under the message's name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from automation.api import Lifecycle
from automation.config import Settings
from automation.errors import InputError
from automation.ops.importer import import_file
from automation.store.contacts import ContactStore


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
