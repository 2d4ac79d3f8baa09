"""`lifecycle serve`: Segment's library and a fuzzer against a running server; the mapping, keys and
limits, each refusal with its status and reason.

Every test talks to a real uvicorn server on a local port (a subprocess of `lifecycle serve`, or
the same application in a thread when the test needs its manual clock) and checks what arrived
through the project's API on a real Redis.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from hypothesis import HealthCheck, settings as hypothesis_settings
import schemathesis
from schemathesis.checks import not_a_server_error
from segment.analytics import Client

from automation.api import Lifecycle
from automation.channels import ChannelRegistry
from automation.engine.services import Engine
from automation.server.app import create_app
from automation.store.apikeys import ApiKeys
from tests.conftest import ROOT, wait_for, write

SIGNUP_JOURNEY = """\
journey: signup-welcome
locale: en
vars:
  brand: Northwind Outfitters
  shop_url: https://shop.example.com
trigger: {event: signed_up}
steps:
  - send: email
    template: welcome
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def key(runtime) -> str:
    return ApiKeys(runtime).create("ingest", "tests")[1]


@pytest.fixture
def api(runtime, serve_app) -> str:
    """The application on a real server in this process (it shares the test's clock); its URL."""
    return serve_app(create_app(runtime, env={})).url


@pytest.fixture
def lifecycle_serve(settings, tmp_path) -> Iterator[str]:
    """`lifecycle serve` as a subprocess on a free port, seeing the test's settings; its URL."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "automation", "serve", "--port", str(port)],
                               env={**os.environ, **settings.to_env()}, stdout=log, stderr=subprocess.STDOUT,
                               cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return requests.get(f"{url}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, timeout=60, what="lifecycle serve to answer")
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()


def post(url: str, path: str, body: object, key: str | None = None, **headers: str) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{url}{path}", data=data, timeout=10,
                         headers={"Content-Type": "application/json", **(auth(key) if key else {}), **headers})


# -- Segment's own library against `lifecycle serve` --------------------------------------------------

def test_segment_library_sends_contacts_and_events_that_start_a_journey(settings, runtime, project, make_engine,
                                                                         run_due, clock, lifecycle_serve):
    # Given a triggered journey served by an engine (which publishes the events it watches)
    write(project / "journeys" / "signup-welcome.yaml", SIGNUP_JOURNEY)
    engine: Engine = make_engine(ChannelRegistry(settings))
    assert "signup-welcome" in engine.journeys.journeys
    # and a write key made with the command, which prints it alone on its last line
    made = subprocess.run([sys.executable, "-m", "automation", "keys", "create", "--name", "segment-test"],
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("lc_") and " " not in key
    # When Segment's Python library sends an identify and a track, one request each ...
    errors: list[Exception] = []
    client = Client(write_key=key, host=lifecycle_serve, sync_mode=True, on_error=lambda e, batch: errors.append(e))
    client.identify("ana", {"email": "ana@example.com", "first_name": "Ana", "consent": {"email": True}},
                    context={"locale": "ru", "timezone": "Europe/Moscow"})
    client.track("ana", "signed_up", {"plan": "pro"}, message_id="m-signup")
    # ... and then a batch of several calls in one request
    batched = Client(write_key=key, host=lifecycle_serve, upload_size=10, on_error=lambda e, batch: errors.append(e))
    batched.page("ana", "Docs", "Pricing", {"path": "/pricing"})
    batched.track("ana", "signed_up", {"plan": "pro"}, message_id="m-signup")     # a retry: the same id
    batched.identify("bo", {"email": "bo@example.com", "consent": {"email": True}})
    batched.track("bo", "signed_up", {"plan": "free"})
    batched.flush()
    batched.join()
    assert errors == []
    # Then the contacts and events are stored
    lc = Lifecycle(runtime)
    ana = lc.contact("ana")
    assert ana.attributes["first_name"] == "Ana"
    assert (ana.attributes["locale"], ana.attributes["timezone"]) == ("ru", "Europe/Moscow")
    assert ana.events["signed_up"].count == 1          # the repeated messageId was ignored
    assert ana.events["page_view"].count == 1
    assert {"name": "Pricing", "category": "Docs", "path": "/pricing"}.items() <= \
        next(e for e in ana.recent if e["event"] == "page_view")["properties"].items()
    assert lc.contact("bo").events["signed_up"].count == 1
    # and the journey they trigger sends its email to both (the engine's clock catches up with the
    # server's, which is the system clock)
    clock.set(time.time() + 1)
    run_due(engine)
    for contact in ("ana", "bo"):
        sent = [o for key, o in lc.history(contact).items() if key.startswith("signup-welcome:")]
        assert [o["state"] for o in sent] == ["sent"], contact


# -- fuzzing from the OpenAPI document ------------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_path(ROOT / "automation" / "server" / "openapi.yaml")
SCHEMA.config.generation.update(max_examples=40, modes=list(schemathesis.GenerationMode))


@pytest.fixture
def fuzzed(runtime, serve_app, key) -> tuple[str, str]:
    return serve_app(create_app(runtime, env={})).url, key


@SCHEMA.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(case, fuzzed):
    # Whatever the fuzzer sends, valid or not, with or without a valid key: never a 5xx
    url, key = fuzzed
    for headers in (auth(key), {}):
        response = case.call(base_url=url, headers=headers, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500
        assert "message" in response.json() or response.status_code == 200


# -- the mapping ---------------------------------------------------------------------------------------

def test_anonymous_events_end_up_on_the_contact_at_identify(api, key, runtime):
    lc = Lifecycle(runtime)
    assert post(api, "/v1/page", {"anonymousId": "anon-1", "name": "Home"}, key).status_code == 200
    assert post(api, "/v1/track", {"anonymousId": "anon-1", "event": "viewed_item", "messageId": "v1"},
                key).status_code == 200
    assert post(api, "/v1/identify", {"anonymousId": "anon-1", "traits": {"first_name": "Cy"}}, key).status_code == 200
    # An anonymous visitor is not a contact
    assert not lc.contact("anon-1").exists
    # Identify links the anonymous id: what it did moves to the contact
    assert post(api, "/v1/identify", {"userId": "cy", "anonymousId": "anon-1",
                                      "traits": {"email": "cy@example.com"}}, key).status_code == 200
    cy = lc.contact("cy")
    assert cy.events["page_view"].count == 1 and cy.events["viewed_item"].count == 1
    assert cy.attributes["first_name"] == "Cy" and cy.attributes["email"] == "cy@example.com"
    # and later anonymous calls go straight to the contact
    assert post(api, "/v1/track", {"anonymousId": "anon-1", "event": "viewed_item"}, key).status_code == 200
    assert lc.contact("cy").events["viewed_item"].count == 2
    assert not lc.contact("anon-1").exists


def test_alias_links_an_anonymous_id(api, key, runtime):
    post(api, "/v1/screen", {"anonymousId": "device-9", "name": "Onboarding"}, key)
    assert post(api, "/v1/alias", {"previousId": "device-9", "userId": "dee"}, key).status_code == 200
    assert Lifecycle(runtime).contact("dee").events["screen_view"].count == 1


def test_sent_at_corrects_the_senders_clock(api, key, runtime, clock):
    # The sender's clock is an hour fast: it says the event happened at 10:00 and was sent at 10:05,
    # and we receive it now; it happened five minutes ago
    now = clock.now()
    fast = now + 3600
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    body = {"userId": "eve", "event": "purchase", "timestamp": iso(fast - 300), "sentAt": iso(fast)}
    assert post(api, "/v1/track", body, key).status_code == 200
    assert Lifecycle(runtime).contact("eve").events["purchase"].last.timestamp() == pytest.approx(now - 300, abs=1)


def test_a_batch_stores_the_good_messages_and_names_the_bad(api, key, runtime):
    batch = {"batch": [
        {"type": "track", "userId": "fay", "event": "purchase", "properties": {"value": 5}},
        {"type": "track", "userId": "fay", "properties": {}},
        {"type": "identify", "userId": "fay", "traits": {"email": "not an address"}},
        {"type": "group", "userId": "fay", "groupId": "g1"},
        {"type": "track", "userId": "fay", "event": "purchase", "colour": "red"},
        {"type": "identify", "userId": "fay", "traits": {"first_name": "Fay"}},
    ]}
    answer = post(api, "/v1/batch", batch, key)
    assert answer.status_code == 200
    assert answer.json()["accepted"] == 2
    assert answer.json()["rejected"] == [
        {"index": 1, "message": "event name is missing"},
        {"index": 2, "message": "traits: email 'not an address' is not an email address"},
        {"index": 3, "message": "type 'group' is not supported (types: identify, track, page, screen, alias)"},
        {"index": 4, "message": "unknown field 'colour' in a track call"},
    ]
    fay = Lifecycle(runtime).contact("fay")
    assert fay.events["purchase"].count == 1 and fay.attributes == {"first_name": "Fay"}
    # A batch of nothing but bad messages is refused as a whole
    answer = post(api, "/v1/batch", {"batch": [{"type": "track"}]}, key)
    assert answer.status_code == 400 and answer.json()["rejected"][0]["index"] == 0


# -- keys -----------------------------------------------------------------------------------------------

def test_keys_missing_wrong_revoked_and_of_the_wrong_scope(api, runtime):
    keys = ApiKeys(runtime)
    record, key = keys.create("ingest")
    event = {"userId": "gus", "event": "purchase"}
    missing = post(api, "/v1/track", event)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Basic")
    assert "write key" in missing.json()["message"]
    wrong = post(api, "/v1/track", event, "lc_not-a-key")
    assert wrong.status_code == 401 and "not valid" in wrong.json()["message"]
    assert post(api, "/v1/track", event, key).status_code == 200
    # An ingest key may not read the metrics; an admin key may
    metrics = requests.get(f"{api}/metrics", headers=auth(key), timeout=10)
    assert metrics.status_code == 403 and "admin" in metrics.json()["message"]
    admin = keys.create("admin")[1]
    metrics = requests.get(f"{api}/metrics", headers=auth(admin), timeout=10)
    assert metrics.status_code == 200 and "lifecycle_steps_total" in metrics.text
    # A revoked key stops working (within the few seconds keys are remembered)
    assert [k.id for k in keys.list()] == [record.id, keys.list()[1].id]
    assert keys.revoke(record.id)
    wait_for(lambda: post(api, "/v1/track", event, key).status_code == 401, timeout=30, what="the key to be refused")
    assert [k.scope for k in keys.list()] == ["admin"]


# -- bad input: a clear 4xx with a JSON reason, never a 500, never a hang ----------------------------------

def raw(url: str, data: bytes, read_timeout: float = 30.0) -> tuple[int, dict]:
    """Send bytes as they are on a plain socket; the status and JSON body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as connection:
        connection.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def request(key: str, body: bytes, length: int | None = None, path: str = "/v1/track", extra: str = "") -> bytes:
    size = f"Content-Length: {len(body) if length is None else length}\r\n" if length != -1 else ""
    token = base64.b64encode(f"{key}:".encode()).decode()
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {token}\r\n"
            f"Content-Type: application/json\r\n{size}{extra}Connection: close\r\n\r\n").encode() + body


def nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def quick(settings, runtime, serve_app, monkeypatch) -> str:
    """The application with a one-second request deadline, so slow clients are cut off soon."""
    monkeypatch.setattr("automation.server.serving.Protocol.header_timeout", 1.0)
    quick_runtime = runtime
    quick_runtime.settings = settings.with_changes(request_timeout_seconds=1.0)
    return serve_app(create_app(quick_runtime, env={})).url


@pytest.mark.parametrize("name, data, status, reason", [
    ("invalid UTF-8", lambda k: request(k, b'{"userId": "h\xff", "event": "x"}'), 400, "not UTF-8"),
    ("bad Content-Length", lambda k: request(k, b"{}", length=-1, extra="Content-Length: ten\r\n"), 400,
     "malformed HTTP request"),
    ("missing Content-Length", lambda k: request(k, b"", length=-1), 411, "Content-Length"),
    ("body shorter than its length", lambda k: request(k, b'{"userId": "h"', length=200), 408, "did not arrive"),
    ("over the event limit", lambda k: request(k, b'{"userId": "h", "event": "x", "p": "' + b"x" * 40000 + b'"}'),
     413, "larger than 32 KB"),
    ("over the request limit", lambda k: request(k, b"[" * 10, length=600_000, path="/v1/batch"), 413,
     "larger than 500 KB"),
    ("over the limit, chunked", lambda k: request(k, b"".join(b"4000\r\n" + b" " * 0x4000 + b"\r\n" for _ in range(40))
                                                   + b"0\r\n\r\n", length=-1, path="/v1/batch",
                                                   extra="Transfer-Encoding: chunked\r\n"), 413, "larger than 500 KB"),
    ("deep nesting", lambda k: request(k, b"[" * 100_000 + b"]" * 100_000, path="/v1/batch"), 400, "nested deeper"),
    ("moderate nesting", lambda k: request(k, json.dumps({"userId": "h", "event": "x", "properties": {"a": nested(40)}})
                                           .encode()), 400, "nested deeper"),
    ("not JSON", lambda k: request(k, b"{userId: h}"), 400, "not JSON"),
    ("a JSON list", lambda k: request(k, b"[1, 2]"), 400, "must be a JSON object"),
    ("unknown field", lambda k: request(k, b'{"userId": "h", "event": "x", "colour": "red"}'), 400,
     "unknown field 'colour'"),
    ("wrong type: properties", lambda k: request(k, b'{"userId": "h", "event": "x", "properties": [1]}'), 400,
     "properties must be a JSON object"),
    ("wrong type: userId", lambda k: request(k, b'{"userId": {"a": 1}, "event": "x"}'), 400, "userId: contact id"),
    ("wrong type: timestamp", lambda k: request(k, b'{"userId": "h", "event": "x", "timestamp": "yesterday"}'), 400,
     "not an ISO 8601 time"),
    ("wrong type: traits", lambda k: request(k, b'{"userId": "h", "traits": "x"}', path="/v1/identify"), 400,
     "traits must be a JSON object"),
    ("unpaired surrogate", lambda k: request(k, b'{"userId": "h", "event": "x\\ud800"}'), 400, "surrogate"),
    ("no contact", lambda k: request(k, b'{"event": "x"}'), 400, "userId or anonymousId"),
    ("wrong method", lambda k: request(k, b"").replace(b"POST", b"GET", 1), 405, "GET is not allowed"),
    ("unknown path", lambda k: request(k, b"{}", path="/v1/group"), 404, "no such endpoint"),
    ("gzip bomb", lambda k: request(k, gzip.compress(b" " * 2_000_000), path="/v1/batch",
                                    extra="Content-Encoding: gzip\r\n"), 413, "decompressed"),
])
def test_bad_input_is_refused_with_a_reason(quick, key, name, data, status, reason):
    answer_status, answer = raw(quick, data(key))
    assert (answer_status, reason in answer["message"]) == (status, True), answer
    # and the server keeps serving
    assert post(quick, "/v1/track", {"userId": "h", "event": "x"}, key).status_code == 200


def test_slow_headers_are_cut_off(quick):
    host, port = quick.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(b"POST /v1/track HTTP/1.1\r\nHost: te")      # and nothing more
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408") and b"headers did not arrive" in answer


def test_a_slow_client_does_not_block_others(quick, key, runtime):
    # A client dribbles a body, a byte at a time ...
    host, port = quick.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=30)
    slow.sendall(request(key, b"", length=100))
    slow.sendall(b"{")
    # ... while others are served, one after another
    for n in range(20):
        assert post(quick, "/v1/track", {"userId": "ida", "event": "x", "messageId": f"m{n}"}, key).status_code == 200
    assert Lifecycle(runtime).contact("ida").events["x"].count == 20
    # and the slow one gets its 408 once its time is up
    answer = slow.recv(65536)
    slow.close()
    assert answer.startswith(b"HTTP/1.1 408")


def test_the_openapi_document_is_published(api):
    answer = requests.get(f"{api}/openapi.yaml", timeout=10)
    assert answer.status_code == 200 and "/v1/batch:" in answer.text
    assert (ROOT / "automation" / "server" / "openapi.yaml").read_text() == answer.text
    assert Path(ROOT / "docs" / "api.md").read_text().count("openapi.yaml") >= 1
