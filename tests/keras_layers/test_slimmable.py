"""Slimmable layers, switchable BN and the DS-Net gate: widths, slicing, training-mode statistics, gating.

(Every layer's config round trip, `.keras` saving and inference output at its active width against
NumPy, the gate's attention / argmax / fixed-width choice included: test_layer_harness.py.)"""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import (DynamicGate, SlimmableConv2D, SlimmableDense, SlimmableDepthwiseConv2D,
                          SwitchableBatchNormalization, count_madds)
from keras_layers.channels import make_divisible
from keras_layers.slimmable import get_width, set_width, slim_channels

from layer_references import np_conv_batch

WIDTHS = (0.25, 0.5, 0.75, 1.0)
rng = np.random.default_rng(0)


def randomize(layer, scale=0.5):
    for v in layer.weights:
        if "variance" in v.name:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        else:
            v.assign(rng.normal(0, scale, v.shape).astype("float32"))


@pytest.mark.parametrize("width,stride", [(0.25, 1), (0.5, 2), (1.0, 1)])
def test_conv_is_the_leading_slice(width, stride):
    layer = SlimmableConv2D(32, 3, strides=stride, width_multipliers=WIDTHS)
    layer.build((None, 6, 6, 24))
    randomize(layer)
    c_in, c_out = make_divisible(24 * width), make_divisible(32 * width)
    assert layer.channels(width) == (c_in, c_out)
    x = rng.normal(size=(2, 6, 6, c_in)).astype("float32")
    ref = np_conv_batch(x, layer.kernel.numpy()[:, :, :c_in, :c_out], stride) + layer.bias.numpy()[:c_out]
    np.testing.assert_allclose(layer(x, width=width).numpy(), ref, atol=1e-4)


def test_conv_fixed_input_and_output():
    layer = SlimmableConv2D(16, 1, slim_input=False, width_multipliers=WIDTHS, use_bias=False)
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    assert layer(x, width=0.5).shape[-1] == 8
    dense = SlimmableDense(10, slim_output=False, width_multipliers=WIDTHS)
    dense.build((None, 64))
    randomize(dense)
    h = rng.normal(size=(3, 16)).astype("float32")
    ref = h @ dense.kernel.numpy()[:16] + dense.bias.numpy()
    np.testing.assert_allclose(dense(h, width=0.25).numpy(), ref, atol=1e-5)


def test_depthwise_is_the_leading_slice():
    layer = SlimmableDepthwiseConv2D(3, strides=2, width_multipliers=WIDTHS)
    layer.build((None, 5, 5, 32))
    randomize(layer)
    x = rng.normal(size=(2, 5, 5, 16)).astype("float32")
    ref = np_conv_batch(x, layer.depthwise_kernel.numpy()[:, :, :16], 2, depthwise=True) + layer.bias.numpy()[:16]
    np.testing.assert_allclose(layer(x, width=0.5).numpy(), ref, atol=1e-4)


def test_switchable_bn_private_per_width():
    bn = SwitchableBatchNormalization(WIDTHS, momentum=0.8, epsilon=1e-3)
    bn.build((None, 4, 4, 32))
    randomize(bn)
    # every width owns gamma/beta/mean/var of its own size
    assert [g.shape[0] for g in bn.gammas] == [8, 16, 24, 32]
    x = rng.normal(1.0, 2.0, size=(6, 4, 4, 16)).astype("float32")
    before = [v.numpy().copy() for v in bn.weights]
    i = WIDTHS.index(0.5)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    g, b = bn.gammas[i].numpy(), bn.betas[i].numpy()
    old_mean, old_var = bn.moving_means[i].numpy().copy(), bn.moving_variances[i].numpy().copy()
    y = bn(x, width=0.5, training=True).numpy()
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * g + b, atol=1e-4)
    np.testing.assert_allclose(bn.moving_means[i].numpy(), 0.8 * old_mean + 0.2 * mean, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variances[i].numpy(), 0.8 * old_var + 0.2 * var, rtol=1e-4)
    changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before, bn.weights)]
    assert sorted(v.name.split("/")[-1] for v, c in zip(bn.weights, changed) if c) == [
        "moving_mean_1:0", "moving_variance_1:0"]
    # inference uses this width's stored statistics
    y = bn(x, width=0.5, training=False).numpy()
    ref = (x - bn.moving_means[i].numpy()) / np.sqrt(bn.moving_variances[i].numpy() + 1e-3) * g + b
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_universal_bn_shares_affine_and_trains_any_width():
    bn = SwitchableBatchNormalization(WIDTHS, universal=True)
    bn.build((None, 32))
    assert len(bn.gammas) == 1 and bn.gammas[0].shape[0] == 32
    x = rng.normal(size=(8, slim_channels(32, 0.6))).astype("float32")
    assert bn(x, width=0.6, training=True).shape[-1] == slim_channels(32, 0.6)
    with pytest.raises(ValueError, match="width=0.6"):
        bn(x, width=0.6, training=False)


def test_dynamic_choice_equals_per_example_slicing():
    conv = SlimmableConv2D(32, 3, width_multipliers=WIDTHS, slim_input=False)
    bn = SwitchableBatchNormalization(WIDTHS)
    x = rng.normal(size=(4, 5, 5, 8)).astype("float32")
    conv.build(x.shape)
    bn.build((None, 5, 5, 32))
    randomize(conv)
    randomize(bn)
    choice = np.eye(4, dtype="float32")[[0, 3, 1, 2]]
    y = bn(conv(x, width="dynamic", choice=choice), width="dynamic", choice=choice, training=False).numpy()
    for b, k in enumerate([0, 3, 1, 2]):
        w = WIDTHS[k]
        c = make_divisible(32 * w)
        ref = bn(conv(x[b:b + 1], width=w), width=w, training=False).numpy()[0]
        np.testing.assert_allclose(y[b, ..., :c], ref, atol=1e-5)
        assert np.all(y[b, ..., c:] == 0)


def test_dynamic_depthwise_and_dense_mask_each_example_to_its_width():
    """The one sliced-weights mechanism at width='dynamic' for the other two weight layers: each
    example's leading c(w) channels equal the layer at that fixed width, the rest are zero (rank 4 and 2)."""
    order = [2, 0, 3, 1]
    choice = np.eye(4, dtype="float32")[order]
    dw = SlimmableDepthwiseConv2D(3, width_multipliers=WIDTHS)
    dense = SlimmableDense(24, width_multipliers=WIDTHS, slim_input=False)
    x = rng.normal(size=(4, 5, 5, 32)).astype("float32")
    h = rng.normal(size=(4, 12)).astype("float32")
    dw.build(x.shape)
    dense.build(h.shape)
    randomize(dw)
    randomize(dense)
    y_dw = dw(x, width="dynamic", choice=choice).numpy()
    y_dense = dense(h, width="dynamic", choice=choice).numpy()
    for b, k in enumerate(order):
        w = WIDTHS[k]
        c, u = make_divisible(32 * w), make_divisible(24 * w)
        np.testing.assert_allclose(y_dw[b, ..., :c], dw(x[b:b + 1, ..., :c], width=w).numpy()[0], atol=1e-5)
        np.testing.assert_allclose(y_dense[b, :u], dense(h[b:b + 1], width=w).numpy()[0], atol=1e-5)
        assert np.all(y_dw[b, ..., c:] == 0) and np.all(y_dense[b, u:] == 0)
    with pytest.raises(ValueError, match="needs the gate's choice"):
        dense(h, width="dynamic")


@pytest.mark.parametrize("width,match", [(0, "width=0"), (1.5, "width=1.5"), (0.6, "width=0.6"),
                                         ("big", "width='big'"), (-0.25, "width=-0.25")])
def test_bad_width_names_the_value(width, match):
    layer = SlimmableConv2D(8, 1, width_multipliers=WIDTHS)
    x = np.zeros((1, 2, 2, 8), "float32")
    with pytest.raises(ValueError, match=match):
        layer(x, width=width)
    with pytest.raises(ValueError, match=match):
        SlimmableDense(4, width=width)


def test_universal_accepts_widths_between_the_list():
    layer = SlimmableConv2D(32, 1, width_multipliers=WIDTHS, universal=True, slim_input=False)
    assert layer(np.zeros((1, 2, 2, 3), "float32"), width=0.6).shape[-1] == slim_channels(32, 0.6)
    with pytest.raises(ValueError, match="width=1.2"):
        layer(np.zeros((1, 2, 2, 3), "float32"), width=1.2)


@pytest.mark.parametrize("factory,match", [
    (lambda: SlimmableConv2D(0, 3), "filters=0"),
    (lambda: SlimmableConv2D(8, 0), "kernel_size"),
    (lambda: SlimmableConv2D(8, 3, padding="full"), "padding='full'"),
    (lambda: SlimmableConv2D(8, 3, width_multipliers=()), "width_multipliers=()"),
    (lambda: SlimmableConv2D(8, 3, width_multipliers=(0.0, 1.0)), "width_multipliers"),
    (lambda: SlimmableDepthwiseConv2D(3, width_multipliers=(0.5, 1.5)), "width_multipliers"),
    (lambda: SlimmableDense(-1), "units=-1"),
    (lambda: SwitchableBatchNormalization(momentum=1.5), "momentum=1.5"),
    (lambda: SwitchableBatchNormalization(divisor=0), "divisor=0"),
    (lambda: DynamicGate(hidden_units=0), "hidden_units=0"),
    (lambda: DynamicGate(temperature=0.0), "temperature=0.0"),
])
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_madds_per_width():
    inp = keras.Input((8, 8, 3))
    x = SlimmableConv2D(32, 3, strides=2, slim_input=False, use_bias=False, width_multipliers=WIDTHS)(inp)
    x = SwitchableBatchNormalization(WIDTHS)(x)
    x = SlimmableDepthwiseConv2D(3, width_multipliers=WIDTHS)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = SlimmableDense(10, slim_output=False, width_multipliers=WIDTHS)(x)
    model = keras.Model(inp, x)
    for w in WIDTHS:
        c = make_divisible(32 * w)
        assert count_madds(model, (8, 8, 3), width=w) == 16 * 9 * 3 * c + 16 * 9 * c + c * 10
    assert count_madds(model, (8, 8, 3)) == count_madds(model, (8, 8, 3), width=1.0)


def test_set_width_is_per_model_and_validated():
    def small():
        inp = keras.Input((4, 4, 3))
        x = SlimmableConv2D(16, 1, slim_input=False, width_multipliers=WIDTHS)(inp)
        return keras.Model(inp, SlimmableDense(2, slim_output=False, width_multipliers=WIDTHS)(
            keras.layers.GlobalAveragePooling2D()(x)))

    a, b = small(), small()
    set_width(a, 0.25)
    assert get_width(a) == 0.25 and get_width(b) == 1.0
    with pytest.raises(ValueError, match="width=0.3"):
        set_width(a, 0.3)
    assert get_width(a) == 0.25  # nothing changed on failure
    with pytest.raises(ValueError, match="DynamicGate"):
        set_width(a, "dynamic")
    # the width changes what a traced predict runs (cached functions are dropped)
    x = np.ones((2, 4, 4, 3), "float32")
    p1 = a.predict(x, verbose=0)
    set_width(a, 1.0)
    np.testing.assert_allclose(a.predict(x, verbose=0), a(x).numpy(), atol=1e-6)
    assert not np.allclose(p1, a(x).numpy())


def test_gumbel_straight_through_gradients_are_nonzero():
    tf.random.set_seed(1)
    gate = DynamicGate(WIDTHS, hidden_units=6, width="dynamic", temperature=1.0)
    x = rng.normal(size=(16, 3, 3, 8)).astype("float32")
    gate.build(x.shape)
    randomize(gate)
    cost = tf.constant([1.0, 2.0, 3.0, 4.0])
    with tf.GradientTape() as tape:
        _, choice, _ = gate(x, training=True)
        loss = tf.reduce_sum(choice * cost)
    # forward is a hard one-hot ...
    c = choice.numpy()
    assert set(np.unique(np.round(c, 6))) <= {0.0, 1.0} and np.allclose(c.sum(-1), 1.0)
    # ... and the gradient flows through the soft sample to the slimming head
    g_w2, g_w1 = tape.gradient(loss, [gate.w2, gate.w1])
    assert np.abs(g_w2.numpy()).sum() > 1e-4 and np.abs(g_w1.numpy()).sum() > 1e-4
