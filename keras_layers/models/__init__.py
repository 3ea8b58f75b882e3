"""Registry of model builders: `build(name, input_shape=(32, 32, 3), num_classes=10, **config)`.

Each module of this package registers its architectures with `@register("name")`; modules are found
automatically, so adding a family means adding one file. Builders validate their config and raise
`ValueError` naming the field and the value.

Every model accepts ``preset="default"`` (the registry defaults) or ``preset="paper"`` (the architecture
of the model's paper where it differs: ``@register("name", paper={...})``, a dict of config fields or a
function of the explicit config returning one). `resolve_config` applies it under the explicit fields
(explicit fields win); a model without a paper dict already is its paper's architecture.

    build("condconv_mobilenet_v2", preset="paper")            # CondConv in the last 6 blocks + classifier
"""
from __future__ import annotations

import inspect

from keras_layers.checks import check_int
from keras_layers.discovery import PRESETS, Registry, apply_preset

_BUILDERS = Registry(__name__, __path__, kind="model", field="model name")
_PAPER: dict = {}


def register(name, paper=None):
    """Decorator: make a builder `fn(input_shape, num_classes, **config) -> keras.Model` buildable by name;
    `paper`: the config fields of the paper's architecture (``preset="paper"``)."""

    def wrap(fn):
        _BUILDERS.add(name, fn)
        _PAPER[name] = paper or {}
        return fn

    return wrap


def names():
    """Names of every registered model, sorted."""
    return _BUILDERS.names()


def config_fields(name):
    """The config fields a builder accepts, with their defaults (for --help and validation)."""
    fn = _BUILDERS.get(name)
    params = inspect.signature(fn).parameters
    fields = {
        k: p.default
        for k, p in params.items()
        if k not in ("input_shape", "num_classes") and p.kind is p.KEYWORD_ONLY
    }
    return {**fields, "preset": "default"}


def resolve_config(name, config):
    """`config` with its preset resolved: the paper's fields of model `name` under the explicit ones.

    The result still holds ``preset``; ValueError naming `preset` for an unknown preset."""
    _BUILDERS.get(name)
    return apply_preset(config, _PAPER.get(name))


def build(name, input_shape=(32, 32, 3), num_classes=10, **config):
    """Build registered model `name` for `input_shape` (H, W, C) and `num_classes`."""
    fn = _BUILDERS.get(name)
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
    config = resolve_config(name, config)
    config.pop("preset", None)
    return fn(input_shape=tuple(int(d) for d in input_shape), num_classes=int(num_classes), **config)
