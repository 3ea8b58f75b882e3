"""The import structure of the project, read from the source (function-level imports included):

* layers never import models, keras_layers imports neither tune_spaces nor pipelines, tune_spaces does
  not import pipelines (imports flow one way: keras_layers <- tune_spaces <- pipelines);
* inside pipelines, a package imports only packages below it in `PIPELINES_ORDER`;
* no cycle among modules.

A failure names the importing file, the line and the imported module.
"""
import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("keras_layers", "tune_spaces", "pipelines")
# Bottom to top: a module may import modules of its own group or of groups listed before it.
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
