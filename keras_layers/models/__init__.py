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
from keras_layers.discovery import import_submodules

_BUILDERS: dict = {}
_PAPER: dict = {}
_LOADED = False
PRESETS = ("default", "paper")


def register(name, paper=None):
    """Decorator: make a builder `fn(input_shape, num_classes, **config) -> keras.Model` buildable by name;
    `paper`: the config fields of the paper's architecture (``preset="paper"``)."""

    def wrap(fn):
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"model name={name!r} is registered twice")
        _BUILDERS[name] = fn
        _PAPER[name] = paper or {}
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
    fields = {
        k: p.default
        for k, p in params.items()
        if k not in ("input_shape", "num_classes") and p.kind is p.KEYWORD_ONLY
    }
    return {**fields, "preset": "default"}


def resolve_config(name, config):
    """`config` with its preset resolved: the paper's fields of model `name` under the explicit ones.

    The result still holds ``preset``; ValueError naming `preset` for an unknown preset."""
    _get(name)
    config = dict(config)
    preset = config.get("preset", "default")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; received preset={preset!r}")
    if preset == "paper":
        paper = _PAPER.get(name) or {}
        paper = paper(config) if callable(paper) else paper
        config = {**paper, **config}
    return config


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
    config = resolve_config(name, config)
    config.pop("preset", None)
    return fn(input_shape=tuple(int(d) for d in input_shape), num_classes=int(num_classes), **config)
