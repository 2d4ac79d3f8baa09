"""`vars.<name>`: the values a run reads from the journey's `vars` and its split variants' `vars`.

A run's value is the journey's, overridden by what the variants it was given set
(automation.engine.context.run_vars). Here: which values each name can take in a journey,
which names every run reaching a step has, and the checks where a journey reads one (rules,
templates, coupon values, send options), each reported where it is used.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator, Mapping

from automation.expressions import did_you_mean
from automation.language.sourcemap import Report, plain

#: A value taken from the run's vars: `percent: vars.discount`, `sendgrid_template_id: vars.design`.
VARS_VALUE = re.compile(r"^\s*vars\.([A-Za-z_][A-Za-z0-9_]*)\s*$")


def check_vars(used: Iterable[str], where: tuple[int, int], known: Mapping[str, Any], report: Report,
               template: str = "") -> None:
    """`vars.<name>` that neither the journey's vars nor any split variant sets: an error where it is used
    (for a template, where the step names it)."""
    for name in sorted(set(used) - set(known)):
        message = (f"template {template} uses 'vars.{name}', which no split variant sets, nor the journey's vars"
                   if template else f"'vars.{name}' is set by no split variant, nor by the journey's vars")
        report.add(where, message, did_you_mean(name, known) or f"add vars: {{{name}: ...}} to the variants of a "
                                                                 "split before this step (or to the journey's vars)")


def _splits(doc: Any) -> Iterator[tuple[str, list[Mapping[str, Any]]]]:
    """(name, variants that are not holdouts) of every split in the journey, wherever it is: a holdout's
    run ends at the split, so what it sets is never read."""

    def visit(node: Any) -> Iterator[tuple[str, list[Mapping[str, Any]]]]:
        if isinstance(node, Mapping):
            split = node.get("split")
            if isinstance(split, Mapping) and isinstance(split.get("variants"), list):
                yield str(split.get("name", "")), [variant for variant in split["variants"]
                                                   if isinstance(variant, Mapping) and not variant.get("holdout")]
            for value in node.values():
                yield from visit(value)
        elif isinstance(node, list):
            for item in node:
                yield from visit(item)

    yield from visit(doc.get("stages"))
    yield from visit(doc.get("steps"))


def _vars_of(variant: Mapping[str, Any]) -> dict[str, Any]:
    return {str(name): value for name, value in plain(variant["vars"]).items()} \
        if isinstance(variant.get("vars"), Mapping) else {}


def collect_run_vars(doc: Any, journey_vars: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every name `vars.<name>` can mean in a journey, with each value given to it: the journey's own
    `vars`, then the `vars` of every split variant (holdouts aside), wherever the split is."""
    found: dict[str, list[Any]] = {name: [value] for name, value in journey_vars.items()}
    for _, variants in _splits(doc):
        for variant in variants:
            for name, value in _vars_of(variant).items():
                found.setdefault(name, []).append(value)
    return found


def collect_assigned(doc: Any, journey_vars: Mapping[str, Any]) -> dict[int, frozenset[str]]:
    """For every step (by `id()` of its mapping), the names every run that reaches it has a value for:
    the journey's vars, what its enclosing variants set, and what every variant (holdouts aside) of
    each split before it on its path sets."""
    assigned: dict[int, frozenset[str]] = {}

    def walk(items: Any, before: frozenset[str]) -> frozenset[str]:
        for step in items if isinstance(items, list) else []:
            if not isinstance(step, Mapping):
                continue
            assigned[id(step)] = before
            split = step.get("split")
            if isinstance(split, Mapping) and isinstance(split.get("variants"), list):
                after = []
                for variant in split["variants"]:
                    if isinstance(variant, Mapping):
                        mine = walk(variant.get("steps"), before | set(_vars_of(variant)))
                        if not variant.get("holdout"):
                            after.append(mine)
                before = frozenset.intersection(*after) if after else before
            else:
                # Branches and a wait_for's outcomes: what they set counts only within them.
                for nested in _nested(step):
                    walk(nested, before)
        return before

    base = frozenset(journey_vars)
    stages = doc.get("stages")
    for stage in stages if isinstance(stages, list) else []:
        if isinstance(stage, Mapping):
            walk(stage.get("steps"), base)
    walk(doc.get("steps"), base)
    return assigned


def _nested(step: Mapping[str, Any]) -> Iterator[Any]:
    """The lists of steps nested in a step that is not a split (a wait_for's outcomes, branch arms)."""
    for value in step.values():
        if isinstance(value, list):
            yield value
            for arm in value:
                if isinstance(arm, Mapping) and isinstance(arm.get("steps"), list):
                    yield arm["steps"]


def read_value(text: Any, where: tuple[int, int], run_vars: Mapping[str, list[Any]], report: Report,
               problems: Callable[[Any], list[str]], what: str, check_first: bool = True) -> tuple[str, Any] | None:
    """A value written `vars.<name>`: (name, the first value the journey gives it, which stands in until a
    run has its own), with every value checked by `problems` (the first only if `check_first`: the caller
    checks it with the rest). None, reported at `where`, if no one sets the name or a value is refused;
    also None, unreported, if `text` is not `vars.<name>`."""
    match = VARS_VALUE.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    name = match.group(1)
    values = run_vars.get(name)
    if values is None:
        check_vars([name], where, run_vars, report)
        return None
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    refused = False
    for value in distinct if check_first else distinct[1:]:
        for problem in problems(value):
            report.add(where, f"{problem} (vars.{name} = {value!r})",
                       f"each value the journey's vars and its split variants give vars.{name} must be a valid "
                       f"{what}")
            refused = True
    return None if refused else (name, values[0])
