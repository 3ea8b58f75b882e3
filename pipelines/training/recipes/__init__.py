"""Training recipes: the losses and schedules of each paper, plugged into one train step.

A recipe is a dataclass of validated fields (so Ray Tune can search them) with a `compute` method
that returns the loss of one batch; `pipelines.training.recipes.base.TrainingModel` is the single
`keras.Model.train_step` every recipe runs under (in-process or under a Ray Train strategy).
Modules of this package register recipes with `@register`; they are discovered automatically.

    recipe = recipes.get("standard", label_smoothing=0.1)
    recipes.for_model("mobilenet_v2")   # -> "standard"
    recipes.get("slimmable", preset="paper")   # the paper's recipe (`resolve`), explicit fields still win

Presets: every recipe has a ``preset`` field, ``"default"`` (the project's recipe) or ``"paper"`` (the
recipe as its paper trains; `docs/papers.md` lists what differs). A recipe class declares the paper's
values in ``PAPER`` (a dict, or a function of the explicit config returning one); `resolve` applies
them under the fields the caller gave, so ``preset=paper label_smoothing=0.1`` is the paper's recipe
with label smoothing 0.1, and the recipe object (`Recipe.to_dict`, the run's config.json) records the
resolved values.
"""
from __future__ import annotations

import dataclasses

from keras_layers.discovery import PRESETS, Registry, apply_preset, check_preset

_RECIPES = Registry(__name__, __path__, kind="recipe", field="recipe")


def resolve(cls, config):
    """`config` with the preset's values filled in under the explicit fields (explicit fields win).

    ``preset="default"`` (or none) returns `config` unchanged; ``preset="paper"`` adds ``cls.PAPER``."""
    return apply_preset(config, getattr(cls, "PAPER", {}))


def register(cls):
    """Class decorator: register a `Recipe` subclass under `cls.name`."""
    return _RECIPES.add(cls.name, cls)


def names():
    return _RECIPES.names()


def recipe_class(name):
    return _RECIPES.get(name)


def get(name, **config):
    """Instantiate recipe `name` with `config` (its preset resolved by `resolve`); unknown fields raise
    ValueError naming the field."""
    cls = recipe_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"recipe {name!r}: unknown field {unknown[0]}={config[unknown[0]]!r}; "
                         f"valid fields: {', '.join(sorted(fields))}")
    return cls(**resolve(cls, config))


def for_model(model_name):
    """The default recipe of a registered model (the recipe that lists it in `models`)."""
    for name, cls in _RECIPES.items():
        if model_name in getattr(cls, "models", ()):
            return name
    return "standard"
