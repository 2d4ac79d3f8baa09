"""Scheduled broadcasts: a journey with `trigger: {schedule: <cron>}` reaches every matching contact.

One timer per journey (`b|<journey>`) fires at each occurrence of the schedule, in the
journey's time zone. The worker that claims it walks the contacts with SCAN, in chunks,
and puts a broadcast item into each contact's inbox (with a re-evaluation due now);
between chunks the timer is due again at once, so one broadcast over a million contacts
is many small messages that any worker can take, never one long job. Each contact's
evaluation then checks the journey's `where:` filter and re-entry policy and starts the
run (automation.evaluation): the broadcast costs one inbox item per contact, and a chunk
handed out twice (a worker died) changes nothing, because a contact takes part in each
occurrence once.

Progress lives in `<ns>:bc:<journey>`: the schedule and zone it was armed for, the
occurrence being sent (`next`) and the SCAN cursor.
"""

from __future__ import annotations

import json
import logging
from typing import Iterable, Mapping

from automation.calendar import CalendarError, next_cron, zone
from automation.language.journey import Journey
from automation.runtime import Runtime
from automation.store.keys import broadcast_member, parse_member, recheck_member
from automation.store.timers import Claim, TimerStore

logger = logging.getLogger(__name__)
#: Keys asked of each SCAN call; about a third of a contact store's keys are contact hashes.
SCAN_COUNT = 2000


def arm_broadcasts(runtime: Runtime, journeys: Iterable[Journey]) -> None:
    """Make sure each scheduled journey has its next occurrence timer (after a deploy or an edit)."""
    keys, client = runtime.keys, runtime.redis
    now = runtime.clock.now()
    for journey in journeys:
        trigger = journey.trigger
        if trigger is None or trigger.kind != "schedule" or not trigger.schedule:
            continue
        member = broadcast_member(journey.name)
        state = client.hgetall(keys.broadcast(journey.name))
        plan = f"{trigger.schedule}@{journey.timezone}"
        pending = client.zscore(keys.timers_for(journey.name), member) is not None \
            or client.zscore(keys.leases_for(journey.name), member) is not None
        if state.get("plan") == plan and pending:
            continue
        if state.get("plan") == plan and state.get("cursor", "0") != "0":
            when = now              # an interrupted broadcast carries on
        else:
            try:
                when = next_cron(trigger.schedule, now, zone(journey.timezone))
            except CalendarError as exc:
                logger.error("%s: schedule %r: %s", journey.path, trigger.schedule, exc)
                continue
            client.hset(keys.broadcast(journey.name), mapping={"plan": plan, "next": repr(when), "cursor": "0"})
        client.zadd(keys.timers_for(journey.name), {member: when})
        logger.info("journey %s: next broadcast at %s", journey.name, when)


def run_broadcasts(runtime: Runtime, journeys: Mapping[str, Journey], timers: TimerStore,
                   claims: list[Claim]) -> None:
    """Queue the next chunk of each claimed broadcast (the worker's part of a `b|` timer)."""
    for claim in claims:
        try:
            _chunk(runtime, journeys, timers, claim)
        except Exception:  # the lease runs out and the chunk is handed out again
            logger.exception("broadcast %s failed", claim.member)


def _chunk(runtime: Runtime, journeys: Mapping[str, Journey], timers: TimerStore, claim: Claim) -> None:
    keys, client = runtime.keys, runtime.redis
    _, name, _ = parse_member(claim.member)
    journey = journeys.get(name or "")
    if journey is None or journey.trigger is None or journey.trigger.kind != "schedule":
        client.delete(keys.broadcast(name))     # the journey was removed or no longer broadcasts
        timers.ack([claim])
        return
    state = client.hgetall(keys.broadcast(name))
    occurrence = state.get("next") or repr(claim.due)
    cursor, found = client.scan(int(state.get("cursor", "0")), match=keys.contact_pattern, count=SCAN_COUNT)
    now = runtime.clock.now()
    prefix = len(keys.contact(""))
    item = "b" + json.dumps([name, occurrence], separators=(",", ":"))
    keep = runtime.settings.inbox_length
    pipe = client.pipeline(transaction=False)
    for key in found:
        contact_id = key[prefix:]
        pipe.rpush(keys.inbox(contact_id), item)
        pipe.ltrim(keys.inbox(contact_id), -keep, -1)
        pipe.zadd(keys.timers_for(contact_id), {recheck_member(contact_id): now}, lt=True)
    pipe.hincrby(keys.stats, f"broadcast:{name}:queued", len(found))
    if cursor:
        pipe.hset(keys.broadcast(name), "cursor", str(cursor))
        pipe.zadd(keys.timers_for(name), {claim.member: now})
    else:
        when = next_cron(journey.trigger.schedule or "", float(occurrence), zone(journey.timezone))
        pipe.hset(keys.broadcast(name), mapping={"cursor": "0", "next": repr(when)})
        pipe.zadd(keys.timers_for(name), {claim.member: when})
        pipe.hincrby(keys.stats, f"broadcast:{name}:runs", 1)
        logger.info("broadcast %s of %s queued; next at %s", name, occurrence, when)
    pipe.execute()
    timers.ack([claim])
