"""Search spaces as data: one module per model family, each holding one literal dict `SPACE`
over the family's *recipe* fields (and `SMOKE`, the size of a `--smoke-test` search).

    from tune_spaces import get
    space = get("basisnet")           # dict of ray.tune domains / constants
"""
from __future__ import annotations

import importlib
import pkgutil


def names():
    return sorted(i.name for i in pkgutil.iter_modules(__path__) if not i.name.startswith("_"))


def module(name):
    if name not in names():
        raise ValueError(f"unknown family={name!r}; valid choices: {', '.join(names()) or '(none yet)'}")
    return importlib.import_module(f"{__name__}.{name}")


def get(name):
    """The search space dict of family `name`."""
    return dict(module(name).SPACE)
