"""Kernel-mixing layers on LiteRT: builtin ops only at batch 1, float32 / float16 / dynamic parity, int8 refused.

(The float32 parity of every registered model, condconv_mobilenet_v2 included: test_models_registry.py.)"""
import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.basis import BasisConv2D, BasisDepthwiseConv2D
from keras_layers.condconv import CondConv2D, CondDense, CondDepthwiseConv2D, CondRouting
from pipelines.export import tflite

from random_weights import randomize

L = keras.layers


def layers_model(routing_activation):
    image = keras.Input((12, 12, 8), name="image")
    x = CondConv2D(16, 3, num_experts=4, routing_activation=routing_activation, activation="relu")(image)
    x = CondConv2D(16, 3, num_experts=4, strides=2, routing_activation=routing_activation)(x)
    r = CondRouting(4, routing_activation, name="shared")(x)
    x = BasisDepthwiseConv2D(3, num_bases=4, activation="relu")(x, r)
    x = BasisConv2D(24, 1, num_bases=4)(x, r)
    x = CondDepthwiseConv2D(5, num_experts=4, strides=2, padding="valid", routing_activation=routing_activation)(x)
    x = CondConv2D(8, 1, num_experts=4, routing_activation=routing_activation)(x)
    x = L.GlobalAveragePooling2D()(x)
    out = CondDense(10, num_experts=4, routing_activation=routing_activation)(x)
    return randomize(keras.Model(image, out))


IMAGES = np.random.RandomState(1).randn(4, 12, 12, 8).astype("float32")


@pytest.fixture(scope="module")
def converted():
    """One model (sigmoid routing) converted once per mode: conversion is the slow part of these tests."""
    model = layers_model("sigmoid")
    return model, {mode: tflite.convert(model, mode) for mode in ("float32", "dynamic", "float16")}


def check_float32(model, blob):
    ops = tflite.op_names(blob)
    tflite.assert_builtin_only(blob)
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops)
    # kxk per-example convs run as shifted slices + a matmul that XNNPACK delegates, not a CONV_2D
    assert "CONV_2D" not in ops and "BATCH_MATMUL" in ops
    reference = model(IMAGES).numpy()
    result = tflite.parity(reference, tflite.Runner(blob).run(IMAGES))
    assert np.abs(reference).max() > 0.1  # a meaningful scale for the check
    assert result["max_abs_error"] < 1e-4 and result["top1_agreement"] == 1.0


def test_float32_builtin_ops_and_parity(converted):
    check_float32(converted[0], converted[1]["float32"])


def test_float32_parity_with_softmax_routing():
    model = layers_model("softmax")
    check_float32(model, tflite.convert(model, "float32"))


@pytest.mark.parametrize("mode,relative", [("dynamic", 0.03), ("float16", 0.01)])
def test_reduced_precision_parity(converted, mode, relative):
    model, blobs = converted
    tflite.assert_builtin_only(blobs[mode])
    reference = model(IMAGES).numpy()
    result = tflite.parity(reference, tflite.Runner(blobs[mode]).run(IMAGES))
    assert result["max_abs_error"] < relative * np.abs(reference).max()


def test_dynamic_range_stores_the_bases_as_int8(converted):
    """The mixing is a FULLY_CONNECTED with the (kernel size, E) bases as constant weights: int8 in 'dynamic'."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=converted[1]["dynamic"])
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    bases = [tensors[op["inputs"][1]] for op in interp._get_ops_details()
             if op["op_name"] == "FULLY_CONNECTED" and tensors[op["inputs"][1]]["shape"][-1] == 4
             and tensors[op["inputs"][1]]["shape"][0] >= 1024 // 4]
    assert len(bases) >= 3 and all(t["dtype"] == np.int8 for t in bases)


def test_int8_is_refused_at_conversion_naming_the_layer(converted):
    with pytest.raises(tflite.ConversionError, match=r"quantize='int8'.*CondConv2D.*float32, float16, dynamic"):
        tflite.convert(converted[0], "int8", representative=IMAGES)

