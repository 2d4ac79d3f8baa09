"""Channel adapters: discovery through entry points, routing, and the documented example."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Iterator

import pytest

from automation.channels import ChannelRegistry, available_adapters
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


# -- the example in docs/adapters.md, run through the contract kit against its own stand-in ------


def _documented(name: str, start_marker: str) -> dict:
    text = (ROOT / "docs" / "adapters.md").read_text()
    code = re.search(re.escape(start_marker) + r".*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {"__name__": name}
    exec(compile(code, "docs/adapters.md", "exec"), namespace)
    return namespace


SLACK = _documented("lifecycle_slack.adapter", "`lifecycle_slack/adapter.py`")
sys.modules.setdefault("lifecycle_slack", type(sys)("lifecycle_slack"))
sys.modules.setdefault("lifecycle_slack.adapter", type(sys)("lifecycle_slack.adapter"))
sys.modules["lifecycle_slack.adapter"].SlackChannel = SLACK["SlackChannel"]
KIT = _documented("docs_kit_example", "## Proving it: the contract kit")
TestDocumentedSlackAdapter = KIT["TestSlackAdapter"]


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
