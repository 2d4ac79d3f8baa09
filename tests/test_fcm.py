"""The FCM push adapter, with real HTTP against a local stand-in for FCM HTTP v1.

The stand-in (tests/providers/fcm_api.py) checks the path, the bearer token and the
message as FCM does, and serves Google's token endpoint, so the service-account flow runs
through google-auth for real: a key generated here signs the JWT the stand-in verifies.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from automation.api import Lifecycle
from automation.channels import ChannelRegistry, Delivery, Failed, Misconfigured, Remove, Retry, Sent
from automation.channels.fcm import FCMChannel
from automation.config import Settings
from automation.messages.templates import Renderer, TemplateCatalog
from automation.testing import AdapterContract
from automation.testing.standin import Response
from tests.conftest import wait_for, write
from tests.providers.fcm_api import UNAVAILABLE, FCMStandIn, fcm_error

PROJECT = "lifecycle-test"
ACCESS_TOKEN = "test-access-token"
NUDGE = ("{% block title %}Last chance, {{ first_name }}{% endblock %}"
         "{% block body %}Your code {{ code }} expires in 48 hours.{% endblock %}")


def fcm_env(provider: FCMStandIn, **more: str) -> dict[str, str]:
    env = {"LIFECYCLE_FCM_PROJECT": PROJECT, "LIFECYCLE_FCM_TOKEN": ACCESS_TOKEN,
           "LIFECYCLE_FCM_BASE_URL": provider.url, "LIFECYCLE_FCM_TIMEOUT": "1"}
    env.update(more)
    return {k: v for k, v in env.items() if v}


class TestFCMContract(AdapterContract):
    channel = "push"
    timeout = 1.0

    @pytest.fixture
    def provider(self) -> Iterator[FCMStandIn]:
        with FCMStandIn(PROJECT, ACCESS_TOKEN) as stand_in:
            yield stand_in

    @pytest.fixture
    def adapter(self, provider: FCMStandIn) -> Iterator[FCMChannel]:
        adapter = FCMChannel(Settings(), env=fcm_env(provider))
        yield adapter
        adapter.close()

    def contact(self, provider: FCMStandIn) -> dict[str, Any]:
        return {"push_tokens": ["kit-device-1"]}


# -- fixtures and helpers --------------------------------------------------------------------

#: Seconds a stand-in holds back an answer to play a provider that hangs: far beyond any adapter timeout,
#: so an adapter that waited for the answer would be seen to, however slow the machine. (Closing the
#: stand-in at the end of the test ends the wait.)
HELD = 60.0



@pytest.fixture
def fcm() -> Iterator[FCMStandIn]:
    with FCMStandIn(PROJECT, ACCESS_TOKEN) as stand_in:
        yield stand_in


@pytest.fixture
def make_channel(fcm: FCMStandIn) -> Iterator[Callable[..., FCMChannel]]:
    """FCM adapters pointed at the stand-in; `None` drops a setting."""
    made: list[FCMChannel] = []

    def make(**env: str | None) -> FCMChannel:
        base = fcm_env(fcm)
        for name, value in env.items():
            base.pop(name, None)
            if value is not None:
                base[name] = value
        adapter = FCMChannel(Settings(), env=base)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


@pytest.fixture
def push(make_channel: Callable[..., FCMChannel]) -> FCMChannel:
    return make_channel()


@pytest.fixture
def deliver(tmp_path: Path) -> Callable[..., Delivery]:
    """A push delivery rendered from a real template, with the ids the executor gives it."""
    catalog = TemplateCatalog(write(tmp_path / "templates" / "push" / "nudge.en.txt", NUDGE).parent.parent)
    renderer = Renderer(catalog)

    def make(*tokens: str, contact_id: str = "ana", body: str | None = None) -> Delivery:
        rendered = renderer.render("push", "nudge", "en", "en", {"first_name": "Ana", "code": "COMEBACK20"})
        parts = {**rendered.parts, **({"body": body} if body is not None else {})}
        key = f"winback:lapsed:1:last-chance:{contact_id}"
        return Delivery(key=key, contact_id=contact_id, journey="winback", stage="lapsed", step="last-chance",
                        channel="push", template="nudge", locale=rendered.locale, to=list(tokens), parts=parts,
                        at=time.time(), metadata={"journey": "winback", "stage": "lapsed", "step": "last-chance",
                                                  "contact_id": contact_id, "key": key})

    return make


def service_account(tmp_path: Path, provider: FCMStandIn, trusted: bool = True,
                    email: str = "push-sender@lifecycle-test.iam.gserviceaccount.com") -> Path:
    """A service-account key file as the Google Cloud console makes one, its token_uri at the stand-in."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    if trusted:
        provider.trust(email, key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())
    info = {"type": "service_account", "project_id": PROJECT, "private_key_id": "0123456789abcdef",
            "private_key": private_pem, "client_email": email, "client_id": "1234567890",
            "token_uri": provider.url + "/token"}
    return write(tmp_path / "service-account.json", json.dumps(info))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bearer(request: Any) -> str:
    return request.headers["Authorization"]


# -- the request -----------------------------------------------------------------------------


def test_the_request_is_an_fcm_v1_send_with_our_ids_as_data(fcm, push, deliver):
    # Given a rendered push message for a contact with one device
    delivery = deliver("ana-phone")
    # When it is sent
    result = push.send(delivery)
    # Then FCM got one v1 send for the project, with our bearer token and the message
    assert isinstance(result, Sent), result
    [request] = fcm.requests
    assert (request.method, request.path) == ("POST", f"/v1/projects/{PROJECT}/messages:send")
    assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {"message": {
        "token": "ana-phone",
        "notification": {"title": "Last chance, Ana", "body": "Your code COMEBACK20 expires in 48 hours."},
        "data": {"key": "winback:lapsed:1:last-chance:ana", "contact_id": "ana", "journey": "winback",
                 "stage": "lapsed", "step": "last-chance"},
    }}
    # And the outcome keeps FCM's message name for matching delivery reports
    assert result.provider_id == f"projects/{PROJECT}/messages/0:1%stand-in"
    assert result.info == {"tokens": 1} and result.effect == {}


def test_every_device_gets_the_message_once(fcm, push, deliver):
    # Given a contact whose token list names one device twice
    result = push.send(deliver("phone", "tablet", "phone"))
    # Then each device gets one message, and the step is sent
    assert isinstance(result, Sent) and result.info == {"tokens": 2}
    assert sorted(m["token"] for m in fcm.delivered()) == ["phone", "tablet"]


# -- dead tokens -----------------------------------------------------------------------------


def test_an_unregistered_token_is_removed_and_the_live_device_gets_the_message(fcm, push, deliver):
    # Given two devices, one of which uninstalled the app
    fcm.dead_tokens.add("old-phone")
    # When the message is sent
    result = push.send(deliver("old-phone", "new-phone"))
    # Then the live device has it, and the dead token is to be removed from the contact
    assert isinstance(result, Sent), result
    assert [m["token"] for m in fcm.delivered()] == ["new-phone"]
    assert result.provider_id.startswith(f"projects/{PROJECT}/messages/")
    assert result.effect == {"push_tokens": Remove(("old-phone",))}
    assert result.info == {"tokens": 1, "removed_tokens": 1}


def test_when_every_token_is_dead_the_step_fails_and_all_are_removed(fcm, push, deliver):
    fcm.dead_tokens.update({"old-phone", "old-tablet"})
    result = push.send(deliver("old-phone", "old-tablet"))
    assert isinstance(result, Failed), result
    assert result.code == "unregistered" and "UNREGISTERED" in result.reason
    assert result.effect == {"push_tokens": Remove(("old-phone", "old-tablet"))}
    assert fcm.delivered() == []


def test_a_token_of_another_firebase_project_is_removed(fcm, push, deliver):
    # Given a device registered for another sender (SENDER_ID_MISMATCH, a 403)
    fcm.foreign_tokens.add("other-apps-phone")
    result = push.send(deliver("other-apps-phone", "phone"))
    # Then it is dropped like an unregistered one, and does not pause the channel
    assert isinstance(result, Sent), result
    assert result.effect == {"push_tokens": Remove(("other-apps-phone",))}
    result = push.send(deliver("other-apps-phone"))
    assert isinstance(result, Failed) and result.code == "unregistered", result
    assert "SENDER_ID_MISMATCH" in result.reason


def test_a_wrong_project_pauses_the_channel_instead_of_deleting_every_token(fcm, push, deliver):
    # Given a batch whose devices all belong to "another project", as when LIFECYCLE_FCM_PROJECT is wrong
    tokens = [f"token-{n}" for n in range(6)]
    fcm.foreign_tokens.update(tokens)
    batch = [deliver(token, contact_id=f"c{n}") for n, token in enumerate(tokens)]
    # When it is sent
    results = push.send_many(batch)
    # Then nothing is removed: the channel pauses, and ops are told to check the project
    assert all(isinstance(r, Misconfigured) for r in results)
    assert "LIFECYCLE_FCM_PROJECT" in results[0].reason
    assert all(not getattr(r, "effect", None) for r in results)


@pytest.mark.parametrize("how", ["FCM's message", "a field violation on message.token"])
def test_a_malformed_token_is_removed(fcm, push, deliver, how):
    # Given FCM says INVALID_ARGUMENT about the registration token itself
    if how == "FCM's message":
        fcm.malformed_tokens.add("truncated")
    else:
        violation = ("message.token", "Invalid registration token")
        fcm.answer(Response(400, fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                                           "INVALID_ARGUMENT", violations=[violation])))
    result = push.send(deliver("truncated"))
    # Then the token is dead: it can never receive anything
    assert isinstance(result, Failed), result
    assert result.code == "unregistered"
    assert result.effect == {"push_tokens": Remove(("truncated",))}


def test_a_message_fcm_refuses_fails_the_step_and_keeps_the_tokens(fcm, push, deliver):
    # Given a template that rendered a body over FCM's 4 KB payload limit
    result = push.send(deliver("phone", "tablet", body="x" * 5000))
    # Then the step fails for the message, and no device token is blamed for it
    assert isinstance(result, Failed), result
    assert result.code == "invalid_message" and "INVALID_ARGUMENT" in result.reason
    assert result.effect == {}
    assert fcm.delivered() == []


def test_a_bad_data_value_is_a_bad_message_not_a_bad_token(fcm, push, deliver):
    # Given FCM's documented answer to a data value of the wrong type (a BadRequest detail)
    text = "Invalid value at 'message.data[0].value' (TYPE_STRING), 12"
    fcm.answer(Response(400, fcm_error(400, "INVALID_ARGUMENT", text, violations=[("message.data[0].value", text)])))
    result = push.send(deliver("phone"))
    assert isinstance(result, Failed) and result.code == "invalid_message", result
    assert result.effect == {}


# -- temporary failures ----------------------------------------------------------------------


@pytest.mark.parametrize("retry_after, expected", [("120", 120.0), (None, 60.0)])
def test_quota_exceeded_is_retried_after_what_fcm_says(fcm, push, deliver, retry_after, expected):
    # Given FCM's rate limit (429 QUOTA_EXCEEDED), with or without a Retry-After header
    headers = {"Retry-After": retry_after} if retry_after else {}
    fcm.answer(Response(429, fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED"),
                        headers=headers))
    result = push.send(deliver("phone"))
    # Then the step is retried after Retry-After, or after the minute FCM advises
    assert isinstance(result, Retry), result
    assert result.after == expected and "QUOTA_EXCEEDED" in result.reason


@pytest.mark.parametrize("status, body", [
    (503, UNAVAILABLE),
    (500, fcm_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL")),
    (502, "<!DOCTYPE html><title>Error 502 (Server Error)!!1</title>"),
])
def test_server_errors_are_retried(fcm, push, deliver, status, body):
    fcm.answer(Response(status, body, headers={"Retry-After": "30"}))
    result = push.send(deliver("phone"))
    assert isinstance(result, Retry), result
    assert result.after == 30.0 and f"FCM {status}" in result.reason


def test_devices_are_sent_to_at_once_so_a_hang_costs_one_timeout(fcm, make_channel, deliver):
    # Given FCM holds its answers for a contact with three devices, and an adapter that would wait long for them
    fcm.answer(*[Response(503, UNAVAILABLE, delay=HELD) for _ in range(3)])
    push = make_channel(LIFECYCLE_FCM_TIMEOUT=str(HELD))
    # When the contact's push is sent
    results: list = []
    sending = threading.Thread(target=lambda: results.append(push.send(deliver("phone", "tablet", "watch"))))
    sending.start()
    try:
        # Then all three requests are out at once: each reaches FCM while the others still wait for their answers
        # (one at a time, the second would only go once the first had its answer)
        wait_for(lambda: len(fcm.exchanges) == 3, timeout=HELD / 2, what="three requests in flight together")
        assert fcm.answered() == [] and not any(e.abandoned for e in fcm.exchanges)
    finally:
        fcm.release()
        sending.join()
    # and, once FCM answers "unavailable" to all three, the step is retried
    (result,) = results
    assert isinstance(result, Retry) and "FCM 503" in result.reason, result


def test_a_hanging_fcm_is_retried_without_waiting_for_its_answer(fcm, push, deliver):
    # Given FCM hangs for every device of a contact with three devices, far beyond the adapter's 1 second timeout
    fcm.answer(*[Response(503, UNAVAILABLE, delay=HELD) for _ in range(3)])
    # When the contact's push is sent
    result = push.send(deliver("phone", "tablet", "watch"))
    # Then every request reached FCM, the adapter gave up before FCM answered any, and retries later
    assert isinstance(result, Retry), result
    assert "did not answer within 1s" in result.reason
    assert len(fcm.exchanges) == 3 and fcm.answered() == []


def test_once_a_device_has_the_message_the_step_is_not_retried(fcm, push, deliver):
    # Given one of two devices times out and the other gets the message
    fcm.answer(Response(503, UNAVAILABLE, delay=3))
    result = push.send(deliver("phone", "tablet"))
    # Then the step is sent (a retry would reach the device that has it a second time)
    assert isinstance(result, Sent), result
    assert len(fcm.delivered()) == 1
    assert result.info == {"tokens": 1, "failed_tokens": 1} and result.effect == {}


def test_an_unreachable_fcm_is_retried(make_channel, deliver):
    push = make_channel(LIFECYCLE_FCM_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    result = push.send(deliver("phone"))
    assert isinstance(result, Retry), result
    assert "unreachable" in result.reason


# -- refused credentials and configuration ---------------------------------------------------


@pytest.mark.parametrize("case", ["expired token", "wrong project", "APNs key", "wrong base URL"])
def test_refused_credentials_pause_the_channel_and_keep_the_tokens(fcm, make_channel, deliver, case):
    if case == "expired token":          # 401 UNAUTHENTICATED
        push = make_channel(LIFECYCLE_FCM_TOKEN="ya29.expired-long-ago")
    elif case == "wrong project":        # 403 PERMISSION_DENIED
        push = make_channel(LIFECYCLE_FCM_PROJECT="someone-elses-project")
    elif case == "APNs key":             # 401 THIRD_PARTY_AUTH_ERROR
        fcm.answer(Response(401, fcm_error(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                                           "THIRD_PARTY_AUTH_ERROR")))
        push = make_channel()
    else:                                # 404 without UNREGISTERED: not about the token
        push = make_channel(LIFECYCLE_FCM_BASE_URL=fcm.url + "/not-fcm")
    result = push.send(deliver("phone"))
    assert isinstance(result, Misconfigured), result
    assert result.reason.startswith("fcm: FCM 40")


def test_send_many_answers_mixed_outcomes_in_order(fcm, push, deliver):
    fcm.dead_tokens.add("bea-old")
    results = push.send_many([deliver("ana-phone", contact_id="ana"), deliver("bea-old", contact_id="bea"),
                              deliver("cy-phone", "cy-tablet", contact_id="cy")])
    assert [type(r) for r in results] == [Sent, Failed, Sent]
    assert results[1].effect == {"push_tokens": Remove(("bea-old",))}
    assert results[2].info == {"tokens": 2}
    sent_to = {m["data"]["contact_id"]: m["token"] for m in fcm.delivered() if m["token"] != "cy-tablet"}
    assert sent_to == {"ana": "ana-phone", "cy": "cy-phone"}


# -- the service-account flow ----------------------------------------------------------------


def test_a_service_account_gets_its_access_token_from_the_token_endpoint(fcm, make_channel, deliver, tmp_path):
    # Given a service-account key file and no static token
    push = make_channel(LIFECYCLE_FCM_TOKEN=None, LIFECYCLE_FCM_CREDENTIALS=str(service_account(tmp_path, fcm)))
    # When two messages are sent
    assert isinstance(push.send(deliver("phone")), Sent)
    assert isinstance(push.send(deliver("tablet")), Sent)
    # Then google-auth asked the token endpoint once (a JWT-bearer grant for the FCM scope) ...
    [grant] = fcm.token_requests()
    assert grant.form()["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    # ... and both sends bore the token it got
    assert [bearer(r) for r in fcm.send_requests()] == ["Bearer ya29.stand-in-1"] * 2


def test_an_expired_access_token_is_refreshed(fcm, make_channel, deliver, tmp_path):
    # Given the token endpoint gives tokens that expire within google-auth's refresh margin
    fcm.token_lifetime = 60
    push = make_channel(LIFECYCLE_FCM_TOKEN=None, LIFECYCLE_FCM_CREDENTIALS=str(service_account(tmp_path, fcm)))
    # When two messages are sent
    assert isinstance(push.send(deliver("phone")), Sent)
    assert isinstance(push.send(deliver("tablet")), Sent)
    # Then each got a fresh token
    assert len(fcm.token_requests()) == 2
    assert [bearer(r) for r in fcm.send_requests()] == ["Bearer ya29.stand-in-1", "Bearer ya29.stand-in-2"]


def test_worker_threads_share_one_access_token(fcm, make_channel, deliver, tmp_path):
    push = make_channel(LIFECYCLE_FCM_TOKEN=None, LIFECYCLE_FCM_CREDENTIALS=str(service_account(tmp_path, fcm)))
    results: list[Any] = []
    threads = [threading.Thread(target=lambda n=n: results.append(push.send(deliver(f"device-{n}"))))
               for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(isinstance(r, Sent) for r in results), results
    assert len(fcm.token_requests()) == 1


def test_google_application_credentials_is_the_fallback(fcm, make_channel, deliver, tmp_path):
    path = str(service_account(tmp_path, fcm))
    push = make_channel(LIFECYCLE_FCM_TOKEN=None, GOOGLE_APPLICATION_CREDENTIALS=path)
    assert isinstance(push.send(deliver("phone")), Sent)
    assert len(fcm.token_requests()) == 1


def test_a_revoked_key_pauses_the_channel(fcm, make_channel, deliver, tmp_path):
    # Given a key the token endpoint does not (or no longer) accept
    push = make_channel(LIFECYCLE_FCM_TOKEN=None,
                        LIFECYCLE_FCM_CREDENTIALS=str(service_account(tmp_path, fcm, trusted=False)))
    result = push.send(deliver("phone"))
    assert isinstance(result, Misconfigured), result
    assert "invalid_grant" in result.reason
    assert fcm.send_requests() == []


def test_an_unreachable_token_endpoint_is_retried(fcm, make_channel, deliver, tmp_path):
    path = service_account(tmp_path, fcm)
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "token_uri": f"http://127.0.0.1:{closed_port()}/token"}))
    push = make_channel(LIFECYCLE_FCM_TOKEN=None, LIFECYCLE_FCM_CREDENTIALS=str(path))
    result = push.send(deliver("phone"))
    assert isinstance(result, Retry), result
    assert "token endpoint unreachable" in result.reason


def test_a_worker_starts_without_credentials_and_pauses_the_channel(make_channel, deliver, tmp_path):
    # Constructing the adapter reads no file and opens no connection
    missing = make_channel(LIFECYCLE_FCM_TOKEN=None, LIFECYCLE_FCM_CREDENTIALS=str(tmp_path / "missing.json"))
    nothing = make_channel(LIFECYCLE_FCM_TOKEN=None)
    result = missing.send(deliver("phone"))
    assert isinstance(result, Misconfigured) and "does not exist" in result.reason, result
    result = nothing.send(deliver("phone"))
    assert isinstance(result, Misconfigured) and "no credentials" in result.reason, result


# -- check() ---------------------------------------------------------------------------------


def test_check_with_complete_configuration(fcm, make_channel, tmp_path):
    token = "ya29.a0AfB_byC-secret-part-of-the-token"
    static = make_channel(LIFECYCLE_FCM_TOKEN=token).check()
    assert not [c for c in static if c.level == "error"], static
    text = "\n".join(c.message for c in static)
    assert PROJECT in text and fcm.url in text and "ya29.a" in text
    assert token not in text, "the token must be masked"

    account = make_channel(LIFECYCLE_FCM_TOKEN=None,
                           LIFECYCLE_FCM_CREDENTIALS=str(service_account(tmp_path, fcm))).check()
    assert [c.level for c in account] == ["ok", "ok", "ok"], account
    assert "push-sender@lifecycle-test.iam.gserviceaccount.com" in account[1].message
    # Checking sends nothing and asks for no token
    assert fcm.requests == []


def test_check_with_missing_configuration(fcm, make_channel, tmp_path):
    empty = FCMChannel(Settings(), env={}).check()
    errors = [c.message for c in empty if c.level == "error"]
    assert any("LIFECYCLE_FCM_PROJECT" in m for m in errors), empty
    assert any("no credentials" in m for m in errors), empty
    assert any("https://fcm.googleapis.com" in c.message for c in empty if c.level == "ok")

    broken = write(tmp_path / "broken.json", '{"type": "service_account"}')
    for path in (tmp_path / "missing.json", broken):
        checks = make_channel(LIFECYCLE_FCM_CREDENTIALS=str(path)).check()
        assert [c.level for c in checks if "LIFECYCLE_FCM_CREDENTIALS" in c.message] == ["warning", "error"], checks

    bad = make_channel(LIFECYCLE_FCM_TIMEOUT="soon", LIFECYCLE_FCM_BASE_URL="fcm.googleapis.com").check()
    assert len([c for c in bad if c.level == "error"]) == 2, bad
    assert fcm.requests == []


# -- through the engine ----------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with one journey: everyone gets one push."""
    write(tmp_path / "journeys" / "app-nudge.yaml", (
        "journey: app-nudge\n"
        "stages:\n"
        "  - name: everyone\n"
        "    steps:\n"
        "      - send: push\n"
        "        template: nudge\n"))
    write(tmp_path / "templates" / "push" / "nudge.en.txt", NUDGE.replace("{{ code }}", "WELCOME10"))
    (tmp_path / "outbox").mkdir()
    return tmp_path


def test_a_contact_gets_the_push_and_loses_the_dead_token(fcm, settings, runtime, make_engine, run_due):
    # Given push routed to FCM, and a contact with an old phone (app uninstalled) and a new one
    fcm.dead_tokens.add("ana-old-phone")
    adapter = FCMChannel(settings, env=fcm_env(fcm))
    engine = make_engine(ChannelRegistry(settings, instances={"push": adapter}))
    lc = Lifecycle(runtime)
    lc.identify("ana", {"first_name": "Ana", "push_tokens": ["ana-old-phone", "ana-new-phone"],
                        "consent": {"push": True}})
    # When the journey runs
    run_due(engine)
    # Then the new phone has the message, with our ids
    [message] = fcm.delivered()
    assert message["token"] == "ana-new-phone"
    assert message["notification"] == {"title": "Last chance, Ana", "body": "Your code WELCOME10 expires in 48 hours."}
    assert message["data"] == {"key": "app-nudge:everyone:1:nudge:ana", "contact_id": "ana", "journey": "app-nudge",
                               "stage": "everyone", "step": "nudge"}
    # And the step is recorded as sent, and only the live token is left on the contact
    outcome = lc.history("ana")["app-nudge:everyone:1:nudge"]
    assert outcome["state"] == "sent" and outcome["id"].startswith(f"projects/{PROJECT}/messages/"), outcome
    assert outcome["tokens"] == 1 and outcome["removed_tokens"] == 1
    assert lc.contact("ana").attributes["push_tokens"] == ["ana-new-phone"]
