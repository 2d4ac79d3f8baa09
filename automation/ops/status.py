"""What ops look at: `lifecycle status` and `lifecycle inspect CONTACT`."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from automation.engine.dispatch import broker_namespace, queue_key
from automation.runtime import Runtime
from automation.store import fields
from automation.store.contacts import ContactState, ContactStore
from automation.calendar import quiet_until, zone
from automation.engine.liveness import alive_workers
from automation.language.workspace import ALL_MARKETING, Workspace, load_workspace
from automation.store import versions
from automation.store.coupons import CouponStore
from automation.store.doubt import in_doubt
from automation.store.keys import goal_stat, recheck_member, split_stat, step_member
from automation.store.pauses import ChannelPauses
from automation.store.suppression import ADDRESS_ATTRIBUTES, Suppressions
from automation.store.timers import TimerStore


def iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def collect_status(runtime: Runtime, failures: int = 10) -> dict[str, Any]:
    settings = runtime.settings
    client = runtime.redis
    timers = TimerStore(runtime)
    heartbeat_key = f"{broker_namespace(settings)}:__heartbeats__"
    alive_since = (time.time() * 1000) - settings.heartbeat_timeout_ms
    stats = {k: int(v) for k, v in client.hgetall(runtime.keys.stats).items()}
    doubtful, oldest = in_doubt(runtime)
    recent_failures = []
    for entry_id, entry in client.xrevrange(runtime.keys.activity, count=2000):
        if entry.get("k") in ("failed", "unknown"):
            recent_failures.append({"id": entry_id, **entry})
            if len(recent_failures) >= failures:
                break
    return {
        "now": runtime.clock.now(),
        "timers": timers.counts(),
        "next_due": timers.next_due(),
        "queue_waiting": int(client.llen(queue_key(settings))),
        "queue_unacked": int(client.hlen(f"{queue_key(settings)}.msgs")),
        "worker_processes": int(client.zcount(heartbeat_key, alive_since, "+inf")),
        "stats": stats,
        "recent_failures": recent_failures,
        "paused_channels": {name: {"reason": p.reason, "since": p.since, "until": p.until}
                            for name, p in ChannelPauses(runtime).active().items()},
        "in_doubt": {"count": doubtful, "oldest": oldest},
        "live_workers": alive_workers(runtime),
        "journeys": {name: {"version": v.version, "at": v.at, "by": v.by, "path": v.path}
                     for name, v in sorted(versions.deployed(runtime).items())},
    }


def format_status(status: dict[str, Any]) -> str:
    stats = status["stats"]
    lines = [
        f"clock          {iso(status['now'])}",
        f"workers        {status['worker_processes']} process(es) with a live heartbeat",
        f"timers         {status['timers']['pending']} pending, {status['timers']['leased']} claimed "
        f"(next due {iso(status['next_due'])})",
        f"queue          {status['queue_waiting']} message(s) waiting, {status['queue_unacked']} not yet acknowledged",
        "steps          " + ", ".join(f"{k} {stats.get(k, 0)}" for k in ("sent", "skipped", "failed", "retry",
                                                                            "unknown", "cancelled", "paused",
                                                                            "throttled", "held", "deferred")),
    ]
    doubt = status["in_doubt"]
    if doubt["count"]:
        age = status["now"] - doubt["oldest"]
        lines.append(f"IN DOUBT       {doubt['count']} step(s) whose send a crash interrupted, the oldest for "
                     f"{age:.0f}s: waiting for the provider's confirmation, then sent again or failed "
                     "(LIFECYCLE_AMBIGUOUS_<CHANNEL>)")
    for channel, pause in sorted(status["paused_channels"].items()):
        lines.append(f"PAUSED         {channel} until {iso(pause['until'])}: {pause['reason']} "
                     f"(after fixing it: lifecycle resume {channel})")
    reasons = sorted((k, v) for k, v in stats.items() if k.count(":") == 1 and k.split(":")[0] in
                     ("skipped", "failed", "sent", "retry", "held", "deferred"))
    if reasons:
        lines.append("by reason      " + ", ".join(f"{k} {v}" for k, v in reasons))
    if stats.get("rule_errors"):
        lines.append(f"rule errors    {stats['rule_errors']} (see worker logs)")
    lines += format_results(stats)
    for name, deployed in status.get("journeys", {}).items():
        lines.append(f"journey        {name} {deployed['version']}, deployed {iso(deployed['at'] or None)}"
                     + (f" by {deployed['by']}" if deployed["by"] else ""))
    if status["recent_failures"]:
        lines.append("recent failures:")
        for item in status["recent_failures"]:
            lines.append(f"  {iso(float(item.get('t', 0)))}  {item.get('c')}  {item.get('j')}/{item.get('s')}/"
                         f"{item.get('p')}  {item.get('ch', '')}: {item.get('d', '')}")
    return "\n".join(lines)


def _rate(converted: int, entered: int) -> str:
    if not entered:
        return f"{converted} converted"
    return f"{converted}/{entered} converted ({100 * converted / entered:.1f}%)"


def format_results(stats: dict[str, int]) -> list[str]:
    """Goals, A/B splits (with their holdouts), coupons and broadcasts, from the stats counters."""
    lines = []
    goals = sorted({tuple(k.split(":")[1:3]) for k in stats if k.startswith("goal:") and k.count(":") == 3})
    for journey, scope in goals:
        prefix = goal_stat(journey, scope)
        lines.append(f"goal           {journey}/{scope}: "
                     + _rate(stats.get(prefix + "converted", 0), stats.get(prefix + "entered", 0)))
    splits = sorted({tuple(k.split(":")[1:4]) for k in stats if k.startswith("split:") and k.count(":") == 4})
    for journey, split, variant in splits:
        prefix = split_stat(journey, split, variant, "")
        lines.append(f"split          {journey}/{split}/{variant}: "
                     + _rate(stats.get(prefix + "converted", 0), stats.get(prefix + "entered", 0)))
    coupons = sorted({k.split(":")[1] for k in stats if k.startswith("coupon:") and k.count(":") == 2})
    for name in coupons:
        prefix = f"coupon:{name}:"
        lines.append(f"coupon         {name}: {stats.get(prefix + 'issued', 0)} issued, "
                     f"{stats.get(prefix + 'redeemed', 0)} redeemed")
    for key in sorted(k for k in stats if k.startswith("broadcast:") and k.endswith(":runs")):
        journey = key.split(":")[1]
        lines.append(f"broadcast      {journey}: {stats[key]} sent, "
                     f"{stats.get(f'broadcast:{journey}:queued', 0)} contacts reached")
    return lines


def inspect_contact(runtime: Runtime, contact_id: str) -> dict[str, Any]:
    store = ContactStore(runtime)
    state = store.load(contact_id, recent=True)
    timers = TimerStore(runtime)
    journeys = {}
    for name, enrollment in sorted(state.enrollments.items()):
        end = enrollment.end
        journeys[name] = {
            "stage": enrollment.stage,
            "entered_at": iso(enrollment.entered_at),
            "entries": enrollment.occurrence,
            "pending_step": enrollment.step,
            "pending_due": iso(timers.due_time(contact_id, step_member(name, contact_id))),
            "variants": enrollment.variants,
            "goal_until": iso(enrollment.goal_deadline[0]) if enrollment.goal_deadline else None,
            # How the latest run ended (finished, exit:<event>, goal, left the stage ...), while none runs.
            "ended_at": iso(end[0]) if end else None,
            "end_reason": end[1] if end else None,
        }
    return {
        "id": contact_id,
        "exists": state.exists,
        "attributes": state.attributes,
        "events": {name: {"count": s.count, "first": s.first.isoformat() if s.first else None,
                          "last": s.last.isoformat() if s.last else None} for name, s in sorted(state.events.items())},
        "recent_events": [{**e, "at": iso(e["at"])} for e in state.recent],
        "scores": {fields.split(field)[1]: raw for field, raw in state.raw.items()
                   if fields.split(field)[0] == fields.SCORE},
        "coupons": {name: {"code": c.code, "expires": iso(c.expires_at)}
                    for name, c in CouponStore(runtime).coupons_of(contact_id, state.raw).items()},
        "journeys": journeys,
        "next_stage_check": iso(timers.due_time(contact_id, recheck_member(contact_id))),
        "reach": reach(runtime, state, load_workspace(runtime.settings.journeys_dir)[0]),
        "messages": store.history(contact_id),
    }


def reach(runtime: Runtime, state: ContactState, workspace: Workspace) -> dict[str, dict[str, Any]]:
    """Per channel: whether marketing and transactional messages can reach the contact now, and why not."""
    now = runtime.clock.now()
    suppressions = Suppressions(runtime)
    attributes = state.attributes
    consent = attributes.get("consent") if isinstance(attributes.get("consent"), dict) else {}
    found: dict[str, dict[str, Any]] = {}
    for channel, attribute in (*ADDRESS_ATTRIBUTES.items(), ("push", "push_tokens")):
        blocked: list[str] = []          # both kinds of message
        marketing: list[str] = []        # marketing only
        address = attributes.get(attribute)
        if not address:
            blocked.append(f"no {attribute}")
        elif attributes.get(f"{attribute}_invalid"):
            blocked.append(f"{attribute} marked invalid by the provider")
        if channel in ADDRESS_ATTRIBUTES and address:
            listed = suppressions.get(channel, address)
            if listed is not None:
                blocked.append(f"{listed.address} is suppressed since {iso(listed.at)}: {listed.reason}")
        if consent.get(channel) is not True:
            marketing.append(f"no consent for {channel}")
        if attributes.get("do_not_contact") is True:
            marketing.append("do_not_contact is set")
        window = workspace.quiet_hours.get(channel)
        if window is not None:
            tz = zone(attributes.get("timezone"), workspace.timezone)
            until = quiet_until(now, tz, window.start, window.end)
            if until is not None:
                marketing.append(f"quiet hours in {tz.key} until {iso(until)}")
        for cap in workspace.caps_for(channel):
            counted = fields.frequency(None if cap.channel == ALL_MARKETING else cap.channel)
            times = [at for at in fields.decode_frequency(state.raw.get(counted)) if at > now - cap.window]
            if len(times) >= cap.limit:
                marketing.append(f"frequency cap {cap.limit} {cap.channel} per {cap.window / 3600:g}h reached "
                                 f"until {iso(min(times) + cap.window)}")
        found[channel] = {"marketing": not (blocked or marketing), "transactional": not blocked,
                          "why": blocked + marketing}
    return found


def format_contact(info: dict[str, Any]) -> str:
    if not info["exists"]:
        return f"no contact {info['id']!r}"
    lines = [f"contact {info['id']}"]
    for key, value in sorted(info["attributes"].items()):
        lines.append(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    lines.append("events:")
    for name, stats in info["events"].items():
        lines.append(f"  {name}: {stats['count']} (last {stats['last']})")
    lines.append("journeys:")
    for name, journey in info["journeys"].items():
        pending = ""
        if journey["pending_step"] == "^start":
            pending = f", starts at {journey['pending_due']}"
        elif journey["pending_step"]:
            pending = f", next step {journey['pending_step']} at {journey['pending_due']}"
        if journey["variants"]:
            pending += f", variant {journey['variants']}"
        if journey["goal_until"]:
            pending += f", goal counts until {journey['goal_until']}"
        if journey["stage"] is None and journey["ended_at"]:
            lines.append(f"  {name}: finished {journey['ended_at']} ({journey['end_reason']}){pending}")
        else:
            lines.append(f"  {name}: {journey['stage'] or '(none)'} since {journey['entered_at']}{pending}")
    if info["scores"]:
        lines.append("scores: " + ", ".join(f"{name} {raw.split(',')[0]} (at {iso(float(raw.split(',')[1]))})"
                                            for name, raw in sorted(info["scores"].items())))
    if info["coupons"]:
        lines.append("coupons: " + ", ".join(f"{name} {c['code']} (expires {c['expires']})"
                                             for name, c in info["coupons"].items()))
    lines.append(f"next time-based stage check: {info['next_stage_check']}")
    lines.append("reach:")
    for channel, can in info["reach"].items():
        kinds = [kind for kind in ("marketing", "transactional") if can[kind]]
        verdict = " and ".join(kinds) if kinds else "nothing"
        lines.append(f"  {channel}: {verdict}" + (f" ({'; '.join(can['why'])})" if can["why"] else ""))
    lines.append("messages:")
    for key, outcome in info["messages"].items():
        reason = f" ({outcome['reason']})" if outcome.get("reason") else ""
        lines.append(f"  {key}: {outcome['state']} {outcome.get('ch', '')} {outcome.get('tpl', '')} "
                     f"at {iso(outcome.get('at'))}{reason}")
    return "\n".join(lines)
