"""Fault injection on real processes: workers, the scheduler and Redis die while emails go out.

The harness (bench/chaos.py, also behind `bench/run.py --only chaos`) runs real `lifecycle worker`
and `lifecycle scheduler` processes on a private embedded Redis, sending through the real sendgrid
SDK to a SendGrid stand-in that answers slowly enough for kills to land inside requests, and
counts at the stand-in what arrived. The bounds asserted are docs/reliability.md's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import Chaos, run_optouts

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_nothing_is_lost_when_workers_the_scheduler_and_redis_die(tmp_path: Path):
    # Given 400 contacts with an email due, one cohort per fault, sent by real worker processes
    chaos = Chaos(tmp_path, contacts=400, latency=0.1, processes=1, threads=4, reconcile_seconds=5.0, seed=11)
    try:
        # When the workers are killed twice (kill -9), the scheduler once, and Redis once
        result = chaos.run(worker_kills=2, kill_scheduler=True, kill_redis=True, timeout=240)
    finally:
        chaos.stop()
    # Then every step ends sent or failed with a reason: none lost, none left in doubt
    assert result.lost == 0 and result.unknown_left == 0, result.states
    # And the provider got a message twice only where a killed worker's request was in flight
    assert result.inflight_at_kills > 0
    assert result.duplicates <= result.inflight_at_kills
    # And steps a dead worker held were sent again within 30 s of its death; the scheduler's death
    # delayed nothing by 10 s or more; work went on within 10 s of Redis answering again
    assert result.recovery_s and max(result.recovery_s) < 30, sorted(result.recovery_s)[-5:]
    assert max(result.scheduler_delay_s, default=0.0) < 10
    assert result.redis_resume_s is not None and result.redis_resume_s < 10


def test_no_email_goes_out_after_an_optout_returned(tmp_path: Path):
    # Given 300 contacts whose emails are going out from two worker processes
    chaos = Chaos(tmp_path, contacts=300, latency=0.05, processes=2, threads=4, seed=12)
    try:
        # When half of them opt out of email meanwhile
        result = run_optouts(chaos, fraction=0.5, timeout=240)
    finally:
        chaos.stop()
    # Then none of them got an email marked for the provider after their opt-out call returned
    assert result.opted_out == 150
    assert result.late_sends == 0
    assert result.states["skipped"] > 0 and result.states["sent"] >= 150
