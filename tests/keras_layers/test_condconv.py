"""CondConv layers (`keras_layers.condconv`): routing + Basis op, against NumPy."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import count_madds
from keras_layers.basis import BasisConv2D
from keras_layers.condconv import CondConv2D, CondDense, CondDepthwiseConv2D, CondRouting

from kernel_mixing_reference import RNG, np_reference, np_routing


def randomize(layer):
    """Non-trivial router and bias so the reference check can fail."""
    layer.router.kernel.assign(RNG.randn(*layer.router.kernel.shape).astype("float32"))
    layer.router.bias.assign(RNG.randn(*layer.router.bias.shape).astype("float32"))
    if layer.bias is not None:
        layer.bias.assign(RNG.randn(*layer.bias.shape).astype("float32"))


CASES = [  # layer factory, input shape
    (lambda act: CondConv2D(5, 3, num_experts=4, routing_activation=act), (6, 7, 3)),
    (lambda act: CondConv2D(4, 3, num_experts=3, strides=2, padding="valid", routing_activation=act), (9, 8, 2)),
    (lambda act: CondConv2D(6, 1, num_experts=8, strides=2, routing_activation=act), (5, 5, 4)),
    (lambda act: CondDepthwiseConv2D(3, num_experts=4, strides=2, routing_activation=act), (7, 6, 3)),
    (lambda act: CondDepthwiseConv2D(5, num_experts=2, padding="valid", routing_activation=act), (7, 7, 2)),
    (lambda act: CondDense(7, num_experts=5, routing_activation=act), (6,)),
]


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("make,shape", CASES)
def test_matches_numpy(make, shape, activation, batch):
    layer = make(activation)
    x = RNG.randn(batch, *shape).astype("float32")
    layer(x)
    randomize(layer)
    r = np_routing(layer.router, x)
    np.testing.assert_allclose(layer.routing(x).numpy(), r, rtol=1e-5, atol=1e-6)
    y = layer(x).numpy()
    assert y.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(y, np_reference(layer, x, r.astype("float32")), rtol=1e-4, atol=1e-4)


def test_routing_weights_shape_and_range():
    layer = CondConv2D(4, 3, num_experts=6, routing_activation="softmax")
    x = RNG.randn(3, 5, 5, 2).astype("float32")
    r = layer.routing(x).numpy()
    assert r.shape == (3, 6) and np.allclose(r.sum(-1), 1, atol=1e-6)
    r = CondConv2D(4, 3, num_experts=6).routing(x).numpy()
    assert r.shape == (3, 6) and np.all((r > 0) & (r < 1))


def test_shared_routing_weights_replace_the_router():
    layer = CondConv2D(4, 3, num_experts=3)
    x = RNG.randn(2, 5, 5, 2).astype("float32")
    shared = np.array([[1, 0, 0], [0.2, 0.3, 0.5]], "float32")
    y = layer(x, routing_weights=shared).numpy()
    np.testing.assert_allclose(y, np_reference(layer, x, shared), rtol=1e-4, atol=1e-4)
    assert not np.allclose(y, layer(x).numpy())


def test_is_a_basis_layer_with_the_same_weights():
    """CondConv = Basis op + router: no second implementation of the mixing."""
    cond = CondConv2D(4, 3, num_experts=3, strides=2)
    x = RNG.randn(2, 6, 6, 2).astype("float32")
    y = cond(x).numpy()
    basis = BasisConv2D(4, 3, num_bases=3, strides=2)
    basis(x, np.ones((2, 3), "float32"))
    basis.set_weights([cond.kernel.numpy(), cond.bias.numpy()])
    np.testing.assert_allclose(y, basis(x, cond.routing(x)).numpy(), rtol=1e-6, atol=1e-6)
    assert isinstance(cond, BasisConv2D) and cond.num_experts == 3


def test_gradient_through_router_matches_finite_differences():
    layer = CondConv2D(2, 3, num_experts=2, strides=2, dtype="float64")
    x = tf.constant(RNG.randn(2, 4, 4, 2), tf.float64)
    layer(x)
    randomize(layer)
    theoretical, numerical = tf.test.compute_gradient(lambda a: layer(a), [x])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, [layer.router.kernel, layer.kernel])
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_config_names_num_experts_not_num_bases():
    """(The config round trip of every layer: test_layer_harness.py.)"""
    for layer in (CondConv2D(4, 3, num_experts=3), CondDepthwiseConv2D(3, num_experts=2), CondDense(4, num_experts=6)):
        config = layer.get_config()
        assert config["num_experts"] == layer.num_experts and "num_bases" not in config


def cond_model():
    image = keras.Input((8, 8, 3))
    x = CondConv2D(6, 3, num_experts=4, strides=2, name="conv")(image)
    r = CondRouting(4, name="block_router")(x)
    x = CondDepthwiseConv2D(3, num_experts=4, name="dw")(x, routing_weights=r)
    x = CondConv2D(5, 1, num_experts=4, name="pw", routing_activation="softmax")(x, routing_weights=r)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = CondDense(3, num_experts=4, name="dense")(x)
    return keras.Model(image, out)


def test_madds_conv_plus_mixing_plus_routing():
    conv = 4 * 4 * 3 * 3 * 3 * 6 + 4 * 3 * 3 * 3 * 6 + 3 * 4       # conv + mixing + own router
    router = 6 * 4                                                  # the shared block router
    dw = 4 * 4 * 3 * 3 * 6 + 4 * 3 * 3 * 6                          # shared routing: no router
    pw = 4 * 4 * 6 * 5 + 4 * 6 * 5
    dense = 5 * 3 + 4 * 5 * 3 + 5 * 4
    assert count_madds(cond_model()) == conv + router + dw + pw + dense


@pytest.mark.parametrize("make,match", [
    (lambda: CondConv2D(4, 3, num_experts=0), "num_experts=0"),
    (lambda: CondConv2D(4, 0, num_experts=2), "kernel_size=0"),
    (lambda: CondConv2D(4, 3, num_experts=2, routing_activation="relu"), "routing_activation='relu'"),
    (lambda: CondDepthwiseConv2D(3, num_experts=0), "num_experts=0"),
    (lambda: CondDense(3, num_experts=-2), "num_experts=-2"),
    (lambda: CondRouting(0), "num_experts=0"),
])
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_routing_weights_shape_mismatch():
    layer = CondConv2D(4, 3, num_experts=3)
    x = RNG.randn(2, 5, 5, 2).astype("float32")
    with pytest.raises(ValueError, match=r"num_experts=3.*coefficients shape=\(2, 4\)"):
        layer(x, routing_weights=np.ones((2, 4), "float32"))


def test_spatial_mean_and_its_gradient_are_tfs():
    """The router's pooling has a cheaper gradient (divide the (B, C) gradient, then broadcast once): the
    same values as TF's reduce_mean, forward and backward, with a known or an unknown batch."""
    from keras_layers.condconv import spatial_mean

    x = tf.constant(RNG.randn(3, 5, 4, 2), tf.float64)
    upstream = tf.constant(RNG.randn(3, 2), tf.float64)

    @tf.function(input_signature=[tf.TensorSpec((None, 5, 4, 2), tf.float64)])
    def grads(a):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(a)
            ours, theirs = spatial_mean(a), tf.reduce_mean(a, axis=(1, 2))
        return ours, theirs, tape.gradient(ours, a, upstream), tape.gradient(theirs, a, upstream)

    ours, theirs, g_ours, g_theirs = grads(x)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    assert np.abs(g_theirs.numpy()).max() > 0
    np.testing.assert_allclose(g_ours.numpy(), g_theirs.numpy(), rtol=1e-12, atol=0)
