"""`lifecycle plan`, `deploy` and `deploy --rollback`: which journey versions they are about.

The engine's side (what happens to waiting runs) is automation.engine.migration; this module
only finds the candidates: journey files, checked like `validate` does, or the previous deployed
version of journeys for a rollback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from automation.channels import ChannelRegistry
from automation.config import Settings
from automation.engine.migration import Candidate, Refused, Versions
from automation.errors import InputError
from automation.language.diagnostics import Diagnostic, Severity
from automation.language.loader import version_of
from automation.language.registry import validate_paths
from automation.messages.templates import Renderer, TemplateCatalog, TemplateCheck
from automation.runtime import Runtime
from automation.sandbox import RenderBudget
from automation.store import versions

#: Journeys recorded this close to the newest deployed one belong to the same deploy (rollback's default).
SAME_DEPLOY_SECONDS = 60.0


def file_candidates(settings: Settings, channels: ChannelRegistry,
                    paths: Iterable[Path]) -> tuple[list[Candidate], list[Diagnostic]]:
    """The journeys in these files (default: the journeys folder), checked as `validate` checks them."""
    catalog = TemplateCatalog(settings.templates_dir)
    check = TemplateCheck(catalog, Renderer(catalog, channels.parts_for, RenderBudget.of(settings)))
    paths = [Path(p) for p in paths] or [settings.journeys_dir]
    journeys, diagnostics = validate_paths(paths, channels.adapters, check)
    errors = [d for d in diagnostics if d.is_error]
    candidates = []
    for journey in journeys if not errors else []:
        try:
            text = Path(journey.path).read_text(encoding="utf-8")
        except OSError as exc:
            errors.append(Diagnostic(journey.path, 1, 1, f"cannot read the file again: {exc}"))
            continue
        if version_of(text) != journey.version:
            errors.append(Diagnostic(journey.path, 1, 1, "the file changed while it was checked",
                                     "run the command again"))
            continue
        candidates.append(Candidate(journey, text))
    return candidates, errors + [d for d in diagnostics if d.severity is not Severity.ERROR]


def removed_journeys(runtime: Runtime, candidates: Iterable[Candidate]) -> list[str]:
    """Deployed journeys with no file among the candidates (of the whole journeys folder): to retire."""
    files = {candidate.journey.name for candidate in candidates}
    return sorted(name for name in versions.pointers(runtime) if name not in files)


def rollback_candidates(runtime: Runtime, channels: ChannelRegistry,
                        names: Iterable[str]) -> tuple[list[Candidate], list[str]]:
    """The version before the deployed one of each named journey (default: the journeys of the latest
    deploy), and why journeys were left out (they have no earlier version: a journey new in that deploy)."""
    deployed = versions.deployed(runtime)
    names = list(names)
    if not names:
        if not deployed:
            raise Refused("nothing is deployed")
        newest = max(entry.at for entry in deployed.values())
        names = [name for name, entry in deployed.items() if newest - entry.at <= SAME_DEPLOY_SECONDS]
    cache = Versions(runtime, channels.adapters)
    candidates, skipped = [], []
    for name in names:
        if name not in deployed:
            raise InputError(f"journey {name!r} is not deployed (deployed: {', '.join(sorted(deployed)) or 'none'})")
        older = [entry for entry in versions.history(runtime, name) if entry.version != deployed[name].version]
        if not older:
            skipped.append(f"{name}: no earlier version to go back to; left at {deployed[name].version}")
            continue
        previous = older[0]
        text = versions.source(runtime, name, previous.version)
        journey = cache.journey(name, previous.version, previous.path)
        if text is None or journey is None:
            raise Refused(f"version {previous.version} of {name!r} can no longer be read")
        candidates.append(Candidate(journey, text))
    if not candidates:
        raise Refused("nothing to roll back: " + "; ".join(skipped))
    return candidates, skipped
