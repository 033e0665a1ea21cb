"""The import graph of the tfgpt package: no cycles, and the layering of the architecture map.

The graph is read with ``ast`` (nothing of tfgpt is imported): every ``import`` and
``from ... import`` counts, at module level, inside functions and under ``TYPE_CHECKING``.
Relative imports are resolved; ``from pkg import name`` is an edge to ``pkg.name`` when that is
a module, else to ``pkg``; a package ``__init__`` re-exporting a submodule is an edge from the
package to the submodule. A cycle is reported as the chain of modules that closes it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tfgpt"

Graph = dict[str, set[str]]


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """``{"tfgpt.x.y": path}`` for every .py file under ``root`` (``__init__`` names the package)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(node: ast.AST, module: str, is_package: bool, modules: Iterable[str]) -> list[str]:
    """The tfgpt modules one import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: strip (level - 1) parts off the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]


def import_graph(modules: dict[str, Path]) -> Graph:
    """``{module: {tfgpt modules it imports}}`` over every import statement in each file."""
    graph: Graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            edges.update(t for t in _targets(node, name, is_package, modules) if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def imports_from(graph: Graph, importer: str, forbidden: Iterable[str]) -> list[str]:
    """Edges ``a -> b`` with ``a`` in package ``importer`` and ``b`` in one of the ``forbidden`` packages."""
    def inside(m: str, pkg: str) -> bool:
        return m == pkg or m.startswith(pkg + ".")
    return sorted(f"{a} -> {b}" for a, bs in graph.items() if inside(a, importer)
                  for b in bs if any(inside(b, f) for f in forbidden))


GRAPH = import_graph(module_names())


# ----------------------------------------------------------------------------- self-checks
def test_cycle_finder_finds_a_known_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"b", "c"}}) is None
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_graph_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "tfgpt"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "top.py").write_text("import tfgpt.sub.low\n")
    (pkg / "sub" / "__init__.py").write_text("from tfgpt.sub.mid import thing\n")  # a re-export
    (pkg / "sub" / "mid.py").write_text("from . import low\nfrom ..top import x\n")
    (pkg / "sub" / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tfgpt.sub import mid\n"
        "def f():\n    from tfgpt import top\n    import json\n"
    )
    graph = import_graph(module_names(pkg))
    assert graph == {
        "tfgpt": set(),
        "tfgpt.top": {"tfgpt.sub.low"},
        "tfgpt.sub": {"tfgpt.sub.mid"},
        "tfgpt.sub.mid": {"tfgpt.sub.low", "tfgpt.top"},
        "tfgpt.sub.low": {"tfgpt.sub.mid", "tfgpt.top"},
    }
    assert find_cycle(graph) == ["tfgpt.sub.mid", "tfgpt.sub.low", "tfgpt.sub.mid"]


def test_the_real_graph_is_read() -> None:
    assert len(GRAPH) > 30
    assert "tfgpt.model.block" in GRAPH["tfgpt.model.gpt"]
    assert "tfgpt.tokenizers.base" in GRAPH["tfgpt.tokenizers.char"]


# ----------------------------------------------------------------------------- the package
def test_no_import_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle among tfgpt modules: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        # ARCHITECTURE.md: "model/ imports nothing from data/, train/ or export/" (nor serving code).
        ("tfgpt.model", ["tfgpt.data", "tfgpt.train", "tfgpt.export", "tfgpt.serve"]),
        # The layers below cli -> (train | generate | finetune | export | serve) never reach up.
        ("tfgpt.tokenizers", ["tfgpt.cli", "tfgpt.train", "tfgpt.export", "tfgpt.serve", "tfgpt.model"]),
        ("tfgpt.config", ["tfgpt.cli", "tfgpt.train", "tfgpt.export", "tfgpt.serve", "tfgpt.model"]),
        ("tfgpt.export", ["tfgpt.cli", "tfgpt.serve", "tfgpt.train"]),
    ],
)
def test_layering(importer: str, forbidden: list[str]) -> None:
    assert imports_from(GRAPH, importer, forbidden) == []
