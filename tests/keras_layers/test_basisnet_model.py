import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers import count_madds, models
from keras_layers.basis import BasisCoefficients, BasisConv2D, BasisDense, BasisDepthwiseConv2D
from keras_layers.models.basisnet_mobilenet_v3 import default_synthesized, stages

SHAPE = (16, 16, 1)
TINY = dict(width_multiplier=0.25, last_channels=64, head_channels=64, preview_channels=32, preview_blocks=2)


def build(**config):
    return models.build("basisnet_mobilenet_v3", input_shape=SHAPE, num_classes=5, **{**TINY, **config})


@pytest.fixture(scope="module")
def net():
    return build(num_bases=3)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randn(4, *SHAPE).astype("float32")


def basis_names(model):
    return {l.name for l in model.layers if isinstance(l, (BasisConv2D, BasisDepthwiseConv2D, BasisDense))}


def test_outputs_and_stages(net, images):
    assert "basisnet_mobilenet_v3" in models.names()
    out = net(images)
    assert set(out) == {"preview_logits", "coefficients", "logits"}
    groups = len(default_synthesized(6))
    assert out["preview_logits"].shape == (4, 5) and out["logits"].shape == (4, 5)
    assert out["coefficients"].shape == (4, groups, 3)
    np.testing.assert_allclose(out["coefficients"].numpy().sum(-1), 1.0, atol=1e-5)  # softmax over bases
    preview, specialist = stages(net)
    # the specialist reachable on its own gives the net's logits for the preview's coefficients
    again = specialist([images, preview(images)["coefficients"]])
    logits = out["logits"].numpy()
    scale = np.abs(logits).max()  # an untrained net in inference mode has tiny logits: compare relatively
    np.testing.assert_allclose(again.numpy(), logits, atol=1e-4 * scale)
    # and other coefficients change the prediction: the kernels really are synthesized
    onehot = np.eye(3, dtype="float32")[np.zeros((4, groups), int)]
    assert np.abs(specialist([images, onehot]).numpy() - logits).max() > 1e-2 * scale


def test_stages_refuses_other_models():
    with pytest.raises(ValueError, match="not a BasisNet"):
        stages(models.build("mobilenet_v3", input_shape=SHAPE, num_classes=5, width_multiplier=0.25))


def test_synthesized_layers_and_per_model_coefficients(images):
    # blocks 1 and 2 (block0, block1) and the classifier (index B + 3 = 9), one shared vector
    net = build(num_bases=2, synthesized=[1, 2, 9], per_layer=False)
    _, specialist = stages(net)
    names = basis_names(specialist)
    assert names == {"block0_project_conv", "block1_expand_conv", "block1_project_conv", "head_logits"}
    assert net(images)["coefficients"].shape == (4, 1, 2)
    net_dw = build(num_bases=2, synthesized=[2], synthesize_depthwise=True)
    assert basis_names(stages(net_dw)[1]) == {"block1_expand_conv", "block1_dw", "block1_project_conv"}
    assert all(l.kernel.shape[0] == 2 for l in stages(net_dw)[1].layers if l.name in basis_names(stages(net_dw)[1]))


def test_sigmoid_and_one_hot_coefficients(images):
    sig = build(num_bases=4, coefficient_activation="sigmoid")(images)["coefficients"].numpy()
    assert ((sig > 0) & (sig < 1)).all() and not np.allclose(sig.sum(-1), 1.0)
    hot = build(num_bases=4, one_hot=True)(images)["coefficients"].numpy()
    assert set(np.unique(hot)) <= {0.0, 1.0} and (hot.sum(-1) == 1).all()


def test_basis_coefficients_one_hot_trains_straight_through():
    """(Inference outputs against NumPy, config, saving: test_layer_harness.py.)"""
    hot = BasisCoefficients(2, 3, "softmax", one_hot=True)
    x = tf.constant(np.random.RandomState(1).randn(5, 4).astype("float32"))
    soft = BasisCoefficients(2, 3, "softmax")
    soft.build((None, 4))
    hot.build((None, 4))
    hot.set_weights(soft.get_weights())
    with tf.GradientTape() as tape:
        y = hot(x, training=True)
        loss = tf.reduce_sum(y * tf.constant([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(y.numpy(), np.eye(3)[soft(x).numpy().argmax(-1)])  # forward: one-hot
    grad = tape.gradient(loss, hot.kernel)
    assert grad is not None and np.abs(grad.numpy()).sum() > 0  # straight-through: the preview still learns
    assert hot.madds((None, 4), (None, 2, 3)) == 4 * 2 * 3


def test_madds_split_into_preview_and_specialist(net):
    preview, specialist = stages(net)
    p = count_madds(net, SHAPE, output="preview_logits")
    full = count_madds(net, SHAPE)
    assert p == count_madds(preview, SHAPE)
    assert full == p + count_madds(specialist, SHAPE)
    with pytest.raises(ValueError, match="multi-input model specialist"):
        count_madds(specialist, (24, 24, 1))  # a two-input sub-model is counted at its own shape only
    # Basis layers report their own cost: the static conv plus one multiply-add per basis parameter
    layer = specialist.get_layer("last_conv")
    assert layer.madds((None, 2, 2, 16), (None, 2, 2, 16)) > 2 * 2 * 16 * 16
    static = models.build("mobilenet_v3", input_shape=SHAPE, num_classes=5, width_multiplier=0.25,
                          last_channels=64, head_channels=64)
    assert count_madds(specialist, SHAPE) > count_madds(static, SHAPE)


def test_save_and_load_round_trip(net, images, tmp_path):
    path = tmp_path / "basisnet.keras"
    net.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    a, b = net(images), loaded(images)
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-4, atol=1e-4 * np.abs(a[k].numpy()).max())
    assert count_madds(loaded, SHAPE) == count_madds(net, SHAPE)
    stages(loaded)


@pytest.mark.parametrize("field,value", [
    ("num_bases", 0), ("num_bases", 2.5), ("coefficient_activation", "relu"), ("per_layer", "yes"),
    ("synthesized", [99]), ("synthesized", []), ("preview_blocks", 0), ("preview_downsample", 0),
    ("spec", "xl"), ("preview_spec", "huge"), ("width_multiplier", 0), ("dropout", 1.0),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}".replace("[", r"\[").replace("]", r"\]")):
        build(**{field: value})


def test_static_mobilenet_v3_runs_and_scales():
    small = models.build("mobilenet_v3", input_shape=SHAPE, num_classes=5, width_multiplier=0.25)
    big = models.build("mobilenet_v3", input_shape=SHAPE, num_classes=5, width_multiplier=0.5)
    assert small(np.zeros((2, *SHAPE), "float32")).shape == (2, 5)
    assert count_madds(small, SHAPE) < count_madds(big, SHAPE)
