"""The Lua scripts that make multi-key changes atomic (see automation/lua/*.lua).

Scripts run by SHA. redis-py's `Script` objects ask Redis whether their scripts
exist (`SCRIPT EXISTS`) on every pipeline that uses them, an extra round trip per
batch; `run()` pipelines plain EVALSHA calls instead and loads the scripts only
when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH), re-running just
the calls that failed, which had done nothing.

The engine assumes one Redis primary (with replicas or Sentinel if you like):
scripts touch keys of many contacts at once, which Redis Cluster does not allow.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import Any, Sequence

import redis
from redis.exceptions import NoScriptError

NAMES = ("claim", "ack", "extend", "record_event", "identify", "apply", "mark", "settle", "rate", "delivery",
         "coupon_issue", "coupon_redeem", "anonymous_push", "anonymous_link", "migrate", "scan_runs")
#: Scripts share code by a line `--#include <name>`, replaced by lua/_<name>.lua.
INCLUDE = "--#include "

Call = tuple[str, Sequence[str], Sequence[Any]]


def _expand(text: str, folder: Any) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith(INCLUDE):
            lines.append((folder / f"_{line[len(INCLUDE):].strip()}.lua").read_text())
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


@functools.cache
def _sources() -> tuple[dict[str, str], dict[str, str]]:
    """The scripts' text and SHA1, read from the package once per process."""
    folder = resources.files("automation.store") / "lua"
    source = {name: _expand((folder / f"{name}.lua").read_text(), folder) for name in NAMES}
    return source, {name: hashlib.sha1(text.encode()).hexdigest() for name, text in source.items()}


class Scripts:
    """The engine's scripts, by name, for one Redis client (cheap to create: the text is shared)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.source, self.sha = _sources()

    def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script now."""
        return self.run([(name, keys, args)])[0]

    def run(self, calls: Sequence[Call]) -> list[Any]:
        """Run several scripts in one round trip; results in order. Errors other than NOSCRIPT raise."""
        if not calls:
            return []
        results = self._pipeline(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            self.load()
            for index, result in zip(missing, self._pipeline([calls[i] for i in missing]), strict=True):
                results[index] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def load(self) -> None:
        for text in self.source.values():
            self.client.script_load(text)

    def _pipeline(self, calls: Sequence[Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(self.sha[name], len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)
