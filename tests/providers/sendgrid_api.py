"""A local SendGrid v3 Mail Send API, for driving the real `sendgrid` SDK in tests.

Speaks `POST /v3/mail/send` as documented: bearer API key (401 otherwise), request
validation (from, personalizations 1..1000 with recipients, subject and content
unless a dynamic template is used, string custom_args, at most 10 categories),
202 with an X-Message-Id header, 200 with no body in sandbox mode, SendGrid's error
bodies, and 429 with X-RateLimit-Reset.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from automation.testing import HTTPStandIn, Request, Response

API_KEY = "SG.test-key.0123456789abcdefghijklmnopqrstuvwxyz"


def errors(*messages: tuple[str, str | None]) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": None} for message, field in messages]}


class SendGridStandIn(HTTPStandIn):
    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.accepted: list[dict[str, Any]] = []   # one item per personalization that was accepted
        self.rejected_addresses: set[str] = set()   # recipients SendGrid refuses (400)

    # -- the API ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return Response(404, errors(("not found", None)))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return Response(401, errors(("The provided authorization grant is invalid, expired, or revoked", None)))
        body = request.json()
        problems = self.validate(body)
        if problems:
            return Response(400, errors(*problems))
        if body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            return Response(200, b"", {"Content-Type": "text/plain"})
        self.accept_body(body)
        return Response(202, b"", {"X-Message-Id": secrets.token_urlsafe(16)[:22], "Content-Type": "text/plain"})

    def validate(self, body: Any) -> list[tuple[str, str | None]]:
        problems: list[tuple[str, str | None]] = []
        if not isinstance(body, dict):
            return [("The request body must be a JSON object", None)]
        if not body.get("from", {}).get("email"):
            problems.append(("The from object must be provided for every email send.", "from"))
        personalizations = body.get("personalizations") or []
        if not 1 <= len(personalizations) <= 1000:
            problems.append(("The personalizations field is required and must have at least one personalization "
                             "and at most 1000.", "personalizations"))
        templated = bool(body.get("template_id"))
        for index, personalization in enumerate(personalizations):
            recipients = personalization.get("to") or []
            if not recipients or not all(r.get("email") and "@" in r["email"] for r in recipients):
                problems.append(("Does not contain a valid address.", f"personalizations.{index}.to"))
            for recipient in recipients:
                if recipient.get("email") in self.rejected_addresses:
                    problems.append(("Does not contain a valid address.", f"personalizations.{index}.to.0.email"))
            if not templated and not (personalization.get("subject") or body.get("subject")):
                problems.append(("The subject is required.", f"personalizations.{index}.subject"))
            args = personalization.get("custom_args", {})
            if not all(isinstance(v, str) for v in args.values()):
                problems.append(("Custom args values must be strings.", f"personalizations.{index}.custom_args"))
        if not templated:
            content = body.get("content") or []
            if not content or content[0].get("type") != "text/plain" and any(c.get("type") == "text/plain"
                                                                               for c in content):
                problems.append(("The content value must be provided, with text/plain first.", "content"))
        if len(body.get("categories", [])) > 10:
            problems.append(("Too many categories. Maximum number is 10.", "categories"))
        return problems

    def accept_body(self, body: dict[str, Any]) -> None:
        for personalization in body["personalizations"]:
            self.accepted.append({**body, "personalization": personalization})

    # -- the kit's ProviderScript -----------------------------------------------------------------

    def accept(self) -> None:
        """The next message is accepted (the default answer)."""

    def fail_temporarily(self) -> None:
        self.answer(Response(429, errors(("too many requests", None)),
                             {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                              "X-RateLimit-Reset": str(int(time.time()) + 2)}))

    def reject(self) -> None:
        self.answer(Response(400, errors(("Does not contain a valid address.", "personalizations.0.to.0.email"))))

    def refuse_credentials(self) -> None:
        self.answer(Response(403, errors(("access forbidden", None))))

    def hang(self, seconds: float) -> None:
        self.answer(Response(202, b"", {"X-Message-Id": "late"}, delay=seconds))

    def delivered(self) -> list[dict[str, Any]]:
        return list(self.accepted)
