"""Charts as inline SVG, and the self-contained HTML page they go on.

`lifecycle forecast --html` and `lifecycle report` write pages that must open offline, from a
file or an e-mail attachment: no script, no font or style sheet from elsewhere, every chart drawn
here as SVG text. Values are escaped; colours come from one palette so a channel keeps its colour.
"""

from __future__ import annotations

from html import escape
from typing import Mapping, Sequence

PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#319795", "#744210", "#4a5568")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1a202c;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #e2e8f0}h3{font-size:1em}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #edf2f7;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f7fafc}
.note{color:#4a5568;font-size:.9em}.verdict{font-weight:600}
svg text{font-family:inherit}figure{margin:12px 0;overflow-x:auto}
""".strip()


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def page(title: str, body: str) -> str:
    """A whole HTML document: inline CSS, no scripts, nothing fetched."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], css_class: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _nice_max(value: float) -> float:
    """A round upper bound for an axis."""
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 10 if value >= 1 else 0.1
    for factor in (1, 2, 2.5, 5, 10):
        if value <= step * factor:
            return step * factor
    return value


def line_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], chart_id: str,
               width: int = 820, height: int = 260) -> str:
    """One line per series over the labels (days), with axes, a legend and a tooltip per point."""
    left, right, top, bottom = 56, 200, 28, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((max(values) for values in series.values() if values), default=0))
    count = max(1, len(labels) - 1)
    parts = [f'<svg class="chart" id="{escape(chart_id)}" role="img" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left}" y="16" font-size="13" font-weight="600">{escape(title)}</text>']
    # Whole-number ticks where the axis allows them (0, 5 ... 25 rather than 0, 6.25 ... 25).
    ticks = next((n for n in (5, 4, 2) if peak >= n and (peak / n).is_integer()), 4)
    for tick in range(ticks + 1):
        value = peak * tick / ticks
        y = top + plot_h - plot_h * tick / ticks
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:g}</text>')
    every = max(1, len(labels) // 10)
    for index, label in enumerate(labels):
        if index % every == 0:
            x = left + plot_w * index / count
            parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="10" text-anchor="middle">'
                         f'{escape(label[5:] if len(label) == 10 else label)}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#718096"/>')
    for number, (name, values) in enumerate(series.items()):
        points = [(left + plot_w * i / count, top + plot_h - plot_h * (v / peak)) for i, v in enumerate(values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline class="series" data-name="{escape(name)}" fill="none" stroke="{colour(number)}" '
                     f'stroke-width="2" points="{path}"/>')
        for (x, y), value, label in zip(points, values, labels, strict=False):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour(number)}">'
                         f'<title>{escape(name)} {escape(label)}: {value:g}</title></circle>')
        ly = top + 14 * number + 8
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly - 8}" width="10" height="10" fill="{colour(number)}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{ly + 1}" font-size="11">{escape(name)}</text>')
    if not series:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
                     f'font-size="12" fill="#718096">no messages</text>')
    parts.append("</svg>")
    return "".join(parts)


def rate_bars(title: str, rows: Sequence[tuple[str, Mapping[str, float | None]]], chart_id: str,
              width: int = 820) -> str:
    """Grouped horizontal bars of rates (0 to 1) per row, e.g. delivery, open and click rates per step."""
    names = list(dict.fromkeys(name for _, rates in rows for name in rates))
    left, bar, gap, top = 260, 12, 10, 40
    height = top + len(rows) * (len(names) * bar + gap) + 30
    plot_w = width - left - 70
    parts = [f'<svg class="chart" id="{escape(chart_id)}" role="img" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<title>{escape(title)}</title>',
             f'<text x="8" y="16" font-size="13" font-weight="600">{escape(title)}</text>']
    for number, name in enumerate(names):
        x = left + number * 110
        parts.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{colour(number)}"/>'
                     f'<text x="{x + 14}" y="31" font-size="11">{escape(name)}</text>')
    y = top
    for label, rates in rows:
        parts.append(f'<text x="{left - 8}" y="{y + len(names) * bar / 2 + 4}" font-size="11" '
                     f'text-anchor="end">{escape(label)}</text>')
        for number, name in enumerate(names):
            value = rates.get(name)
            length = plot_w * min(max(value or 0.0, 0.0), 1.0)
            shown = "n/a" if value is None else f"{value:.0%}"
            parts.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar - 2}" fill="{colour(number)}">'
                         f'<title>{escape(label)} {escape(name)}: {shown}</title></rect>'
                         f'<text x="{left + length + 4:.1f}" y="{y + bar - 3}" font-size="10">{shown}</text>')
            y += bar
        y += gap
    parts.append("</svg>")
    return "".join(parts)
