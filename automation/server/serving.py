"""Running the HTTP application on uvicorn (httptools, uvloop), one or more processes.

uvicorn parses HTTP and supervises the worker processes; two things are added to its HTTP protocol:
a client must send its request headers within `LIFECYCLE_REQUEST_TIMEOUT_SECONDS` (uvicorn has no
such limit: a client dribbling headers would hold its connection forever), and a request the
parser refuses (a bad Content-Length, a broken request line) is answered with a JSON reason like
every other refusal. The body's own time limit is the application's (automation.server.bodies).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from automation.config import Settings

logger = logging.getLogger(__name__)
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_SECONDS = 5


def _response(status: str, code: str, message: str) -> bytes:
    body = json.dumps({"code": code, "message": message}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for request headers and JSON for parse errors."""

    header_timeout: float | None = None   # read from the settings once per process
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_response("400 Bad Request", "bad_request", f"malformed HTTP request: {msg}"))
            self.transport.close()

    def _arm(self) -> None:
        if Protocol.header_timeout is None:
            Protocol.header_timeout = Settings.from_env().request_timeout_seconds
        self._disarm()
        self._header_timer = self.loop.call_later(Protocol.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            message = f"the request headers did not arrive within {self.header_timeout:g} seconds"
            self.transport.write(_response("408 Request Timeout", "request_timeout", message))
            self.transport.close()


#: uvicorn's options for `lifecycle serve`; the application is built in each worker process from the environment.
OPTIONS: dict[str, Any] = {"factory": True, "http": "automation.server.serving:Protocol", "loop": "uvloop",
                           "log_config": None, "access_log": False, "timeout_keep_alive": KEEP_ALIVE_SECONDS,
                           "timeout_graceful_shutdown": 10, "server_header": False, "lifespan": "on"}
APP = "automation.server.app:create_app"


def serve(host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn supervises `workers` processes when more than one)."""
    logger.warning("lifecycle serve on http://%s:%d (%d worker process%s)", host, port, workers,
                   "" if workers == 1 else "es")
    uvicorn.run(APP, host=host, port=port, workers=workers, **OPTIONS)
