import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf

from pipelines.training import recipes
from pipelines.training.recipes import losses
from pipelines.training.recipes.multi_exit import MultiExit
from pipelines.training.train import TrainConfig, train

TINY = {"num_exits": 3, "width_multiplier": 0.25, "depth_multiplier": 0.25, "last_channels": 32}


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_ofa_loss(logits, y, weights, alpha, t):
    """IMTA Eq. 7-8 in NumPy: sum_i w_i (alpha CE_i + (1-alpha) T^2 KL(p_K^T || p_i^T)), last exit CE only."""
    ce = [-np_log_softmax(z)[np.arange(len(y)), y].mean() for z in logits]
    log_pt = np_log_softmax(logits[-1] / t)
    kl = [(np.exp(log_pt) * (log_pt - np_log_softmax(z / t))).sum(-1).mean() * t * t for z in logits[:-1]]
    total = sum(w * (alpha * c + (1 - alpha) * k) for w, c, k in zip(weights, ce, kl)) + weights[-1] * ce[-1]
    return total, sum(w * c for w, c in zip(weights, ce))


@pytest.mark.parametrize("kd_on", [0.0, 1.0])
def test_ofa_loss_matches_numpy(kd_on):
    rng = np.random.RandomState(0)
    logits = [rng.randn(6, 4).astype("float32") * 2 for _ in range(3)]
    y = rng.randint(0, 4, 6)
    recipe = MultiExit(exit_weights=[0.5, 1.0, 2.0], alpha=0.3, temperature=2.0)
    total, ce_sum, _ = recipe.loss_terms([tf.constant(z) for z in logits], tf.constant(y), False, tf.constant(kd_on))
    expect, expect_ce = np_ofa_loss(logits, y, [0.5, 1.0, 2.0], 0.3 if kd_on else 1.0, 2.0)
    np.testing.assert_allclose(total.numpy(), expect, rtol=1e-5)
    np.testing.assert_allclose(ce_sum.numpy(), expect_ce, rtol=1e-5)


def test_ofa_teacher_side_is_stopped():
    rng = np.random.RandomState(1)
    logits = [tf.constant(rng.randn(5, 3).astype("float32")) for _ in range(3)]
    y = tf.constant(rng.randint(0, 3, 5))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        total, _, _ = MultiExit(alpha=0.2).loss_terms(logits, y, False, tf.constant(1.0))
    with tf.GradientTape() as tape2:
        tape2.watch(logits[-1])
        last_ce = losses.cross_entropy(y, logits[-1])
    # the teacher (last exit) only gets its own CE gradient, none from the KL terms
    np.testing.assert_allclose(tape.gradient(total, logits[-1]).numpy(), tape2.gradient(last_ce, logits[-1]).numpy(),
                               rtol=1e-5, atol=1e-7)
    assert np.abs(tape.gradient(total, logits[0]).numpy()).max() > 0


@pytest.mark.parametrize("field,value", [
    ("alpha", 1.5), ("alpha", -0.1), ("temperature", 0.0), ("phase1_fraction", 1.0), ("distill", "yes"),
    ("exit_weights", [1.0, 0.0]), ("exit_weights", []),
])
def test_bad_recipe_config_names_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}".replace("[", r"\[").replace("]", r"\]")):
        recipes.get("multi_exit", **{field: value})


def test_exit_weights_must_match_the_number_of_exits():
    cfg = TrainConfig(model="multi_exit_net", model_config=TINY, recipe_config={"exit_weights": [1, 1]}, limit=32)
    from pipelines.training.train import build_training, load_data

    _, info = load_data(cfg, "train")
    with pytest.raises(ValueError, match=r"exit_weights=\[1.0, 1.0\]"):
        build_training(cfg, info, 1)


def test_default_recipe_and_phase_schedule():
    assert recipes.for_model("multi_exit_net") == "multi_exit"
    assert MultiExit(phase1_fraction=0.5).phase2_start_epoch(10) == 5
    assert MultiExit(phase1_fraction=0.0).phase2_start_epoch(10) == 0
    assert MultiExit(distill=False).phase2_start_epoch(10) == 10


def test_two_phase_training_logs_every_exit(tmp_path):
    cfg = TrainConfig(model="multi_exit_net", model_config=TINY, image_size=16, epochs=2, batch_size=32,
                      recipe_config={"phase1_fraction": 0.5, "alpha": 0.5}, out=str(tmp_path), run_name="r", limit=64)
    metrics, run_dir, net = train(cfg, verbose=0)
    import json

    history = json.loads((run_dir / "history.json").read_text())
    assert history["kd_on"] == [0.0, 1.0]  # phase 1 without KD, phase 2 with
    assert history["kd"][0] > 0  # KL is measured in phase 1 but not optimised
    for name in ("exit_0_accuracy", "exit_1_accuracy", "accuracy", "val_exit_0_accuracy", "val_accuracy"):
        assert name in history and len(history[name]) == 2, name
    assert "exit_2_accuracy" not in history  # the last exit is the main prediction: `accuracy`
    # phase 1 loss is exactly the summed CE
    assert history["loss"][0] == pytest.approx(history["ce"][0], rel=1e-5)
    assert metrics["madds"] > 0


def test_tune_space_uses_valid_fields():
    from keras_layers import models
    from tune_spaces import get

    space = get("multi_exit")
    import dataclasses

    fields = {f.name for f in dataclasses.fields(MultiExit)}
    assert set(space["recipe_config"]) <= fields
    assert set(space["model_config"]) <= set(models.config_fields("multi_exit_net"))
    assert {"gradient_equilibrium", "inline_collaboration"} <= set(space["model_config"])
    assert {"alpha", "temperature", "distill", "exit_weights", "weight_decay"} <= set(space["recipe_config"])


def test_phase2_heads_only_freezes_the_backbone(tmp_path):
    cfg = TrainConfig(model="multi_exit_net", model_config=TINY, image_size=16, epochs=2, batch_size=32,
                      recipe_config={"phase1_fraction": 0.5, "phase2_train": "heads"}, out=str(tmp_path),
                      run_name="r", limit=64)
    seen = {}
    import tf_keras as keras

    class Snapshot(keras.callbacks.Callback):
        def snap(self, when):
            seen[when] = {n: self.model.net.get_layer(n).kernel.numpy().copy() for n in ("stem_conv", "exit_0")}

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.snap("begin")

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # read here: train() hands back the best epoch's weights, which may be epoch 0's
                self.snap("end")

    train(cfg, callbacks=[Snapshot()], verbose=0)
    np.testing.assert_array_equal(seen["end"]["stem_conv"], seen["begin"]["stem_conv"])
    assert not np.allclose(seen["end"]["exit_0"], seen["begin"]["exit_0"])
    with pytest.raises(ValueError, match="phase2_train='backbone'"):
        recipes.get("multi_exit", phase2_train="backbone")


def test_last_exit_only_scores_the_last_exit_alone():
    rng = np.random.RandomState(2)
    logits = [tf.constant(rng.randn(6, 4).astype("float32")) for _ in range(3)]
    y = tf.constant(rng.randint(0, 4, 6))
    recipe = recipes.get("multi_exit", distill=False, last_exit_only=True)
    assert recipe.weights_for(3) == (0.0, 0.0, 1.0)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        total, ce_sum, _ = recipe.loss_terms(logits, y, False, tf.constant(0.0))
    expect = -np_log_softmax(logits[-1].numpy())[np.arange(6), y.numpy()].mean()
    np.testing.assert_allclose([total.numpy(), ce_sum.numpy()], [expect, expect], rtol=1e-5)
    grads = tape.gradient(total, logits)
    assert grads[0] is None or not np.any(grads[0].numpy())  # the early exits learn nothing
    assert np.abs(grads[-1].numpy()).max() > 0


@pytest.mark.parametrize("extra,field", [({}, "distill"), ({"distill": False, "exit_weights": [1, 1, 1]}, "exit_weights")])
def test_last_exit_only_refuses_early_exit_settings(extra, field):
    with pytest.raises(ValueError, match=f"last_exit_only=True with {field}="):
        recipes.get("multi_exit", last_exit_only=True, **extra)
    with pytest.raises(ValueError, match="last_exit_only='yes'"):
        recipes.get("multi_exit", last_exit_only="yes", distill=False)
