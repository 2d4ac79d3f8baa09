"""The package's shape: no module imports a module that imports it back, and imports are at the top.

Import circles make a module's meaning depend on import order and hide a definition in the wrong
place; imports inside functions hide dependencies (and circles) from readers. The command line is
the one exception: it imports each command's modules when the command runs, so `lifecycle --help`
starts fast.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "automation"
#: Modules allowed to import inside functions, and why.
LAZY_IMPORTS = {"automation.ops.cli": "start-up speed: each command imports what it needs"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.AST, known: set[str]) -> set[str]:
    """The package's modules a module imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in known)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_module_that_imports_it_back():
    # Given every module of the package and the package modules it imports (packages' own
    # __init__ files count as modules too, except as the implicit parent of a submodule)
    found = modules()
    known = set(found)
    graph = {name: imported(ast.parse(path.read_text()), known) - {name} for name, path in found.items()}
    # Then the import graph has no circle
    assert cycles(graph) == []


def test_the_circle_check_finds_a_circle():
    # The check above must be able to fail: two modules importing each other are a circle.
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_imports_are_at_the_top_of_modules_except_in_the_command_line():
    inside = []
    for name, path in modules().items():
        if name in LAZY_IMPORTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{path.relative_to(ROOT)}:{sub.lineno}" for sub in ast.walk(node)
                           if isinstance(sub, (ast.Import, ast.ImportFrom))]
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                inside.append(f"{path.relative_to(ROOT)}:{node.lineno} (TYPE_CHECKING)")
    assert inside == []


def test_wings_are_packages_with_a_docstring():
    for wing in ("language", "store", "engine", "messages", "server", "ops", "channels", "insight"):
        init = PACKAGE / wing / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), wing
