"""Log output: readable lines, or one JSON object per line (`LIFECYCLE_LOG_FORMAT=json`).

A JSON line carries time, level, logger and message, and the ids that apply where it was logged:
`contact`, `journey`, `step` (passed with `extra=`), `request_id` (bound for the duration of an
HTTP request by `bound`). Every process sets this up the same way: the `lifecycle` command for
itself (`setup_logging`), and, for the processes others start (Dramatiq's worker processes,
uvicorn's), `ensure_format` when they import our code.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from types import MappingProxyType
from typing import Any, Iterator, Mapping

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The ids a JSON line carries when they apply.
FIELDS = ("contact", "journey", "step", "request_id")
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("lifecycle_log_context",
                                                                            default=MappingProxyType({}))


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # UTC, as the "Z" says

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in FIELDS:
            value = getattr(record, name, None) or _context.get().get(name)
            if value:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def wants_json() -> bool:
    return (os.environ.get("LIFECYCLE_LOG_FORMAT") or "text").strip().lower() == "json"


def formatter() -> logging.Formatter:
    return JsonFormatter() if wants_json() else logging.Formatter(TEXT_FORMAT)


def setup_logging(level: int) -> None:
    """This process logs to stderr at `level`, in the format LIFECYCLE_LOG_FORMAT asks for."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    os.environ["LIFECYCLE_LOG_LEVEL"] = logging.getLevelName(level)   # for the processes we start


def ensure_format() -> None:
    """In a process someone else set logging up for: our format on its handlers (or ours, if none)."""
    root = logging.getLogger()
    if not root.handlers:
        setup_logging(logging.getLevelName(os.environ.get("LIFECYCLE_LOG_LEVEL") or "WARNING"))
        return
    if wants_json():
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Log lines written inside the block (in this thread or task) carry these ids."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def bind(**fields: str) -> contextvars.Token:
    """`bound` without the context manager, for a hot path; undo with `unbind(token)`."""
    return _context.set({**_context.get(), **fields})


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)
