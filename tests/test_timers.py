"""Durable timers: atomic claims, leases that bring work back, cancel and reschedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from automation.runtime import open_runtime
from automation.store.keys import Keys, step_member
from automation.store.timers import Claim, TimerStore
from tests.conftest import ROOT


def test_concurrent_claims_never_hand_out_a_timer_twice(runtime, settings, clock):
    # Given 2,000 due timers
    store = TimerStore(runtime)
    store.schedule_many((f"c{i}", step_member("j", f"c{i}"), clock.now() - 1) for i in range(2000))
    # When four schedulers, each with its own connection, claim at the same time
    results: list[list[Claim]] = []

    def claim_all() -> None:
        own = open_runtime(settings, clock=clock)
        mine: list[Claim] = []
        while True:
            claims, _ = TimerStore(own).claim(limit_per_shard=50)
            if not claims:
                break
            mine.extend(claims)
        results.append(mine)
        own.close()

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every timer was claimed exactly once
    members = [claim.member for mine in results for claim in mine]
    assert len(members) == 2000
    assert len(set(members)) == 2000
    assert store.counts() == {"pending": 0, "leased": 2000}


def test_only_due_timers_are_claimed_in_due_order(runtime, clock):
    store = TimerStore(runtime)
    now = clock.now()
    store.schedule("a", step_member("j", "a"), now - 5)
    store.schedule("b", step_member("j", "b"), now - 10)
    store.schedule("c", step_member("j", "c"), now + 60)
    claims, _ = store.claim(limit_per_shard=100)
    assert [c.member for c in claims] == [step_member("j", "b"), step_member("j", "a")]
    assert [c.due for c in claims] == [now - 10, now - 5]
    assert store.counts() == {"pending": 1, "leased": 2}


def claim_when_leases_end(store: TimerStore, timeout: float = 30.0) -> tuple[list[Claim], int]:
    """Claim again and again until an expired lease is handed back (however slow the machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claims, reclaimed = store.claim(limit_per_shard=10)
        if reclaimed:
            return claims, reclaimed
        time.sleep(0.05)
    raise AssertionError("no lease ran out")


def test_an_unfinished_claim_comes_back_when_its_lease_ends(runtime, clock):
    store = TimerStore(runtime)
    member = step_member("j", "c1")
    store.schedule("c1", member, clock.now())
    first, _ = store.claim(limit_per_shard=10, lease_seconds=0.3)
    assert [c.member for c in first] == [member]
    # While the lease holds, nobody else gets it
    assert store.claim(limit_per_shard=10)[0] == []
    # When the worker dies and the lease runs out, the timer is handed out again
    again, reclaimed = claim_when_leases_end(store)
    assert [c.member for c in again] == [member] and reclaimed == 1


def test_an_extended_lease_keeps_its_claim_and_is_released_by_its_token(runtime, clock):
    store = TimerStore(runtime)
    member = step_member("j", "c1")
    store.schedule("c1", member, clock.now())
    (claim,), _ = store.claim(limit_per_shard=10, lease_seconds=0.3)
    # When the scheduler has queued it, its lease is extended (the claim keeps its token)
    assert store.extend([claim], 3600) == 1
    assert store.extend([Claim(member, claim.due, claim.lease + 1)], 3600) == 0   # not that claim's token
    # Then it does not come back when the short lease would have ended
    time.sleep(0.4)
    assert store.claim(limit_per_shard=10) == ([], 0)
    # And the message's token still releases it
    store.ack([claim])
    assert store.counts() == {"pending": 0, "leased": 0}


def test_ack_releases_only_the_claim_it_holds(runtime, clock):
    store = TimerStore(runtime)
    member = step_member("j", "c1")
    store.schedule("c1", member, clock.now())
    (claim,), _ = store.claim(limit_per_shard=10)
    store.ack([Claim(member, claim.due, claim.lease + 5)])   # a stale message with an older lease
    assert store.counts()["leased"] == 1
    store.ack([claim])
    assert store.counts() == {"pending": 0, "leased": 0}


def test_reschedule_and_cancel(runtime, clock):
    store = TimerStore(runtime)
    member = step_member("winback", "c1")
    store.schedule("c1", member, clock.now() + 100)
    store.schedule("c1", member, clock.now() + 500)          # scheduling again moves it
    assert store.due_time("c1", member) == clock.now() + 500
    assert store.counts()["pending"] == 1
    assert store.cancel("c1", member) is True
    assert store.due_time("c1", member) is None
    clock.advance(1000)
    assert store.claim(limit_per_shard=10)[0] == []


def test_a_timer_rescheduled_while_claimed_keeps_its_new_time(runtime, clock):
    store = TimerStore(runtime)
    member = step_member("j", "c1")
    store.schedule("c1", member, clock.now())
    store.claim(limit_per_shard=10, lease_seconds=0.3)
    store.schedule("c1", member, clock.now() + 3600)         # e.g. an event moved it meanwhile
    claims, reclaimed = claim_when_leases_end(store)
    assert claims == [] and reclaimed == 1
    assert store.due_time("c1", member) == clock.now() + 3600


def test_timers_spread_over_shards_by_contact(runtime, clock):
    store = TimerStore(runtime)
    store.schedule_many((f"c{i}", step_member("j", f"c{i}"), clock.now() + 10) for i in range(400))
    sizes = [runtime.redis.zcard(runtime.keys.timers(s)) for s in range(runtime.keys.shards)]
    assert sum(sizes) == 400 and min(sizes) > 50


SHARD_OF_IN_A_CHILD = """
import json, sys
from automation.store.keys import Keys
print(json.dumps([Keys("other", int(sys.argv[1])).shard_of(f"contact-{i}") for i in range(1000)]))
"""


def test_a_contact_has_one_shard_whoever_computes_it():
    # Given the shard of 1,000 contacts, as this process computes it
    ids = [f"contact-{i}" for i in range(1000)]
    here = [Keys("ns", 16).shard_of(contact_id) for contact_id in ids]
    # When another Keys, in another namespace, and another process (another string hash seed) compute it
    elsewhere = [Keys("other", 16).shard_of(contact_id) for contact_id in ids]
    child = subprocess.run([sys.executable, "-c", SHARD_OF_IN_A_CHILD, "16"], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"},
                           check=True)
    # Then they all agree: the scheduler, every worker and every script find a contact's timers in one shard
    assert elsewhere == here
    assert json.loads(child.stdout) == here
    # and the ids do not all land in one shard
    assert len(set(here)) == 16


@pytest.mark.parametrize("shards", [1, 4, 16, 64])
def test_contacts_spread_evenly_over_every_shard(shards):
    # Given 10,000 contacts
    keys = Keys("ns", shards)
    # When each is given its shard
    found = [keys.shard_of(f"contact-{i}") for i in range(10_000)]
    # Then every shard number is one of the shards, every shard is used, and none holds much more than another
    assert all(isinstance(shard, int) and 0 <= shard < shards for shard in found)
    counts = Counter(found)
    assert set(counts) == set(range(shards))
    mean = 10_000 / shards
    assert all(0.8 * mean <= count <= 1.2 * mean for count in counts.values()), sorted(counts.values())
