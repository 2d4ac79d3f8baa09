"""A stand-in for Firebase Cloud Messaging (HTTP v1) and Google's OAuth2 token endpoint.

It speaks the documented API: `POST /v1/projects/{project}/messages:send` with a bearer
token, the message validated as FCM does (one token, notification title/body strings,
data values strings, no reserved data keys, 4 KB payload), answers and error bodies in
FCM's format ({"error": {"code", "message", "status", "details": [FcmError ...]}}), and
device tokens that are dead (404 UNREGISTERED), foreign (403 SENDER_ID_MISMATCH) or
malformed (400 INVALID_ARGUMENT). `POST /token` is the token endpoint a service account's
`token_uri` points at: google-auth posts a signed JWT assertion there, which is checked
against the public keys the test trusts, and gets an access token FCM then accepts.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from typing import Any

from automation.testing.standin import HTTPStandIn, Request, Response

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TOKEN_PATH = "/token"
#: The audience of every service-account assertion, wherever its token_uri points.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options",
                  "token", "topic", "condition"}
NOTIFICATION_FIELDS = {"title", "body", "image"}
MAX_PAYLOAD = 4096
SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")


def fcm_error(status: int, grpc_status: str, message: str, error_code: str | None = None,
              violations: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """An error body as FCM v1 sends it."""
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": FCM_ERROR, "errorCode": error_code})
    if violations:
        details.append({"@type": BAD_REQUEST,
                        "fieldViolations": [{"field": f, "description": d} for f, d in violations]})
    error: dict[str, Any] = {"code": status, "message": message, "status": grpc_status}
    if details:
        error["details"] = details
    return {"error": error}


UNREGISTERED = fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
UNAUTHENTICATED = fcm_error(
    401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential.")
UNAVAILABLE = fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")


class FCMStandIn(HTTPStandIn):
    """FCM for one project. Accepts `access_token` and every token minted by `/token`."""

    def __init__(self, project: str = "lifecycle-test", access_token: str = "test-access-token") -> None:
        super().__init__()
        self.project = project
        self.access_tokens: set[str] = {access_token}
        self.dead_tokens: set[str] = set()        # uninstalled apps: 404 UNREGISTERED
        self.foreign_tokens: set[str] = set()     # another project's devices: 403 SENDER_ID_MISMATCH
        self.malformed_tokens: set[str] = set()   # not FCM tokens at all: 400 INVALID_ARGUMENT
        self.token_lifetime = 3600                # expires_in of minted access tokens
        self.trusted_keys: dict[str, str] = {}    # service-account email -> public key PEM
        self._delivered: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._minted = itertools.count(1)
        self._state = threading.Lock()

    # -- the ProviderScript the adapter kit drives ---------------------------------------------

    def accept(self) -> None:
        """Valid messages to live tokens are accepted anyway; nothing to script. (A scripted
        200 would skip the validation that proves the adapter's request is right.)"""

    def fail_temporarily(self) -> None:
        self.answer(Response(503, UNAVAILABLE))

    def reject(self) -> None:
        self.answer(Response(404, UNREGISTERED))

    def refuse_credentials(self) -> None:
        self.answer(Response(401, UNAUTHENTICATED,
                             headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}))

    def hang(self, seconds: float) -> None:
        self.answer(Response(503, UNAVAILABLE, delay=seconds))

    def delivered(self) -> list[dict[str, Any]]:
        """The `message` of every request answered 200, in the order they were accepted."""
        with self._state:
            return list(self._delivered)

    # -- what tests read -----------------------------------------------------------------------

    def token_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == TOKEN_PATH]

    def send_requests(self) -> list[Request]:
        return [r for r in self.requests if SEND_PATH.fullmatch(r.path)]

    def trust(self, client_email: str, public_key_pem: str) -> None:
        """Accept JWT assertions signed by this service account's key."""
        self.trusted_keys[client_email] = public_key_pem

    # -- the API -------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == TOKEN_PATH and request.method == "POST":
            return self._token(request)
        match = SEND_PATH.fullmatch(request.path)
        if not match or request.method != "POST":
            return Response(404, fcm_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found."))
        authorization = _header(request, "Authorization")
        scheme, _, bearer = authorization.partition(" ")
        if scheme.lower() != "bearer" or bearer not in self.access_tokens:
            return Response(401, UNAUTHENTICATED)
        if match.group(1) != self.project:
            return Response(403, fcm_error(
                403, "PERMISSION_DENIED", f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{match.group(1)}' (or it may not exist)."))
        try:
            body = request.json()
        except ValueError:
            return Response(400, fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.",
                                           violations=[("", "Invalid JSON payload received.")]))
        problem = _invalid(body)
        if problem is not None:
            return Response(400, problem)
        message = body["message"]
        token = message["token"]
        if token in self.malformed_tokens:
            return Response(400, fcm_error(400, "INVALID_ARGUMENT",
                                           "The registration token is not a valid FCM registration token",
                                           "INVALID_ARGUMENT"))
        if token in self.dead_tokens:
            return Response(404, UNREGISTERED)
        if token in self.foreign_tokens:
            return Response(403, fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"))
        with self._state:
            name = f"projects/{self.project}/messages/0:{next(self._ids)}%stand-in"
            self._delivered.append(message)
        return Response(200, {"name": name})

    def _token(self, request: Request) -> Response:
        """Google's OAuth2 token endpoint for the JWT-bearer grant (RFC 7523)."""
        from google.auth import exceptions, jwt

        form = request.form()
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] or not form.get("assertion"):
            return Response(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        assertion = form["assertion"][0]
        try:
            key = self.trusted_keys.get(str(jwt.decode(assertion, verify=False).get("iss")))
        except (ValueError, exceptions.GoogleAuthError):
            key = None
        if key is None:   # an unknown, deleted or disabled key
            return Response(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        try:
            claims = jwt.decode(assertion, certs=key, audience=GOOGLE_TOKEN_AUDIENCE)
        except (ValueError, exceptions.GoogleAuthError) as exc:
            return Response(400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"})
        if SCOPE not in str(claims.get("scope", "")).split():
            return Response(400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope."})
        with self._state:
            access_token = f"ya29.stand-in-{next(self._minted)}"
            self.access_tokens.add(access_token)
        return Response(200, {"access_token": access_token, "expires_in": self.token_lifetime, "token_type": "Bearer"})


def _header(request: Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), "")


def _invalid(body: Any) -> dict[str, Any] | None:
    """FCM's validation of a send request, or None when it is valid."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                         violations=[("message", "Message is required.")])
    unknown = set(body) - {"message", "validate_only"}
    message = body["message"]
    unknown |= {f"message.{k}" for k in set(message) - MESSAGE_FIELDS}
    if unknown:
        name = sorted(unknown)[0]
        text = f'Invalid JSON payload received. Unknown name "{name.rpartition(".")[2]}": Cannot find field.'
        return fcm_error(400, "INVALID_ARGUMENT", text, violations=[(name.rpartition(".")[0] or name, text)])
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if targets != ["token"] or not isinstance(message["token"], str):
        return fcm_error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.", "INVALID_ARGUMENT",
                         violations=[("message", "Recipient of the message is not set.")])
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or set(notification) - NOTIFICATION_FIELDS:
        return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.notification'",
                         violations=[("message.notification", "Invalid notification")])
    for field in ("title", "body"):
        if field in notification and not isinstance(notification[field], str):
            text = f"Invalid value at 'message.notification.{field}' (TYPE_STRING), {notification[field]}"
            return fcm_error(400, "INVALID_ARGUMENT", text, violations=[(f"message.notification.{field}", text)])
    data = message.get("data", {})
    if not isinstance(data, dict):
        return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data'",
                         violations=[("message.data", "Invalid value at 'message.data'")])
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            text = f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value}"
            return fcm_error(400, "INVALID_ARGUMENT", text, violations=[(f"message.data[{index}].value", text)])
        if key in ("from", "gcm", "message_type") or key.startswith("google"):
            return fcm_error(400, "INVALID_ARGUMENT", f"Invalid data payload key: {key}", "INVALID_ARGUMENT")
    size = len(json.dumps(data).encode()) + len(json.dumps(notification).encode())
    if size > MAX_PAYLOAD:
        # What FCM answers for a message that is too big: no details at all.
        return fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
    return None
