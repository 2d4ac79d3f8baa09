"""The HTTP application `lifecycle serve` runs (Starlette): ingest API, webhooks, metrics, health.

    POST /v1/identify /v1/track /v1/page /v1/screen /v1/alias /v1/batch
                                     Segment-compatible ingest (automation.server.ingest); a write
                                     key of scope `ingest` as the Basic user (automation.server.auth)
    POST /webhooks/sendgrid, /webhooks/twilio/status, /webhooks/twilio/inbound
    GET|POST /unsubscribe            provider webhooks and one-click unsubscribe (automation.server.webhooks)
    GET  /metrics                    Prometheus (automation.server.metrics); a key of scope `admin`
    GET  /healthz, /readyz           liveness and readiness (automation.server.health)
    GET  /openapi.yaml               the ingest API's OpenAPI document

Every refusal is a 4xx with a JSON body `{"code": ..., "message": ...}` (Segment's shape, so its
libraries show our reason); a bug is a 500 with the same shape, logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import date
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from automation.errors import InputError
from automation.logs import bind, ensure_format, unbind
from automation.insight.report import build_report
from automation.runtime import Runtime, open_runtime
from automation.secret import require_secret
from automation.server.auth import CHALLENGE, KeyCheck, Unauthorized
from automation.server.bodies import MAX_REQUEST_BYTES, parse_json, read_body
from automation.server.health import Health, journeys_check, redis_check, served_journeys
from automation.server.ingest import MAX_EVENT_BYTES, TYPES, Ingest
from automation.server.metrics import RedisCollector
from automation.server.webhooks import HTTPError, Request, WebhookApp

logger = logging.getLogger(__name__)
#: Provider webhooks carry up to a few thousand events (SendGrid batches them).
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024
#: The answer to a stored call, encoded once.
SUCCESS = b'{"success":true}'
CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         408: "request_timeout", 411: "length_required", 413: "too_large", 415: "unsupported_media_type",
         500: "internal_error", 503: "unavailable"}


def refusal(status: int, message: str, **more: Any) -> JSONResponse:
    return JSONResponse({"code": CODES.get(status, "error"), "message": message, **more}, status_code=status)


class RequestIds:
    """Each request gets an id (the caller's X-Request-Id, or a new one): in the response, and on
    every log line written while it is handled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        request_id = given.decode("latin-1")[:64] or os.urandom(12).hex()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode("latin-1")))
            await send(message)

        token = bind(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            unbind(token)


class Server:
    """The endpoints, over one runtime."""

    def __init__(self, runtime: Runtime, env: dict[str, str] | None = None) -> None:
        self.runtime = runtime
        settings = runtime.settings
        require_secret(settings, "lifecycle serve")
        self.timeout = settings.request_timeout_seconds
        self.ingest = Ingest(runtime)
        self.webhooks = WebhookApp(runtime, env)
        self.keys = KeyCheck(runtime)
        self.metrics = CollectorRegistry(auto_describe=False)
        self.metrics.register(RedisCollector(runtime))
        self._journeys: Any = None     # the journeys /report draws, loaded on its first request
        self.health = Health(ready={"redis": redis_check(settings), "journeys": journeys_check(settings)})

    def routes(self) -> list[Route]:
        webhook = self._webhook
        return [
            *[Route(f"/v1/{kind}", self._ingest(kind), methods=["POST"]) for kind in TYPES],
            Route("/v1/batch", self.batch, methods=["POST"]),
            Route("/webhooks/sendgrid", webhook(self.webhooks.sendgrid), methods=["POST"]),
            Route("/webhooks/twilio/status", webhook(self.webhooks.twilio_status), methods=["POST"]),
            Route("/webhooks/twilio/inbound", webhook(self.webhooks.twilio_inbound), methods=["POST"]),
            Route("/unsubscribe", webhook(self.webhooks.unsubscribe_page), methods=["GET"]),
            Route("/unsubscribe", webhook(self.webhooks.unsubscribe), methods=["POST"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/openapi.yaml", self.openapi, methods=["GET"]),
            Route("/report", self.report, methods=["GET"]),
            *self.health.routes(),
        ]

    async def authorize(self, request: HttpRequest, scope: str) -> None:
        header = request.headers.get("authorization")
        record = self.keys.cached(header)
        if record is None or not record.allows(scope):
            await run_in_threadpool(self.keys.require, header, scope)

    async def _json(self, request: HttpRequest, limit: int) -> tuple[Any, int]:
        """The body as JSON, and its size."""
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", "text/plain", ""):
            raise HTTPError("415 Unsupported Media Type", f"Content-Type {content_type!r}: send application/json")
        body = await read_body(request, limit, self.timeout)
        return parse_json(body), len(body)

    def _ingest(self, kind: str) -> Callable[[HttpRequest], Awaitable[Response]]:
        async def endpoint(request: HttpRequest) -> Response:
            await self.authorize(request, "ingest")
            message, _ = await self._json(request, MAX_EVENT_BYTES)     # the limit makes it one event's size
            await run_in_threadpool(self.ingest.one, kind, message)
            return Response(SUCCESS, media_type="application/json")

        return endpoint

    async def batch(self, request: HttpRequest) -> Response:
        await self.authorize(request, "ingest")
        body, size = await self._json(request, MAX_REQUEST_BYTES)
        outcome = await run_in_threadpool(self.ingest.batch, body, size)
        if outcome.rejected and not outcome.accepted:
            return refusal(400, "no message in the batch was accepted", rejected=outcome.rejected)
        return JSONResponse({"success": True, "accepted": outcome.accepted, "rejected": outcome.rejected})

    def _webhook(self, handler: Callable[[Request], tuple[str, str, bytes]]) -> Callable[..., Awaitable[Response]]:
        async def endpoint(request: HttpRequest) -> Response:
            body = await read_body(request, MAX_WEBHOOK_BYTES, self.timeout, require_length=False) \
                if request.method == "POST" else b""
            call = Request(body, dict(request.query_params),
                           {name.title(): value for name, value in request.headers.items()}, str(request.url))
            status, content_type, content = await run_in_threadpool(handler, call)
            return Response(content, status_code=int(status.split()[0]), media_type=content_type)

        return endpoint

    async def prometheus(self, request: HttpRequest) -> Response:
        await self.authorize(request, "admin")
        return Response(await run_in_threadpool(generate_latest, self.metrics), media_type=CONTENT_TYPE_LATEST)

    async def report(self, request: HttpRequest) -> Response:
        """`lifecycle report` as a page (admin keys only): it reads counters, never writes."""
        await self.authorize(request, "admin")
        journey = request.query_params.get("journey") or None
        since = request.query_params.get("since") or None
        return HTMLResponse(await run_in_threadpool(self._report, journey, since))

    def _report(self, journey: str | None, since: str | None) -> str:
        if self._journeys is None:
            self._journeys = served_journeys(self.runtime.settings, self.runtime)
        journeys = self._journeys.journeys
        if journey is not None and journey not in journeys:
            raise InputError(f"no journey {journey!r} is served")
        try:
            day = date.fromisoformat(since) if since else None
        except ValueError:
            raise InputError(f"since={since!r}: write a date as YYYY-MM-DD") from None
        return build_report(self.runtime, journeys, journey, day)

    async def openapi(self, request: HttpRequest) -> Response:
        return Response(openapi_document(), media_type="application/yaml")


def openapi_document() -> str:
    return (resources.files("automation.server") / "openapi.yaml").read_text()


async def _refused(request: HttpRequest, error: Exception) -> Response:
    if isinstance(error, HTTPError):
        logger.info("%s %s: %s", request.method, request.url.path, error.status)
        headers = CHALLENGE if isinstance(error, Unauthorized) else None
        response = refusal(error.code, error.message)
        if headers:
            response.headers.update(headers)
        return response
    if isinstance(error, InputError):
        return refusal(400, str(error))
    if isinstance(error, HTTPException):
        if error.status_code == 405:
            return refusal(405, f"{request.method} is not allowed here", )
        return refusal(error.status_code, "no such endpoint" if error.status_code == 404 else str(error.detail))
    if isinstance(error, ClientDisconnect):
        return Response(status_code=400)   # nobody is listening any more
    logger.exception("%s %s failed", request.method, request.url.path)
    return refusal(500, "internal error; it is logged")


def create_app(runtime: Runtime | None = None, env: dict[str, str] | None = None) -> Starlette:
    """The application (uvicorn calls this in each worker process; tests pass their runtime)."""
    ensure_format()
    server = Server(runtime or open_runtime(), env)
    handlers: dict[Any, Any] = {HTTPError: _refused, InputError: _refused, HTTPException: _refused,
                                ClientDisconnect: _refused, Exception: _refused}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        if runtime is None:
            # Our connections closed, the last process to leave an embedded Redis stops it.
            server.runtime.close()

    app = Starlette(routes=server.routes(), exception_handlers=handlers, lifespan=lifespan)
    app.add_middleware(RequestIds)
    app.state.server = server
    return app
