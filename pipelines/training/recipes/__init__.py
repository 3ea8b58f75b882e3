"""Training recipes: the losses and schedules of each paper, plugged into one train step.

A recipe is a dataclass of validated fields (so Ray Tune can search them) with a `compute` method
that returns the loss of one batch; `pipelines.training.recipes.base.TrainingModel` is the single
`keras.Model.train_step` every recipe runs under (in-process or under a Ray Train strategy).
Modules of this package register recipes with `@register`; they are discovered automatically.

    recipe = recipes.get("standard", label_smoothing=0.1)
    recipes.for_model("mobilenet_v2")   # -> "standard"
"""
from __future__ import annotations

import dataclasses

from keras_layers.discovery import import_submodules

_RECIPES: dict = {}
_LOADED = False


def register(cls):
    """Class decorator: register a `Recipe` subclass under `cls.name`."""
    if cls.name in _RECIPES and _RECIPES[cls.name] is not cls:
        raise ValueError(f"recipe name={cls.name!r} is registered twice")
    _RECIPES[cls.name] = cls
    return cls


def _load_all():
    global _LOADED
    if not _LOADED:
        import_submodules(__name__, __path__)
        _LOADED = True


def names():
    _load_all()
    return sorted(_RECIPES)


def recipe_class(name):
    _load_all()
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe={name!r}; valid choices: {', '.join(sorted(_RECIPES))}")
    return _RECIPES[name]


def get(name, **config):
    """Instantiate recipe `name` with `config`; unknown fields raise ValueError naming the field."""
    cls = recipe_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"recipe {name!r}: unknown field {unknown[0]}={config[unknown[0]]!r}; "
                         f"valid fields: {', '.join(sorted(fields))}")
    return cls(**config)


def for_model(model_name):
    """The default recipe of a registered model (the recipe that lists it in `models`)."""
    _load_all()
    for name, cls in sorted(_RECIPES.items()):
        if model_name in getattr(cls, "models", ()):
            return name
    return "standard"
