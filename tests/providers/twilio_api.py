"""A local Twilio REST API (Programmable Messaging), for driving the real `twilio` SDK in tests.

Speaks `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` as documented: HTTP basic
auth with the account SID and auth token (401 with error 20003 otherwise), a form-encoded
body (To, From or MessagingServiceSid, Body, StatusCallback), 201 with a Message resource
(sid "SM" + 32 hex digits, status "queued", or "accepted" through a Messaging Service), and
Twilio's error bodies: `{"code", "message", "more_info", "status"}`. Numbers can be set up
to behave like real ones: `stopped` (the recipient replied STOP: 21610) and `landlines`
(21614).
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from automation.messages.sms import segments
from automation.testing import HTTPStandIn, Request, Response

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f" * 32
MESSAGING_SERVICE_SID = "MG" + "fedcba9876543210" * 2
SENDER = "+15005550006"

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def twilio_error(code: int, message: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
    """An error answer exactly as Twilio's REST API shapes it."""
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    return Response(status, body, dict(headers or {}))


class TwilioStandIn(HTTPStandIn):
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.accepted: list[dict[str, str]] = []     # the form of every message answered with 201, plus its Sid
        self.stopped: set[str] = set()               # recipients who replied STOP to our sender
        self.landlines: set[str] = set()             # numbers that cannot receive SMS

    # -- the API ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        match = MESSAGES_PATH.match(request.path)
        if not match:
            return twilio_error(20404, f"The requested resource {request.path} was not found", 404)
        if not self._authenticated(request):
            return twilio_error(20003, "Authenticate", 401, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if match["sid"] != self.account_sid:
            return twilio_error(20404, f"The requested resource {request.path} was not found", 404)
        if request.method != "POST":
            return twilio_error(20004, "Method not allowed", 405)
        form = {name: values[-1] for name, values in request.form().items()}
        problem = self.validate(form)
        if problem:
            return problem
        message = self.message(form)
        self.accepted.append({**form, "Sid": message["sid"]})
        return Response(201, message)

    def _authenticated(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            sid, _, token = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return sid == self.account_sid and token == self.auth_token

    def validate(self, form: dict[str, str]) -> Response | None:
        to = form.get("To", "")
        if not to:
            return twilio_error(21604, "A 'To' phone number is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return twilio_error(21603, "A 'From' phone number is required.")
        sender = form.get("From", "")
        if sender and not (E164.match(sender) or re.fullmatch(r"[A-Za-z0-9 ]{1,11}", sender)):
            return twilio_error(21212, f"The 'From' number {sender} is not a valid phone number, shortcode, "
                                       "or alphanumeric sender ID.")
        service = form.get("MessagingServiceSid", "")
        if service and not re.fullmatch(r"MG[0-9a-fA-F]{32}", service):
            return twilio_error(21705, "The Messaging Service Sid is invalid.")
        if not form.get("Body"):
            return twilio_error(21602, "Message body is required.")
        if len(form["Body"]) > 1600:
            return twilio_error(21617, "The concatenated message body exceeds the 1600 character limit.")
        callback = form.get("StatusCallback")
        if callback and not (urlsplit(callback).scheme in ("http", "https") and urlsplit(callback).netloc):
            return twilio_error(21609, "Invalid StatusCallback url")
        if not E164.match(to):
            return twilio_error(21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.landlines:
            return twilio_error(21614, f"'To' number {to} is not a valid mobile number")
        if to in self.stopped:
            return twilio_error(21610, "Attempt to send to unsubscribed recipient")
        return None

    def message(self, form: dict[str, str]) -> dict[str, Any]:
        """The Message resource Twilio answers with; through a Messaging Service, the sender
        is not chosen yet (from and num_segments are not known)."""
        sid = "SM" + secrets.token_hex(16)
        now = formatdate(time.time(), usegmt=True).replace("GMT", "+0000")
        service = form.get("MessagingServiceSid")
        pooled = service and not form.get("From")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": None if pooled else form["From"],
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": "0" if pooled else str(segments(form["Body"])[1]),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }

    # -- the kit's ProviderScript -----------------------------------------------------------------

    def accept(self) -> None:
        """The next message is accepted (the default answer)."""

    def fail_temporarily(self) -> None:
        self.answer(twilio_error(20429, "Too Many Requests", 429))

    def reject(self) -> None:
        self.answer(twilio_error(21211, "The 'To' number +15005550001 is not a valid phone number."))

    def refuse_credentials(self) -> None:
        self.answer(twilio_error(20003, "Authenticate", 401, {"WWW-Authenticate": 'Basic realm="Twilio API"'}))

    def hang(self, seconds: float) -> None:
        self.answer(Response(201, {"sid": "SM" + "0" * 32, "status": "queued"}, delay=seconds))

    def delivered(self) -> list[dict[str, str]]:
        return list(self.accepted)
