"""Each family's search space names only real TrainConfig / model / recipe fields, searches the knobs its
paper's recipe calls for, and its samples validate (the generic checks of every family are in
tests/pipelines/test_tune_spaces.py)."""
import dataclasses

import pytest

import tune_spaces
from keras_layers import models
from pipelines.training import recipes
from pipelines.training.train import TrainConfig

# family -> (model_config keys, recipe_config keys) its space must search
SEARCHED = {
    "condconv": ({"num_experts", "dropout"}, {"weight_decay", "label_smoothing", "augment", "router_warmup"}),
    "basisnet": (set(), {"preview_weight", "basis_dropout", "epsilon_fraction", "kd_weight", "kd_temperature",
                         "label_smoothing", "weight_decay", "augment"}),
}


@pytest.mark.parametrize("family", sorted(SEARCHED))
def test_space_fields_exist_and_samples_validate(family):
    space = tune_spaces.get(family)
    assert set(space) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(space["model_config"]) <= set(models.config_fields(space["model"]))
    recipe_fields = {f.name for f in dataclasses.fields(recipes.recipe_class(recipes.for_model(space["model"])))}
    assert set(space["recipe_config"]) <= recipe_fields
    model_keys, recipe_keys = SEARCHED[family]
    assert model_keys <= set(space["model_config"]) and recipe_keys <= set(space["recipe_config"])
    for seed in range(5):
        TrainConfig(**tune_spaces.sample(space, seed=seed)).validate()
    assert tune_spaces.module(family).SMOKE["epochs"] >= 1
