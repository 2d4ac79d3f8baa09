"""`lifecycle forecast` against the engine itself: what it forecasts is what the workers then send.

A small population sits at every point of the customer lifecycle (new, active, loyal, about to
lapse, lapsed, about to churn) in several time zones, with SMS and push consent for some, so the
forecast goes through stage changes, waits, wait_until, quiet hours and frequency caps. The clock
is then run forward with the real executor, timer by timer; sends per day and channel must match.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from automation.api import Lifecycle
from automation.engine.forecast import Forecast, forecast
from automation.engine.services import Engine
from automation.events import Event
from automation.runtime import Runtime
from automation.store.contacts import ContactStore
from automation.store.timers import TimerStore
from tests.conftest import lifecycle_command as lifecycle, DAY, ROOT

ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Asia/Tehran")
#: Days since each purchase: from new customers to ones about to churn, one contact per history.
HISTORIES = ([], [2], [6], [40, 20], [89], [92], [95, 60], [100], [175], [179], [183], [200],
             [299], [361], [367], [30, 25, 20, 15, 10], [60, 50, 40, 30, 28], [93, 88],
             # a win-back now, six months without buying five hours later: the next offer waits for the
             # daily email cap
             [179.8], [],
             # lapses at 21:36 London time: its SMS three days later is held until 08:00, the next day
             [85.6])
DAYS = 12


@pytest.fixture(autouse=True)
def with_the_shipped_guardrails(project: Path) -> None:
    """The shipped workspace: frequency caps (one marketing email a day ...) and quiet hours."""
    shutil.copy(ROOT / "journeys" / "_workspace.yaml", project / "journeys" / "_workspace.yaml")


def populate(runtime: Runtime, lc: Lifecycle, now: float) -> None:
    events = []
    for number, history in enumerate(HISTORIES):
        contact = f"c{number:02d}"
        consent = {"email": True, "sms": number % 2 == 0, "push": number % 3 != 1}
        lc.identify(contact, {"email": f"{contact}@example.com", "phone": "+14155550100", "first_name": contact,
                              "timezone": ZONES[number % len(ZONES)], "consent": consent,
                              "push_tokens": [f"token-{contact}"], "lifetime_value": 100 * number,
                              "seasonal": number == 12})
        events += [Event(contact, "purchase", now - days * DAY, {"item": "Merino shirt"}) for days in history]
    ContactStore(runtime).track_many(events, triggers=False)      # history: it triggers nothing


def sent_per_day(runtime) -> Counter[tuple[str, str]]:
    stats = runtime.redis.hgetall(runtime.keys.stats)
    return Counter({tuple(key.split(":")[1:]): int(value) for key, value in stats.items()
                    if key.startswith("day:")})


def test_the_forecast_matches_what_the_workers_send_day_by_day(runtime, engine: Engine, run_due, clock):
    lc = Lifecycle(runtime)
    start = clock.now()
    populate(runtime, lc, start)
    before = runtime.redis.dbsize()

    predicted = forecast(engine, days=DAYS)[""]

    assert runtime.redis.dbsize() == before                    # a forecast writes nothing
    expected = Counter({(predicted.day(day), channel): count
                        for channel, values in predicted.channel_days().items()
                        for day, count in enumerate(values) if count})
    assert sum(expected.values()) > 20 and {channel for _, channel in expected} >= {"email", "sms", "push"}
    assert predicted.not_sent                                  # caps, consent: reached but not sent

    # When: the clock runs forward, each timer at its due time, through the real executor.
    timers = TimerStore(runtime)
    end = predicted.end
    while (due := timers.next_due()) is not None and due < end:
        clock.set(max(due, clock.now()))
        run_due(engine)

    assert sent_per_day(runtime) == expected


def test_a_sample_is_scaled_up_to_the_population(runtime, engine: Engine, clock):
    lc = Lifecycle(runtime)
    populate(runtime, lc, clock.now())
    result = forecast(engine, days=3, sample=6, seed=1)[""]
    assert (result.contacts, result.simulated) == (len(HISTORIES), 6)
    assert result.scale == len(HISTORIES) / 6


def test_a_forecast_shared_out_to_two_processes_counts_the_same(runtime, engine: Engine, clock):
    populate(runtime, Lifecycle(runtime), clock.now())
    alone = forecast(engine, days=DAYS, processes=1)[""]
    shared = forecast(engine, days=DAYS, processes=2, parallel_from=1)[""]
    assert shared.simulated == alone.simulated == len(HISTORIES)
    assert (shared.per_day(), shared.not_sent) == (alone.per_day(), alone.not_sent)


def test_the_command_names_the_journey_files_that_change_the_forecast(runtime, settings, clock, tmp_path):
    populate(runtime, Lifecycle(runtime), time.time())
    edited = tmp_path / "edited"
    shutil.copytree(settings.journeys_dir, edited)
    path = edited / "customer-lifecycle.yaml"
    path.write_text(path.read_text().replace("lapse_days: 90 ", "lapse_days: 60 "))
    page = tmp_path / "forecast.html"
    done = lifecycle(settings, "forecast", "--days", "10", "--journeys", str(edited),
                     "--against", str(settings.journeys_dir), "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert "1 of their files edited" in done.stdout
    assert "customer-lifecycle.yaml: customer-lifecycle" in done.stdout
    assert 'id="forecast-channels"' in page.read_text()
    csv = lifecycle(settings, "forecast", "--days", "3", "--csv")
    assert csv.stdout.startswith("day,journey,channel,messages\n") and ",customer-lifecycle,email," in csv.stdout
    # Nothing is deployed yet: --against deployed says so; once deployed, it is what the edit is compared with
    nothing = lifecycle(settings, "forecast", "--days", "3", "--against", "deployed")
    assert nothing.returncode == 2 and "no journey version is recorded yet" in nothing.stderr
    assert lifecycle(settings, "deploy", "--by", "test").returncode == 0
    against = lifecycle(settings, "forecast", "--days", "10", "--journeys", str(edited), "--against", "deployed")
    assert against.returncode == 0, against.stderr
    assert "customer-lifecycle.yaml: customer-lifecycle" in against.stdout
    # and so it is when workers serve only deployed versions: the files given are forecast, not those
    required = lifecycle(settings, "forecast", "--days", "10", "--journeys", str(edited), "--against", "deployed",
                         LIFECYCLE_DEPLOY="required")
    assert required.returncode == 0, required.stderr
    assert required.stdout == against.stdout
    for bad in (["--days", "0"], ["--journeys", str(tmp_path / "none")],
                ["--against", "no-such-ref"]):
        refused = lifecycle(settings, "forecast", *bad)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, bad


def test_the_table_lines_up_with_short_journey_names():
    # "all journeys" once ran into the channel column when every journey's name was shorter
    result = Forecast(start=0.0, days=2, contacts=3, simulated=3,
                      sends=Counter({("vip", "email", 0): 2, ("vip", "sms", 1): 1}))
    rows = [line for line in result.format().splitlines() if line.startswith("  ")]
    assert [row.split() for row in rows[1:]] == [
        ["vip", "email", "2", "2", "1970-01-01", "2", "0"], ["vip", "sms", "1", "1", "1970-01-02", "0", "1"],
        ["all", "journeys", "email", "2", "2"], ["all", "journeys", "sms", "1", "1"]]
    channel_at = {re.search(r" (email|sms) ", row).start() for row in rows[1:]}
    assert len(channel_at) == 1, rows     # one channel column
