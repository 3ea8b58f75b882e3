import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf

from pipelines.training.recipes import losses


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_with_label_smoothing_matches_numpy():
    rng = np.random.RandomState(0)
    logits = rng.randn(6, 4).astype("float32")
    labels = np.array([0, 1, 2, 3, 1, 0])
    for eps in (0.0, 0.1):
        target = np.eye(4)[labels] * (1 - eps) + eps / 4
        expected = -(target * np.log(np_softmax(logits))).sum(-1).mean()
        assert float(losses.cross_entropy(labels, logits, eps)) == pytest.approx(expected, rel=1e-5)


def test_distillation_matches_numpy_and_stops_teacher_gradient():
    rng = np.random.RandomState(1)
    s = tf.Variable(rng.randn(5, 3).astype("float32"))
    t = tf.Variable(rng.randn(5, 3).astype("float32"))
    T = 2.0
    with tf.GradientTape() as tape:
        kd = losses.distillation(s, t, T)
    pt, ps = np_softmax(t.numpy() / T), np_softmax(s.numpy() / T)
    expected = T * T * (pt * (np.log(pt) - np.log(ps))).sum(-1).mean()
    assert float(kd) == pytest.approx(expected, rel=1e-5)
    g_s, g_t = tape.gradient(kd, [s, t])
    assert g_t is None and np.abs(g_s.numpy()).sum() > 0


def test_l2_only_kernels():
    k = tf.Variable(np.ones((2, 2), "float32"), name="conv/kernel")
    b = tf.Variable(np.ones((2,), "float32"), name="conv/bias")
    assert float(losses.l2([k, b], 0.1)) == pytest.approx(0.1 * 4 / 2)
    assert float(losses.l2([k], 0.0)) == 0.0
