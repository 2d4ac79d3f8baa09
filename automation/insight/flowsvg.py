"""A journey drawn as a flow diagram (inline SVG), from the journey model, with counts on its nodes.

Each stage (or a triggered journey's steps) is a column of boxes: sends, waits, branches, splits
and waits for an event, in the order a run takes them; a branch, split or `wait_for` puts its
paths side by side until they join again. Boxes carry the counters of the stats hash, keyed by
journey, stage and step (`counts` says which), and `data-` attributes with the same numbers so
a test or a script can read them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Callable, Mapping

from automation.language.flow import (BranchNode, CouponNode, ExitNode, Flow, Node, SendNode, SetNode, SplitNode,
                                      TrackNode, WaitForNode, WaitNode, WaitUntilNode)
from automation.language.journey import RUN, Journey

BOX_W, LINE_H, GAP, PAD = 230, 15, 26, 16
#: Stages are drawn in rows no wider than this (the page's width).
MAX_WIDTH = 1130
#: Deeper nesting than this is drawn as one box saying so (the diagram stays readable).
MAX_DEPTH = 8
Counts = Callable[[str, Node], dict[str, object]]


@dataclass
class Block:
    width: float
    height: float
    parts: list[str] = field(default_factory=list)

    def at(self, x: float, y: float) -> str:
        return f'<g transform="translate({x:.1f},{y:.1f})">{"".join(self.parts)}</g>'


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def describe(node: Node) -> tuple[str, str]:
    """(kind, what it does) of a node, in the journey file's words."""
    if isinstance(node, SendNode):
        delay = f" after {_duration(node.delay)}" if node.delay else ""
        return "send", f"{node.channel}: {node.template or node.id}{delay}"
    if isinstance(node, WaitNode):
        return "wait", _duration(node.seconds)
    if isinstance(node, WaitUntilNode):
        return "wait until", (node.at.strftime("%H:%M") if node.at else "a date")
    if isinstance(node, WaitForNode):
        return "wait for", f"{node.event} (up to {_duration(node.timeout)})"
    if isinstance(node, BranchNode):
        return "branch", node.id
    if isinstance(node, SplitNode):
        return "split", node.name
    if isinstance(node, ExitNode):
        return "exit", node.reason
    if isinstance(node, CouponNode):
        return "coupon", getattr(node.spec, "name", node.id)
    if isinstance(node, TrackNode):
        return "track", node.event
    if isinstance(node, SetNode):
        return "set", ", ".join(node.attributes)
    return "step", node.id


def _box(kind: str, text: str, lines: list[str], data: Mapping[str, object], tooltip: str = "",
         fill: str = "#ffffff") -> Block:
    height = PAD + LINE_H * (1 + len(lines)) + 4
    attributes = "".join(f' data-{escape(key)}="{escape(str(value))}"' for key, value in data.items())
    parts = [f'<g class="node"{attributes}>',
             f'<rect width="{BOX_W}" height="{height}" rx="6" fill="{fill}" stroke="#4a5568"/>',
             f'<text x="8" y="{PAD}" font-size="12"><tspan font-weight="600">{escape(kind)}</tspan> '
             f'{escape(text[:34])}</text>']
    for number, line in enumerate(lines):
        parts.append(f'<text x="8" y="{PAD + LINE_H * (number + 1)}" font-size="11" fill="#2d3748">'
                     f"{escape(line)}</text>")
    if tooltip:
        parts.append(f"<title>{escape(tooltip)}</title>")
    parts.append("</g>")
    return Block(BOX_W, height, parts)


def _label(text: str) -> Block:
    return Block(BOX_W, 18, [f'<text x="{BOX_W / 2}" y="13" font-size="11" text-anchor="middle" '
                             f'font-style="italic" fill="#4a5568">{escape(text[:40])}</text>'])


def _stack(blocks: list[Block]) -> Block:
    """Blocks one under the other, centred, joined by arrows."""
    if not blocks:
        return _label("(no steps)")
    width = max(block.width for block in blocks)
    parts: list[str] = []
    y = 0.0
    for index, block in enumerate(blocks):
        if index:
            parts.append(f'<line x1="{width / 2}" y1="{y - GAP + 2}" x2="{width / 2}" y2="{y - 2}" '
                         f'stroke="#718096" marker-end="url(#arrow)"/>')
        parts.append(block.at((width - block.width) / 2, y))
        y += block.height + GAP
    return Block(width, y - GAP, parts)


def _side_by_side(blocks: list[Block]) -> Block:
    width = sum(block.width for block in blocks) + GAP * (len(blocks) - 1)
    height = max(block.height for block in blocks)
    parts, x = [], 0.0
    for block in blocks:
        parts.append(block.at(x, 0))
        x += block.width + GAP
    return Block(width, height, parts)


def _wrapped(blocks: list[Block], max_width: float) -> Block:
    """Blocks side by side in rows no wider than `max_width` (a stage journey's many stages), the rows
    one under the other."""
    rows: list[list[Block]] = [[]]
    width = 0.0
    for block in blocks:
        if rows[-1] and width + GAP + block.width > max_width:
            rows.append([])
            width = 0.0
        rows[-1].append(block)
        width += (GAP if width else 0) + block.width
    lines = [_side_by_side(row) for row in rows]
    parts, y = [], 0.0
    for line in lines:
        parts.append(line.at(0, y))
        y += line.height + 2 * GAP
    return Block(max(line.width for line in lines), y - 2 * GAP, parts)


def _sequence(flow: Flow, start: str | None, stop: str | None, counts: Counts, scope: str, depth: int) -> list[Block]:
    blocks: list[Block] = []
    seen: set[str] = set()
    node_id = start
    while node_id is not None and node_id != stop and node_id not in seen:
        seen.add(node_id)
        node = flow.get(node_id)
        if node is None:
            break
        blocks.append(_node(flow, node, counts, scope, depth))
        node_id = node.next
    return blocks


def _node(flow: Flow, node: Node, counts: Counts, scope: str, depth: int) -> Block:
    kind, text = describe(node)
    data = counts(scope, node)
    lines = [str(line) for line in data.pop("_lines", [])]      # type: ignore[union-attr]
    tooltip = str(data.pop("_tooltip", ""))
    condition = f" if {node.condition.source}" if node.condition is not None else ""
    fill = {"send": "#ebf8ff", "split": "#faf5ff", "branch": "#fffff0", "wait for": "#f0fff4",
            "exit": "#fff5f5"}.get(kind, "#ffffff")
    box = _box(kind, text + condition, lines, {"step": node.id, "kind": kind, **data}, tooltip, fill)
    paths: list[tuple[str, str | None, bool]] = []
    if isinstance(node, BranchNode):
        paths = [(f"when {arm.when.source}" if arm.when is not None else "otherwise", arm.first, False)
                 for arm in node.arms]
        if all(arm.when is not None for arm in node.arms):
            paths.append(("otherwise", node.next, False))
    elif isinstance(node, SplitNode):
        total = sum(variant.weight for variant in node.variants) or 1
        paths = [(f"{variant.name} ({variant.weight / total:.0%})"
                  + (", holdout" if variant.holdout and variant.name != "holdout" else ""),
                  None if variant.holdout else variant.first, variant.holdout) for variant in node.variants]
    elif isinstance(node, WaitForNode):
        paths = [(f"on {node.event}", node.on_event, False), ("on timeout", node.on_timeout, False)]
    if not paths:
        return box
    if depth >= MAX_DEPTH:
        return _stack([box, _label("(more paths, not drawn)")])
    columns = []
    for label, first, ends in paths:
        inner = [] if ends else _sequence(flow, first, node.next, counts, scope, depth + 1)
        columns.append(_stack([_label(label), *(inner or [_label("receives nothing" if ends else "continues")])]))
    return _stack([box, _side_by_side(columns)])


def journey_svg(journey: Journey, counts: Counts, scope_counts: Callable[[str], list[str]]) -> str:
    """The whole journey: one column per stage (or one for a triggered journey), side by side."""
    scopes = [(stage.name, stage.flow) for stage in journey.stages] or [(RUN, journey.flow)]
    columns = []
    for scope, flow in scopes:
        header = _box("stage" if scope != RUN else "run", scope if scope != RUN else journey.name,
                      scope_counts(scope), {"scope": scope}, fill="#edf2f7")
        columns.append(_stack([header, *_sequence(flow, flow.first, None, counts, scope, 0)]))
    body = _wrapped(columns, MAX_WIDTH)
    width, height = body.width + 20, body.height + 20
    arrow = f"arrow-{escape(journey.name)}"       # one marker id per diagram: ids are page-wide
    return (f'<svg class="flow" id="flow-{escape(journey.name)}" role="img" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">'
            f"<title>{escape(journey.name)}: flow diagram</title>"
            f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#718096"/></marker></defs>'
            + body.at(10, 10).replace("url(#arrow)", f"url(#{arrow})") + "</svg>")
