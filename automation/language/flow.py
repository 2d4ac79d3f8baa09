"""The steps of a journey as a tree of nodes, and the walker that moves a run through them.

A journey's steps (a stage's, or a triggered journey's) are loaded into nodes, each
knowing the id of the node that follows it (`next`), so a contact's place in a run is
just the id of its current node. The walker is a pure function: from a node, it does
everything that takes no time (branches, splits, coupons, events, attribute changes,
exits) and stops at the first node that does (a message to send, a wait). The engine
then records where the run stopped and the timer for it, atomically.

Node ids are stable names (the template of a send, `wait-3d`, `split-offer` ...) or the
step's own `id:`. A flow also knows each node's place (its position path and kind) and the
old ids that `replaces:` and `migrate:` send to its nodes, so that a new version of a journey
can be matched step by step with the one its contacts wait in (automation.language.diff).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import time as clock_time
from typing import Any, Callable, Iterable, Mapping

from automation.expressions import Expression, RuleError
from automation.store.keys import split_stat

#: `if_past` of a wait until a date: what a run does when the moment has already passed.
SEND_NOW, SKIP = "send_now", "skip"
IF_PAST = (SEND_NOW, SKIP)

#: A run that would take more steps than this without waiting is stopped (a journey error).
MAX_STEPS_WITHOUT_WAITING = 200


@dataclass(frozen=True)
class Node:
    id: str
    next: str | None            # where the run goes after this node; None ends the run
    line: int
    condition: Expression | None    # `if:`: when false the node is skipped
    once: bool = field(default=False, kw_only=True)   # `once: true`: done at most once per contact and journey


@dataclass(frozen=True)
class SendNode(Node):
    channel: str
    template: str
    delay: float = 0.0          # a `wait` written on the send step itself, or waits right before it
    options: Mapping[str, Any] = field(default_factory=dict)
    max_segments: int | None = None
    message_type: str | None = None     # marketing or transactional; None: the journey's
    #: Options taken from the run's vars, option -> var name: `sendgrid_template_id: vars.template`
    #: (`options` holds the first value the journey gives it, until a run has its own).
    options_from_vars: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WaitNode(Node):
    seconds: float


@dataclass(frozen=True)
class WaitUntilNode(Node):
    at: clock_time | None
    weekdays: frozenset[int] | None
    date: Expression | None     # a date attribute, e.g. contact.renewal_date
    offset_days: int
    yearly: bool
    if_past: str = SEND_NOW     # a date already passed: go on at once, or skip the step after the wait


@dataclass(frozen=True)
class WaitForNode(Node):
    event: str
    where: Expression | None
    timeout: float
    on_event: str | None        # first node of the path taken when the event happens
    on_timeout: str | None      # first node of the path taken when it does not


@dataclass(frozen=True)
class Arm:
    when: Expression | None     # None: the "otherwise" arm
    first: str | None
    line: int


@dataclass(frozen=True)
class BranchNode(Node):
    arms: tuple[Arm, ...]


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    holdout: bool
    first: str | None
    line: int
    vars: Mapping[str, Any] = field(default_factory=dict)   # values this variant gives `vars.<name>`


@dataclass(frozen=True)
class SplitNode(Node):
    name: str
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class ExitNode(Node):
    reason: str


@dataclass(frozen=True)
class CouponNode(Node):
    spec: Any                   # coupons.CouponSpec
    from_vars: Mapping[str, str] = field(default_factory=dict)   # spec key -> var name: percent: vars.discount


@dataclass(frozen=True)
class TrackNode(Node):
    event: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SetNode(Node):
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Flow:
    """The steps of a stage or a triggered journey."""

    first: str | None
    nodes: Mapping[str, Node]
    #: node id -> its place: the position path in the file and the kind ("2:send", "3.e.1:send")
    positions: Mapping[str, str] = field(default_factory=dict)
    #: an old step id -> the node contacts waiting at it continue at (`replaces:`, `migrate:`)
    aliases: Mapping[str, str] = field(default_factory=dict)
    #: ids written as `id:` in the file: such a step is matched by its id only, never by its place
    explicit: frozenset[str] = frozenset()

    def sends(self) -> list[SendNode]:
        return [node for node in self.nodes.values() if isinstance(node, SendNode)]

    def get(self, node_id: str) -> Node | None:
        return self.nodes.get(node_id)

    def variant_vars(self, assignments: Mapping[str, str]) -> dict[str, Any]:
        """The `vars` the run's split variants set (split name -> variant name)."""
        found: dict[str, Any] = {}
        if not assignments:
            return found
        for node in self.nodes.values():
            if isinstance(node, SplitNode) and node.name in assignments:
                chosen = assignments[node.name]
                for variant in node.variants:
                    if variant.name == chosen:
                        found.update(variant.vars)
        return found


EMPTY_FLOW = Flow(None, {})


def sample_vars(flows: Iterable[Flow]) -> dict[str, Any]:
    """A value for each name the split variants of these flows set (the first variant that sets it):
    what a preview renders `vars.<name>` with before any contact has a variant."""
    found: dict[str, Any] = {}
    for flow in flows:
        for node in flow.nodes.values():
            if isinstance(node, SplitNode):
                for variant in node.variants:
                    for name, value in variant.vars.items():
                        found.setdefault(name, value)
    return found


def assign_variant(split: SplitNode, contact_id: str, journey: str) -> Variant:
    """The contact's variant: deterministic (same contact, same split, same variant), weighted."""
    digest = hashlib.sha256(f"{journey}\x1f{split.name}\x1f{contact_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.weight for v in split.variants)
    for variant in split.variants:
        point -= variant.weight
        if point < 0:
            return variant
    return split.variants[-1]


@dataclass
class Walk:
    """What a walk did and where it stopped."""

    pending: tuple[str, float] | None = None    # (node id, due) where the run waits; None when it ended
    ended: str | None = None                    # why the run ended: finished, exit:<reason>, error:<...>
    assignments: dict[str, str] = field(default_factory=dict)   # split name -> variant
    coupons: list[Any] = field(default_factory=list)            # CouponSpecs to issue for this run
    emits: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)   # (node id, event, properties)
    sets: dict[str, Any] = field(default_factory=dict)
    stats: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)              # rule errors met on the way
    once: list[str] = field(default_factory=list)               # ids of `once` steps done on the way
    skipped: list[tuple[str, str, str]] = field(default_factory=list)   # (node id, code, why) of steps passed by


@dataclass
class WalkContext:
    journey: str
    contact_id: str
    base: float                         # the moment the run is at: waits are measured from it
    rules: Callable[[], Mapping[str, Any]]   # the rule context (contact, events, scores ...), built on demand
    due_of: Callable[[Node, float], float | None]   # when a wait-until node is due, from `base`
    assignments: Mapping[str, str] = field(default_factory=dict)
    done_once: Callable[[str], bool] = lambda node_id: False   # a `once` step this contact had already
    now: float | None = None            # the real moment, when later than `base` (a late worker)


def _rules(flow: Flow, context: WalkContext, walk: Walk) -> Mapping[str, Any]:
    """The rule context, with the `vars` of variants this very walk chose (not recorded yet)."""
    rules = context.rules()
    if walk.assignments:
        rules = {**rules, "vars": {**rules.get("vars", {}), **flow.variant_vars(walk.assignments)}}
    return rules


def _holds(expression: Expression, context: WalkContext, walk: Walk, flow: Flow) -> bool:
    try:
        return expression.evaluate(_rules(flow, context, walk))
    except RuleError as exc:
        walk.notes.append(str(exc))
        return False


def walk(flow: Flow, start: str | None, context: WalkContext) -> Walk:
    """Move a run from `start` (None: the run is over) to the first node that takes time."""
    result = Walk()
    node_id = start
    for _ in range(MAX_STEPS_WITHOUT_WAITING):
        if node_id is None:
            result.ended = "finished"
            return result
        node = flow.nodes.get(node_id)
        if node is None:
            result.ended = f"error:no step {node_id!r}"
            return result
        if node.condition is not None and not isinstance(node, SendNode) \
                and not _holds(node.condition, context, result, flow):
            node_id = node.next   # the send's own condition is checked when it is sent
            continue
        if isinstance(node, SendNode):
            result.pending = (node.id, context.base + node.delay)
            return result
        if isinstance(node, WaitNode):
            result.pending = (node.id, context.base + node.seconds)
            return result
        if isinstance(node, WaitUntilNode):
            due = context.due_of(node, context.base)
            if due is None:          # no such date on this contact: nothing to wait for
                node_id = node.next
                continue
            if node.if_past == SKIP and node.date is not None and due < max(context.base, context.now or 0.0):
                # Too late for what the wait was for (a reminder before the date): the step after it is
                # skipped and the run goes on with the one after that.
                after = flow.nodes.get(node.next) if node.next is not None else None
                if after is not None:
                    result.skipped.append((after.id, "date_passed", "the date has passed (if_past: skip)"))
                    node_id = after.next
                else:
                    node_id = None
                continue
            result.pending = (node.id, max(due, context.base))
            return result
        if isinstance(node, WaitForNode):
            result.pending = (node.id, context.base + node.timeout)
            return result
        if isinstance(node, BranchNode):
            chosen = next((arm for arm in node.arms
                           if arm.when is None or _holds(arm.when, context, result, flow)), None)
            node_id = (chosen.first or node.next) if chosen else node.next
            continue
        if isinstance(node, SplitNode):
            known = context.assignments.get(node.name) or result.assignments.get(node.name)
            variant = next((v for v in node.variants if v.name == known), None) or \
                assign_variant(node, context.contact_id, context.journey)
            if node.name not in context.assignments:
                result.assignments[node.name] = variant.name
                result.stats[split_stat(context.journey, node.name, variant.name, "entered")] += 1
            if variant.holdout:
                # A holdout receives nothing; its run ends, but its goal window stays open, so its
                # conversions are counted beside the other variants'.
                result.ended = "holdout"
                return result
            node_id = variant.first or node.next
            continue
        if isinstance(node, ExitNode):
            result.ended = f"exit:{node.reason}"
            return result
        if node.once:
            if context.done_once(node.id) or node.id in result.once:
                result.skipped.append((node.id, "once", "done before (once: true)"))
                node_id = node.next
                continue
            result.once.append(node.id)
        if isinstance(node, CouponNode):
            try:
                result.coupons.append(_coupon_spec(node, _rules(flow, context, result)) if node.from_vars
                                      else node.spec)
            except ValueError as exc:    # a variant without the value: no coupon rather than a wrong one
                result.notes.append(f"step {node.id!r}: {exc}")
        elif isinstance(node, TrackNode):
            result.emits.append((node.id, node.event, dict(node.properties)))
        elif isinstance(node, SetNode):
            result.sets.update(node.attributes)
        node_id = node.next
    result.ended = f"error:more than {MAX_STEPS_WITHOUT_WAITING} steps without waiting"
    return result


def _coupon_spec(node: CouponNode, rules: Mapping[str, Any]) -> Any:
    """The coupon with the values it takes from `vars` (checked for every variant when the journey loaded)."""
    values = rules.get("vars", {})
    return replace(node.spec, **{key: values.get(name) for key, name in node.from_vars.items()})


def resume_after(node: Node) -> str | None:
    """Where a run goes when the timer of its waiting node fires (None: the run ends)."""
    if isinstance(node, WaitForNode):
        return node.on_timeout if node.on_timeout is not None else node.next
    return node.next
