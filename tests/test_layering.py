"""The layers of the code base import in one direction only (docs/architecture.md, "Layers").

``hw`` (configuration, errors, geometry, Amaranth components) imports only Amaranth, the
standard library and itself; ``sim`` (golden model, data, host layer) may use ``hw``;
``tb`` (testbenches, drivers, unit models) ``hw`` and ``sim``; ``gen`` (generation,
synthesis, CLI, demo) everything. No module imports itself back through a cycle, lazy
(function-level) imports included. The check reads the sources with ``ast``, so it sees
every import whether or not it runs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("hw", "sim", "tb", "gen")
#: What each layer may import from the project.
ALLOWED = {"hw": {"hw"}, "sim": {"hw", "sim"}, "tb": {"hw", "sim", "tb"},
           "gen": {"hw", "sim", "tb", "gen"}}
#: Third-party packages ``hw`` may use (besides the standard library).
HW_THIRD_PARTY = {"amaranth"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "rpaccel." + ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[str]:
    """Absolute names of every module ``source`` imports (relative imports resolved)."""
    names = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.append(target)
            # `from rpaccel.hw import topk` imports the module rpaccel.hw.topk
            names += [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.append(str(node.args[0].value))
    return names


def project_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> project modules it imports, for ``{module: (source, is_package)}``."""
    graph = {}
    for module, (source, is_package) in sources.items():
        deps = set()
        for name in imports_of(source, module, is_package):
            while name and name not in sources:
                name = name.rpartition(".")[0]
            if name and name != module and name != "rpaccel":
                deps.add(name)
        graph[module] = deps
    return graph


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every forbidden import direction, third-party import in ``hw`` and import cycle."""
    problems = []
    stdlib = set(sys.stdlib_module_names)
    for module, (source, is_package) in sources.items():
        layer = module.split(".")[1]
        for name in imports_of(source, module, is_package):
            top = name.split(".")[0]
            if top == "rpaccel":
                parts = name.split(".")
                if len(parts) > 1 and parts[1] in LAYERS and parts[1] not in ALLOWED[layer]:
                    problems.append(f"{module} imports {name}: {layer}/ may not use {parts[1]}/")
            elif layer == "hw" and top and top not in stdlib and top not in HW_THIRD_PARTY:
                problems.append(f"{module} imports {name}: hw/ uses only Amaranth and the "
                                f"standard library")
    graph = project_graph(sources)
    # Cycles: depth-first search with colours; report each cycle once by its members.
    seen_cycles, state = set(), {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    problems.append("import cycle: " + " -> ".join(cycle + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return problems


def project_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            sources[module_name(path)] = (path.read_text(), path.name == "__init__.py")
    return sources


def test_layers_import_in_one_direction_without_cycles():
    problems = violations(project_sources())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module, line, expected", [
    ("rpaccel.hw.topk", "from rpaccel.sim import numerics", "hw/ may not use sim/"),
    ("rpaccel.hw.pe", "import numpy", "hw/ uses only Amaranth"),
    ("rpaccel.sim.golden", "from rpaccel.tb.common import setup", "sim/ may not use tb/"),
    ("rpaccel.tb.common", "from rpaccel.gen import generate", "tb/ may not use gen/"),
    ("rpaccel.hw.config", "from rpaccel.hw import topk", "import cycle"),
])
def test_a_forbidden_import_is_caught(module, line, expected):
    """The check is not vacuous: adding one bad import to a real module fails it."""
    sources = project_sources()
    source, is_package = sources[module]
    sources[module] = (source + "\n\ndef _injected():\n    " + line + "\n", is_package)
    problems = violations(sources)
    assert any(expected in p for p in problems), problems


def test_relative_imports_resolve():
    assert "rpaccel.hw.vector" in imports_of("from .vector import Requantizer",
                                             "rpaccel.hw.interaction", False)
    assert "rpaccel.sim.numerics" in imports_of("from . import numerics",
                                                "rpaccel.sim", True)
