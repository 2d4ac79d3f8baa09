"""`lifecycle forecast --html`: the forecast as one self-contained page (tables and SVG charts)."""

from __future__ import annotations

from html import escape
from typing import Sequence

from automation.engine.forecast import Change, Forecast
from automation.insight.charts import line_chart, page, table


def forecast_page(result: Forecast, changes: Sequence[Change] | None = None, against: str = "") -> str:
    labels = [result.day(index) for index in range(result.days)]
    per_day = result.per_day()
    sample = (f" A random sample of {result.simulated} contacts was followed and scaled up x{result.scale:.2f}."
              if result.simulated != result.contacts else "")
    body = [f"<h1>Forecast: {result.days} days from {escape(labels[0])}</h1>",
            f'<p class="note">{result.contacts} contacts, if nothing new happens (no events, no attribute '
            f"changes, no broadcasts): the messages their runs and time-based rules will send, with consent, "
            f"suppression lists, quiet hours and frequency caps applied.{escape(sample)}</p>",
            "<h2>Messages per day and channel</h2>",
            line_chart("All journeys, per channel", labels, result.channel_days(), "forecast-channels")]
    body.append("<h2>Messages per day and journey</h2>")
    body.append(line_chart("Per journey and channel", labels,
                           {f"{journey} {channel}": values for (journey, channel), values in per_day.items()},
                           "forecast-journeys"))
    rows = [[journey, channel, sum(values), max(values), labels[max(range(result.days), key=lambda i: values[i])]]
            for (journey, channel), values in per_day.items()]
    body.append(table(["journey", "channel", "messages", "peak per day", "peak day"], rows, "forecast"))
    if result.not_sent:
        body.append("<h2>Reached but not sent</h2>")
        body.append(table(["journey", "reason", "messages"],
                          [[journey, reason, round(count * result.scale)]
                           for (journey, reason), count in sorted(result.not_sent.items())]))
    if changes is not None:
        body.append(f"<h2>Against {escape(against)}</h2>")
        if not changes:
            body.append("<p>No journey file changes the forecast.</p>")
        else:
            body.append(table(["file", "journey", f"messages ({against})", "messages (now)", "file"],
                              [[c.path, c.journey, "absent" if c.before < 0 else c.before,
                                "absent" if c.after < 0 else c.after,
                                "edited" if c.edited else "unchanged (follows journeys that changed)"]
                               for c in changes], "changes"))
    return page(f"Forecast from {labels[0]}", "\n".join(body))
