"""The journeys a process serves, reloaded from disk while it runs.

Each file is loaded on its own. A file with errors is reported (with
`path:line:col`) and skipped; if an earlier version of it loaded fine, that
version keeps serving, so a bad edit never stops a journey that was working,
and never stops any other journey.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .diagnostics import Diagnostic, Severity, has_errors
from .journey import Journey
from .loader import Channels, TemplateCheck, check_template_files, display_path, load_journey

logger = logging.getLogger(__name__)
JOURNEY_SUFFIXES = (".yaml", ".yml")


def journey_files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in JOURNEY_SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found


@dataclass
class _Loaded:
    stamp: tuple[int, int]
    journey: Journey | None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def validate_paths(paths: Iterable[Path], channels: Channels, templates: TemplateCheck,
                   include_all_templates: bool = False) -> tuple[list[Journey], list[Diagnostic]]:
    """Check journey files (and, if asked, every template); every problem, not just the first."""
    journeys: list[Journey] = []
    diagnostics: list[Diagnostic] = []
    files = journey_files(paths)
    for path in files:
        if not path.exists():
            diagnostics.append(Diagnostic(display_path(path), 1, 1, "no such file or directory"))
            continue
        journey, found = load_journey(path, channels, templates)
        diagnostics.extend(found)
        if journey is not None:
            journeys.append(journey)
    diagnostics.extend(_duplicate_names(journeys))
    if include_all_templates:
        diagnostics.extend(check_template_files(templates))
    return journeys, _dedupe(diagnostics)


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: dict[tuple[str, int, int, str], Diagnostic] = {}
    for d in sorted(diagnostics, key=lambda d: (d.path, d.line, d.column, d.message)):
        seen.setdefault((d.path, d.line, d.column, d.message), d)
    return list(seen.values())


def _duplicate_names(journeys: list[Journey]) -> list[Diagnostic]:
    first: dict[str, Journey] = {}
    found = []
    for journey in journeys:
        if journey.name in first:
            found.append(Diagnostic(journey.path, 1, 1, f"journey name {journey.name!r} is already used by "
                                    f"{first[journey.name].path}", "journey names must be unique"))
        else:
            first[journey.name] = journey
    return found


class JourneyRegistry:
    def __init__(self, directory: Path, channels: Channels, templates: TemplateCheck,
                 reload_seconds: float = 2.0) -> None:
        self.directory = Path(directory)
        self.channels = channels
        self.templates = templates
        self.reload_seconds = reload_seconds
        self._files: dict[Path, _Loaded] = {}
        self._journeys: dict[str, Journey] = {}
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
        return [d for loaded in self._files.values() for d in loaded.diagnostics]

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
        current = {p: self._stamp(p) for p in journey_files([self.directory])} if self.directory.is_dir() else {}
        changed = set(self._files) - set(current)
        for path in changed:
            logger.warning("journey file %s was removed; its journey is no longer served", display_path(path))
            del self._files[path]
        for path, stamp in current.items():
            loaded = self._files.get(path)
            if loaded is not None and loaded.stamp == stamp:
                continue
            changed.add(path)
            journey, diagnostics = load_journey(path, self.channels, self.templates)
            for diagnostic in diagnostics:
                log = logger.error if diagnostic.severity is Severity.ERROR else logger.warning
                log("%s", diagnostic.format())
            if journey is None and loaded is not None and loaded.journey is not None:
                logger.error("%s has errors; still serving its last good version", display_path(path))
                journey = loaded.journey
            self._files[path] = _Loaded(stamp, journey, diagnostics)
        if changed or force:
            self._rebuild()
        return bool(changed)

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
