"""`lifecycle preview`: every message as it would go out, per locale, for sample data or a real contact."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from automation.config import Settings
from automation.messages.templates import MESSAGE_PARTS
from automation.ops.cli import main
from automation.ops.preview import (
    Workbench,
    contact_reader,
    messages_of,
    preview,
    sample_reader,
    write_folder,
)
from automation.store.contacts import ContactStore
from tests.conftest import ROOT, write


def snapshot(runtime) -> dict[str, bytes]:
    """Every key of the test's namespace and its serialized value."""
    import redis

    client = redis.Redis.from_url(runtime.redis_url)
    try:
        return {key: client.dump(key) for key in client.scan_iter(match=f"{runtime.settings.namespace}:*")}
    finally:
        client.close()


def test_every_shipped_template_renders_in_every_shipped_locale(tmp_path):
    # Given the shipped journeys and templates
    bench = Workbench.open(Settings(journeys_dir=ROOT / "journeys", templates_dir=ROOT / "templates"))
    try:
        templates = sorted({(f.channel, f.name) for f in bench.catalog.files()})
        written = {key: sorted(bench.catalog.locales(*key)) for key in templates}
        # When each is previewed with the sample data in all its locales
        messages = []
        for _, name in sorted({name for name in templates}):
            messages += preview(messages_of(name, bench.journeys, bench.catalog), bench.catalog, bench.renderer,
                                sample_reader(), all_locales=True)
    finally:
        bench.close()
    # Then every locale of every template rendered, with every part its channel requires
    seen = sorted({(m.ref.channel, m.ref.template, m.locale) for m in messages})
    assert seen == sorted((c, n, loc) for (c, n), locales in written.items() for loc in locales)
    assert {"fa", "ru", "zh-TW", "pl", "en"} <= {m.locale for m in messages}
    for message in messages:
        for part in MESSAGE_PARTS[message.ref.channel][0]:
            assert message.parts[part].strip(), (message.path, part)
        # And Persian reads right to left, the others left to right
        assert message.direction == ("rtl" if message.locale == "fa" else "ltr")
        if message.ref.channel == "sms":
            assert message.sms[1] >= 1
    # And the folder shows each message in a card with its direction, the email HTML sandboxed in srcdoc
    index = write_folder(tmp_path, "all", messages, sample_reader())
    page = index.read_text(encoding="utf-8")
    cards = re.findall(r'<div class="card" lang="([^"]+)" dir="(rtl|ltr)">', page)
    assert len(cards) == len(messages)
    assert all(direction == ("rtl" if lang == "fa" else "ltr") for lang, direction in cards)
    assert page.count('<iframe sandbox=""') == sum(m.ref.channel == "email" for m in messages)
    assert page.count("<html") == 1 and "srcdoc=\"&lt;!doctype html&gt;" in page   # escaped, never inline


def test_the_command_writes_an_index_with_the_journey_s_messages_side_by_side(tmp_path):
    # When a marketer previews the customer lifecycle into a folder
    done = subprocess.run([sys.executable, "-m", "automation", "preview", "customer-lifecycle", "--out",
                           str(tmp_path / "preview")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LIFECYCLE_HOME": str(tmp_path / ".lifecycle")})
    # Then it succeeds and the page shows the win-back SMS with its segments, and Persian right to left
    assert done.returncode == 0, done.stderr
    assert "message(s) written to" in done.stdout
    page = (tmp_path / "preview" / "index.html").read_text(encoding="utf-8")
    assert "sms winback-reminder  (customer-lifecycle / lapsed / winback-reminder)" in page
    assert re.search(r"\d segment\(s\), \d+ UCS-2 characters", page)
    assert '<div class="card" lang="fa" dir="rtl">' in page


def test_a_real_contact_sees_their_own_message_and_nothing_is_written(runtime):
    # Given a Persian-speaking contact in Redis
    ContactStore(runtime).identify("farid", {"first_name": "فرید", "locale": "fa-IR", "email": "f@example.com"})
    before = snapshot(runtime)
    bench = Workbench.open(runtime.settings)
    try:
        # When the welcome email is previewed for them
        reader = contact_reader(runtime, "farid")
        (message,) = preview(messages_of("welcome", bench.journeys, bench.catalog), bench.catalog, bench.renderer,
                             reader)
    finally:
        bench.close()
    # Then it is the Persian one, with their name, right to left
    assert (message.locale, message.direction) == ("fa", "rtl")
    assert "فرید" in message.parts["subject"]
    # And Redis is exactly as it was
    assert snapshot(runtime) == before


def test_a_template_error_exits_1_with_its_file_line_and_a_hint(project, monkeypatch, capsys):
    # Given a welcome email whose Polish version has a syntax error on line 3 and whose Russian one
    # prints a name no journey defines
    polish = project / "templates" / "email" / "welcome.pl.html"
    lines = polish.read_text(encoding="utf-8").splitlines()
    write(polish, "\n".join(lines[:2] + ["{% if %}"] + lines[2:]))
    monkeypatch.setenv("LIFECYCLE_JOURNEYS", str(project / "journeys"))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES", str(project / "templates"))
    monkeypatch.chdir(project)
    # When it is previewed
    code = main(["preview", "welcome"])
    # Then the command fails with the file, line and column, and a hint
    err = capsys.readouterr().err
    assert code == 1
    assert "templates/email/welcome.pl.html:3:1: template syntax error" in err
    assert "hint:" in err
    # And a value the template prints but nobody defines is reported where the journey sends it and where
    # the template prints it
    write(polish, "\n".join(lines))
    russian = project / "templates" / "email" / "welcome.ru.html"
    lines = russian.read_text(encoding="utf-8").splitlines()
    write(russian, "\n".join(lines[:3] + ["<p>{{ nowhere_defined }}</p>"] + lines[3:]))
    assert main(["preview", "welcome", "--locale", "ru"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"journeys/customer-lifecycle\.yaml:\d+:\d+: template templates/email/welcome\.ru\.html "
                     r"uses 'nowhere_defined'", err), err
    # And a template no journey sends is reported with the line and column of the name it lacks
    write(project / "templates" / "email" / "orphan.en.html",
          "{% block subject %}Hi{% endblock %}\n{% block html %}<p>\n  {{ brand_new }}</p>{% endblock %}\n")
    assert main(["preview", "orphan"]) == 1
    err = capsys.readouterr().err
    assert "templates/email/orphan.en.html:3:6: missing value: 'brand_new' is undefined" in err, err
    assert "hint: 'brand_new' is not defined" in err


def test_bad_arguments_give_one_line_and_exit_2(capsys):
    assert main(["preview", "welcom"]) == 2
    assert capsys.readouterr().err.strip() == \
        "lifecycle preview: no journey or template named 'welcom'; did you mean 'welcome'?"
    assert main(["preview", "welcome", "--sample", "nobody"]) == 2
    assert "no sample contact 'nobody'" in capsys.readouterr().err
    assert main(["preview", "welcome", "--out", "/proc/no-such-folder"]) == 2    # was a traceback
    assert capsys.readouterr().err.startswith("lifecycle preview: cannot write /proc/no-such-folder")


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("LIFECYCLE_JOURNEYS", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES", raising=False)
    return Path(ROOT)
