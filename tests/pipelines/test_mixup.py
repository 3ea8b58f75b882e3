"""Mixup in the one data path (`pipelines.data.mixup_batch`, `load(mixup=alpha)`), soft labels in the losses
and metrics every recipe shares (`recipes.losses`, `TrainingModel`)."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf

from pipelines import data
from pipelines.training.recipes import losses


def test_mixup_batch_mixes_images_and_labels_with_one_beta_weight():
    tf.random.set_seed(0)
    rs = np.random.RandomState(0)
    x = rs.randn(6, 4, 4, 1).astype("float32")
    y = np.arange(6, dtype="int32")  # distinct classes: each soft label shows lam and the partner
    mixed, soft = (t.numpy() for t in data.mixup_batch(tf.constant(x), tf.constant(y), 0.4, 6))
    assert soft.shape == (6, 6) and np.allclose(soft.sum(-1), 1.0)
    for i in range(6):
        partner = [j for j in range(6) if j != i and soft[i, j] > 1e-6]
        lam, other = (soft[i, i], partner[0]) if partner else (1.0, i)  # a self pair is the image itself
        np.testing.assert_allclose(mixed[i], lam * x[i] + (1 - lam) * x[other], rtol=1e-5, atol=1e-5)
    assert (np.abs(mixed - x) > 1e-3).any()  # it mixed something
    # one lam for the whole batch: the own-class shares take at most two values (lam, or 1 for a self pair)
    own = {round(float(soft[i, i]), 5) for i in range(6)}
    assert len(own - {1.0}) <= 1


def test_soft_labels_give_mixups_weighted_cross_entropy_and_hard_labels_for_metrics():
    logits = tf.constant(np.random.RandomState(1).randn(4, 3), tf.float32)
    a, b, lam = np.array([0, 1, 2, 0]), np.array([1, 1, 0, 2]), 0.3
    soft = tf.constant(lam * np.eye(3)[a] + (1 - lam) * np.eye(3)[b], tf.float32)
    want = lam * losses.cross_entropy(a, logits) + (1 - lam) * losses.cross_entropy(b, logits)
    assert np.isclose(float(losses.cross_entropy(soft, logits)), float(want), rtol=1e-6)
    np.testing.assert_array_equal(losses.hard_labels(soft).numpy(), b)  # the larger share (0.7)
    np.testing.assert_array_equal(losses.hard_labels(tf.constant(a)).numpy(), a)


def test_the_train_split_comes_mixed_and_the_others_do_not():
    train, info = data.load("digits", "train", image_size=8, batch_size=16, limit=32, mixup=0.2)
    x, y = next(iter(train))
    assert y.dtype == tf.float32 and y.shape == (16, info.num_classes) and np.allclose(y.numpy().sum(-1), 1)
    val, _ = data.load("digits", "validation", image_size=8, batch_size=16, limit=32, mixup=0.2)
    assert next(iter(val))[1].dtype == tf.int32
    with pytest.raises(data.DataError, match="mixup=-1"):
        data.load("digits", "train", image_size=8, mixup=-1)


def test_any_recipe_trains_on_mixed_batches():
    import tf_keras as keras

    from keras_layers import models
    from pipelines.training import recipes
    from pipelines.training.recipes.base import TrainingModel

    recipe = recipes.get("standard", mixup=0.2)
    assert recipe.mixup == 0.2
    train, info = data.load("digits", "train", image_size=16, batch_size=16, limit=32, mixup=recipe.mixup)
    net = models.build("mobilenet_v2", info.input_shape, info.num_classes, width_multiplier=0.25,
                       depth_multiplier=0.25, last_channels=32)
    model = TrainingModel(net, recipe)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    logs = model.fit(train, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and 0.0 <= logs["accuracy"][0] <= 1.0
    with pytest.raises(ValueError, match="mixup=-0.5"):
        recipes.get("basisnet", mixup=-0.5)
