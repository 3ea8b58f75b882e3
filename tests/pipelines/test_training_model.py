"""The one train / test step (`TrainingModel`): how a batch's losses enter the epoch's logged values."""
import numpy as np

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import models
from pipelines.training import recipes
from pipelines.training.recipes.base import TrainingModel


def test_epoch_loss_is_the_mean_over_examples_and_an_empty_batch_counts_for_nothing():
    """A Ray Train worker can get 0 examples of the last global batch (e.g. 269 validation images, global
    batch 4, 2 workers): its mean loss is 0/0 = NaN. Before the fix that NaN became the epoch's val_loss
    and stopped `train --workers 2 --batch-size 4 --limit 600`; and a short batch weighed as much as a
    full one. The logged loss must be the NumPy mean of the per-example cross-entropy."""
    keras.utils.set_random_seed(0)
    net = models.build("mobilenet_v2", input_shape=(16, 16, 1), num_classes=10, width_multiplier=0.25,
                       depth_multiplier=0.25, last_channels=32)
    model = TrainingModel(net, recipes.get("standard"))
    model.compile(optimizer="sgd")
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 16, 1), dtype=np.float32)
    y = rng.integers(0, 10, 8).astype(np.int32)
    for m in model.metrics:
        m.reset_state()
    for lo, hi in ((0, 5), (5, 5), (5, 8)):  # a full batch, an empty one, a short one
        logs = model.test_step((tf.constant(x[lo:hi]), tf.constant(y[lo:hi])))
        assert np.isfinite(float(logs["loss"])), (lo, hi, logs)
    logits = net(x, training=False).numpy().astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    expected = -logp[np.arange(8), y].mean()
    assert abs(float(logs["loss"]) - expected) < 1e-5, (float(logs["loss"]), expected)
    assert float(logs["accuracy"]) == np.mean(logits.argmax(1) == y)


def test_an_empty_batch_is_evaluated_as_one_zero_example_that_counts_for_nothing():
    """Whatever the CPU: TF's oneDNN convolution returns its input for an empty batch on AVX-512 machines, so the
    test step must never run the net on 0 examples."""
    net = models.build("mobilenet_v2", input_shape=(16, 16, 1), num_classes=10, width_multiplier=0.25,
                       depth_multiplier=0.25, last_channels=32)
    model = TrainingModel(net, recipes.get("standard"))
    model.compile(optimizer="sgd")
    x, y, size = model._stand_in(tf.zeros((0, 16, 16, 1)), tf.zeros((0,), tf.int32))
    assert int(size) == 0 and x.shape == (1, 16, 16, 1) and y.shape == (1,)
    assert not np.any(x.numpy()) and not np.any(y.numpy())
    x, y, size = model._stand_in(tf.ones((3, 16, 16, 1)), tf.ones((3,), tf.int32))
    assert int(size) == 3 and x.shape == (3, 16, 16, 1) and np.all(x.numpy() == 1)
