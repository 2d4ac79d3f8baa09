"""A local HTTP server that stands in for a provider's API in tests.

Subclass it, implement `handle()` to speak the provider's API (paths, authentication,
request bodies, status codes and error bodies as the provider documents them), and
point the real SDK at `url`. Tests script the next answers with `answer()` and read
what arrived in `requests`.
"""

from __future__ import annotations

import json
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


class HTTPStandIn:
    """Records every request; answers from a script, else with `handle()`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._script: list[Response] = []
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()),
                                  self.rfile.read(length) if length else b"")
                response = stand_in._respond(request)
                if response.delay:
                    time.sleep(response.delay)
                body = response.encoded()
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

    def _respond(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.pop(0) if self._script else None
        return scripted if scripted is not None else self.handle(request)

    def handle(self, request: Request) -> Response:
        """The provider's normal answer to a request; subclasses speak the provider's API."""
        return Response(200, {})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "HTTPStandIn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
