"""Search spaces are validated before any trial starts; SMOKE sizes merge into the space."""

import pytest
from ray import tune

import tune_spaces
from pipelines.tuning import spaces
from pipelines.training.train import TrainConfig


@pytest.mark.parametrize("family", tune_spaces.names())
def test_every_family_space_is_valid(family):
    for smoke in (False, True):
        space = spaces.validate(family, smoke=smoke)
        TrainConfig.from_dict(tune_spaces.sample(space, seed=3)).validate()
    assert tune_spaces.smoke(family)["trials"] >= 1


def test_smoke_merges_nested_fields():
    full, small = tune_spaces.get("baseline"), tune_spaces.get("baseline", smoke=True)
    assert small["epochs"] == tune_spaces.smoke("baseline")["epochs"] < full["epochs"]
    assert small["model_config"]["depth_multiplier"] == 0.25
    assert "dropout" in small["model_config"]  # kept from SPACE
    assert "trials" not in small
    assert small["learning_rate"] is not full["learning_rate"]  # a copy, never the module's dict


def test_sample_is_concrete_and_in_range():
    cfg = tune_spaces.sample(tune_spaces.get("baseline"), seed=1)
    assert 1e-3 <= cfg["learning_rate"] <= 1e-2
    assert cfg["model_config"]["width_multiplier"] in (0.35, 0.5, 0.75, 1.0)
    assert isinstance(cfg["recipe_config"]["label_smoothing"], float)


@pytest.mark.parametrize("space,match", [
    ({"recipe_config": {"label_smoothing": tune.uniform(0.0, 0.9)}}, r"label_smoothing=0\.9"),
    ({"recipe_config": {"weight_decay": tune.choice([1e-4, 0.5])}}, r"weight_decay=0\.5"),
    ({"model_config": {"colour": tune.choice(["red"])}}, r"colour"),
    ({"learning_rate": tune.grid_search([0.1, 0.01])}, r"learning_rate uses a domain Optuna cannot search"),
    ({"lr": tune.uniform(0.1, 0.2)}, r"unknown train config field lr"),
    ({"epochs": tune.randint(0, 3)}, r"epochs=0"),
    ({"model": "nosuch"}, r"model='nosuch'"),
])
def test_invalid_space_names_field_and_value(space, match):
    base = {"model": "mobilenet_v2", "learning_rate": tune.loguniform(1e-3, 1e-2)}
    with pytest.raises(ValueError, match=match):
        spaces.check_space(tune_spaces.merge(base, space), where="test")


def test_unknown_family():
    with pytest.raises(ValueError, match="family='nosuch'.*baseline"):
        tune_spaces.get("nosuch")


@pytest.mark.parametrize("args,bad", [
    (("--family", "nosuch"), "family='nosuch'"),
    (("--family", "baseline", "--trials", "0"), "trials=0"),
    (("--family", "baseline", "--workers-per-trial", "0"), "workers_per_trial=0"),
    (("--family", "baseline", "--smoke-test", "--limit", "0"), "limit"),
])
def test_tune_cli_rejects_bad_input_before_ray(cli, args, bad):
    assert bad in cli("tune", *args).error_line()


def test_basisnet_teacher_is_read_when_the_space_is_requested(monkeypatch):
    """$BASISNET_TEACHER is read by `TuneOptions.space()`, not when `tune_spaces.basisnet` is imported."""
    from ray.tune.search.sample import Float

    import tune_spaces.basisnet as basisnet_space
    from pipelines.tuning.tune import TuneOptions

    monkeypatch.delenv("BASISNET_TEACHER", raising=False)
    plain = TuneOptions(family="basisnet").space()["recipe_config"]
    assert plain["teacher"] == "" and plain["kd_weight"] == 0.0
    monkeypatch.setenv("BASISNET_TEACHER", "runs/mobilenet_v3-teacher")  # after the module was imported
    taught = TuneOptions(family="basisnet", smoke_test=True).space()["recipe_config"]
    assert taught["teacher"] == "runs/mobilenet_v3-teacher"
    kd = taught["kd_weight"]
    assert isinstance(kd, Float) and (kd.lower, kd.upper) == (0.2, 0.8)
    module_space = basisnet_space.SPACE["recipe_config"]  # the module's literal dict is never changed
    assert module_space["teacher"] == "" and module_space["kd_weight"] == 0.0
