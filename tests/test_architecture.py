"""The package's layers: no import cycles, dependencies pointing inwards, and
nothing in the package reading the repository around it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "rexnet_plugin"
CORE = {"rexnet_plugin.plan", "rexnet_plugin.model", "rexnet_plugin.zoo",
        "rexnet_plugin.factories", "rexnet_plugin.complexity", "rexnet_plugin.files"}
OUTER = ("rexnet_plugin.deploy", "rexnet_plugin.integrations", "rexnet_plugin.demo",
         "rexnet_plugin.cli")
HOSTS = ("ppcls", "paddleclas", "ppdet", "paddlex")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports, at module level or inside functions."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # type-checking-only imports never run
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                   "typing.TYPE_CHECKING"):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


GRAPH = {name: {m for m in imports_of(name) if m in MODULES and m != name} for name in MODULES}


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(CORE | {m for m in MODULES if m.startswith("rexnet_plugin.weights")}))
def test_core_and_weights_never_import_the_outer_layers_or_a_host(name):
    imported = imports_of(name)
    assert not [m for m in imported if m.startswith(OUTER)], imported
    assert not [m for m in imported if m.split(".")[0] in HOSTS], imported


@pytest.mark.parametrize("name", ["rexnet_plugin.plan", "rexnet_plugin.zoo",
                                  "rexnet_plugin.integrations.autoload",
                                  "rexnet_plugin.deploy.artifacts"])
def test_light_modules_import_no_framework(name):
    imported = imports_of(name)
    assert not [m for m in imported if m.split(".")[0] in ("paddle", "numpy", *HOSTS)], imported


def test_nothing_in_the_package_reads_the_repository_around_it():
    outside = {"shared", "../shared", "reference", "benchmarks", "scripts", "docs", "README.md"}
    for path in MODULES.values():
        strings = {node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not strings & outside, f"{path.relative_to(ROOT)} names {strings & outside}"
