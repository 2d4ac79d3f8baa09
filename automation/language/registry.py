"""The journeys a process serves, reloaded from disk while it runs.

Each file is loaded on its own. A file with errors is reported (with
`path:line:col`) and skipped; if an earlier version of it loaded fine, that
version keeps serving, so a bad edit never stops a journey that was working,
and never stops any other journey.

With `LIFECYCLE_DEPLOY=required` the journeys come from Redis instead of the folder: the
versions `lifecycle deploy` recorded (a `Deployed` source, store/versions.py), polled as often as
files would be.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

from automation.language.crosscheck import check_journeys
from automation.language.diagnostics import Diagnostic, Severity, has_errors
from automation.language.journey import Journey
from automation.language.loader import Channels, check_template_files, display_path, load_journey, read_journey
from automation.language.sources import FILE_NAME as SOURCES_FILE
from automation.language.sources import Sources, load_sources
from automation.language.workspace import DEFAULT as DEFAULT_WORKSPACE
from automation.language.workspace import FILE_NAME as WORKSPACE_FILE
from automation.language.workspace import Workspace, load_workspace
from automation.messages.templates import TemplateCheck

logger = logging.getLogger(__name__)
JOURNEY_SUFFIXES = (".yaml", ".yml")


def journey_files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            # Files starting with "_" are not journeys (journeys/_contact.yaml lists what sources send).
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in JOURNEY_SUFFIXES and p.is_file()
                                and not p.name.startswith("_")))
        else:
            found.append(path)
    return found


def context_folders(paths: Iterable[Path]) -> list[Path]:
    """The folders whose journeys give the named paths their context: each folder named, and the
    folder of each file named. A path that does not exist has none: it is reported as missing,
    and its parent (`/` for `/nonexistent`) must not be scanned."""
    folders: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            folders.append(path.parent)
    return list(dict.fromkeys(folders))


class Deployed(Protocol):
    """Where a registry serving only deployed versions finds them."""

    def pointers(self) -> dict[str, str]:
        """Journey -> its deployed version."""

    def source(self, journey: str, version: str) -> tuple[str, str] | None:
        """(path it came from, text) of a version."""


@dataclass
class _Loaded:
    stamp: object                   # (mtime, size) of a file; the version of a deployed journey
    journey: Journey | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    text: str | None = None         # what it was read from


def validate_paths(paths: Iterable[Path], channels: Channels, templates: TemplateCheck,
                   include_all_templates: bool = False) -> tuple[list[Journey], list[Diagnostic]]:
    """Check journey files (and, if asked, every template); every problem, not just the first.

    The other journeys in the same folders are loaded too, without reporting on them, so
    that a file's references to them (stage triggers, scores) can be checked. A file with
    errors takes part in these checks with what could be read of it, so its misspelt event
    is told beside its other errors, not after they are fixed.
    """
    journeys: list[Journey] = []
    context: list[Journey] = []     # the journeys above, and what could be read of files with errors
    diagnostics: list[Diagnostic] = []
    paths = [Path(p) for p in paths]
    files = journey_files(paths)
    folders = context_folders(paths)
    sources: Sources | None = None
    for folder in folders:
        if (folder / SOURCES_FILE).is_file():
            sources, found = load_sources(folder)
            diagnostics.extend(found)
            break
    workspace = DEFAULT_WORKSPACE
    for folder in folders:
        if (folder / WORKSPACE_FILE).is_file():
            workspace, found = load_workspace(folder)
            diagnostics.extend(found)
            break
    for path in files:
        if not path.exists():
            diagnostics.append(Diagnostic(display_path(path), 1, 1, "no such file or directory"))
            continue
        journey, found = read_journey(path, channels, templates, sources, workspace.timezone)
        diagnostics.extend(found)
        if journey is not None:
            context.append(journey)
            if not has_errors(found):
                journeys.append(journey)
    reported = {j.path for j in context}
    checked = {p.resolve() for p in files}
    for path in journey_files(folders):
        if path.resolve() not in checked:
            journey, _ = read_journey(path, channels, templates, sources, workspace.timezone)
            if journey is not None:
                context.append(journey)
    diagnostics.extend(d for d in check_journeys(context, sources) if d.path in reported)
    if include_all_templates:
        diagnostics.extend(check_template_files(templates))
    return journeys, _dedupe(diagnostics)


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: dict[tuple[str, int, int, str], Diagnostic] = {}
    for d in sorted(diagnostics, key=lambda d: (d.path, d.line, d.column, d.message)):
        seen.setdefault((d.path, d.line, d.column, d.message), d)
    return list(seen.values())


class JourneyRegistry:
    def __init__(self, directory: Path, channels: Channels, templates: TemplateCheck,
                 reload_seconds: float = 2.0, deployed: Deployed | None = None) -> None:
        self.directory = Path(directory)
        self.deployed = deployed
        self.channels = channels
        self.templates = templates
        self.reload_seconds = reload_seconds
        self._files: dict[Path, _Loaded] = {}
        self._journeys: dict[str, Journey] = {}
        self._sources: tuple[tuple[int, int] | None, Sources | None] = (None, None)
        self._workspace: tuple[object, Workspace] = ("never loaded", DEFAULT_WORKSPACE)
        self.workspace_diagnostics: list[Diagnostic] = []
        self.cross_diagnostics: list[Diagnostic] = []
        #: Called with the new journeys whenever they change (the engine arms broadcast timers).
        self.on_change: list[Callable[[dict[str, Journey]], None]] = []
        self._checked_at = 0.0
        self._lock = threading.Lock()  # worker threads share one registry
        self.refresh(force=True)

    @property
    def journeys(self) -> dict[str, Journey]:
        self.refresh()
        return self._journeys

    def get(self, name: str) -> Journey | None:
        return self.journeys.get(name)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [d for loaded in self._files.values() for d in loaded.diagnostics] + self.cross_diagnostics \
            + self.workspace_diagnostics

    @property
    def sources(self) -> Sources | None:
        return self._sources[1]

    @property
    def workspace(self) -> Workspace:
        """The guardrails every journey shares (journeys/_workspace.yaml, or the defaults)."""
        self.refresh()
        return self._workspace[1]

    def refresh(self, force: bool = False) -> bool:
        """Reload changed files (at most every `reload_seconds`); True if anything changed."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.reload_seconds:
            return False
        with self._lock:
            if not force and now - self._checked_at < self.reload_seconds:
                return False
            self._checked_at = now
            return self._reload(force)

    def _reload(self, force: bool) -> bool:
        self.templates.catalog.refresh()
        self._reload_workspace()
        sources_path = self.directory / SOURCES_FILE
        sources_stamp = self._stamp(sources_path) if sources_path.is_file() else None
        sources_changed = sources_stamp != self._sources[0]
        if sources_changed:
            sources, problems = load_sources(self.directory)
            for diagnostic in problems:
                logger.error("%s", diagnostic.format())
            self._sources = (sources_stamp, sources)
            self._files.clear()   # every journey is checked against it: load them all again
        current = self._current()
        changed = set(self._files) - set(current)
        for path in changed:
            logger.warning("journey %s was removed; its journey is no longer served", display_path(path))
            del self._files[path]
        for path, stamp in current.items():
            loaded = self._files.get(path)
            if loaded is not None and loaded.stamp == stamp:
                continue
            found = self._text(path, stamp)
            if found is None:
                continue
            changed.add(path)
            source_path, text = found
            journey, diagnostics = load_journey(source_path, self.channels, self.templates, self.sources,
                                                self._workspace[1].timezone, text=text)
            for diagnostic in diagnostics:
                log = logger.error if diagnostic.severity is Severity.ERROR else logger.warning
                log("%s", diagnostic.format())
            if journey is None and loaded is not None and loaded.journey is not None:
                logger.error("%s has errors; still serving its last good version", display_path(path))
                journey, text = loaded.journey, loaded.text
            self._files[path] = _Loaded(stamp, journey, diagnostics, text)
        if changed or force:
            self._rebuild()
        return bool(changed)

    def _current(self) -> dict[Path, object]:
        if self.deployed is not None:
            try:
                return {Path(name): version for name, version in self.deployed.pointers().items()}
            except Exception:  # Redis unreachable for a moment: keep serving what is loaded
                logger.warning("cannot read the deployed journey versions; serving the loaded ones", exc_info=True)
                return {path: loaded.stamp for path, loaded in self._files.items()}
        return {p: self._stamp(p) for p in journey_files([self.directory])} if self.directory.is_dir() else {}

    def _text(self, path: Path, stamp: object) -> tuple[Path, str | None] | None:
        """(path, text) of a journey to load; text None: the loader reports why it cannot be read."""
        if self.deployed is not None:
            found = self.deployed.source(path.name, str(stamp))
            return (Path(found[0]), found[1]) if found else None
        try:
            return path, path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return path, None

    def text_of(self, name: str) -> str | None:
        """The text the served version of a journey was read from."""
        for loaded in self._files.values():
            if loaded.journey is not None and loaded.journey.name == name:
                return loaded.text
        return None

    def _rebuild(self) -> None:
        journeys: dict[str, Journey] = {}
        for path in sorted(self._files):
            journey = self._files[path].journey
            if journey is None:
                continue
            if journey.name in journeys:
                logger.error("%s: journey name %r is already used by %s; this file is not served",
                             display_path(path), journey.name, journeys[journey.name].path)
                continue
            journeys[journey.name] = journey
        self._journeys = journeys
        self.cross_diagnostics = check_journeys(journeys.values(), self.sources)
        for diagnostic in self.cross_diagnostics:
            log = logger.error if diagnostic.severity is Severity.ERROR else logger.warning
            log("%s", diagnostic.format())
        for callback in self.on_change:
            try:
                callback(journeys)
            except Exception:  # Redis down at reload time: the next reload tries again
                logger.exception("journey change hook failed")

    def _reload_workspace(self) -> None:
        path = self.directory / WORKSPACE_FILE
        stamp = self._stamp(path) if path.is_file() else None
        if stamp == self._workspace[0]:
            return
        workspace, problems = load_workspace(self.directory)
        for diagnostic in problems:
            log = logger.error if diagnostic.severity is Severity.ERROR else logger.warning
            log("%s", diagnostic.format())
        if has_errors(problems) and self._workspace[0] != "never loaded":
            logger.error("%s has errors; still serving its last good version", display_path(path))
        else:
            if workspace.timezone != self._workspace[1].timezone:
                self._files.clear()     # journeys without a zone of their own take the workspace's
            self._workspace = (stamp, workspace)
        self.workspace_diagnostics = problems

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        info = os.stat(path)
        return (info.st_mtime_ns, info.st_size)

    @property
    def has_errors(self) -> bool:
        return has_errors(self.diagnostics)

    @property
    def failed_files(self) -> list[Path]:
        """Files with errors and no good version: their journeys are not served."""
        return [path for path, loaded in self._files.items() if loaded.journey is None]
