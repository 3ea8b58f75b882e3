"""The import structure of the project, read from the source (function-level imports included):

* layers never import models, keras_layers imports neither tune_spaces nor pipelines, tune_spaces does
  not import pipelines (imports flow one way: keras_layers <- tune_spaces <- pipelines);
* inside pipelines, a package imports only packages below it in `PIPELINES_ORDER`;
* no cycle among modules;
* no private name (``_x``) of one module is used by another (imported, or read as ``module._x``);
* importing a module runs only definitions: the modules in `MAY_ACT_ON_IMPORT` alone do something
  (select Keras 2 before TensorFlow is imported; run the command line).

A failure names the importing file, the line and the imported module.
"""
import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("keras_layers", "tune_spaces", "pipelines")
# Bottom to top: a module may import modules of its own group or of groups listed before it.
MAY_ACT_ON_IMPORT = ("keras_layers/env.py", "pipelines/__init__.py", "pipelines/__main__.py")
PIPELINES_ORDER = ("pipelines.data", "pipelines.tracking", "pipelines.training", "pipelines.train", "pipelines.tuning",
                   "pipelines.export", "pipelines.mlops", "pipelines.cluster", "pipelines.experiments",
                   "pipelines.commands", "pipelines.cli", "pipelines.__main__")


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def project_modules():
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mods[module_name(path)] = path
    return mods


def imports_of(path, name, modules):
    """(line, imported project module) for every import in `path`, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    out.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((node.lineno, sub if sub in modules else target))
    return [(line, mod) for line, mod in out if mod in modules]


@pytest.fixture(scope="module")
def graph():
    modules = project_modules()
    return modules, {name: imports_of(path, name, modules) for name, path in modules.items()}


def group(name):
    """The PIPELINES_ORDER entry a pipelines module belongs to (None outside pipelines)."""
    for i, prefix in enumerate(PIPELINES_ORDER):
        if name == prefix or name.startswith(prefix + "."):
            return i
    return None


def test_imports_flow_one_way(graph):
    modules, edges = graph
    rank = {"keras_layers": 0, "tune_spaces": 1, "pipelines": 2}
    bad = []
    for name, imports in edges.items():
        for line, mod in imports:
            if rank[mod.split(".")[0]] > rank[name.split(".")[0]]:
                bad.append(f"{modules[name].relative_to(ROOT)}:{line} imports {mod}")
            if name.startswith("keras_layers.") and not name.startswith("keras_layers.models") \
                    and name != "keras_layers" and mod.startswith("keras_layers.models"):
                bad.append(f"{modules[name].relative_to(ROOT)}:{line} (a layer file) imports {mod}")
    assert not bad, "backwards imports:\n" + "\n".join(bad)


def test_pipelines_packages_import_only_downwards(graph):
    modules, edges = graph
    unplaced = [n for n in modules if n.startswith("pipelines.") and group(n) is None]
    assert not unplaced, f"modules in no PIPELINES_ORDER group (add their package to the order): {unplaced}"
    bad = []
    for name, imports in edges.items():
        g = group(name)
        if g is None:
            continue
        for line, mod in imports:
            h = group(mod)
            if h is not None and h > g:
                bad.append(f"{modules[name].relative_to(ROOT)}:{line} imports {mod} "
                           f"({PIPELINES_ORDER[g]} is below {PIPELINES_ORDER[h]})")
    assert not bad, "imports that point up the stack:\n" + "\n".join(bad)


def find_cycles(edges):
    """Strongly connected components with more than one module (or a self-import), by Tarjan."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for _, w in edges.get(v, ()):
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
            if len(comp) > 1 or any(w == v for _, w in edges.get(v, ())):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles(graph):
    _, edges = graph
    assert find_cycles(edges) == []


def test_the_checks_catch_what_they_should():
    """The graph code itself: a cycle, a relative import and a backwards import are found."""
    edges = {"a": [(1, "b")], "b": [(2, "c")], "c": [(3, "a")], "d": [(4, "a")]}
    assert find_cycles(edges) == [["a", "b", "c"]]
    assert find_cycles({"a": [(1, "a")]}) == [["a"]]
    assert group("pipelines.export.families.basisnet") == PIPELINES_ORDER.index("pipelines.export")
    assert group("pipelines.exports") is None


def private_uses(path, name, modules):
    """(line, what) for every private name of another project module this file uses."""
    tree = ast.parse(path.read_text(), str(path))
    bound = {}  # local name -> project module it is bound to
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    bound[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in PACKAGES:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in modules:
                    bound[alias.asname or alias.name] = sub
                if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != name:
                    out.append((node.lineno, f"from {node.module} import {alias.name}"))
            if any(part.startswith("_") and not part.startswith("__") for part in node.module.split(".")):
                out.append((node.lineno, f"from {node.module} import ..."))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                and node.attr.startswith("_") and not node.attr.startswith("__") and bound[node.value.id] != name:
            out.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return out


def test_no_private_names_across_modules(graph):
    modules, _ = graph
    bad = [f"{path.relative_to(ROOT)}:{line} uses {what}"
           for name, path in modules.items() for line, what in private_uses(path, name, modules)]
    assert not bad, "private names used across modules (make them public or keep them in their module):\n" + \
        "\n".join(bad)


def test_importing_a_module_runs_only_definitions(graph):
    modules, _ = graph
    bad = []
    for path in modules.values():
        if str(path.relative_to(ROOT)) in MAY_ACT_ON_IMPORT:
            continue
        for node in ast.parse(path.read_text()).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if not docstring and isinstance(node, (ast.Expr, ast.If, ast.For, ast.While, ast.With, ast.Try)):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, "code that runs on import (only definitions at module level, please):\n" + "\n".join(bad)
