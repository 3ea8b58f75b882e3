"""Every registered model trains on digits with its own recipe and clearly beats chance.

About 120 optimizer steps (3 epochs of ~1,260 digits, batch 32, 16x16, small widths, learning rate 1e-2)
must take validation accuracy well above the 10% of guessing (measured: 0.76 for DS-Net, whose gate
trains in the last epoch, 0.90-0.99 for the others): a recipe whose losses do not reach the weights,
a model whose outputs are mis-wired, or a schedule that never lets the net learn fails here. The
per-family tests check each recipe's pieces; this checks that the whole of each trains.
"""
import numpy as np
import pytest

from keras_layers import count_madds, env, models  # noqa: F401  (env: Keras 2 before TensorFlow)
import tf_keras as keras

from pipelines.training import TrainConfig, recipes, train

# Small but real: each model at its cheapest sensible size, trained at 16x16 for the given epochs.
SMALL = {
    "basisnet_mobilenet_v3": ({"width_multiplier": 0.25, "last_channels": 64, "head_channels": 64,
                               "preview_channels": 32, "preview_blocks": 2}, 3),
    "condconv_mobilenet_v1": ({"num_experts": 2, "depth_multiplier": 0.1, "cond_blocks": 2}, 3),
    "condconv_mobilenet_v2": ({"num_experts": 2, "width_multiplier": 0.25, "depth_multiplier": 0.25,
                               "last_channels": 64}, 3),
    "condconv_mobilenet_v3": ({"num_experts": 2, "width_multiplier": 0.25, "last_channels": 64,
                               "head_channels": 64}, 3),
    "ds_mobilenet_v1": ({"width_multipliers": [0.5, 1.0], "depth_multiplier": 0.1, "gate_after": 3}, 3),
    "mobilenet_v2": ({"width_multiplier": 0.25, "depth_multiplier": 0.25, "last_channels": 64}, 3),
    "mobilenet_v3": ({"width_multiplier": 0.25, "last_channels": 64, "head_channels": 64}, 3),
    "multi_exit_net": ({"num_exits": 3, "width_multiplier": 0.25, "depth_multiplier": 0.25,
                        "last_channels": 32}, 3),
    "slimmable_mobilenet_v1": ({"width_multipliers": [0.5, 1.0], "depth_multiplier": 0.1}, 3),
}
MIN_VAL_ACCURACY = 0.5  # chance is 0.1


def test_every_registered_model_has_a_small_config():
    assert set(SMALL) == set(models.names()), "add the new model to SMALL with a cheap config"


@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("name", sorted(SMALL))
def test_model_learns_digits_with_its_recipe(name, tmp_path):
    config, epochs = SMALL[name]
    cfg = TrainConfig(model=name, model_config=config, image_size=16, batch_size=32, epochs=epochs,
                      learning_rate=1e-2, out=str(tmp_path), run_name=name)
    metrics, _, _ = train(cfg, verbose=0)
    assert metrics["val_accuracy"] > MIN_VAL_ACCURACY, (name, cfg.recipe_name(), metrics)


@pytest.mark.extended  # make test trains CondConv with its recipe in condconv-eval; the .keras round trip: test_models_registry
def test_condconv_trains_with_its_own_recipe_and_saves_a_loadable_model(tmp_path):
    assert recipes.for_model("condconv_mobilenet_v2") == "condconv"
    cfg = TrainConfig(model="condconv_mobilenet_v2", model_config=SMALL["condconv_mobilenet_v2"][0], epochs=1,
                      batch_size=32, out=str(tmp_path), run_name="cc", limit=96, recipe_config={"weight_decay": 1e-4})
    metrics, run_dir, net = train(cfg, verbose=0)
    assert np.isfinite(metrics["val_loss"]) and metrics["epochs_run"] == 1  # (learning: the tests above)
    assert metrics["madds"] == count_madds(net, (32, 32, 1)) and metrics["madds"] > 0
    back = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    assert back.count_params() == net.count_params()
