"""Hints that know what a marketer most likely meant.

A did-you-mean on spelling is not enough for YAML: `on_timeout` indented under `wait_for:`
is spelt right and one level too deep; `nps` is the start of the template `nps-survey`;
`trial_ends_at` is an attribute read without `contact.`; `yes` is YAML, not a rule value.
These helpers turn such near misses into a hint that says what to change and where.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Iterable, Mapping, Sequence

from jinja2 import TemplateSyntaxError

from automation.expressions import RULE_NAMES, did_you_mean, unknown_names

#: YAML 1.1 words for true and false, which rules (Jinja expressions) do not know.
YAML_BOOLEANS = {"yes": "true", "on": "true", "no": "false", "off": "false"}
_SPLIT_NAME = re.compile(r"[^a-z0-9_-]+")


# -- keys at the wrong level ---------------------------------------------------------------------

def schema_at(schema: Mapping[str, Any], path: Sequence[Any]) -> Mapping[str, Any] | None:
    """The object schema that applies to the mapping at `path` of a journey (None when it is not one)."""
    current: Mapping[str, Any] | None = _resolve(schema, schema)
    for part in path:
        if current is None:
            return None
        if isinstance(part, str):
            current = current.get("properties", {}).get(part)
        else:
            current = current.get("items") if isinstance(current.get("items"), dict) else None
        current = _resolve(schema, current) if current is not None else None
    return current


def _resolve(root: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Follow `$ref`s, and of `oneOf`/`anyOf` take the form that is a mapping of keys."""
    for _ in range(16):   # refs chain a few levels at most; never loop on a malformed schema
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = target
            continue
        forms = schema.get("oneOf") or schema.get("anyOf")
        if isinstance(forms, list) and "properties" not in schema:
            mapped = [form for form in forms if isinstance(form, dict)
                      and ("properties" in form or "$ref" in form)]
            if not mapped:
                return schema
            schema = mapped[0]
            continue
        return schema
    return None


def _keys(schema: Mapping[str, Any] | None) -> Collection[str]:
    return schema.get("properties", {}) if schema else {}


def misplaced_key_hint(schema: Mapping[str, Any], doc: Any, path: Sequence[Any], key: str,
                       parent_name: str) -> str | None:
    """Where an unknown `key` of the mapping at `path` belongs when it is known one level up
    (`on_timeout` under `wait_for:`) or one level down (`timeout` beside `wait_for:`)."""
    if path and isinstance(path[-1], str):
        parent_path = path[:-1]
        if key in _keys(schema_at(schema, parent_path)):
            parent = _node(doc, parent_path)
            line = _line(parent, path[-1])
            owner = parent_name if parent_name.startswith(("the ", "'")) else f"the {parent_name}"
            return f"{key!r} belongs to {owner}: move it to the indentation of {path[-1]!r} (line {line})"
    container = _node(doc, path)
    if isinstance(container, dict):
        for child, value in container.items():
            if child == key or not (value is None or isinstance(value, dict)):
                continue
            if key in _keys(schema_at(schema, [*path, child])):
                line = _line(container, child)
                if isinstance(value, dict) and _flow_style(value):
                    return f"{key!r} belongs to {child!r}: move it inside the braces of {child!r} (line {line})"
                return f"{key!r} belongs to {child!r}: indent it under {child!r} (line {line})"
    return None


def strayed(schema: Mapping[str, Any], doc: Any, path: Sequence[Any], key: str) -> bool:
    """True when `key`, missing from the mapping at `path`, is written one level up or down instead,
    where it is unknown: the unknown key's hint says where it goes, so its absence is not told again."""
    if path and isinstance(path[-1], str):
        parent = _node(doc, path[:-1])
        if isinstance(parent, dict) and key in parent and key not in _keys(schema_at(schema, path[:-1])):
            return True
    container = _node(doc, path)
    if isinstance(container, dict):
        for child, value in container.items():
            if isinstance(value, dict) and key in value \
                    and key not in _keys(schema_at(schema, [*path, child])):
                return True
    return False


def keys_meant_for(schema: Mapping[str, Any], doc: Any, path: Sequence[Any]) -> list[str]:
    """The keys beside an empty `wait_for:` (or any empty mapping key) that belong under it: written
    without indentation, YAML reads them as the empty key's neighbours."""
    if not path or not isinstance(path[-1], str):
        return []
    parent = _node(doc, path[:-1])
    if not isinstance(parent, dict):
        return []
    here, there = _keys(schema_at(schema, path[:-1])), _keys(schema_at(schema, path))
    return [key for key in parent if key not in here and key in there]


def _node(doc: Any, path: Iterable[Any]) -> Any:
    node = doc
    for part in path:
        node = node[part]
    return node


def _line(mapping: Any, key: Any) -> int:
    """1-based line of a key of a ruamel mapping (1 when unknown)."""
    try:
        return int(mapping.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return 1


def _flow_style(value: Any) -> bool:
    try:
        return bool(value.fa.flow_style())
    except AttributeError:
        return False


# -- names ----------------------------------------------------------------------------------------

def closest(name: str, choices: Iterable[str]) -> str | None:
    """`did you mean ...?` for a misspelt name, or for the start or part of longer ones
    (`nps` -> `nps-survey`; `winback` -> `winback-coupon` or `winback-vip`)."""
    choices = sorted(set(choices))
    lowered = name.lower()
    found = [c for c in choices if c.lower().startswith(lowered)] if name else []
    if not found:
        hint = did_you_mean(name, choices)
        if hint or not name:
            return hint
        found = [c for c in choices if lowered in c.lower()]
    if not found:
        return None
    shown = [repr(choice) for choice in found[:3]]
    return f"did you mean {shown[0]}?" if len(shown) == 1 else \
        f"did you mean {', '.join(shown[:-1])} or {shown[-1]}?"


def rule_name_hint(source: str, names: Iterable[str], attributes: Collection[str],
                   events: Collection[str]) -> str | None:
    """A better hint for the unknown name of a rule than a list of every name: `yes` is YAML
    (write `true`); a declared attribute or event is read as `contact.x` or `events.x`."""
    try:
        unknown = sorted(unknown_names(source, RULE_NAMES | set(names)))
    except TemplateSyntaxError:
        return None
    if not unknown:
        return None
    name = unknown[0]   # the one compile_rule reports
    if name.lower() in YAML_BOOLEANS:
        meant = YAML_BOOLEANS[name.lower()]
        return f"did you mean {meant!r}? rules write true and false, not yes/no or on/off"
    if name in attributes:
        return f"did you mean 'contact.{name}'?"
    if name in events:
        return f"did you mean events.{name}.count or days_since('{name}')?"
    return None


def split_name(journey: str, scope: str | None, ordinal: int) -> str:
    """A name for an unnamed split, from the journey, its stage and the split's place in it."""
    suffix = _SPLIT_NAME.sub("-", f"-{scope.lower()}-split-{ordinal}" if scope else f"-split-{ordinal}")
    base = _SPLIT_NAME.sub("-", journey.lower()).strip("-_")[:64 - len(suffix)]
    return (base + suffix).strip("-_")
