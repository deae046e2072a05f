"""The modules of ingress/ import each other without a circle (TYPE_CHECKING imports count too),
and only the wiring imports the node."""

from __future__ import annotations

import ast
from pathlib import Path

INGRESS = Path(__file__).resolve().parent.parent / "ingress"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(INGRESS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, names: list[str], known: set[str]) -> set[str]:
    """The ingress modules an import names: ``from ingress.wire import codec`` is
    ``ingress.wire.codec`` when that is a module, else the package ``ingress.wire``."""
    out: set[str] = set()
    for name in names:
        if f"{module}.{name}" in known:
            out.add(f"{module}.{name}")
        elif module in known:
            out.add(module)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the ingress modules it imports, from every import statement in its source."""
    files = {_module_name(p): p for p in INGRESS.rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in known}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                edges |= _resolve(base, [a.name for a in node.names], known)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        path.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[mod] = 2
        return None

    for mod in sorted(graph):
        if mod not in state:
            found = visit(mod)
            if found:
                return found
    return None


def test_the_graph_sees_the_imports() -> None:
    graph = import_graph()
    assert "ingress.wire.connection" in graph["ingress.node"]
    assert "ingress.wire.codec" in graph["ingress.wire.connection"]


def test_ingress_has_no_import_circle() -> None:
    assert find_cycle(import_graph()) is None


def test_only_the_wiring_imports_the_node() -> None:
    importers = sorted(m for m, deps in import_graph().items() if "ingress.node" in deps)
    assert importers == []


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
