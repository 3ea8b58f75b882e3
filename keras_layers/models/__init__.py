"""Registry of model builders: `build(name, input_shape=(32, 32, 3), num_classes=10, **config)`.

Each module of this package registers its architectures with `@register("name")`; modules are found
automatically, so adding a family means adding one file. Builders validate their config and raise
`ValueError` naming the field and the value.
"""
from __future__ import annotations

import inspect

from keras_layers.checks import check_int
from keras_layers.discovery import import_submodules

_BUILDERS: dict = {}
_LOADED = False


def register(name):
    """Decorator: make a builder `fn(input_shape, num_classes, **config) -> keras.Model` buildable by name."""

    def wrap(fn):
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"model name={name!r} is registered twice")
        _BUILDERS[name] = fn
        return fn

    return wrap


def _load_all():
    global _LOADED
    if _LOADED:
        return
    import_submodules(__name__, __path__)
    _LOADED = True


def names():
    """Names of every registered model, sorted."""
    _load_all()
    return sorted(_BUILDERS)


def config_fields(name):
    """The config fields a builder accepts, with their defaults (for --help and validation)."""
    fn = _get(name)
    params = inspect.signature(fn).parameters
    return {
        k: p.default
        for k, p in params.items()
        if k not in ("input_shape", "num_classes") and p.kind is p.KEYWORD_ONLY
    }


def _get(name):
    _load_all()
    if name not in _BUILDERS:
        raise ValueError(f"unknown model name={name!r}; valid choices: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]


def build(name, input_shape=(32, 32, 3), num_classes=10, **config):
    """Build registered model `name` for `input_shape` (H, W, C) and `num_classes`."""
    fn = _get(name)
    fields = config_fields(name)
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(
            f"model {name!r}: unknown config field {unknown[0]}={config[unknown[0]]!r}; "
            f"valid fields: {', '.join(sorted(fields)) or '(none)'}"
        )
    if len(tuple(input_shape)) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (H, W, C) with positive dims. Received: input_shape={input_shape!r}")
    check_int("num_classes", int(num_classes), 2)
    return fn(input_shape=tuple(int(d) for d in input_shape), num_classes=int(num_classes), **config)
