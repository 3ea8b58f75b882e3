"""Basis layers (`keras_layers.basis`) and the kernel-mixing methods behind them, against NumPy."""
import math

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import count_madds, kernel_mixing
from keras_layers.basis import BasisConv2D, BasisDense, BasisDepthwiseConv2D

from kernel_mixing_reference import data, np_reference, RNG  # noqa: E402


def randomize_bias(layer):
    if layer.bias is not None:
        layer.bias.assign(RNG.randn(*layer.bias.shape).astype("float32"))


def output_with_random_bias(layer, x, c):
    """Build `layer` on (x, c), give it a random bias (zeros would hide a bias bug), return its output."""
    layer(x, c)
    randomize_bias(layer)
    return layer(x, c).numpy()


def folded_refuses(method, layer, x, c):
    """True once it is checked that the batch-1-only `folded` method refuses a larger batch by name."""
    if method != "folded" or len(x) == 1:
        return False
    with pytest.raises(ValueError, match="batch of 1"):
        layer(x, c)
    return True


# ---------------------------------------------------------------- forward vs NumPy

CONV_CASES = [  # kernel, strides, padding, dilation, input shape
    (3, 1, "same", 1, (7, 6, 3)),
    (3, 2, "same", 1, (7, 8, 4)),
    (3, 2, "valid", 1, (9, 7, 2)),
    (1, 1, "same", 1, (5, 5, 4)),
    (1, 2, "valid", 1, (5, 6, 3)),
    (3, 1, "same", 2, (7, 7, 2)),
    ((1, 3), (2, 1), "same", 1, (6, 6, 3)),
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kernel,strides,padding,dilation,shape", CONV_CASES)
def test_conv_auto_matches_numpy(batch, kernel, strides, padding, dilation, shape):
    layer = BasisConv2D(5, kernel, num_bases=4, strides=strides, padding=padding, dilation_rate=dilation)
    x, c = data(batch, shape, 4, softmax=batch == 3)
    y = output_with_random_bias(layer, x, c)
    ref = np_reference(layer, x, c)
    assert y.shape == ref.shape == tuple(layer.compute_output_shape((batch, *shape)))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", [m for m in kernel_mixing.CONV_METHODS if m != "auto"])
@pytest.mark.parametrize("batch", [1, 2])
def test_every_conv_method_matches_numpy(method, batch):
    kernel = 1 if method == "einsum" else 3
    layer = BasisConv2D(4, kernel, num_bases=3, strides=2, padding="same", method=method)
    x, c = data(batch, (7, 6, 3), 3)
    if folded_refuses(method, layer, x, c):
        return
    np.testing.assert_allclose(output_with_random_bias(layer, x, c), np_reference(layer, x, c), rtol=1e-4,
                               atol=1e-4)


def test_map_fn_and_grouped_run_with_a_dynamic_batch():
    x, c = data(3, (6, 6, 2), 4)
    for method in ("map_fn", "grouped", "im2col", "experts"):
        layer = BasisConv2D(3, 3, num_bases=4, method=method)
        fn = tf.function(lambda a, b, layer=layer: layer(a, b),
                         input_signature=[tf.TensorSpec((None, 6, 6, 2)), tf.TensorSpec((None, 4))])
        np.testing.assert_allclose(fn(x, c).numpy(), np_reference(layer, x, c), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dilation", [2, (1, 3)])
def test_dilated_depthwise_runs_with_a_dynamic_batch(dilation):
    """As in `fit` / a functional model: the batch folded into channels has no static size there."""
    layer = BasisDepthwiseConv2D(3, num_bases=4, dilation_rate=dilation, padding="valid")
    x, c = data(3, (8, 9, 2), 4)
    fn = tf.function(lambda a, b: layer(a, b), input_signature=[tf.TensorSpec((None, 8, 9, 2)), tf.TensorSpec((None, 4))])
    np.testing.assert_allclose(fn(x, c).numpy(), np_reference(layer, x, c), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("method", [m for m in kernel_mixing.DEPTHWISE_METHODS])
@pytest.mark.parametrize("strides,padding,dilation", [(1, "same", 1), (2, "same", 1), (2, "valid", 1),
                                                      (1, "same", 2)])
def test_depthwise_matches_numpy(batch, method, strides, padding, dilation):
    layer = BasisDepthwiseConv2D(3, num_bases=4, strides=strides, padding=padding, dilation_rate=dilation,
                                 method=method)
    x, c = data(batch, (7, 6, 3), 4, softmax=batch == 2)
    if folded_refuses(method, layer, x, c):
        return
    y = output_with_random_bias(layer, x, c)
    assert y.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(y, np_reference(layer, x, c), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("method", ["auto", "einsum", "experts"])
def test_dense_matches_numpy(batch, method):
    layer = BasisDense(6, num_bases=3, method=method, activation="relu")
    x, c = data(batch, (5,), 3)
    np.testing.assert_allclose(output_with_random_bias(layer, x, c), np.maximum(np_reference(layer, x, c), 0),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bases", [1, 2])
@pytest.mark.parametrize("make,shape", [
    (lambda e: BasisConv2D(5, 3, num_bases=e, strides=2), (7, 6, 3)),
    (lambda e: BasisConv2D(5, 1, num_bases=e), (5, 5, 4)),
    (lambda e: BasisDepthwiseConv2D(3, num_bases=e, strides=2, padding="valid"), (7, 6, 3)),
    (lambda e: BasisDense(6, num_bases=e), (5,)),
])
def test_expert_outputs_mixed_at_batch_1_match_numpy(make, shape, bases, batch):
    """The ``experts`` path (auto's batch-1 choice for one expert) mixes E outputs with MUL + ADD at batch 1
    and with an einsum otherwise: both against the NumPy loop, with one and two experts."""
    layer = make(bases)
    layer.method = "experts"
    x, c = data(batch, shape, bases)
    np.testing.assert_allclose(output_with_random_bias(layer, x, c), np_reference(layer, x, c), rtol=1e-4,
                               atol=1e-4)
    if bases == 1 and batch == 1:  # auto takes it: the same numbers
        layer.method = "auto"
        np.testing.assert_allclose(layer(x, c).numpy(), np_reference(layer, x, c), rtol=1e-4, atol=1e-4)


def test_one_hot_coefficients_give_the_static_layer():
    """With c = e_n the op is exactly the static Keras layer holding basis n."""
    layer = BasisConv2D(4, 3, num_bases=3, strides=2)
    x, _ = data(2, (8, 8, 3), 3)
    c = np.eye(3, dtype="float32")[[2, 0]]
    y = layer(x, c).numpy()
    static = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    static.build(x.shape)
    for b, n in enumerate([2, 0]):
        static.set_weights([layer.kernel.numpy()[n], layer.bias.numpy()])
        np.testing.assert_allclose(y[b], static(x[b:b + 1]).numpy()[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("op,method,kernel_shape,x_shape", [
    (kernel_mixing.conv2d, "map_fn", (2, 3, 3, 2, 2), (4, 4, 2)),
    (kernel_mixing.conv2d, "unrolled", (2, 3, 3, 2, 2), (3, 3, 2)),
    (kernel_mixing.conv2d, "im2col", (2, 3, 3, 2, 2), (3, 3, 2)),
    (kernel_mixing.conv2d, "einsum", (2, 1, 1, 2, 3), (3, 3, 2)),
    (kernel_mixing.depthwise_conv2d, "batch_channels", (2, 3, 3, 2, 1), (4, 4, 2)),
    (kernel_mixing.dense, "einsum", (2, 4, 3), (4,)),
    (kernel_mixing.dense, "experts", (2, 4, 3), (4,)),
])
def test_gradients_match_finite_differences(op, method, kernel_shape, x_shape):
    """d/d(inputs, coefficients, bases) of every training path vs central differences (float64)."""
    x, c = data(2, x_shape, 2)
    k = RNG.randn(*kernel_shape)
    args = [tf.constant(a, tf.float64) for a in (x, c, k)]
    theoretical, numerical = tf.test.compute_gradient(lambda a, b, w: op(a, b, w, method=method), args)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-6)


def grouped_conv_gradients_run():
    """Whether this host's TF kernels take a grouped convolution's gradients (input and filter): TF 2.21's CPU
    build refuses them on some CPUs ('Gradients for grouped convolutions are not supported on CPU') and
    takes them on others (seen on an AVX-512 host)."""
    x, k = tf.ones((1, 4, 4, 2)), tf.ones((1, 1, 1, 2))  # 2 groups of one input channel
    try:
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = tf.nn.conv2d(x, k, 1, "SAME")
        tape.gradient(y, [x, k])
        return True
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return False


@pytest.mark.skipif(not grouped_conv_gradients_run(),
                    reason="this host's TF CPU kernels have no grouped-conv gradient (Conv2DBackpropInput: "
                           "'Gradients for grouped convolutions are not supported on CPU')")
def test_grouped_gradients_match_map_fn():
    """Where TF's CPU grouped-conv backprop exists (float32 only, not float64): compare with map_fn."""
    x, c = data(3, (5, 5, 2), 2)
    k = tf.constant(RNG.randn(2, 3, 3, 2, 4).astype("float32"))
    grads = {}
    for method in ("grouped", "map_fn"):
        args = [tf.constant(x), tf.constant(c), k]
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(kernel_mixing.conv2d(*args, method=method) ** 2)
        grads[method] = [g.numpy() for g in tape.gradient(loss, args)]
    for a, b in zip(grads["grouped"], grads["map_fn"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_training_gradient_reaches_the_bases_and_coefficients():
    layer = BasisConv2D(4, 3, num_bases=3)
    x, c = data(2, (5, 5, 2), 3)
    c = tf.Variable(c)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, c) ** 2)
    gk, gc = tape.gradient(loss, [layer.kernel, c])
    assert gk.shape == layer.kernel.shape and np.all(np.abs(gk.numpy()).sum(axis=(1, 2, 3, 4)) > 0)
    assert np.all(np.abs(gc.numpy()) > 0)


# ---------------------------------------------------------------- weights, init, MAdds
# (config round trip, .keras saving: test_layer_harness.py)

def test_weight_shapes_follow_the_design():
    x, c = data(1, (6, 6, 3), 5)
    conv = BasisConv2D(7, (3, 2), num_bases=5)
    conv(x, c)
    assert conv.kernel.shape == (5, 3, 2, 3, 7) and conv.bias.shape == (7,)
    dw = BasisDepthwiseConv2D(3, num_bases=5, use_bias=False)
    dw(x, c)
    assert dw.kernel.shape == (5, 3, 3, 3, 1) and dw.bias is None
    dense = BasisDense(4, num_bases=5)
    dense(x.reshape(1, -1), c)
    assert dense.kernel.shape == (5, 108, 4) and dense.bias.shape == (4,)


@pytest.mark.parametrize("initializer", ["glorot_uniform", keras.initializers.GlorotUniform(seed=3)])
def test_each_basis_is_initialised_like_a_single_kernel(initializer):
    layer = BasisConv2D(16, 3, num_bases=4, kernel_initializer=initializer)
    layer.build((None, 8, 8, 8))
    w = layer.kernel.numpy()
    limit = math.sqrt(6 / (3 * 3 * 8 + 3 * 3 * 16))  # glorot of ONE (3, 3, 8, 16) kernel
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    for n in range(1, 4):
        assert not np.allclose(w[0], w[n])


def basis_model():
    image = keras.Input((8, 8, 3), name="image")
    coefficients = keras.Input((4,), name="coefficients")
    x = BasisConv2D(6, 3, num_bases=4, strides=2, name="conv")(image, coefficients)
    x = BasisDepthwiseConv2D(3, num_bases=4, name="dw")(x, coefficients)
    x = BasisConv2D(5, 1, num_bases=4, name="pw")(x, coefficients)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = BasisDense(3, num_bases=4, name="dense")(x, coefficients)
    return keras.Model([image, coefficients], out)


def test_madds_are_conv_plus_mixing():
    model = basis_model()
    conv = 4 * 4 * 3 * 3 * 3 * 6 + 4 * 3 * 3 * 3 * 6
    dw = 4 * 4 * 3 * 3 * 6 + 4 * 3 * 3 * 6
    pw = 4 * 4 * 6 * 5 + 4 * 6 * 5
    dense = 5 * 3 + 4 * 5 * 3
    assert count_madds(model) == conv + dw + pw + dense


def test_quantization_modes_declared():
    assert BasisConv2D.quantization_modes == ("float32", "float16", "dynamic")
    assert "int8" not in BasisDense.quantization_modes


# ---------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("make,match", [
    (lambda: BasisConv2D(4, 3, num_bases=0), "num_bases=0"),
    (lambda: BasisConv2D(0, 3, num_bases=2), "filters=0"),
    (lambda: BasisConv2D(4, 0, num_bases=2), "kernel_size=0"),
    (lambda: BasisConv2D(4, (3, 0), num_bases=2), r"kernel_size=\(3, 0\)"),
    (lambda: BasisConv2D(4, 3, num_bases=2, padding="full"), "padding='full'"),
    (lambda: BasisConv2D(4, 3, num_bases=2, strides=0), "strides=0"),
    (lambda: BasisConv2D(4, 3, num_bases=2, strides=2, dilation_rate=2), "dilation_rate=2"),
    (lambda: BasisConv2D(4, 3, num_bases=2, method="fast"), "method='fast'"),
    (lambda: BasisDepthwiseConv2D(0, num_bases=2), "kernel_size=0"),
    (lambda: BasisDepthwiseConv2D(3, num_bases=-1), "num_bases=-1"),
    (lambda: BasisDense(0, num_bases=2), "units=0"),
    (lambda: BasisDense(3, num_bases=2.5), "num_bases=2.5"),
])
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_coefficient_shape_mismatch():
    layer = BasisConv2D(4, 3, num_bases=3)
    x, c = data(2, (5, 5, 2), 4)
    with pytest.raises(ValueError, match=r"num_bases=3.*coefficients shape=\(2, 4\)"):
        layer(x, c)
    with pytest.raises(ValueError, match=r"coefficients shape=\(3, 3\)"):
        layer(x, np.zeros((3, 3), "float32"))
    with pytest.raises(ValueError, match="coefficients=None"):
        layer(x)
    with pytest.raises(ValueError, match="input shape"):
        BasisDense(3, num_bases=2)(np.zeros((2, 3, 3), "float32"), np.zeros((2, 2), "float32"))


def test_auto_choice_follows_the_measurements():
    """1x1 -> einsum; batch 1 -> the XNNPACK-delegated paths; static batches unrolled; fit's unknown batch -> map_fn."""
    choose = kernel_mixing.choose_conv_method
    assert choose((1, 1), None) == choose((1, 1), 1) == "einsum"
    assert choose((3, 3), 1) == "im2col"
    assert choose((3, 3), 32) == "unrolled"
    assert choose((3, 3), None) == choose((3, 3), kernel_mixing.MAX_UNROLLED_BATCH + 1) == "map_fn"
    assert kernel_mixing.choose_depthwise_method(1) == "folded"
    assert kernel_mixing.choose_depthwise_method(None) == "batch_channels"
    # one expert at batch 1: a static op and a MUL (E = 2 keeps the mixed kernel; training never changes)
    assert choose((3, 3), 1, "cpu", 1) == choose((1, 1), 1, "cpu", 1) == "experts"
    assert choose((3, 3), 1, "cpu", 2) == "im2col" and choose((3, 3), 32, "cpu", 1) == "unrolled"
    assert kernel_mixing.choose_depthwise_method(1, 1) == "experts"
    assert kernel_mixing.choose_depthwise_method(1, 2) == "folded"
    assert kernel_mixing.choose_depthwise_method(None, 1) == "batch_channels"
    assert kernel_mixing.choose_dense_method(1, 1) == "experts"
    assert kernel_mixing.choose_dense_method(1, 2) == kernel_mixing.choose_dense_method(None, 1) == "einsum"
