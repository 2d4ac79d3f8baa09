"""`lifecycle report` and `/report`: one self-contained page on how the journeys are doing.

Everything comes from the counters of the stats hash, the same numbers `lifecycle status --json`
shows: per journey a flow diagram with counts on each node (automation.insight.flowsvg), per A/B
split each variant's conversion against the holdout with Newcombe's 95% interval
(automation.insight.lift), sends per day and channel, and delivery, open and click rates per step
from the providers' reports (automation.insight.charts). It reads only.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timezone
from html import escape
from typing import Any, Mapping

from automation.language.flow import Node, SendNode, SplitNode
from automation.language.journey import RUN, Journey
from automation.insight.charts import line_chart, page, rate_bars, table
from automation.insight.flowsvg import journey_svg
from automation.insight.lift import lift
from automation.ops.status import collect_status
from automation.store.keys import (enter_stat, goal_stat, split_stat, step_delivery_prefix, step_reason_stat,
                                   step_stat)

OUTCOMES = ("sent", "skipped", "failed")
DELIVERY = ("delivered", "opened", "clicked", "bounced", "dropped", "undelivered", "complained")


def step_counts(stats: Mapping[str, int], journey: str, scope: str, step: str) -> dict[str, Any]:
    """The numbers of one send step: entered (its outcomes), sent, skipped, failed, reasons, and what
    providers reported (delivered, opened, clicked, bounced ...)."""
    counts: dict[str, Any] = {kind: stats.get(step_stat(journey, scope, step, kind), 0) for kind in OUTCOMES}
    counts["entered"] = sum(counts[kind] for kind in OUTCOMES)
    prefix = step_delivery_prefix(journey, scope, step)
    for status in DELIVERY:
        counts[status] = stats.get(prefix + status, 0)
    reasons = step_reason_stat(journey, scope, step, "")
    counts["reasons"] = {key[len(reasons):]: value for key, value in sorted(stats.items()) if key.startswith(reasons)}
    return counts


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def collect(stats: Mapping[str, int], journeys: Mapping[str, Journey], only: str | None = None,
            since: date | None = None) -> dict[str, Any]:
    """What the page shows, as plain data (also what tests compare with `status --json`)."""
    chosen = {name: journey for name, journey in sorted(journeys.items()) if only is None or name == only}
    days: dict[str, Counter[str]] = {}
    for key, value in stats.items():
        if key.startswith("day:") and key.count(":") == 2:
            _, day, channel = key.split(":")
            if since is None or day >= since.isoformat():
                days.setdefault(channel, Counter())[day] = value
    data: dict[str, Any] = {"journeys": {}, "days": days}
    for name, journey in chosen.items():
        scopes = [stage.name for stage in journey.stages] or [RUN]
        steps = {}
        for scope in scopes:
            flow = journey.flow_of(scope)
            for node in flow.sends() if flow else []:
                steps[f"{scope}:{node.id}"] = step_counts(stats, name, scope, node.id)
        splits = {}
        for scope in scopes:
            flow = journey.flow_of(scope)
            for node in (flow.nodes.values() if flow else []):
                if isinstance(node, SplitNode):
                    splits[node.name] = _split(stats, name, node)
        data["journeys"][name] = {
            "scopes": {scope: {"entered": stats.get(enter_stat(name, scope), 0),
                               "goal_entered": stats.get(goal_stat(name, scope, "entered"), 0),
                               "converted": stats.get(goal_stat(name, scope, "converted"), 0)} for scope in scopes},
            "steps": steps, "splits": splits}
    return data


def _split(stats: Mapping[str, int], journey: str, node: SplitNode) -> dict[str, Any]:
    variants = {v.name: {"entered": stats.get(split_stat(journey, node.name, v.name, "entered"), 0),
                         "converted": stats.get(split_stat(journey, node.name, v.name, "converted"), 0),
                         "holdout": v.holdout}
                for v in node.variants}
    holdout = next((name for name, v in variants.items() if v["holdout"]), None)
    for name, variant in variants.items():
        variant["rate"] = _rate(variant["converted"], variant["entered"])
        if holdout is not None and name != holdout:
            found = lift(name, variant["converted"], variant["entered"], variants[holdout]["converted"],
                         variants[holdout]["entered"])
            variant["lift"] = {"difference": found.difference, "lower": found.lower, "upper": found.upper,
                               "verdict": found.verdict}
    return {"holdout": holdout, "variants": variants}


def _node_counts(data: Mapping[str, Any], journey: str) -> Any:
    info = data["journeys"][journey]

    def counts(scope: str, node: Node) -> dict[str, object]:
        if isinstance(node, SendNode):
            found = info["steps"].get(f"{scope}:{node.id}")
            if found is None:
                return {}
            lines = [f"entered {found['entered']}  sent {found['sent']}  failed {found['failed']}",
                     f"delivered {found['delivered']}  opened {found['opened']}  clicked {found['clicked']}"]
            if found["skipped"]:
                lines.append(f"skipped {found['skipped']}")
            reasons = ", ".join(f"{code} {count}" for code, count in found["reasons"].items())
            if reasons:
                lines.append(f"why: {reasons}"[:44])
            return {"_lines": lines, "_tooltip": f"not sent: {reasons}" if reasons else "",
                    **{key: found[key] for key in ("entered", "sent", "failed", "skipped", "delivered", "opened",
                                                    "clicked")}}
        if isinstance(node, SplitNode):
            split = info["splits"].get(node.name, {"variants": {}})
            return {"_lines": [f"{name}: {v['entered']} in, {v['converted']} converted"
                               for name, v in split["variants"].items()],
                    "entered": sum(v["entered"] for v in split["variants"].values())}
        return {}

    return counts


def _scope_counts(data: Mapping[str, Any], journey: str) -> Any:
    def lines(scope: str) -> list[str]:
        found = data["journeys"][journey]["scopes"][scope]
        text = [f"entered {found['entered']}"]
        if found["goal_entered"]:
            text.append(f"converted {found['converted']} of {found['goal_entered']}")
        return text

    return lines


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def render(data: Mapping[str, Any], journeys: Mapping[str, Journey], since: date | None = None,
           generated: float | None = None) -> str:
    when = datetime.fromtimestamp(generated, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if generated else ""
    body = [f"<h1>Journey report</h1><p class=\"note\">{escape(when)}. Counts since the counters began"
            + (f"; sends per day from {since.isoformat()}" if since else "") + ". The same numbers as "
            "<code>lifecycle status --json</code>.</p>"]
    days = data["days"]
    labels = sorted({day for counter in days.values() for day in counter})
    body.append("<h2>Sends per day and channel</h2>")
    series = {channel: [counter.get(day, 0) for day in labels] for channel, counter in sorted(days.items())}
    body.append(line_chart("Messages sent per day", labels, series, "sends-per-day"))
    for name, info in data["journeys"].items():
        journey = journeys[name]
        body.append(f'<section class="journey" id="journey-{escape(name)}"><h2>{escape(name)}</h2>')
        if journey.description:
            body.append(f'<p class="note">{escape(journey.description)}</p>')
        body.append(f"<figure>{journey_svg(journey, _node_counts(data, name), _scope_counts(data, name))}</figure>")
        rows = []
        for key, found in info["steps"].items():
            if not found["sent"]:
                continue                # nothing sent yet: no rate to draw
            rows.append((key, {"delivered": _rate(found["delivered"], found["sent"]),
                               "opened": _rate(found["opened"], found["delivered"] or found["sent"]),
                               "clicked": _rate(found["clicked"], found["delivered"] or found["sent"])}))
        reported = any(found[status] for found in info["steps"].values() for status in DELIVERY)
        if rows and not reported:
            body.append('<p class="note">No delivery reports from providers yet (the outbox and discard '
                        "channels send none; SendGrid and Twilio report through their webhooks), so no rates.</p>")
        if rows and reported:
            body.append(rate_bars("Delivery, open and click rates per step (opens and clicks of delivered)", rows,
                                  f"rates-{name}"))
        if info["steps"]:
            body.append(table(["step", "sent", "delivered", "opened", "clicked", "failed", "why not sent"],
                              [[key, f["sent"], f["delivered"], f["opened"], f["clicked"], f["failed"],
                                ", ".join(f"{c} {n}" for c, n in f["reasons"].items())]
                               for key, f in info["steps"].items()], "steps"))
        for split_name, split in info["splits"].items():
            body.append(f"<h3>Split {escape(split_name)}</h3>")
            split_rows = []
            for variant_name, v in split["variants"].items():
                found = v.get("lift")
                split_rows.append([variant_name + (" (holdout)" if v["holdout"] else ""), v["entered"],
                                   v["converted"], _percent(v["rate"]),
                                   f"{found['difference']:+.1%}" if found else "",
                                   f"{found['lower']:+.1%} to {found['upper']:+.1%}" if found else "",
                                   found["verdict"] if found else ""])
            body.append(table(["variant", "contacts", "converted", "conversion", "lift vs holdout",
                               "95% interval", "verdict"], split_rows, "split"))
            body.append('<p class="note">The interval is Newcombe\'s hybrid score interval for a difference of '
                        "two proportions (method 10, 1998), built on Wilson score intervals.</p>")
        body.append("</section>")
    return page("Journey report", "\n".join(body))


def build_report(runtime: Any, journeys: Mapping[str, Journey], only: str | None = None,
                 since: date | None = None) -> str:
    """The page, from the stats hash as `lifecycle status` reads it."""
    stats = collect_status(runtime)["stats"]
    return render(collect(stats, journeys, only, since), journeys, since, runtime.clock.now())
