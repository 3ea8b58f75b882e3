"""The BasisNet search space names only real TrainConfig / model / recipe fields, and its samples validate."""
import dataclasses

import numpy as np

from keras_layers import models
from pipelines import recipes
from pipelines.train import TrainConfig


def _sample(value, rs):
    if isinstance(value, dict):
        return {k: _sample(v, rs) for k, v in value.items()}
    return value.sample(random_state=rs) if hasattr(value, "sample") else value


def test_space_fields_exist_and_samples_validate():
    import tune_spaces

    space = tune_spaces.get("basisnet")
    assert set(space) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(space["model_config"]) <= set(models.config_fields(space["model"]))
    recipe_fields = {f.name for f in dataclasses.fields(recipes.recipe_class(recipes.for_model(space["model"])))}
    assert set(space["recipe_config"]) <= recipe_fields
    assert {"preview_weight", "basis_dropout", "epsilon_fraction", "kd_weight", "kd_temperature", "label_smoothing",
            "weight_decay", "augment"} <= set(space["recipe_config"])
    rs = np.random.RandomState(0)
    for _ in range(5):
        TrainConfig(**_sample(space, rs)).validate()
    assert tune_spaces.module("basisnet").SMOKE["epochs"] >= 1
