"""`lifecycle report`: the journeys' page, its numbers, its statistics, and how it looks in a browser.

The lift's interval is checked against Newcombe's published worked examples; the page is checked
against `lifecycle status --json` (the same counters) and opened in a real headless Chromium,
which must log no error and show the diagrams and charts.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from automation.api import Lifecycle
from automation.channels import ChannelRegistry
from automation.engine.migration import deploy
from automation.engine.services import Engine
from automation.insight.lift import lift, newcombe
from automation.ops.deploys import file_candidates
from automation.runtime import open_runtime
from automation.server.app import create_app
from automation.store.apikeys import ApiKeys
from automation.store.contacts import ContactStore
from automation.store.deliveries import DeliveryLog, DeliveryReport
from automation.events import Event
from tests.conftest import lifecycle_command as lifecycle, DAY, write

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


# -- the interval -----------------------------------------------------------------------------------

@pytest.mark.parametrize("x1, n1, x2, n2, difference, lower, upper", [
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score, no correction)
    (56, 70, 48, 80, 0.2, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.6, 0.1705, 0.8090),
    (6, 7, 2, 7, 4 / 7, 0.0582, 0.8062),
    (5, 56, 0, 29, 5 / 56, -0.0381, 0.1926),
    (0, 10, 0, 20, 0.0, -0.1611, 0.2775),
    (10, 10, 0, 20, 1.0, 0.6791, 1.0000),
])
def test_the_lift_interval_is_newcombes_method_10(x1, n1, x2, n2, difference, lower, upper):
    found = newcombe(x1, n1, x2, n2)
    assert found == pytest.approx((difference, lower, upper), abs=0.00005)


def test_the_verdict_says_when_there_are_too_few_contacts():
    assert lift("offer", 9, 10, 3, 10).verdict == "significant: converts better than the holdout"
    assert lift("offer", 3, 20, 1, 10).verdict == "not yet significant: n too small"
    assert lift("offer", 300, 2000, 290, 2000).verdict == "no significant difference"
    assert lift("offer", 0, 0, 0, 0).verdict == "no data yet"


# -- the counters behind it ---------------------------------------------------------------------------

def populate(runtime, lc: Lifecycle, now: float) -> None:
    """Leads, new customers and lapsed ones (through the win-back split and its holdout)."""
    events = []
    for number in range(24):
        contact = f"p{number:02d}"
        lc.identify(contact, {"email": f"{contact}@example.com", "first_name": contact.title(),
                              "consent": {"email": number % 5 != 0}})
        if number % 3:
            events.append(Event(contact, "purchase", now - (100 if number % 3 == 1 else 5) * DAY, {"item": "Shirt"}))
    ContactStore(runtime).track_many(events, triggers=False)


def report_of(runtime, key: str, status: str, report_id: str) -> None:
    journey, scope, occurrence, step, contact = key.split(":")
    DeliveryLog(runtime).record(DeliveryReport("email", key, contact, status, runtime.clock.now(),
                                               report_id=report_id))


def test_provider_reports_are_counted_per_journey_step_once_per_message(runtime, engine: Engine, run_due):
    lc = Lifecycle(runtime)
    lc.identify("ann", {"email": "ann@example.com", "consent": {"email": True}})
    run_due(engine)
    key = "customer-lifecycle:lead:1:welcome:ann"
    for number, status in enumerate(("delivered", "opened", "opened", "clicked")):
        report_of(runtime, key, status, f"r{number}")
    stats = runtime.redis.hgetall(runtime.keys.stats)
    prefix = "dstep:customer-lifecycle:lead:welcome:"
    assert {k[len(prefix):]: int(v) for k, v in stats.items() if k.startswith(prefix)} == \
        {"delivered": 1, "opened": 1, "clicked": 1}
    assert stats["delivery:opened:email"] == "2"        # per channel, every report counts as before


# -- the page -------------------------------------------------------------------------------------------

@pytest.fixture
def filled(runtime, engine: Engine, run_due, clock) -> None:
    lc = Lifecycle(runtime)
    populate(runtime, lc, clock.now())
    run_due(engine)
    clock.advance(DAY)
    run_due(engine)
    sent = [f"{key}:{contact}" for contact in (f"p{n:02d}" for n in range(24))
            for key, outcome in lc.history(contact).items() if outcome["state"] == "sent"]
    for number, key in enumerate(sent):
        report_of(runtime, key, "delivered", f"d{number}")
        if number % 2:
            report_of(runtime, key, "opened", f"o{number}")
    for contact in ("p01", "p04", "p07"):       # lapsed ones buy again: conversions, holdout or not
        lc.track(contact, "purchase", {"item": "Shirt"})
    run_due(engine)


def test_the_report_matches_status_and_opens_cleanly_in_a_browser(settings, filled, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (test extras)")
    status = lifecycle(settings, "status", "--json")
    assert status.returncode == 0, status.stderr
    stats = json.loads(status.stdout)["stats"]
    out = tmp_path / "report.html"
    made = lifecycle(settings, "report", "--out", str(out))
    assert made.returncode == 0, made.stderr
    html = out.read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in html
    assert "Newcombe" in html and "Wilson" in html

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"no headless browser: install Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        browser.get(out.as_uri())
        by = webdriver.common.by.By
        assert browser.find_elements(by.CSS_SELECTOR, "svg.flow#flow-customer-lifecycle")
        assert browser.find_elements(by.CSS_SELECTOR, "svg.chart#sends-per-day polyline")
        assert browser.find_elements(by.CSS_SELECTOR, "svg.chart#rates-customer-lifecycle rect")
        # Each send node shows the counters status shows
        nodes = browser.find_elements(by.CSS_SELECTOR, "#flow-customer-lifecycle g.node[data-kind='send']")
        shown = {}
        for node in nodes:
            shown.setdefault(node.get_attribute("data-step"), []).append(
                (int(node.get_attribute("data-sent")), int(node.get_attribute("data-delivered")),
                 int(node.get_attribute("data-opened"))))
        welcome = shown["welcome"][0]
        assert welcome == (stats["step:customer-lifecycle:lead:welcome:sent"],
                           stats["dstep:customer-lifecycle:lead:welcome:delivered"],
                           stats.get("dstep:customer-lifecycle:lead:welcome:opened", 0))
        assert welcome[0] > 0
        coupon = shown["winback-coupon"][0]
        assert coupon[0] == stats["step:customer-lifecycle:lapsed:winback-coupon:sent"] > 0
        # The split's table: conversions per variant as status counts them, and a verdict in words
        split = browser.find_element(by.CSS_SELECTOR, "table.split").text
        for variant in ("offer", "holdout"):
            entered = stats.get(f"split:customer-lifecycle:winback-holdout:{variant}:entered", 0)
            converted = stats.get(f"split:customer-lifecycle:winback-holdout:{variant}:converted", 0)
            assert f"{entered} {converted}" in split
        assert "not yet significant: n too small" in split
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        shot = tmp_path / "report.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the report: {shot}")
        if os.environ.get("LIFECYCLE_REPORT_SCREENSHOT"):
            shutil.copy(shot, os.environ["LIFECYCLE_REPORT_SCREENSHOT"])
    finally:
        browser.quit()


def test_the_report_is_served_to_admin_keys_only(runtime, filled, serve_app):
    api = serve_app(create_app(runtime, env={})).url
    keys = ApiKeys(runtime)
    ingest, admin = keys.create("ingest")[1], keys.create("admin")[1]

    def get(key: str | None, query: str = "") -> requests.Response:
        headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()} if key else {}
        return requests.get(f"{api}/report{query}", headers=headers, timeout=30)

    assert get(None).status_code == 401
    assert get(ingest).status_code == 403
    page = get(admin, "?journey=customer-lifecycle&since=2026-01-01")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="flow-customer-lifecycle"' in page.text
    assert get(admin, "?since=yesterday").status_code == 400
    assert get(admin, "?journey=nope").status_code == 400


def test_bad_report_arguments_get_one_line_and_exit_2(settings):
    bad = lifecycle(settings, "report", "--since", "last week", "--out", "x.html")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "YYYY-MM-DD" in bad.stderr
    unknown = lifecycle(settings, "report", "--journey", "nope", "--out", "x.html")
    assert unknown.returncode == 2 and "no journey 'nope'" in unknown.stderr
    # An output that cannot be written is refused before any work, in one line (it was a traceback)
    for out, why in (("/nonexistent/r.html", "the folder /nonexistent does not exist"), ("/tmp", "is a folder")):
        unwritable = lifecycle(settings, "report", "--out", out)
        assert unwritable.returncode == 2 and why in unwritable.stderr and "Traceback" not in unwritable.stderr


NOT_DEPLOYED = """\
vars: {brand: Acme, shop_url: "https://acme.test"}
journey: not-deployed
trigger: {event: signup}
steps:
  - send: email
    template: welcome
"""


def test_the_page_draws_the_versions_the_workers_serve(settings, runtime, clock, serve_app, tmp_path):
    # Given the journeys deployed, and then a new journey file that is not
    channels = ChannelRegistry(settings)
    candidates, _ = file_candidates(settings, channels, [])
    deploy(runtime, candidates, channels.adapters, "test")
    write(settings.journeys_dir / "not-deployed.yaml", NOT_DEPLOYED)
    keys = ApiKeys(runtime)
    admin = {"Authorization": "Basic " + base64.b64encode(f"{keys.create('admin')[1]}:".encode()).decode()}

    def page(deploy_mode: str) -> str:
        served = open_runtime(settings.with_changes(deploy=deploy_mode), clock=clock)
        try:
            api = serve_app(create_app(served, env={})).url
            answer = requests.get(f"{api}/report", headers=admin, timeout=30)
            assert answer.status_code == 200
            return answer.text
        finally:
            served.close()

    # Then workers that follow the files draw it, and with LIFECYCLE_DEPLOY=required the page, like
    # `lifecycle report`, draws only what is deployed
    assert 'id="flow-not-deployed"' in page("auto")
    required = page("required")
    assert 'id="flow-customer-lifecycle"' in required and 'id="flow-not-deployed"' not in required
    out = tmp_path / "report.html"
    made = lifecycle(settings, "report", "--out", str(out), LIFECYCLE_DEPLOY="required")
    assert made.returncode == 0, made.stderr
    assert 'id="flow-not-deployed"' not in out.read_text(encoding="utf-8")
