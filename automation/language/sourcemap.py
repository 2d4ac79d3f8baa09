"""Where things are in a journey file: positions for `path:line:col` diagnostics.

ruamel.yaml keeps the line and column of every key, value and list item; these
helpers turn them into the 1-based positions editors show, and collect the
diagnostics of one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Iterable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from automation.expressions import Expression, ExpressionError, compile_rule
from automation.language.diagnostics import Diagnostic, Severity
from automation.language.hints import rule_name_hint


def display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Report:
    """The diagnostics of one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[Diagnostic] = []

    def add(self, where: tuple[int, int], message: str, hint: str | None = None,
            severity: Severity = Severity.ERROR) -> None:
        self.items.append(Diagnostic(self.path, where[0], where[1], message, hint, severity))

    def warn(self, where: tuple[int, int], message: str, hint: str | None = None) -> None:
        self.add(where, message, hint, Severity.WARNING)

    def told(self, where: tuple[int, int]) -> bool:
        """Whether an error is already reported at `where` (the schema checks before the meaning)."""
        return any((d.line, d.column) == where for d in self.items if d.is_error)

    def add_once(self, where: tuple[int, int], message: str, hint: str | None = None) -> None:
        """An error, unless one is already told at that very place: one finding per mistake."""
        if not self.told(where):
            self.add(where, message, hint)


def pos(node: Any, key: Any = None, *, of_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of a mapping value/key or a sequence item."""
    try:
        if key is None:
            line, col = node.lc.line, node.lc.col
        elif isinstance(node, CommentedMap):
            line, col = node.lc.key(key) if of_key else node.lc.value(key)
        elif isinstance(node, CommentedSeq):
            line, col = node.lc.item(key)
        else:
            return (1, 1)
        return (line + 1, col + 1)
    except (AttributeError, KeyError, IndexError, TypeError):
        return (1, 1)


def compile_at(source: Any, where: tuple[int, int], names: Iterable[str], report: Report,
               attributes: Collection[str] = (), events: Collection[str] = ()) -> Expression | None:
    """Compile a rule, reporting problems at `where`; None if it does not compile. `attributes` and
    `events` (those journeys/_contact.yaml declares) turn `trial_ends_at` into `contact.trial_ends_at`."""
    if not isinstance(source, str):
        return None  # the schema reports the wrong type
    names = frozenset(names)
    try:
        return compile_rule(source, names)
    except ExpressionError as exc:
        report.add(where, exc.message, rule_name_hint(source, names, attributes, events) or exc.hint)
        return None


def plain(value: Any) -> Any:
    """ruamel's round-trip types turned into plain Python."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def read_text(path: Path, report: Report) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        report.add((1, 1), f"file is not UTF-8 text: {exc}", "save the file as UTF-8")
        return None


def read_yaml(path: Path, report: Report, text: str | None = None) -> Any:
    """The document of a file, or of `text` (a deployed version of it) when given."""
    yaml = YAML(typ="rt")
    if text is None:
        text = read_text(path, report)
    if text is None:
        return None
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        hint = "check indentation and quote text that contains ':' or starts with '{' or '*'"
        if "found duplicate key" in str(exc) or type(exc).__name__ == "DuplicateKeyError":
            hint = "each key may appear only once in a mapping"
        report.add(where, f"YAML syntax error: {problem}", hint)
        return None
