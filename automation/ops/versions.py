"""Journey files as they are in another version: a git ref (read with `git show`), a folder, or
the versions deployed in Redis (`deployed`).

`lifecycle forecast --against` compares the forecast of the journeys in hand with another
version's; this module only fetches that version's files into a folder of its own.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from automation.errors import InputError
from automation.runtime import Runtime
from automation.store import versions

JOURNEY_SUFFIXES = (".yaml", ".yml")


def journeys_at(ref: str, journeys_dir: Path) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    """The folder holding the journey files of `ref`: `ref` itself if it is a folder, else a
    temporary folder (returned too, to be cleaned up) with the files of `journeys_dir` at that git ref."""
    folder = Path(ref)
    if folder.is_dir():
        return folder, None
    directory = Path(journeys_dir).resolve()
    top = _git(directory, "rev-parse", "--show-toplevel").strip()
    if not top:
        raise InputError(f"--against {ref}: not a folder, and {journeys_dir} is not in a git repository")
    root = Path(top).resolve()
    try:
        relative = directory.relative_to(root).as_posix()
    except ValueError:
        raise InputError(f"--against {ref}: {journeys_dir} is not inside the git repository {root}") from None
    # Run from the top: there `<ref>:<path>` names the path from the repository's root.
    listed = _git(root, "ls-tree", "-r", "--name-only", f"{ref}:{relative}" if relative != "." else ref)
    temporary = tempfile.TemporaryDirectory(prefix="lifecycle-against-")
    target = Path(temporary.name)
    for name in listed.splitlines():
        if not name.endswith(JOURNEY_SUFFIXES):
            continue
        path = f"{relative}/{name}" if relative != "." else name
        text = _git(root, "show", f"{ref}:{path}")
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text, encoding="utf-8")
    return target, temporary


def deployed_journeys(runtime: Runtime, journeys_dir: Path) -> tuple[Path, tempfile.TemporaryDirectory[str]]:
    """A temporary folder with the journey files as deployed (what `lifecycle deploy`, or a worker's
    automatic reload, recorded), beside this checkout's shared files (`_contact.yaml`,
    `_workspace.yaml`), which have no versions of their own."""
    sources = versions.deployed_sources(runtime)
    if not sources:
        raise InputError("--against deployed: no journey version is recorded yet "
                         "(`lifecycle deploy` records them, or a worker when it loads the journeys)")
    temporary = tempfile.TemporaryDirectory(prefix="lifecycle-deployed-")
    target = Path(temporary.name)
    for shared in sorted(Path(journeys_dir).glob("_*")):
        if shared.suffix in JOURNEY_SUFFIXES:
            (target / shared.name).write_text(shared.read_text(encoding="utf-8"), encoding="utf-8")
    for journey, (entry, text) in sorted(sources.items()):
        name = Path(entry.path).name if entry.path.endswith(JOURNEY_SUFFIXES) else f"{journey}.yaml"
        (target / name).write_text(text, encoding="utf-8")
    return target, temporary


def _git(directory: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"git {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise InputError(f"git {' '.join(args)}: {message}")
    return done.stdout
