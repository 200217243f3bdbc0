"""The package's import graph, read from the source with ``ast``: no cycle between modules, and no import
from a lower layer into a higher one. Every import counts, inside functions and ``TYPE_CHECKING`` blocks
too: a function-local import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from conftest import ROOT

PACKAGE = "occlusion_distill"

# Lowest first. A module may import modules of its own layer or of lower ones (never in a cycle); a
# subpackage's modules belong to the subpackage's layer. The root ``__init__`` is the front door, above all.
LAYERS: list[set[str]] = [
    {"_version", "errors", "io", "optional", "config"},
    {"registry"},
    {"occlusions"},
    {"data"},
    {"tasks", "models"},
    {"engine"},
    {"distillers"},
    {"protocol"},
    {"tools"},
    {"bench"},
    {"checks"},
    {"report"},
    {"cli", "__main__"},
]
FRONT = len(LAYERS)  # the layer of the root occlusion_distill/__init__.py


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package under ``root``."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(name: str, is_package: bool, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> list[str]:
    """The package modules an import statement in module ``name`` loads; ``from pkg import module``
    resolves to the module, ``from module import name`` to the module."""
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    else:
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        found = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
    out = []
    for target in found:
        if target != PACKAGE and not target.startswith(PACKAGE + "."):
            continue
        while target not in mods:  # an attribute of a module, or a module not in this tree
            target = target.rsplit(".", 1)[0]
        out.append(target)
    return out


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line of its first import}}`` over every import of the package."""
    mods = modules(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(name, path.name == "__init__.py", node, mods):
                    if target != name and (target not in edges or node.lineno < edges[target]):
                        edges[target] = node.lineno
        graph[name] = edges
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return FRONT
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add '{parts[1]}' to LAYERS in tests/test_layers.py")


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in components:  # a shortest way round from the component's first module, to name it
        members, start = set(comp), comp[0]
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        cycle = paths[v] + [start]
                        break
                    if w in members and w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        out.append(cycle)
    return out


def upward_imports(root: Path, graph: dict[str, dict[str, int]]) -> list[str]:
    """``file:line: module (layer) imports module (higher layer)`` for every import against the order."""
    mods = modules(root)
    out = []
    for name, edges in sorted(graph.items()):
        for target, line in sorted(edges.items(), key=lambda e: e[1]):
            if layer_of(target) > layer_of(name):
                where = mods[name].relative_to(root).as_posix()
                out.append(f"{where}:{line}: {name} imports {target}, a higher layer "
                           f"({'/'.join(sorted(LAYERS[layer_of(name)]))} < "
                           f"{'/'.join(sorted(LAYERS[layer_of(target)])) if layer_of(target) < FRONT else 'the front door'})")
    return out


def check(root: Path) -> list[str]:
    graph = import_graph(root)
    problems = [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems + upward_imports(root, graph)


def test_package_imports_form_layers_without_cycles():
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def test_every_subpackage_has_a_layer():
    for name in modules(ROOT):
        layer_of(name)


def test_the_check_finds_a_cycle_and_an_upward_import(tmp_path):
    """On a copy of the package with an import added against the order: both faults named, with the file
    and line of the import."""
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    errors = tmp_path / PACKAGE / "errors.py"
    text = errors.read_text(encoding="utf-8")
    # a function-local import counts as much as one at the top
    errors.write_text(text + "\ndef _late():\n    from .config import RunConfig\n    return RunConfig\n", encoding="utf-8")
    config = tmp_path / PACKAGE / "config.py"
    text = config.read_text(encoding="utf-8")
    line = text.count("\n") + 2
    config.write_text(text + "\nfrom .registry import registry as _r\n", encoding="utf-8")
    before = set(check(ROOT))
    found = [p for p in check(tmp_path) if p not in before]
    assert any(p.startswith("import cycle:") and "occlusion_distill.config" in p and "occlusion_distill.errors" in p
               for p in found), found
    assert any(p.startswith(f"{PACKAGE}/config.py:{line}: ") and "imports occlusion_distill.registry, a higher layer"
               in p for p in found), found
    assert not any(p.startswith(f"{PACKAGE}/errors.py:") for p in found), found  # same layer: only the cycle


def test_imports_resolve_relative_and_module_forms(tmp_path):
    """``from . import x``, ``from ..pkg import module`` and ``import pkg.module`` each name the module."""
    pkg = tmp_path / PACKAGE
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("from . import trainer\n")
    (pkg / "engine" / "trainer.py").write_text("from ..errors import UsageError\nimport occlusion_distill.engine.stage\n")
    (pkg / "engine" / "stage.py").write_text("def f():\n    from .. import errors\n")
    graph = import_graph(tmp_path)
    assert graph["occlusion_distill.engine"] == {"occlusion_distill.engine.trainer": 1}
    assert graph["occlusion_distill.engine.trainer"] == {"occlusion_distill.errors": 1,
                                                         "occlusion_distill.engine.stage": 2}
    assert graph["occlusion_distill.engine.stage"] == {"occlusion_distill.errors": 2}
