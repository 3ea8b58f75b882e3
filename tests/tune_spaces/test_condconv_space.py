"""The CondConv search space names only real TrainConfig / model / recipe fields, and its samples validate."""
import dataclasses

from keras_layers import models
from pipelines import recipes
from pipelines.train import TrainConfig


def _sample(value):
    sample = getattr(value, "sample", None)
    return sample() if callable(sample) else value


def test_space_fields_exist_and_samples_validate():
    import tune_spaces

    space = tune_spaces.get("condconv")
    assert set(space) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(space["model_config"]) <= set(models.config_fields(space["model"]))
    recipe_fields = {f.name for f in dataclasses.fields(recipes.recipe_class(recipes.for_model(space["model"])))}
    assert set(space["recipe_config"]) <= recipe_fields
    assert {"num_experts", "dropout"} <= set(space["model_config"])
    assert {"weight_decay", "label_smoothing", "augment"} <= set(space["recipe_config"])
    for _ in range(5):
        cfg = {k: _sample(v) for k, v in space.items() if k not in ("model_config", "recipe_config")}
        cfg["model_config"] = {k: _sample(v) for k, v in space["model_config"].items()}
        cfg["recipe_config"] = {k: _sample(v) for k, v in space["recipe_config"].items()}
        TrainConfig(**cfg).validate()
    assert tune_spaces.module("condconv").SMOKE["epochs"] >= 1
