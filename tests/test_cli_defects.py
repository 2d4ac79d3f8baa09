"""What a new user ran into: mistakes at the command line (one clear line, never a traceback), the
demo and the user's own outbox files, the README's numbers, `inspect` of an ended run, and the
unsubscribe page in the contact's language."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from automation.api import Lifecycle
from automation.config import Settings
from automation.errors import InputError
from automation.events import parse_event
from automation.language.registry import context_folders
from automation.messages.unsubscribe import make_token
from automation.ops.demo import MANIFEST, load_population
from automation.ops.status import format_contact, inspect_contact, iso
from automation.server.app import create_app
from tests.conftest import ROOT, outbox_files, write


def lifecycle(settings: Settings, *args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run the `lifecycle` command in the test project, on the test's Redis and namespace."""
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_HOME": str(settings.home)}
    return subprocess.run([sys.executable, "-m", "automation", *args], cwd=settings.journeys_dir.parent, env=env,
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)


def one_error_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The command failed with exit 2 and exactly one `lifecycle <command>: ...` line on stderr."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lifecycle {command}: "), result.stderr
    return lines[0]


# -- 1. import of a file that cannot be read ------------------------------------------------------

def test_import_of_a_missing_file_or_a_folder_is_one_line(settings: Settings, tmp_path: Path):
    missing = tmp_path / "nonexistent.csv"
    line = one_error_line(lifecycle(settings, "import", str(missing)), "import")
    assert line == f"lifecycle import: {missing}: no such file or directory"
    line = one_error_line(lifecycle(settings, "import", str(tmp_path)), "import")
    assert line == f"lifecycle import: {tmp_path}: is a directory"


def test_import_checks_every_file_before_importing_any(settings: Settings, tmp_path: Path):
    good = tmp_path / "contacts.csv"
    good.write_text("id,email\nc1,c1@example.com\n")
    one_error_line(lifecycle(settings, "import", str(good), str(tmp_path / "typo.csv")), "import")
    assert lifecycle(settings, "inspect", "c1").stdout == "no contact 'c1'\n"


def test_import_of_a_file_that_is_not_text_is_one_line(settings: Settings, tmp_path: Path):
    binary = tmp_path / "contacts.csv"
    binary.write_bytes(b"id,email\n\xff\xfe\x00\x01\n")
    line = one_error_line(lifecycle(settings, "import", str(binary)), "import")
    assert line == f"lifecycle import: {binary}: not UTF-8 text"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file, whatever its permissions")
def test_import_of_an_unreadable_file_is_one_line(settings: Settings, tmp_path: Path):
    secret = tmp_path / "contacts.csv"
    secret.write_text("id\nc1\n")
    secret.chmod(0)
    line = one_error_line(lifecycle(settings, "import", str(secret)), "import")
    assert line == f"lifecycle import: {secret}: permission denied"


# -- 2. validate of a path that does not exist ---------------------------------------------------

def test_validate_reports_a_missing_path_without_scanning_its_folder(settings: Settings, tmp_path: Path):
    # A broken sources file beside the missing path shows whether its folder was read.
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "_contact.yaml").write_text("attributes: [\n")
    missing = folder / "missing.yaml"
    result = lifecycle(settings, "validate", str(missing))
    assert result.returncode == 1, result.stderr
    assert result.stdout == "elsewhere/missing.yaml:1:1: no such file or directory\n1 error(s)\n"
    assert result.stderr == ""


def test_only_existing_paths_give_folders_for_context(tmp_path: Path):
    folder = tmp_path / "journeys"
    folder.mkdir()
    (folder / "a.yaml").write_text("journey: a\n")
    assert context_folders([tmp_path / "missing.yaml", tmp_path / "gone" / "b.yaml"]) == []
    assert context_folders([folder / "a.yaml", folder, tmp_path / "missing.yaml"]) == [folder]


# -- 3. output piped into a reader that stops early (`| head -1`) ----------------------------------

def closed_pipe() -> int:
    """The write end of a pipe whose reader is already gone, as `head -1` is after one line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize("command", [("validate", "--format", "json"), ("inspect", "c1"), ("inspect", "c1", "--json")])
def test_a_closed_pipe_ends_the_command_quietly(settings: Settings, command: tuple[str, ...]):
    pipe = closed_pipe()
    try:
        result = lifecycle(settings, *command, stdout=pipe)
    finally:
        os.close(pipe)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe stopped


# -- 4. values the commands cannot use ---------------------------------------------------------------

@pytest.mark.parametrize("command, what", [
    (("track", "c1", "purchase", "--json", "[1]"), "properties"),
    (("track", "c1", "purchase", "--json", "null"), "properties"),
    (("identify", "c1", "--json", "[1]"), "attributes"),
    (("identify", "c1", "--json", '"ana@example.com"'), "attributes"),
])
def test_json_that_is_not_an_object_is_one_line(settings: Settings, command: tuple[str, ...], what: str):
    line = one_error_line(lifecycle(settings, *command), command[0])
    assert line.startswith(f"lifecycle {command[0]}: --json: {what} must be a JSON object")


def test_an_event_without_properties_is_recorded(settings: Settings, runtime):
    result = lifecycle(settings, "track", "c1", "page_view")
    assert result.returncode == 0 and result.stdout == "tracked page_view for c1\n", result.stderr
    info = json.loads(lifecycle(settings, "inspect", "c1", "--json").stdout)
    assert info["events"]["page_view"]["count"] == 1
    assert info["recent_events"][0]["properties"] == {}


@pytest.mark.parametrize("properties", [None, {}])
def test_the_api_takes_an_event_without_properties(runtime, properties):
    lc = Lifecycle(runtime)
    assert lc.track("c1", "page_view", properties) is True
    assert lc.contact("c1").events["page_view"].count == 1


@pytest.mark.parametrize("properties", [[1], [("item", "shirt")], "item=shirt", 0, False, ""])
def test_properties_that_are_not_an_object_are_refused(runtime, clock, properties):
    with pytest.raises(InputError, match="properties must be a JSON object"):
        Lifecycle(runtime).track("c1", "purchase", properties)
    with pytest.raises(InputError, match="properties must be a JSON object"):
        parse_event({"contact_id": "c1", "event": "purchase", "properties": properties}, clock.now())


@pytest.mark.parametrize("attributes", [[1], [("email", "a@example.com")], "email=a@example.com"])
def test_attributes_that_are_not_an_object_are_refused(runtime, attributes):
    with pytest.raises(InputError, match="attributes must be a JSON object"):
        Lifecycle(runtime).identify("c1", attributes)


def test_resume_of_a_channel_that_does_not_exist_names_the_channels(settings: Settings):
    line = one_error_line(lifecycle(settings, "resume", "pigeon"), "resume")
    assert line.startswith("lifecycle resume: no channel 'pigeon'; the channels are email, push, sms, webhook")
    result = lifecycle(settings, "resume", "sms")
    assert result.returncode == 0 and result.stdout == "channel sms was not paused\n"


@pytest.mark.parametrize("option", ["--days", "--speed"])
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_demo_refuses_a_days_or_speed_that_is_not_positive(settings: Settings, option: str, value: str):
    result = lifecycle(settings, "demo", f"{option}={value}")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"lifecycle demo: error: argument {option}: '{value}' is not")
    assert result.stdout == ""


# -- 5. the demo and the user's own messages in ./outbox -------------------------------------------

def run_demo(settings: Settings) -> tuple[subprocess.CompletedProcess, set[Path]]:
    """A short demo (a few hours of simulated time: the first welcomes and thank-yous), and the
    files its manifest lists."""
    result = lifecycle(settings, "demo", "--days", "0.2", "--speed", str(2 * 86400), "--quiet",
                       "--outbox", str(settings.outbox_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    comment, *listed = (settings.outbox_dir / MANIFEST).read_text().splitlines()
    assert comment.startswith("# ")
    return result, {settings.outbox_dir / line for line in listed}


@pytest.mark.integration
def test_the_demo_removes_only_the_messages_an_earlier_demo_wrote(settings: Settings):
    outbox = settings.outbox_dir
    # A message of the user's own `lifecycle run`, named as the outbox adapter names its files
    own = write(outbox / "email" / "zoe--customer-lifecycle--welcome--0123456789ab.eml", "the user's own message")
    _, first = run_demo(settings)
    assert own.read_text() == "the user's own message"
    assert first, "the demo wrote no message"
    assert set(outbox_files(outbox)) == first | {own}
    # The next demo removes the earlier demo's files (it may write some of them afresh), not the user's
    for path in first:
        path.write_text("left from the first demo")
    result, second = run_demo(settings)
    assert own.read_text() == "the user's own message"
    assert set(outbox_files(outbox)) == second | {own}
    assert all(path.read_text() != "left from the first demo" for path in second)
    # and its summary counts its own messages, not the user's
    emails = sum(path.parent.name == "email" for path in second)
    assert f"outbox: {outbox}/email ({emails} .eml)" in result.stdout


# -- 6. what the README promises about the demo ---------------------------------------------------

NUMBERS = {"nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15}


def test_the_readme_counts_the_demo_contacts_and_journeys_right():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"python3 dev\.py demo +# the demo: (\d+) contacts, the (\w+) shipped journeys", readme)
    assert found, "the README's quick start no longer describes the demo"
    assert int(found[1]) == len(load_population()["contacts"])
    shipped = [p for p in (ROOT / "journeys").glob("*.yaml") if not p.name.startswith("_")]
    assert NUMBERS[found[2]] == len(shipped)


# -- 7. inspect of a contact whose run has ended -------------------------------------------------------

THANKS = """\
journey: order-thanks
trigger:
  event: purchase
steps:
  - send: sms
    template: order-thanks
"""


def test_inspect_says_when_and_why_a_finished_run_ended(settings: Settings, runtime, make_engine, run_due, clock):
    # Given a triggered journey whose run ends after one text
    write(settings.journeys_dir / "order-thanks.yaml", THANKS)
    write(settings.templates_dir / "sms" / "order-thanks.en.txt", "Thanks for your order!")
    engine = make_engine()
    assert "order-thanks" in engine.journeys.journeys, [d.format() for d in engine.journeys.diagnostics]
    lc = Lifecycle(runtime)
    lc.identify("ana", {"phone": "+14155550100", "consent": {"sms": True}})
    lc.track("ana", "purchase", {"item": "shirt"})
    # When the run has sent its text and ended
    run_due(engine)
    [outcome] = [o for key, o in lc.history("ana").items() if key.startswith("order-thanks:")]
    assert outcome["state"] == "sent", outcome
    # Then inspect says that it finished, when and why, instead of "(none)"
    info = inspect_contact(runtime, "ana")
    assert info["journeys"]["order-thanks"]["ended_at"] == iso(clock.now())
    assert info["journeys"]["order-thanks"]["end_reason"] == "finished"
    assert f"  order-thanks: finished {iso(clock.now())} (finished)" in format_contact(info).splitlines()
    # and so does the command, in text and JSON
    assert f"  order-thanks: finished {iso(clock.now())} (finished)" in lifecycle(settings, "inspect", "ana").stdout
    journey = json.loads(lifecycle(settings, "inspect", "ana", "--json").stdout)["journeys"]["order-thanks"]
    assert (journey["stage"], journey["end_reason"]) == (None, "finished")


# -- 8. the unsubscribe page in the contact's language ---------------------------------------------

@pytest.fixture
def webhooks(runtime, serve_app) -> str:
    """The HTTP application served on a free port, as `lifecycle serve` serves it; its base URL."""
    return serve_app(create_app(runtime, env={})).url


@pytest.mark.parametrize("locale, lang, direction, question, button, done", [
    ("ru", "ru", "ltr", "Больше не получать от нас писем?", "Отписаться", "Вы отписались."),
    ("fa", "fa", "rtl", "آیا می‌خواهید دیگر ایمیل‌های ما را دریافت نکنید؟", "لغو اشتراک", "اشتراک شما لغو شد."),
    ("ru-RU", "ru", "ltr", "Больше не получать от нас писем?", "Отписаться", "Вы отписались."),
    ("de", "en", "ltr", "Stop receiving emails from us?", "Unsubscribe", "You are unsubscribed."),
])
def test_the_unsubscribe_page_speaks_the_contacts_language(runtime, settings, webhooks, locale, lang, direction,
                                                          question, button, done):
    Lifecycle(runtime).identify("c1", {"email": "c1@example.com", "locale": locale, "consent": {"email": True}})
    url = f"{webhooks}/unsubscribe?token={make_token(settings.secret, 'c1', 'email')}"
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.text.startswith(f'<!doctype html><html lang="{lang}" dir="{direction}">')
    assert f"<p>{question}</p>" in page.text
    assert f"<button type='submit'>{button}</button>" in page.text
    answer = requests.post(url, timeout=10)
    assert answer.status_code == 200
    assert answer.text.startswith(f'<!doctype html><html lang="{lang}" dir="{direction}">')
    assert f"<p>{done}</p>" in answer.text
    assert Lifecycle(runtime).contact("c1").attributes["consent"]["email"] is False
