"""The export report: XNNPACK delegation, dtypes (a layer left float in an int8 export is flagged),
latency at 1 and 2 threads, parity, and the per-example MAdds distribution of dynamic bundles."""
import json

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines import export
from pipelines.export import report as export_report, tflite
from tests import bundle_fixtures as bf

L = keras.layers


def int8_with_a_float_layer():
    """An int8 export in which one layer (sin: no int8 kernel) silently stays float: the converter's
    builtin fallback wraps it in DEQUANTIZE/QUANTIZE instead of failing."""
    inp = keras.Input(bf.SHAPE, name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = L.Lambda(tf.sin, name="silently_float")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    net = keras.Model(inp, L.Dense(bf.CLASSES, name="logits")(x))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([tflite.serving_function(net).get_concrete_function()], net)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    reps = bf.images(16, seed=9)
    conv.representative_dataset = lambda: ([r[None]] for r in reps)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    return net, conv.convert()


def set_mode(directory, mode):
    spec = json.loads((directory / "model.json").read_text())
    spec["quantization"] = {"mode": mode}
    (directory / "model.json").write_text(json.dumps(spec))


def test_report_flags_a_layer_left_float_in_an_int8_export(tmp_path):
    net, data = int8_with_a_float_layer()
    bf.write_bundle(tmp_path, {"kind": "plain"}, {"model.tflite": data})
    set_mode(tmp_path, "int8")
    x = bf.images(6)
    report = export_report.build(tmp_path, net=net, images=x, runs=3, log=lambda *_: None)
    assert [(e["layer"], e["op"]) for e in report["float_layers"]] == [("silently_float", "SIN")]
    assert report["flags"] == ["model.tflite: layer 'silently_float' (SIN) computes in float32 in a int8 model"]
    info = report["files"]["model.tflite"]
    assert info["tensor_dtypes"]["weights"].get("int8", 0) >= 2 and "float32" in info["tensor_dtypes"]["activations"]
    # agrees with the export library's own count of float ops
    assert export.float_ops(data, "int8") == {"SIN": 1}
    assert "FLAG: model.tflite: layer 'silently_float'" in export_report.summary(report)
    assert set(info["latency_ms"]["default"]) == {"1", "2"}
    # LiteRT's benchmark tool (rounded to 0.01 ms: a tiny model may time 0.00)
    assert all(v["p95_ms"] >= v["median_ms"] >= 0 and v["runs"] == 3
               and isinstance(v["fully_accelerated"], bool) for v in info["latency_ms"]["default"].values())
    assert report["parity"]["n"] == 6


def test_clean_int8_export_has_no_flags(tmp_path):
    net = bf.tiny_net()
    bf.plain(tmp_path, mode="int8", net=net, representative=list(bf.images(16, seed=2)))
    set_mode(tmp_path, "int8")
    report = export_report.build(tmp_path, runs=2, log=lambda *_: None)
    assert report["float_layers"] == [] and report["flags"] == []
    assert "no layer left in float" in export_report.summary(report)


def test_xnnpack_share_shows_a_runtime_kernel_conv_is_not_delegated(tmp_path):
    """A static model is delegated whole; a conv whose filter is computed at run time stays on the
    reference kernels (DESIGN.md's measured fact), and the report says which op."""
    static = tflite.convert(bf.tiny_net())
    info = export_report.analyze(static, "float32")
    assert info["xnnpack_share"] == 1.0 and info["xnnpack_partitions"] == 1

    inp = keras.Input(bf.SHAPE, name="image")
    router = keras.Model(inp, L.Reshape((3, 3, 3, 4))(L.Dense(3 * 3 * 3 * 4)(L.GlobalAveragePooling2D()(inp))))

    @tf.function(input_signature=[tf.TensorSpec((1, *bf.SHAPE), tf.float32, name="image")])
    def dynamic(image):
        return {"logits": tf.reduce_mean(tf.nn.conv2d(image, router(image)[0], 1, "SAME"), axis=[1, 2])}

    data = tflite.convert_signatures({"serving_default": dynamic}, router)
    info = export_report.analyze(data, "float32")
    conv = [o for o in info["ops"] if o["op"] == "CONV_2D"]
    assert len(conv) == 1 and not conv[0]["xnnpack"]
    assert 0 < info["xnnpack_share"] < 1 and info["op_counts"]["CONV_2D"] == {"count": 1, "xnnpack": 0}


def test_dynamic_bundle_reports_per_example_madds_distribution(tmp_path):
    x = bf.images(16, seed=3)
    ref = bf.ds_net(tmp_path)(x)
    report = export_report.build(tmp_path, images=x, runs=2, log=lambda *_: None)
    chosen = ref["gate"].argmax(-1)
    want = np.where(chosen == 0, 10 + 200, 10 + 800).astype(float)
    m = report["madds"]
    assert m["per_example"] == want.tolist()
    assert sum(m["histogram"]["counts"]) == 16 and m["mean"] == pytest.approx(want.mean())
    assert m["min"] == 210 and m["max"] == 810
    assert report["stopped_at"] == {"width_0.5": int((chosen == 0).sum()), "width_1.0": int((chosen == 1).sum())}
    assert set(report["files"]) == {"gate.tflite", "width_0.5.tflite", "width_1.0.tflite"}
    assert "MAdds per example over 16 images" in export_report.summary(report)
