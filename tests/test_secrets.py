"""No default secrets: forged, expired, rotated and replayed requests to the unsubscribe and SendGrid
endpoints, a production install without a key, and the embedded install's own key."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from automation.api import Lifecycle
from automation.messages.unsubscribe import make_token
from automation.server.app import create_app
from tests.conftest import process_alive, ROOT, wait_for

DAY = 86400


@pytest.fixture
def ana(runtime) -> Lifecycle:
    lc = Lifecycle(runtime)
    lc.identify("ana", {"email": "ana@example.com", "consent": {"email": True}})
    return lc


def unsubscribe(url: str, token: str) -> requests.Response:
    return requests.post(f"{url}/unsubscribe", params={"token": token}, timeout=10)


def test_a_token_made_with_the_old_default_secret_is_refused(runtime, serve_app, ana):
    url = serve_app(create_app(runtime, env={})).url
    answer = unsubscribe(url, make_token("change-me", "ana", "email"))
    assert answer.status_code == 400 and answer.json()["message"] == "this unsubscribe link is not valid"
    assert ana.contact("ana").attributes["consent"]["email"] is True


def raw_post(url: str, target: str) -> tuple[int, bytes]:
    """A POST with no body and no Content-Length, as some mail clients send the one-click request."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"POST {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return int(answer.split()[1]), answer


def test_tokens_expire(runtime, settings, serve_app, ana):
    url = serve_app(create_app(runtime, env={})).url
    days = settings.unsubscribe_token_days
    expired = make_token(settings.secret, "ana", "email", issued=time.time() - (days + 1) * DAY)
    answer = unsubscribe(url, expired)
    assert answer.status_code == 400 and "expired" in answer.json()["message"]
    assert ana.contact("ana").attributes["consent"]["email"] is True
    # one from within the time still works, even posted without a body or a Content-Length
    token = make_token(settings.secret, "ana", "email", issued=time.time() - (days - 1) * DAY)
    status, _ = raw_post(url, f"/unsubscribe?token={token}")
    assert status == 200
    assert ana.contact("ana").attributes["consent"]["email"] is False


def test_the_previous_secret_works_during_a_rotation_and_not_after(runtime, settings, serve_app, ana):
    old = make_token("the-old-key", "ana", "email")
    # During the rotation: LIFECYCLE_SECRET is new, LIFECYCLE_SECRET_PREVIOUS the old one
    runtime.settings = settings.with_changes(secret="the-new-key", secret_previous="the-old-key")
    during = serve_app(create_app(runtime, env={})).url
    # After it: the old key is gone
    runtime.settings = settings.with_changes(secret="the-new-key", secret_previous=None)
    after = serve_app(create_app(runtime, env={})).url
    assert unsubscribe(after, old).status_code == 400
    assert ana.contact("ana").attributes["consent"]["email"] is True
    assert unsubscribe(during, old).status_code == 200
    assert ana.contact("ana").attributes["consent"]["email"] is False
    assert unsubscribe(after, make_token("the-new-key", "ana", "email")).status_code == 200


def test_a_token_for_an_unknown_contact_creates_nothing(runtime, settings, serve_app):
    url = serve_app(create_app(runtime, env={})).url
    assert unsubscribe(url, make_token(settings.secret, "ghost", "email")).status_code == 200
    assert not Lifecycle(runtime).contact("ghost").exists
    assert list(runtime.redis.scan_iter(match=f"{settings.namespace}:*ghost*")) == []


# -- SendGrid's signed timestamp ---------------------------------------------------------------------

def signed(key: ec.EllipticCurvePrivateKey, at: float) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps([{"event": "spamreport", "lc_key": "j:s:1:x:ana", "lc_contact": "ana",
                           "sg_event_id": f"ev-{at}", "timestamp": int(at)}])
    timestamp = str(int(at))
    signature = key.sign((timestamp + payload).encode(), ec.ECDSA(hashes.SHA256()))
    return payload.encode(), {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                              "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def test_an_old_signed_sendgrid_webhook_is_refused_and_a_fresh_one_accepted(runtime, settings, serve_app):
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    url = serve_app(create_app(runtime, env={"SENDGRID_WEBHOOK_PUBLIC_KEY": public})).url
    tolerance = settings.sendgrid_tolerance_seconds
    body, headers = signed(key, time.time() - tolerance - 60)
    replay = requests.post(f"{url}/webhooks/sendgrid", data=body, headers=headers, timeout=10)
    assert replay.status_code == 403 and "away from now" in replay.json()["message"]
    body, headers = signed(key, time.time() - tolerance + 60)       # late, within the tolerance
    assert requests.post(f"{url}/webhooks/sendgrid", data=body, headers=headers, timeout=10).status_code == 200


# -- installs without a key -----------------------------------------------------------------------------

def lifecycle(env: dict[str, str], *args: str, cwd: str | None = None, timeout: float = 60
              ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "automation", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker", "-p", "1"], ["run"]])
def test_a_production_install_without_a_secret_refuses_to_start(settings, command):
    env = {k: v for k, v in {**os.environ, **settings.to_env()}.items() if not k.startswith("LIFECYCLE_SECRET")}
    result = lifecycle(env, *command)
    assert result.returncode == 2
    assert "LIFECYCLE_SECRET is not set" in result.stderr and "openssl rand -hex 32" in result.stderr
    # and check-config says so
    check = lifecycle(env, "check-config")
    assert check.returncode == 1 and "FAIL  LIFECYCLE_SECRET is not set" in check.stdout


def test_the_embedded_install_keeps_its_generated_secret(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("LIFECYCLE_")}
    env.update(LIFECYCLE_HOME=str(tmp_path / "home"), LIFECYCLE_JOURNEYS=str(ROOT / "journeys"),
               LIFECYCLE_TEMPLATES=str(ROOT / "templates"))
    first = lifecycle(env, "identify", "ana", "email=ana@example.com", "consent.email:=true", cwd=str(tmp_path))
    assert first.returncode == 0, first.stderr
    path = tmp_path / "home" / "secret"
    secret = path.read_text().strip()
    assert len(secret) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    # Started again, the install signs and checks with the same key: `lifecycle serve` accepts a
    # token made with it, and the file is unchanged
    port = 18000 + os.getpid() % 2000
    serve = subprocess.Popen([sys.executable, "-m", "automation", "serve", "--port", str(port)], env=env,
                             cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, timeout=60, what="lifecycle serve on the embedded install")
        redis_pid = int((tmp_path / "home" / "redis" / "redis.pid").read_text())
        assert unsubscribe(url, make_token(secret, "ana", "email")).status_code == 200
        assert unsubscribe(url, make_token("another-key", "ana", "email")).status_code == 400
    finally:
        serve.terminate()
        serve.wait(timeout=20)
    # The last process to leave the embedded Redis stopped it (uvicorn re-raises SIGTERM after its
    # graceful shutdown; the server once outlived `serve` for good)
    assert not process_alive(redis_pid)
    assert "LIFECYCLE_SECRET: this embedded install's own random key, kept in" in \
        lifecycle(env, "check-config", cwd=str(tmp_path)).stdout
    assert path.read_text().strip() == secret
