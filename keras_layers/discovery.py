"""Registries that find their entries by module (model builders, training recipes): importing a
package's modules is what registers them, so adding an entry means adding one file."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package, path):
    """Import every module of `package` (its `__name__` and `__path__`) whose name does not start
    with an underscore, in name order."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
