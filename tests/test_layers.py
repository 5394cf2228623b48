"""The layering that docs/architecture.md states, read from the code (issue 26): every ``lumebench``
import (top-level or inside a function, ``TYPE_CHECKING`` included) goes from a layer to the same or
a lower one, and the modules import each other without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lumebench"

# lowest first; a module's layer is its area (sub-package) or, for top-level modules, its own name.
# The commands modules (``*/commands.py``), the CLI and ``__main__`` sit above everything.
LAYERS = [
    {"errors", "numerics", "__init__"},
    {"io", "registry", "faults", "progress", "checks", "hub", "resources", "launcher"},
    {"provenance", "distributed", "allocator"},
    {"step", "curve", "metrics_table"},
    {"data", "models"},
    {"train", "eval"},
    {"methods"},
    {"attacks"},
    {"report"},
    {"pipeline"},
    {"parity"},
    {"cli", "__main__", "commands"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = "commands" if parts[-1] == "commands" or parts[-1] == "__main__" else (parts[1] if len(parts) > 1 else "__init__")
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    raise AssertionError(f"{module}: its area {key!r} has no layer in this test (and in docs/architecture.md)")


def imports() -> dict[str, set[str]]:
    known = {module_name(p) for p in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for p in SRC.rglob("*.py"):
        out: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                while n and n not in known:
                    n = n.rpartition(".")[0]
                if n.startswith("lumebench") and n != "lumebench":
                    out.add(n)
        edges[module_name(p)] = out - {module_name(p)}
    return edges


def test_no_import_goes_up_a_layer():
    up = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
          for m, targets in sorted(imports().items()) for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert up == []


def test_no_import_cycle():
    edges = imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]) if t in path else f"{m} -> {t}")
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_layers_are_those_of_the_architecture_page():
    text = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    for names in LAYERS[3:]:
        for name in names - {"commands", "__main__", "cli"}:
            assert name in text, name
