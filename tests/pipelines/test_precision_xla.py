"""Accelerator options of a training run on CPU: `precision` (Keras mixed precision, fp16 loss scaling in the
one `TrainingModel.train_step`) and `jit_compile` (XLA on fixed-size batches), as TPUs and GPUs run them.

* bf16: the baseline trains under `mixed_bfloat16` (loss finite, accuracy moves), the policy is restored
  after the run and the saved `model.keras` is float32.
* fp16: on multi_exit (several losses summed) the step differentiates the loss times the loss scale and
  hands the optimizer the unscaled, finite gradients.
* jit_compile: every registered model trains with its own recipe, one short epoch (two where the recipe
  switches stage after the first), XLA-compiled on whole batches (`drop_remainder`).
"""
import json
import math

import numpy as np
import pytest

from keras_layers import env, models  # noqa: F401  (env: Keras 2 before TensorFlow)
import tensorflow as tf
import tf_keras as keras

from pipelines.training import TrainConfig, train
from pipelines.training.train import build_training, load_data, precision_policy, steps_per_epoch
from tests.pipelines.test_every_model_learns import SMALL

# DS-Net switches stage (and retraces its step) after the first epoch: 2 epochs, so both stages compile;
# multi_exit distils from the first step on (phase 2's loss; its phase switch flips a variable, no retrace)
TWO_STAGES = {"ds_mobilenet_v1"}
XLA_RECIPE_CONFIG = {"multi_exit_net": {"phase1_fraction": 0.0}}


def tiny(name, tmp_path, **fields):
    fields = {"model_config": SMALL[name][0], "image_size": 16, "batch_size": 16, "epochs": 1, "limit": 40,
              "out": str(tmp_path), "run_name": name, **fields}
    return TrainConfig(model=name, **fields)


@pytest.mark.parametrize("field, value, match", [
    ("precision", "float16", "unknown precision='float16'"),
    ("precision", "bf", "unknown precision='bf'"),
    ("jit_compile", "yes", "jit_compile must be a bool; received jit_compile='yes'"),
    ("limit", 8, "limit must be >= batch_size=16; received limit=8"),
])
def test_bad_accelerator_fields_are_one_line_errors(field, value, match, tmp_path):
    fields = {field: value, **({"jit_compile": True} if field == "limit" else {})}
    with pytest.raises(ValueError, match=match):
        tiny("mobilenet_v2", tmp_path, **fields).validate()


def test_precision_policy_is_restored_even_when_the_build_fails():
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with precision_policy("bf16"):
            assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
            raise RuntimeError("build failed")
    assert keras.mixed_precision.global_policy().name == "float32"


class Record(keras.callbacks.Callback):
    """What the trained `TrainingModel` looked like: its compute dtype, jit_compile, optimizer, weights' device
    (also used by `tests/gpu/gpu_checks.py`)."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_train_begin(self, logs=None):
        self.seen["compute_dtype"] = self.model.net.layers[-1].compute_dtype
        self.seen["jit_compile"] = self.model.jit_compile
        self.seen["optimizer"] = type(self.model.optimizer).__name__
        self.seen["device"] = self.model.net.trainable_weights[0].device


@pytest.mark.slow
@pytest.mark.extended  # the mixed-precision path of make test's fp16 test, without loss scaling
def test_baseline_trains_in_bf16_and_saves_a_float32_model(tmp_path):
    cfg = tiny("mobilenet_v2", tmp_path, precision="bf16", epochs=3, limit=384, batch_size=32, learning_rate=5e-3)
    record = Record()
    metrics, run_dir, net = train(cfg, callbacks=[record], verbose=0)
    history = json.loads((run_dir / "history.json").read_text())
    assert record.seen["compute_dtype"] == "bfloat16"
    assert all(math.isfinite(v) for v in history["loss"]), history
    assert history["accuracy"][-1] > history["accuracy"][0] + 0.05, history  # it learns in bf16
    assert keras.mixed_precision.global_policy().name == "float32"  # not leaked into the process
    back = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    assert {layer.dtype_policy.name for layer in back.layers} == {"float32"}
    assert {layer.dtype_policy.name for layer in net.layers} == {"float32"}
    x = np.random.default_rng(0).random((4, 16, 16, 1), dtype=np.float32)
    np.testing.assert_allclose(back(x, training=False).numpy(), net(x, training=False).numpy(), atol=1e-5)


@pytest.mark.slow
def test_fp16_scales_the_summed_losses_and_applies_finite_unscaled_gradients(tmp_path):
    """multi_exit sums an exit loss per exit (+ distillation): the ONE step must scale that sum."""
    cfg = tiny("multi_exit_net", tmp_path, precision="fp16", recipe_config={"phase1_fraction": 0.0}).validate()
    _, info = load_data(cfg, "train")
    model = build_training(cfg, info, steps_per_epoch(info, cfg.batch_size))
    opt = model.optimizer
    assert isinstance(opt, keras.mixed_precision.LossScaleOptimizer)
    assert model.net.layers[-1].compute_dtype == "float16"
    seen = {}
    scaled_loss, unscale, apply = opt.get_scaled_loss, opt.get_unscaled_gradients, opt.apply_gradients

    def spy_scaled(loss):
        seen["loss"], seen["scale"] = float(loss), float(opt.loss_scale)
        seen["scaled"] = scaled_loss(loss)
        return seen["scaled"]

    def spy_unscale(grads):
        seen["raw"] = [g for g in grads if g is not None]
        return unscale(grads)

    def spy_apply(pairs, *args, **kwargs):
        seen["applied"] = [g for g, _ in pairs]
        return apply(pairs, *args, **kwargs)

    opt.get_scaled_loss, opt.get_unscaled_gradients, opt.apply_gradients = spy_scaled, spy_unscale, spy_apply
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((16, 16, 16, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, 16))
    logs = model.train_step((x, y))  # eager: the spies see values
    assert seen["scale"] > 1.0
    assert float(seen["scaled"]) == pytest.approx(seen["loss"] * seen["scale"], rel=1e-6)
    assert seen["loss"] == pytest.approx(float(logs["loss"]), rel=1e-5)  # the scaled loss is the whole sum
    assert len(seen["applied"]) == len(model.net.trainable_variables)
    for raw, applied in zip(seen["raw"], seen["applied"]):
        applied = tf.convert_to_tensor(applied).numpy()
        assert np.all(np.isfinite(applied))
        np.testing.assert_allclose(applied * seen["scale"], tf.convert_to_tensor(raw).numpy(), rtol=1e-3, atol=1e-3)
    assert any(np.any(tf.convert_to_tensor(g).numpy() != 0) for g in seen["applied"])
    assert opt.iterations.numpy() == 1  # finite gradients: the step was applied, not skipped


# `make test-extended` (and CI) compiles two models under XLA (the standard recipe, and multi-exit's several
# losses); the other families (1-7 min each on 2 cores: XLA compiles every step function) run with `make test-xla`.
IN_EXTENDED = ("mobilenet_v2", "multi_exit_net")


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.extended if n in IN_EXTENDED else pytest.mark.xla_sweep)
                                  for n in sorted(SMALL)])
def test_every_model_trains_under_xla_with_its_own_recipe(name, tmp_path):
    # 32 examples a split: 2 whole batches of 16, so each step function compiles for one shape only
    cfg = tiny(name, tmp_path, jit_compile=True, epochs=2 if name in TWO_STAGES else 1, limit=32,
               recipe_config=XLA_RECIPE_CONFIG.get(name, {}))
    record = Record()
    metrics, run_dir, _ = train(cfg, callbacks=[record], verbose=0)
    assert record.seen["jit_compile"] is True, record.seen
    history = json.loads((run_dir / "history.json").read_text())
    assert all(math.isfinite(v) for v in history["loss"]), history
    assert metrics["epochs_run"] == cfg.epochs


def test_jit_compile_serves_whole_batches(tmp_path):
    cfg = tiny("mobilenet_v2", tmp_path, jit_compile=True, limit=40).validate()
    ds, info = load_data(cfg, "train")
    assert ds.element_spec[0].shape[0] == 16  # static batch: 40 examples -> 2 batches of 16
    assert sum(1 for _ in ds) == steps_per_epoch(info, 16, drop_remainder=True) == 2
    plain, _ = load_data(tiny("mobilenet_v2", tmp_path, limit=40).validate(), "train")
    assert plain.element_spec[0].shape[0] is None
