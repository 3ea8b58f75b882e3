"""Precise BatchNorm statistics (pipelines.training.bn_recalibration.precise_bn / PreciseBN): a NumPy
reference of the recomputed statistics, what they leave alone, the callback during fit only, the config field."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

import tune_spaces
from keras_layers.slimmable import SwitchableBatchNormalization
from pipelines.training.bn_recalibration import PreciseBN, precise_bn
from pipelines.training.train import TrainConfig


def dense_bn(units=5, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((3,))
    h = keras.layers.Dense(units, name="dense")(inp)
    out = keras.layers.BatchNormalization(name="bn")(h)
    return keras.Model(inp, out)


def batches(n, size=8, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.normal(2.0, 3.0, (size, 3)).astype("float32"), np.zeros(size, "int32")) for _ in range(n)]


def test_statistics_are_the_average_of_the_batch_statistics_numpy_reference():
    net = dense_bn()
    data = batches(5)
    used = precise_bn(net, iter(data), num_batches=3)  # only the first 3 of 5 count
    assert used == 3
    w, b = net.get_layer("dense").get_weights()
    h = [x @ w + b for x, _ in data[:3]]
    mean = np.mean([a.mean(0) for a in h], axis=0)
    var = np.mean([a.var(0) for a in h], axis=0)  # 2-D input: Keras' unfused update, the biased batch variance
    bn = net.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99  # restored


def test_weights_frozen_bn_and_switchable_statistics_are_left_alone():
    keras.utils.set_random_seed(0)
    inp = keras.Input((3,))
    h = keras.layers.Dense(4)(inp)
    frozen = keras.layers.BatchNormalization(name="frozen")
    h = frozen(h)
    sbn = SwitchableBatchNormalization(width_multipliers=(0.5, 1.0), name="sbn")
    out = sbn(h)
    net = keras.Model(inp, out)
    frozen.trainable = False
    before = [v.numpy().copy() for v in net.weights]
    assert precise_bn(net, batches(2), num_batches=2) == 0  # no trainable plain BatchNormalization
    for v, old in zip(net.weights, before):
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.name)
    assert sbn.momentum_override is None


def test_bad_num_batches_and_empty_data_are_refused():
    net = dense_bn()
    with pytest.raises(ValueError, match="num_batches=0"):
        precise_bn(net, batches(1), num_batches=0)
    with pytest.raises(ValueError, match="batches is empty"):
        precise_bn(net, [], num_batches=2)
    with pytest.raises(ValueError, match="precise_bn_batches=-1"):
        TrainConfig(precise_bn_batches=-1).validate()
    with pytest.raises(ValueError, match="precise_bn_batches=True"):
        TrainConfig(precise_bn_batches=True).validate()


def test_callback_recomputes_before_validation_in_fit_only():
    """Two epochs of 2 steps: Keras' moving statistics (momentum 0.99) are still near their initial values,
    so validation in inference mode is far off; with PreciseBN it scores the weights the batch statistics
    trained. The weights themselves are the same with and without it."""
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 4.0, (64, 3)).astype("float32")
    y = (x @ np.array([1.0, -1.0, 0.5], "float32") > 2.5).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

    def fit(callbacks):
        keras.utils.set_random_seed(0)
        inp = keras.Input((3,))
        h = keras.layers.BatchNormalization(name="bn_in")(inp)
        h = keras.layers.Dense(8, activation="relu")(h)
        out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.BatchNormalization(name="bn_mid")(h))
        net = keras.Model(inp, out)
        net.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
        hist = net.fit(ds, validation_data=ds, epochs=2, callbacks=callbacks, verbose=0)
        return net, hist.history["val_loss"]

    plain, plain_loss = fit([])
    precise, precise_loss = fit([PreciseBN(ds, 2)])
    for a, b in zip(plain.trainable_weights, precise.trainable_weights):  # training is unchanged
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.name)
    assert precise_loss[-1] < plain_loss[-1] - 0.1, (precise_loss, plain_loss)
    # the statistics of the last validation are those of the data (the 2 batches of 32)
    bn = precise.get_layer("bn_in")
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(0), rtol=1e-4, atol=1e-4)
    # evaluate() outside fit leaves the statistics alone
    before = bn.moving_mean.numpy().copy()
    cb = PreciseBN(ds.map(lambda a, b: (a + 100.0, b)), 2)
    precise.evaluate(ds, callbacks=[cb], verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)


def test_every_tune_space_turns_it_on_without_changing_the_family_module():
    for family in tune_spaces.names():
        had = "precise_bn_batches" in tune_spaces.module(family).SPACE
        space = tune_spaces.get(family)
        assert isinstance(space["precise_bn_batches"], int) and space["precise_bn_batches"] >= 1, family
        TrainConfig(**{k: v for k, v in space.items() if not isinstance(v, dict) and k != "learning_rate"}
                    ).validate()
        assert ("precise_bn_batches" in tune_spaces.module(family).SPACE) == had, family


def test_the_train_flag_and_config_add_the_callback_after_the_recipes():
    import argparse

    from pipelines.commands import train as train_command
    from pipelines.training.train import recipe_callbacks

    p = argparse.ArgumentParser()
    train_command.add_arguments(p)
    cfg = train_command.config_from_args(p.parse_args(["--precise-bn-batches", "3"]))
    assert cfg.precise_bn_batches == 3 and TrainConfig.from_dict(cfg.to_dict()).precise_bn_batches == 3

    class Recipe:
        def callbacks(self, model, steps, epochs, train_data=None):
            return ["stage switch"]

    class Model:
        recipe = Recipe()

    cbs = recipe_callbacks(cfg, Model(), 10, "train batches")
    assert cbs[0] == "stage switch" and isinstance(cbs[1], PreciseBN) and len(cbs) == 2
    assert cbs[1].num_batches == 3 and cbs[1].batches == "train batches"
    assert recipe_callbacks(TrainConfig(), Model(), 10, "train batches") == ["stage switch"]
