"""Mistakes a new user makes at the command line: each gets one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from automation.config import Settings
from automation.language.registry import context_folders


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
    assert result.stdout == "elsewhere/missing.yaml:1:1: no such file or directory\n"
    assert result.stderr == "1 error(s)\n"


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
