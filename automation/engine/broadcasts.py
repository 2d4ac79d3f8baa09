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

One-off broadcasts (`lifecycle broadcast`, of a `broadcast: true` or a scheduled journey) go the
same way under their own timer (`b|<journey>|<id>`) and hash (`<ns>:bc:<journey>:<id>`: when,
local time, state, cursor, contacts reached), listed in `<ns>:broadcasts`. A local-time one
("10:00 in each contact's zone") starts fanning out when that time first comes anywhere, and each
contact's evaluation arms their run for that time in their own zone (automation.engine.evaluation).
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable, Mapping

from redis.client import Pipeline
from redis.exceptions import WatchError

from automation.calendar import CalendarError, next_cron, parse_time_of_day, zone
from automation.errors import InputError
from automation.language.journey import Journey
from automation.runtime import Runtime
from automation.store.keys import broadcast_member, parse_member, recheck_member
from automation.store.timers import Claim, TimerStore

logger = logging.getLogger(__name__)
#: Keys asked of each SCAN call; about a third of a contact store's keys are contact hashes.
SCAN_COUNT = 2000
#: The earliest zone's offset: a local-time broadcast starts fanning out when its time comes there.
EARLIEST_OFFSET = timezone(timedelta(hours=14))
#: States of a one-off broadcast.
SCHEDULED, SENDING, SENT, CANCELLED, FAILED = "scheduled", "sending", "sent", "cancelled", "failed"


@dataclass(frozen=True)
class OneOff:
    """A one-off broadcast of a journey."""

    journey: str
    id: str
    at: float                  # when it starts reaching contacts (journey clock)
    local: str = ""            # "10:00": each contact at that time in their own zone
    day: str = ""              # with `local`: the local date ("" = the next such time)
    state: str = SCHEDULED
    reached: int = 0           # contacts offered the broadcast so far
    created: float = 0.0

    @classmethod
    def from_hash(cls, journey: str, one_off: str, data: Mapping[str, str]) -> "OneOff":
        return cls(journey, one_off, float(data.get("at", 0)), data.get("local", ""), data.get("day", ""),
                   data.get("state", SCHEDULED), int(data.get("reached", 0)), float(data.get("created", 0)))

    def item(self) -> str:
        """The inbox item that offers it to a contact (automation.engine.evaluation.offer_broadcast)."""
        payload: list = [self.journey, self.id]
        if self.local:
            payload.append({"local": self.local, "day": self.day or None, "after": self.at})
        return "b" + json.dumps(payload, separators=(",", ":"))


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
            if parse_member(claim.member)[2]:
                _one_off_chunk(runtime, journeys, timers, claim)
            else:
                _chunk(runtime, journeys, timers, claim)
        except Exception:  # the lease runs out and the chunk is handed out again
            logger.exception("broadcast %s failed", claim.member)


def _offer(runtime: Runtime, pipe: Pipeline, cursor: int, item: str, journey: str) -> tuple[int, int]:
    """Put `item` into the inboxes of the next SCAN chunk of contacts, each due for evaluation now.
    Returns the next cursor (0: done) and how many contacts the chunk had."""
    keys, client = runtime.keys, runtime.redis
    cursor, found = client.scan(cursor, match=keys.contact_pattern, count=SCAN_COUNT)
    now = runtime.clock.now()
    prefix = len(keys.contact(""))
    keep = runtime.settings.inbox_length
    for key in found:
        contact_id = key[prefix:]
        pipe.rpush(keys.inbox(contact_id), item)
        pipe.ltrim(keys.inbox(contact_id), -keep, -1)
        pipe.zadd(keys.timers_for(contact_id), {recheck_member(contact_id): now}, lt=True)
    pipe.hincrby(keys.stats, f"broadcast:{journey}:queued", len(found))
    return int(cursor), len(found)


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
    now = runtime.clock.now()
    item = "b" + json.dumps([name, occurrence], separators=(",", ":"))
    pipe = client.pipeline(transaction=False)
    cursor, _ = _offer(runtime, pipe, int(state.get("cursor", "0")), item, name)
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


def _one_off_chunk(runtime: Runtime, journeys: Mapping[str, Journey], timers: TimerStore, claim: Claim) -> None:
    keys, client = runtime.keys, runtime.redis
    _, name, one_off = parse_member(claim.member)
    key = keys.broadcast(name, one_off)
    # WATCH the broadcast from the read of its state to the write of this chunk: a cancel in
    # between makes the whole chunk (its offers included) not happen, instead of being undone by it.
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        data = pipe.hgetall(key)
        if not data or data.get("state") in (SENT, CANCELLED, FAILED):
            timers.ack([claim])                  # cancelled, or a redelivery after the last chunk
            return
        journey = journeys.get(name)
        if journey is None or journey.trigger is None or not journey.trigger.broadcasts:
            pipe.unwatch()
            client.hset(key, mapping={"state": FAILED, "why": "the journey is no longer served as a broadcast"})
            logger.error("one-off broadcast %s of %s: the journey is no longer served as a broadcast", one_off, name)
            timers.ack([claim])
            return
        broadcast = OneOff.from_hash(name, one_off, data)
        now = runtime.clock.now()
        try:
            pipe.multi()
            cursor, found = _offer(runtime, pipe, int(data.get("cursor", "0")), broadcast.item(), name)
            pipe.hincrby(key, "reached", found)
            if cursor:
                pipe.hset(key, mapping={"cursor": str(cursor), "state": SENDING})
                pipe.zadd(keys.timers_for(name), {claim.member: now})
            else:
                pipe.hset(key, mapping={"cursor": "0", "state": SENT, "finished": repr(now)})
                pipe.hincrby(keys.stats, f"broadcast:{name}:runs", 1)
            pipe.execute()
        except WatchError:
            logger.info("one-off broadcast %s of %s was cancelled while a chunk was prepared: "
                        "the chunk was not sent", one_off, name)
            timers.ack([claim])
            return
    if not cursor:
        logger.info("one-off broadcast %s of %s queued", one_off, name)
    timers.ack([claim])


def start_of(at: float, local: time | None, day: date | None) -> float:
    """When a broadcast starts reaching contacts: `at`, or for 10:00 local on a day, when 10:00 of
    that day comes in the earliest time zone (UTC+14)."""
    if local is None or day is None:
        return at
    return max(at, datetime.combine(day, local, tzinfo=EARLIEST_OFFSET).timestamp())


def parse_when(text: str | None, tz: str, local: str | None) -> tuple[float | None, time | None, date | None]:
    """`--at` and `--local` as (at, local time, day): "now" or nothing, an ISO date-time (in `tz`
    without an offset), or with a local time a date ("2026-12-24")."""
    try:
        at_local = parse_time_of_day(local) if local else None
    except CalendarError as exc:
        raise InputError(f"--local {local!r}: {exc}") from None
    if text is None or text.strip().lower() in ("", "now"):
        return None, at_local, None
    text = text.strip()
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
        moment = None if day else datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise InputError(f"--at {text!r}: write an ISO time (2026-12-24T10:00, with an offset or in the "
                         f"journey's zone {tz}) or, with --local, a day (2026-12-24)") from None
    if day is not None:
        if at_local is None:
            raise InputError(f"--at {text!r} is a day: give a time of day too (2026-12-24T10:00), "
                             "or --local 10:00 for that time in each contact's zone")
        return None, at_local, day
    assert moment is not None
    if at_local is not None:
        raise InputError("with --local, --at is the day (2026-12-24): the time comes from --local")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz))
    return moment.timestamp(), None, None


def schedule_one_off(runtime: Runtime, journey: Journey, at: float | None = None, local: time | None = None,
                     day: date | None = None) -> OneOff:
    """Send a broadcast journey once: at `at` (default now), or at `local` time in each contact's own
    zone (on `day`, or the next such time)."""
    if journey.trigger is None or not journey.trigger.broadcasts:
        raise InputError(f"journey {journey.name!r} is not a broadcast: give it `trigger: {{broadcast: true}}` "
                         "(or a `schedule:`)")
    if day is not None and local is None:
        raise InputError("a day without a time: give --local HH:MM too, or --at with a time of day")
    keys, client = runtime.keys, runtime.redis
    now = runtime.clock.now()
    at = start_of(max(now, at if at is not None else now), local, day)
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%S")
    broadcast = OneOff(journey.name, f"{stamp}-{secrets.token_hex(2)}", at,
                       local.strftime("%H:%M") if local else "", day.isoformat() if day else "", created=now)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.broadcast(journey.name, broadcast.id),
              mapping={"at": repr(broadcast.at), "local": broadcast.local, "day": broadcast.day,
                       "state": SCHEDULED, "cursor": "0", "reached": "0", "created": repr(now)})
    pipe.zadd(keys.one_off_broadcasts, {f"{journey.name}|{broadcast.id}": broadcast.at})
    pipe.zadd(keys.timers_for(journey.name), {broadcast_member(journey.name, broadcast.id): broadcast.at})
    pipe.execute()
    return broadcast


def one_offs(runtime: Runtime) -> list[OneOff]:
    """Every one-off broadcast, in the order they go."""
    keys, client = runtime.keys, runtime.redis
    members = client.zrange(keys.one_off_broadcasts, 0, -1)
    pipe = client.pipeline(transaction=False)
    pairs = [member.split("|", 1) for member in members]
    for name, one_off in pairs:
        pipe.hgetall(keys.broadcast(name, one_off))
    found = zip(pairs, pipe.execute(), strict=True)
    return [OneOff.from_hash(name, one_off, data) for (name, one_off), data in found if data]


def cancel_one_off(runtime: Runtime, one_off: str) -> OneOff:
    """Stop a one-off broadcast: contacts not reached yet are not; runs armed for a local time do
    not start. Runs already started go on."""
    found = [b for b in one_offs(runtime) if b.id == one_off]
    if not found:
        raise InputError(f"no broadcast {one_off!r} (see lifecycle broadcast --list)")
    broadcast = found[0]
    # A local-time broadcast that reached everyone still has runs armed for later: those can stop.
    if broadcast.state in (CANCELLED, FAILED) or (broadcast.state == SENT and not broadcast.local):
        raise InputError(f"broadcast {one_off} is {broadcast.state} already")
    keys, client = runtime.keys, runtime.redis
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.broadcast(broadcast.journey, one_off), "state", CANCELLED)
    pipe.zrem(keys.timers_for(broadcast.journey), broadcast_member(broadcast.journey, one_off))
    pipe.execute()
    return OneOff.from_hash(broadcast.journey, one_off,
                            client.hgetall(keys.broadcast(broadcast.journey, one_off)))


def cancelled(runtime: Runtime, occurrences: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (journey, occurrence) pairs are cancelled one-off broadcasts."""
    pairs = sorted(set(occurrences))
    if not pairs:
        return set()
    pipe = runtime.redis.pipeline(transaction=False)
    for name, occurrence in pairs:
        pipe.hget(runtime.keys.broadcast(name, occurrence), "state")
    return {pair for pair, state in zip(pairs, pipe.execute(), strict=True) if state == CANCELLED}
