"""Search spaces as data: one module per model family, each holding one literal dict `SPACE`
over the family's *recipe* fields (and `SMOKE`, the size of a `--smoke-test` search).

Format of a family module (`tune_spaces/<family>.py`)::

    from ray import tune
    SPACE = {                       # keys are `pipelines.train.TrainConfig` fields
        "model": "condconv_mobilenet_v2",
        "epochs": 8,
        "learning_rate": tune.loguniform(1e-3, 1e-2),
        "model_config": {"num_experts": tune.choice([4, 8])},
        "recipe_config": {"weight_decay": tune.loguniform(1e-5, 1e-3), "label_smoothing": tune.uniform(0.0, 0.2)},
    }
    SMOKE = {"trials": 2, "epochs": 1, "limit": 256}   # overrides for --smoke-test

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
