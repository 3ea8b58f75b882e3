"""Registries that find their entries by module (model builders, training recipes): importing a
package's modules is what registers them, so adding an entry means adding one file.

`Registry` holds one kind of entry (the models of `keras_layers.models`, the recipes of
`pipelines.training.recipes`); its package's modules are imported the first time a name is asked for.
The presets (`PRESETS`, `apply_preset`) are shared too: every model and every recipe has a ``default``
and a ``paper`` preset, applied the same way.
"""
from __future__ import annotations

import importlib
import pkgutil

PRESETS = ("default", "paper")


def import_submodules(package, path):
    """Import every module of `package` (its `__name__` and `__path__`) whose name does not start
    with an underscore, in name order."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def check_preset(preset):
    """`preset` if it is one of `PRESETS`; ValueError naming `preset` otherwise."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; received preset={preset!r}")
    return preset


def apply_preset(config, paper):
    """`config` (a dict with an optional ``preset``) with the preset's values under the explicit fields.

    ``preset="paper"`` adds `paper` (a dict, or a function of the explicit config returning one) under the
    fields the caller gave (explicit fields win); ``"default"`` returns a copy of `config` unchanged."""
    config = dict(config)
    if check_preset(config.get("preset", "default")) == "paper":
        paper = paper(config) if callable(paper) else (paper or {})
        config = {**paper, **config}
    return config


class Registry:
    """Entries by name, filled by importing every module of one package.

    kind     what an entry is, for messages ("model", "recipe")
    field    the argument that names an entry, for the unknown-name error ("model name", "recipe")
    """

    def __init__(self, package, path, kind, field):
        self._package, self._path = package, path
        self.kind, self.field = kind, field
        self._entries: dict = {}
        self._loaded = False

    def add(self, name, entry):
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} name={name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def _load(self):
        if not self._loaded:
            import_submodules(self._package, self._path)
            self._loaded = True
        return self._entries

    def items(self):
        """(name, entry) pairs, sorted by name."""
        return sorted(self._load().items())

    def names(self):
        return sorted(self._load())

    def get(self, name):
        entries = self._load()
        if name not in entries:
            raise ValueError(f"unknown {self.field}={name!r}; valid choices: {', '.join(sorted(entries))}")
        return entries[name]
