"""The timeline: the engine's activity stream as readable lines, one per thing that happened to a
contact, with the day on the journey clock it happened (`day 12.3`).

`lifecycle demo` prints it as its story plays, and `lifecycle run --timeline` for any journeys and
contacts, which with a fast clock (`LIFECYCLE_CLOCK_SPEED`) rehearses weeks of journeys in minutes.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Mapping, TextIO

from automation.runtime import Runtime

DAY = 86400.0


def latest_activity(runtime: Runtime) -> str:
    """The id of the newest activity entry ("0-0" when there is none): a timeline started from it
    shows only what happens from now on."""
    newest = runtime.redis.xrevrange(runtime.keys.activity, count=1)
    return newest[0][0] if newest else "0-0"


#: Activity kinds shown as one line from the entry's fields: s stage, j journey, p step, d detail.
PLAIN = {
    "enter": "-> enters stage '{s}'  ({d})",
    "start": "-> starts journey '{j}'  ({d})",
    "converted": "+  converts in '{j}'  ({d})",
    "resumed": "   stops waiting in '{j}': {d}",
    "end": "<- leaves journey '{j}'  ({d})",
    "cancelled": "x  cancelled pending step '{p}' (left '{s}')",
}


class Timeline:
    """Prints activity-stream entries as readable lines, with the simulated day."""

    def __init__(self, runtime: Runtime, origin: float, names: Mapping[str, str] | None = None,
                 out: TextIO = sys.stdout, quiet: bool = False, since: str = "0-0") -> None:
        self.runtime = runtime
        self.origin = origin
        self.names = names or {}
        self.out = out
        self.quiet = quiet
        self.last_id = since        # the activity entry after which to start ("0-0": all of them)
        self.counts: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.failures: list[str] = []

    def line(self, when: float, contact: str, text: str) -> None:
        if not self.quiet:
            day = (when - self.origin) / DAY
            print(f"day {day:5.1f}  {self.names.get(contact, contact):<16} {text}", file=self.out, flush=True)

    def poll(self, block_ms: int | None = 100) -> None:
        """Show what the activity stream has since the last poll; block_ms=None does not wait."""
        replies = self.runtime.redis.xread({self.runtime.keys.activity: self.last_id}, count=500, block=block_ms)
        for _, entries in replies or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                self._show(fields)

    def _show(self, f: dict[str, str]) -> None:
        kind, when, contact = f.get("k", ""), float(f.get("t", 0)), f.get("c", "")
        self.counts[kind] += 1
        step = f"{f.get('ch', '')} {f.get('p', '')}".strip()
        if kind in PLAIN:
            self.line(when, contact, PLAIN[kind].format(s=f.get("s"), j=f.get("j"), p=f.get("p"), d=f.get("d", "")))
        elif kind == "sent":
            self.sent[step] += 1
            detail = f.get("d", "")
            try:
                detail = str(Path(detail).resolve().relative_to(Path.cwd()))
            except ValueError:
                pass
            self.line(when, contact, f"   sent {step:<30} {detail}")
        elif kind == "skipped":
            self.skipped[f.get("d", "")] += 1
            self.line(when, contact, f"   skipped {step:<27} {f.get('d', '')}")
        elif kind in ("held", "deferred"):
            self.counts[f"{kind}:{f.get('ch', '')}"] += 1
            self.line(when, contact, f"   {kind} {step:<29} {f.get('d', '')}")
        elif kind in ("failed", "unknown", "retry"):
            self.failures.append(f"{contact} {step}: {f.get('d', '')}")
            self.line(when, contact, f"!  {kind} {step}: {f.get('d', '')}")
