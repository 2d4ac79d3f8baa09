"""Channel adapters: discovery through entry points, routing, and the documented example."""

from __future__ import annotations

import http.server
import importlib
import json
import re
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from automation.channels import ChannelRegistry, Delivery, Failed, Retry, Sent, available_adapters
from automation.config import Settings
from tests.conftest import write

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def plugin_path(tmp_path: Path) -> Iterator[Path]:
    """A plugin distribution on sys.path, found by importlib.metadata like an installed one."""
    write(tmp_path / "demo_plugin" / "__init__.py", (
        "from automation.channels import Channel, Sent\n"
        "class Pigeon(Channel):\n"
        "    name = 'pigeon'\n"
        "    channels = ('pigeon',)\n"
        "    def send(self, delivery):\n"
        "        return Sent('coo')\n"
    ))
    write(tmp_path / "demo_plugin-1.0.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: demo-plugin\nVersion: 1.0\n")
    write(tmp_path / "demo_plugin-1.0.dist-info" / "entry_points.txt", (
        "[lifecycle.channels]\n"
        "pigeon = demo_plugin:Pigeon\n"
        "broken = demo_plugin:DoesNotExist\n"
    ))
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("demo_plugin", None)


def test_adapters_are_discovered_through_entry_points(plugin_path, caplog):
    adapters = available_adapters()
    assert adapters["pigeon"].__name__ == "Pigeon"
    assert "outbox" in adapters
    # A broken plugin is reported and skipped; the rest still load.
    assert "broken" not in adapters
    assert "channel adapter 'broken'" in caplog.text


def test_routing_a_plugin_channel(plugin_path):
    settings = Settings(channels={"email": "outbox", "pigeon": "pigeon"})
    registry = ChannelRegistry(settings)
    assert registry.names == ["email", "pigeon"]
    assert registry.get("pigeon").name == "pigeon"
    assert registry.parts_for("pigeon") == (("body",), ())


def test_misrouted_channels_are_reported(plugin_path):
    registry = ChannelRegistry(Settings(channels={"email": "pigeon", "sms": "nope"}))
    assert registry.names == []
    assert any("adapter 'pigeon' only serves pigeon" in p for p in registry.problems)
    assert any("no adapter named 'nope'" in p for p in registry.problems)


# -- the example in docs/adapters.md, run against a local stand-in for Slack ---------------------


class _Slack(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        if type(self).status == 429:
            self.send_header("Retry-After", "7")
        self.end_headers()
        self.wfile.write(b"ok" if type(self).status == 200 else b"invalid_payload")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slack_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slack)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Slack.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000"
    server.shutdown()


def documented_adapter() -> type:
    text = (ROOT / "docs" / "adapters.md").read_text()
    code = re.search(r"`lifecycle_slack/adapter.py`.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/adapters.md", "exec"), namespace)
    return namespace["SlackChannel"]


def delivery(to: str) -> Delivery:
    return Delivery(key="j:s:1:hot-lead:c1", contact_id="c1", journey="j", stage="s", step="hot-lead",
                    channel="slack", template="hot-lead", locale="en", to=to, parts={"body": "Hot lead: Ana"})


def test_the_documented_adapter_sends_and_classifies(slack_url):
    adapter = documented_adapter()(Settings())
    assert adapter.address("slack", {"slack_webhook": slack_url}) == slack_url
    _Slack.status = 200
    assert isinstance(adapter.send(delivery(slack_url)), Sent)
    assert _Slack.received == [{"text": "Hot lead: Ana"}]
    _Slack.status = 429
    result = adapter.send(delivery(slack_url))
    assert isinstance(result, Retry) and result.after == 7
    _Slack.status = 400
    result = adapter.send(delivery(slack_url))
    assert isinstance(result, Failed) and "invalid_payload" in result.reason
    result = adapter.send(delivery("http://127.0.0.1:1/closed"))
    assert isinstance(result, Retry) and "unreachable" in result.reason


def test_the_discard_adapter_runs_everything_but_the_send(runtime, make_engine, run_due, settings):
    from automation.api import Lifecycle

    discard = {"email": "discard", "sms": "discard", "push": "discard"}
    engine = make_engine(ChannelRegistry(settings.with_changes(channels=discard)))
    lc = Lifecycle(runtime)
    lc.identify("ana", {"email": "ana@example.com", "consent": {"email": True}})
    run_due(engine)
    outcome = lc.history("ana")["customer-lifecycle:lead:1:welcome"]
    assert outcome["state"] == "sent" and outcome["id"] == "discarded"
    assert list(settings.outbox_dir.glob("*/*")) == []
