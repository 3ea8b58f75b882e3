"""Kernel-mixing layers on LiteRT: builtin ops only at batch 1, float32 / float16 / dynamic parity, int8 refused.

(The float32 parity of every registered model, condconv_mobilenet_v2 included: test_models_registry.py.)
XNNPACK delegation is read with `tflite.delegation` (the interpreter's graph after the default delegate).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.basis import BasisConv2D, BasisDepthwiseConv2D
from keras_layers.condconv import CondConv2D, CondDense, CondDepthwiseConv2D, CondRouting
from pipelines.export import tflite

# The helper lives in tests/keras_layers: put it on the path so that this file also runs alone.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "keras_layers"))
from random_weights import randomize  # noqa: E402

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



def test_delegation_counts_what_xnnpack_takes():
    """A static model is delegated whole; a depthwise conv whose filter is computed at run time is not."""
    image = keras.Input((8, 8, 4), name="image")
    static = keras.Model(image, L.Dense(3)(L.GlobalAveragePooling2D()(L.DepthwiseConv2D(3, padding="same")(image))))
    d = tflite.delegation(tflite.convert(static))
    assert d["ops"] >= 3 and d["delegated"] == d["ops"] and d["share"] == 1.0 and d["not_delegated"] == {}
    r = CondRouting(2, name="shared")(image)
    dynamic = keras.Model(image, BasisDepthwiseConv2D(3, num_bases=2, method="folded")(image, r))
    d = tflite.delegation(tflite.convert(dynamic))
    assert d["not_delegated"] == {"DEPTHWISE_CONV_2D": 1} and d["delegated"] == d["ops"] - 1


def test_batch1_folded_kernels_leave_only_the_run_time_filter_convs_to_litert(converted):
    """The folded (batch-1) kernels drop the batch axis by RESHAPE: a STRIDED_SLICE there was left outside
    XNNPACK (one per depthwise layer, ~0.19 ms of a 32x32 condconv_mobilenet_v2)."""
    for mode in ("float32", "dynamic"):
        d = tflite.delegation(converted[1][mode])
        assert set(d["not_delegated"]) == {"DEPTHWISE_CONV_2D"}, (mode, d)
        assert d["not_delegated"]["DEPTHWISE_CONV_2D"] == 2  # the model's two depthwise layers


def test_condconv_mobilenet_v2_runs_nearly_all_on_xnnpack():
    """Issue 17: XNNPACK runs >= 95% of the operators of the registry model; parity < 1e-3 in float32."""
    from keras_layers import models

    net = randomize(models.build("condconv_mobilenet_v2", num_experts=4, last_channels=320))
    blob = tflite.convert(net)
    d = tflite.delegation(blob)
    assert d["share"] >= 0.95 and set(d["not_delegated"]) <= {"DEPTHWISE_CONV_2D"}, d
    images = np.random.RandomState(2).randn(8, 32, 32, 3).astype("float32")
    reference = net(images).numpy()
    p = tflite.parity(reference, tflite.Runner(blob).run(images))
    assert np.abs(reference).max() > 0.1 and p["max_abs_error"] < 1e-3 and p["top1_agreement"] == 1.0


@pytest.mark.parametrize("experts", [1, 2])
def test_expert_outputs_mixed_at_batch_1_run_whole_on_xnnpack(experts):
    """The ``experts`` path at batch 1 (auto's choice for one expert): static CONV_2D / DEPTHWISE_CONV_2D /
    FULLY_CONNECTED, then MUL and ADD - every operator on XNNPACK, no kernel mixed per example, parity."""
    image = keras.Input((8, 8, 4), name="image")
    r = CondRouting(experts, name="shared")(image)
    x = BasisConv2D(6, 3, num_bases=experts, method="experts", activation="relu")(image, r)
    x = BasisDepthwiseConv2D(3, num_bases=experts, strides=2, method="experts")(x, r)
    x = BasisConv2D(8, 1, num_bases=experts, method="experts")(x, r)
    x = L.GlobalAveragePooling2D()(x)
    model = randomize(keras.Model(image, CondDense(5, num_experts=experts, method="experts")(x)))
    blob = tflite.convert(model)
    d = tflite.delegation(blob)
    assert d["not_delegated"] == {} and d["share"] == 1.0, d
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MUL"} <= set(tflite.op_names(blob))
    images = np.random.RandomState(3).randn(4, 8, 8, 4).astype("float32")
    reference = model(images).numpy()
    p = tflite.parity(reference, tflite.Runner(blob).run(images))
    assert np.abs(reference).max() > 0.1 and p["max_abs_error"] < 1e-4 and p["top1_agreement"] == 1.0


def test_batch1_matmuls_are_single_products(converted):
    """A 1x1 (and im2col) BATCH_MATMUL at batch 1 has batch axes of 1 only: given (1, H, W, C), XNNPACK runs
    H products of W rows (4-6% of condconv_mobilenet_v2's time)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=converted[1]["float32"])
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in interp.get_tensor_details()}
    left = [shapes[op["inputs"][0]] for op in interp._get_ops_details() if op["op_name"] == "BATCH_MATMUL"]
    assert len(left) >= 4 and all(np.prod(s[:-2]) == 1 for s in left), left
