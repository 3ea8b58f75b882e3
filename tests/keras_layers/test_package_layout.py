"""The import rules of `keras_layers`, read from the source (no TensorFlow needed).

* layer files never import `keras_layers.models` (models import layers, not the other way round);
* no module imports a private name (``_x``) of another keras_layers module;
* importing a module runs no code of its own beyond definitions: only `keras_layers.env` may act
  (it selects Keras 2 before TensorFlow is imported).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "keras_layers"
MODULES = sorted(PACKAGE.rglob("*.py"))
# Layer files: everything outside models/, except the package itself (which exports the `models` subpackage).
LAYER_FILES = [p for p in MODULES if "models" not in p.relative_to(PACKAGE).parts and p != PACKAGE / "__init__.py"]
MAY_ACT_ON_IMPORT = {PACKAGE / "env.py"}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree):
    """(module, name or None) for every import of a keras_layers module in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_layers"):
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_layers"):
            for alias in node.names:
                yield node.module, alias.name


def ids(paths):
    return [str(p.relative_to(PACKAGE.parent)) for p in paths]


@pytest.mark.parametrize("path", LAYER_FILES, ids=ids(LAYER_FILES))
def test_layer_files_never_import_models(path):
    bad = [(m, n) for m, n in imports(ast.parse(path.read_text()))
           if m.startswith("keras_layers.models") or (m == "keras_layers" and n == "models")]
    assert not bad, f"{path.name} imports models: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=ids(MODULES))
def test_no_private_names_across_modules(path):
    bad = []
    for module, name in imports(ast.parse(path.read_text())):
        if any(part.startswith("_") for part in module.split(".")) or (name or "").startswith("_"):
            bad.append(f"{module}.{name}" if name else module)
    assert not bad, f"{path.name} imports private names of other modules: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=ids(MODULES))
def test_importing_runs_only_definitions(path):
    if path in MAY_ACT_ON_IMPORT:
        return
    for node in ast.parse(path.read_text()).body:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        assert docstring or not isinstance(node, (ast.Expr, ast.If, ast.For, ast.While, ast.With, ast.Try)), (
            f"{module_name(path)} runs code on import (line {node.lineno}): only definitions, please")
