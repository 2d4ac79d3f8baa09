"""A local HTTP server that stands in for a provider's API in tests.

Subclass it, implement `handle()` to speak the provider's API (paths, authentication,
request bodies, status codes and error bodies as the provider documents them), and
point the real SDK at `url`. Tests script the next answers with `answer()` and read
what arrived in `requests`, and what the stand-in answered in `exchanges`.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass
class Response:
    status: int = 200
    body: Any = b""                      # bytes, str, or anything JSON-able
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0                   # seconds to wait before answering (timeouts)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Exchange:
    """One request and what became of it. `arrived` and `ended` number the stand-in's events in
    the order they happened (a logical clock, not a time), so tests can tell what came first."""

    request: Request
    arrived: int
    response: Response | None = None     # what the stand-in answered, once it did
    ended: int | None = None             # the event that ended it: the answer, or finding the client gone
    abandoned: bool = False              # the client hung up before its answer (a timeout)


class HTTPStandIn:
    """Records every request; answers from a script, else with `handle()`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.exchanges: list[Exchange] = []
        self._script: list[Response] = []
        self._lock = threading.Lock()
        self._events = 0
        self._closing = threading.Event()
        self._released = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()),
                                  self.rfile.read(length) if length else b"")
                exchange, response = stand_in._respond(request)
                if response.delay and not stand_in._hold(self.connection, response.delay):
                    stand_in._end(exchange, None)        # the client gave up, or the stand-in is closing
                    return
                body = response.encoded()
                stand_in._end(exchange, response)
                try:
                    self.send_response(response.status)
                    headers = {"Content-Type": "application/json", **response.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll interval: close() waits for the serving loop to notice, once per test.
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, *responses: Response) -> None:
        """The next requests get these answers, in order (then `handle()` again)."""
        with self._lock:
            self._script.extend(responses)

    def _respond(self, request: Request) -> tuple[Exchange, Response]:
        with self._lock:
            self.requests.append(request)
            self._events += 1
            exchange = Exchange(request, self._events)
            self.exchanges.append(exchange)
            scripted = self._script.pop(0) if self._script else None
        return exchange, scripted if scripted is not None else self.handle(request)

    def release(self) -> None:
        """Answer every request held back by a `delay` now, and later ones without their delay."""
        self._released.set()

    def _hold(self, connection: socket.socket, seconds: float) -> bool:
        """Wait `seconds` before answering; False if the client hung up first or the stand-in closes."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._released.is_set():
                return True
            if self._closing.wait(min(left, 0.02)):
                return False
            readable, _, _ = select.select([connection], [], [], 0)
            if readable:
                try:
                    gone = connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    return False
        return True

    def _end(self, exchange: Exchange, response: Response | None) -> None:
        with self._lock:
            self._events += 1
            exchange.ended = self._events
            exchange.response = response
            exchange.abandoned = response is None and not self._closing.is_set()

    def answered(self) -> list[Exchange]:
        """The exchanges the stand-in has answered so far, in the order they arrived."""
        with self._lock:
            return [e for e in self.exchanges if e.response is not None]

    def handle(self, request: Request) -> Response:
        """The provider's normal answer to a request; subclasses speak the provider's API."""
        return Response(200, {})

    def close(self) -> None:
        self._closing.set()                      # answers still held back are never sent
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "HTTPStandIn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
