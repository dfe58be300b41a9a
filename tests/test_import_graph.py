"""The shape of the code: no import circles, and the request path never imports upwards.

The graph is read from the source with ``ast``: every ``import``/``from ... import`` of a
``proxy`` module counts, at module level or inside a function (a lazy import hides a circle,
it does not remove it), except those under ``if TYPE_CHECKING:``, which never run. Importing
``proxy.a.b`` is an edge to ``proxy.a.b`` only (its package's ``__init__`` runs first, but that
is not a dependency of the importer's).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "proxy"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, known: set[str], here: str) -> Iterator[str]:
    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("proxy"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here.split(".")
                if not (PACKAGE / Path(*package[1:]) / "__init__.py").exists():
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base]) if base else ".".join(package)
            if base.startswith("proxy"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    yield sub if sub in known else base
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = {target for target in _imports(tree, known, name) if target in known and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strong(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                strong(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return found


def test_the_checker_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import proxy.b\n"
                     "def f():\n    from proxy import c\n")
    assert set(_imports(tree, {"proxy.b", "proxy.c"}, "proxy.a")) == {"proxy.c"}


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for target in graph.get(node, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


# Module -> packages it must never depend on, directly or through others.
LAYERS = {
    "proxy.settings": ("proxy.",),  # a leaf: nothing of the proxy at all
    "proxy.errors": ("proxy.",),
    "proxy.gate": ("proxy.web", "proxy.app", "proxy.forward", "proxy.records", "proxy.sessions", "proxy.config"),
    "proxy.vendors": ("proxy.records", "proxy.config", "proxy.web", "proxy.forward"),
    "proxy.forward.handler": ("proxy.web", "proxy.app", "proxy.records", "proxy.context", "proxy.gate"),
    "proxy.forward.relay": ("proxy.web", "proxy.app", "proxy.records", "proxy.context"),
    "proxy.rewrite.hosts": ("proxy.web", "proxy.app", "proxy.forward", "proxy.records", "proxy.sessions"),
    "proxy.sessions.redis": ("proxy.web", "proxy.app", "proxy.forward", "proxy.records", "proxy.config"),
    "proxy.patrons.ldap": ("proxy.config", "proxy.web", "proxy.app", "proxy.forward", "proxy.records"),
    "proxy.records.stats": ("proxy.config", "proxy.web", "proxy.app", "proxy.forward"),
}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_layers(module: str) -> None:
    graph = import_graph()
    assert module in graph, module
    bad = sorted(m for m in _reachable(graph, module) if m.startswith(LAYERS[module]))
    assert bad == [], f"{module} depends on {bad}"
