"""Layers under the Keras mixed-precision policies that `train --precision bf16|fp16` sets while a net is built:
a gated (width='dynamic') slimmable layer masks its bfloat16 / float16 output with the gate's choice."""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.slimmable import SlimmableConv2D, SlimmableDense, SlimmableDepthwiseConv2D

WIDTHS = (0.5, 1.0)


@pytest.fixture
def mixed_policy(request):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("mixed_policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
@pytest.mark.parametrize("make, shape", [
    (lambda: SlimmableConv2D(16, 3, width_multipliers=WIDTHS, slim_input=False), (2, 5, 5, 4)),
    (lambda: SlimmableDepthwiseConv2D(3, width_multipliers=WIDTHS), (2, 5, 5, 16)),
    (lambda: SlimmableDense(16, width_multipliers=WIDTHS, slim_input=False), (2, 4)),
])
def test_dynamic_width_masks_in_the_compute_dtype(mixed_policy, make, shape):
    layer = make()
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    choice = np.eye(2, dtype="float32")[[0, 1]]
    y = layer(x, width="dynamic", choice=choice)
    assert y.dtype == layer.compute_dtype != "float32"
    full = layer(x, width=1.0).numpy().astype("float32")
    y = y.numpy().astype("float32")
    np.testing.assert_allclose(y[1], full[1], rtol=1e-2, atol=1e-2)  # the widest example: unmasked
    assert np.all(y[0, ..., full.shape[-1] // 2:] == 0)  # the slimmest: its upper half masked off
