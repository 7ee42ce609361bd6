"""The modules of ``clinical_prompt`` import each other without cycles.

Every ``import`` statement counts, at module level and inside functions alike: a function-level import breaks a
cycle only at load time, and the two modules still cannot be understood, tested or moved apart. Imports under
``if TYPE_CHECKING:`` do not run and are left out, and so is the package ``__init__`` that importing a submodule
runs first (``a.b.c`` depends on ``a.b``, not on what ``a/b/__init__.py`` re-exports).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "clinical_prompt"

def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, (ast.Name, ast.Attribute)) and (
        getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))
    return found


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:  # ``from a import b`` imports the module a.b where there is one, else a
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {target for target in targets if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), as a path that ends where it starts."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(_path_within(graph, group, node))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _path_within(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """The shortest way from ``start`` back to itself inside ``group`` (breadth first)."""
    paths = {target: [start, target] for target in graph[start] & group}
    frontier = list(paths)
    while start not in paths:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    return paths[start]


def test_the_import_graph_is_read() -> None:
    graph = import_graph()
    assert "clinical_prompt.brat" in graph["clinical_prompt.schema"]  # a relative import
    assert "clinical_prompt.atomic" in graph["clinical_prompt.brat"]  # ``from clinical_prompt import atomic``
    assert "clinical_prompt.recipes.cli" in graph["clinical_prompt.cli"]
    assert "clinical_prompt.recipes.config" in graph["clinical_prompt.recipes.cli"]  # inside a function


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)
