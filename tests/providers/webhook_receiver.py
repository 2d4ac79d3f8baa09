"""A webhook receiver (a CRM, a sales alert endpoint) that checks our signature."""

from __future__ import annotations

from typing import Any

from automation.channels.webhook import KEY_HEADER, SIGNATURE_HEADER, verify_signature
from automation.testing import HTTPStandIn, Request, Response

SECRET = "whsec-test-0123456789"


class WebhookReceiver(HTTPStandIn):
    def __init__(self, secret: str = SECRET) -> None:
        super().__init__()
        self.secret = secret
        self.received: list[Request] = []
        self.seen_keys: set[str] = set()

    def handle(self, request: Request) -> Response:
        if not verify_signature(self.secret, request.headers.get(SIGNATURE_HEADER, ""), request.body):
            return Response(401, {"error": "bad signature"})
        key = request.headers.get(KEY_HEADER, "")
        if key not in self.seen_keys:   # a well-behaved receiver deduplicates on the key
            self.seen_keys.add(key)
            self.received.append(request)
        return Response(200, {"ok": True})

    # -- the kit's ProviderScript ---------------------------------------------------------------

    def accept(self) -> None:
        """The next request is accepted (the default)."""

    def fail_temporarily(self) -> None:
        self.answer(Response(503, {"error": "maintenance"}, {"Retry-After": "12"}))

    def reject(self) -> None:
        self.answer(Response(422, {"error": "unknown lead"}))

    def refuse_credentials(self) -> None:
        self.answer(Response(403, {"error": "forbidden"}))

    def hang(self, seconds: float) -> None:
        self.answer(Response(200, {"ok": True}, delay=seconds))

    def delivered(self) -> list[Any]:
        return list(self.received)
