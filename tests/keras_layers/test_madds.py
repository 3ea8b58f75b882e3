import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers import count_madds
from keras_layers.models import build

L = keras.layers


def small_model(shape=(8, 8, 3)):
    x = inp = keras.Input(shape)
    x = L.Conv2D(4, 3, strides=2, padding="same")(x)  # 4x4x4: 4*4*3*3*3*4 = 1728
    x = L.BatchNormalization()(x)  # 0
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 4*4*3*3*4*2 = 1152
    x = L.Conv2D(6, 1, groups=2)(x)  # 4*4*1*1*(8/2)*6 = 384
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(5)(x)  # 6*5 = 30
    return keras.Model(inp, x)


def test_hand_computed_counts():
    assert count_madds(small_model(), (8, 8, 3)) == 1728 + 1152 + 384 + 30


def test_other_input_size_rebuilds_the_graph():
    # 16x16 input: convs see 8x8 maps (4x the spatial work), Dense unchanged.
    assert count_madds(small_model(), (16, 16, 3)) == 4 * (1728 + 1152 + 384) + 30


def test_named_output_counts_only_its_ancestors():
    inp = keras.Input((4, 4, 2))
    a = L.Conv2D(3, 1, name="a")(inp)  # 16*2*3 = 96
    e0 = L.Dense(2, name="e0")(L.GlobalAveragePooling2D()(a))  # 6
    b = L.Conv2D(5, 1, name="b")(a)  # 16*3*5 = 240
    e1 = L.Dense(2, name="e1")(L.GlobalAveragePooling2D()(b))  # 10
    model = keras.Model(inp, {"exit_0": e0, "exit_1": e1})
    assert count_madds(model, (4, 4, 2)) == 96 + 6 + 240 + 10
    assert count_madds(model, (4, 4, 2), exit=0) == 96 + 6
    assert count_madds(model, (4, 4, 2), output="exit_1") == 96 + 240 + 10
    with pytest.raises(ValueError, match="exit_7"):
        count_madds(model, (4, 4, 2), exit=7)


def test_protocol_method_and_state_are_used():
    class Reports(L.Layer):
        def call(self, x):
            return x

        def madds(self, input_shape, output_shape, width=1.0, **state):
            assert input_shape[0] is None  # batch axis kept as None
            return int(1000 * width)

    inp = keras.Input((2, 2, 1))
    model = keras.Model(inp, Reports()(inp))
    assert count_madds(model) == 1000
    assert count_madds(model, width=0.5) == 500


def test_nested_model_counted_once_per_call():
    inner = keras.Sequential([keras.Input((3,)), L.Dense(4)])
    inp = keras.Input((3,))
    model = keras.Model(inp, inner(inner(L.Dense(3)(inp))[:, :3]))
    assert count_madds(model) == 9 + 12 + 12


def test_mobilenet_v2_counts_match_layer_sum():
    net = build("mobilenet_v2", input_shape=(32, 32, 3), num_classes=10)
    total = 0
    for layer in net.layers:
        if isinstance(layer, L.DepthwiseConv2D):
            _, h, w, c = layer.output_shape
            total += h * w * 9 * c
        elif isinstance(layer, L.Conv2D):
            _, h, w, c = layer.output_shape
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * layer.input_shape[-1] * c
        elif isinstance(layer, L.Dense):
            total += layer.input_shape[-1] * layer.units
    assert count_madds(net, (32, 32, 3)) == total > 0


def test_rejects_non_functional_models():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="model="):
        count_madds(Sub(), (2, 2, 1))
