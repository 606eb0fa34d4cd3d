"""The package's import graph has no cycle: no seglens module imports another that imports it back.

Every import of a seglens module counts, wherever it is: at the top of a module, inside a
function (lazy), under ``if TYPE_CHECKING:``, relative or absolute, and
``importlib.import_module("<literal>")``. ``from . import X`` in ``seglens/web/app.py`` would import
the package ``seglens.web`` (its ``__init__`` runs), plus ``seglens.web.X`` when X is a module.
Read with :mod:`ast` only; nothing is imported.

Run as a script to print the graph's cycles: ``python tests/test_imports.py``.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "seglens"


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``import a.b.c`` runs a,
    a.b and a.b.c; the deepest one that exists is what it names)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _anchor(module: str, is_package: bool, level: int) -> str:
    """The package a ``level``-dots relative import in ``module`` starts from."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(parts[: len(parts) - (level - 1)] if level > 1 else parts)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(imported module, line, source text) for each import of a package module in ``path``."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int, str]] = []

    def add(target: str | None, node: ast.AST) -> None:
        if target is not None and target != module:
            found.append((target, node.lineno, ast.get_source_segment(text, node) or ""))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(_resolve(alias.name, modules), node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = _anchor(module, is_package, node.level)
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                continue
            add(_resolve(base, modules), node)  # the module (or package) named after "from"
            for alias in node.names:  # and each imported name that is itself a module
                if f"{base}.{alias.name}" in modules:
                    add(f"{base}.{alias.name}", node)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (
                called == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                name = node.args[0].value
                if name.startswith("."):
                    level = len(name) - len(name.lstrip("."))
                    rest = name.lstrip(".")
                    # import_module(".x", __name__) is relative to the module's own name as a package
                    anchor = _anchor(module, True, level)
                    name = f"{anchor}.{rest}" if rest else anchor
                if name == PACKAGE or name.startswith(PACKAGE + "."):
                    add(_resolve(name, modules), node)
    return found


def import_graph(src: Path = SRC) -> dict[str, dict[str, list[str]]]:
    """module -> {imported module: ["file:line: statement", ...]} over the whole package."""
    modules = module_files(src)
    graph: dict[str, dict[str, list[str]]] = {m: {} for m in modules}
    for module, path in modules.items():
        for target, line, text in imports_of(module, path, modules):
            where = f"{path.relative_to(src).as_posix()}:{line}: {' '.join(text.split())}"
            graph[module].setdefault(target, []).append(where)
    return graph


def strongly_connected(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _shortest_path(graph: dict[str, dict[str, list[str]]], start: str, goal: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = [v]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for w in sorted(graph[v]):
            if w in within and w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError(f"no path {start} -> {goal} inside its component")


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Cycles covering every import edge that lies on a cycle: for each such edge u -> v, u -> v
    then the shortest way back from v to u. Each is [m0, m1, ..., m0], rotated to start at its
    smallest name, without duplicates."""
    seen, out = set(), []
    for component in strongly_connected(graph):
        members = set(component)
        for u in component:
            for v in sorted(graph[u]):
                if v in members:
                    ring = [u, *_shortest_path(graph, v, u, members)][:-1]
                    i = ring.index(min(ring))
                    ring = ring[i:] + ring[:i]
                    if tuple(ring) not in seen:
                        seen.add(tuple(ring))
                        out.append([*ring, ring[0]])
    return out


def describe(graph: dict[str, dict[str, list[str]]]) -> str:
    lines, rings = [], cycles(graph)
    for component in strongly_connected(graph):
        lines.append(f"cycle among {len(component)} modules: {', '.join(component)}")
        for ring in rings:
            if ring[0] in component:
                lines.append("  " + " -> ".join(ring))
                for u, v in zip(ring, ring[1:]):
                    for where in graph[u][v]:
                        lines.append(f"      {u} -> {v}   {where}")
    return "\n".join(lines)


# ---------------------------------------------------------------- tests


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "seglens.models" in graph["seglens.inference"]  # top-level, relative
    assert "seglens.hf" in graph["seglens.models"]  # inside a function (lazy)
    assert "seglens.inference" in graph["seglens"]  # under TYPE_CHECKING


def test_from_dot_import_counts_as_importing_the_package(tmp_path):
    web = tmp_path / PACKAGE / "web"
    web.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (web / "__init__.py").write_text("from .app import serve\nLIMIT = 1\n")
    (web / "app.py").write_text("from . import LIMIT\n\ndef serve():\n    from . import helpers\n")
    (web / "helpers.py").write_text("")
    graph = import_graph(tmp_path)
    assert set(graph["seglens.web.app"]) == {"seglens.web", "seglens.web.helpers"}  # the package, and X when a module
    assert strongly_connected(graph) == [["seglens.web", "seglens.web.app"]]


def test_leaf_modules_import_no_seglens_module():
    graph = import_graph()
    for leaf in ("seglens._weights", "seglens.shapes"):
        assert graph[leaf] == {}, (leaf, graph[leaf])
    assert "seglens.models" not in graph["seglens.hf"]  # hf builds on the leaf, not on models


def test_no_import_cycles():
    graph = import_graph()
    found = strongly_connected(graph)
    assert not found, "import cycles (no module may import one that imports it back):\n" + describe(graph)


if __name__ == "__main__":
    g = import_graph()
    text = describe(g)
    print(text or "no import cycles")
    sys.exit(1 if text else 0)
