"""Tiny hand-built bundles (one per model.json kind) and the Keras pieces they came from, so tests can
compare the bundle runner against a reference without training a family model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines.export import tflite

L = keras.layers
SHAPE = (8, 8, 3)
CLASSES = 3
LABELS = ["ant", "bee", "cat"]
NORM = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


def _dense_head(x, units, name, seed):
    return L.Dense(units, name=name, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed))(x)


def tiny_net(seed=0, name="tiny", inputs=None):
    inp = inputs or keras.Input(SHAPE, name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed))(inp)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, _dense_head(x, CLASSES, "logits", seed + 1), name=name)


def write_bundle(directory, spec, files):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "labels.txt").write_text("\n".join(LABELS) + "\n")
    # the input block as `pipelines.export.model_json` writes it
    spec = {"format_version": 1, "input": {"shape": [1, *SHAPE], "normalization": {"input_range": [0.0, 1.0], **NORM}},
            "labels": "labels.txt", **spec}
    (directory / "model.json").write_text(json.dumps(spec, indent=1))
    return directory


def plain(directory, mode="float32", net=None, representative=None):
    net = net or tiny_net()
    data = tflite.convert(net, mode, representative=representative)
    write_bundle(directory, {"kind": "plain", "stages": {"main": {"file": "model.tflite", "madds": 1000}}},
                 {"model.tflite": data})
    return net, lambda x: {"main": net(x).numpy()}


def basisnet(directory, threshold):
    """One file, two signatures: preview(image) -> preview_logits, coefficients;
    specialist(image, coefficients) -> logits."""
    img = keras.Input(SHAPE, name="image")
    feat = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, padding="same", activation="relu")(img))
    preview_net = keras.Model(img, [_dense_head(feat, CLASSES, "preview_logits", 3),
                                    L.Dense(2, activation="softmax", name="coefficients")(feat)])
    coef = keras.Input((2,), name="coefficients")
    f2 = L.GlobalAveragePooling2D()(L.Conv2D(6, 3, padding="same", activation="relu")(img))
    spec_net = keras.Model([img, coef], _dense_head(L.Concatenate()([f2, coef]), CLASSES, "logits", 5))

    @tf.function(input_signature=[tf.TensorSpec((1, *SHAPE), tf.float32, name="image")])
    def preview(image):
        p, c = preview_net(image)
        return {"preview_logits": p, "coefficients": c}

    @tf.function(input_signature=[tf.TensorSpec((1, *SHAPE), tf.float32, name="image"),
                                  tf.TensorSpec((1, 2), tf.float32, name="coefficients")])
    def specialist(image, coefficients):
        return {"logits": spec_net([image, coefficients])}

    data = tflite.convert_signatures({"preview": preview, "specialist": specialist}, [preview_net, spec_net])
    write_bundle(directory, {"kind": "basisnet", "threshold": threshold, "stages": {
        "preview": {"file": "model.tflite", "signature": "preview", "logits": "preview_logits", "madds": 100},
        "specialist": {"file": "model.tflite", "signature": "specialist", "logits": "logits", "madds": 900}}},
        {"model.tflite": data})

    def reference(x):
        p, c = preview_net(x)
        return {"preview": p.numpy(), "specialist": spec_net([x, c]).numpy()}

    return reference


def multi_exit(directory, threshold):
    """Two files: exit_0(image) -> logits, features; exit_1(features) -> logits."""
    img = keras.Input(SHAPE, name="image")
    f = L.Conv2D(4, 3, padding="same", activation="relu")(img)
    stage0 = keras.Model(img, [_dense_head(L.GlobalAveragePooling2D()(f), CLASSES, "logits", 7), f])
    fin = keras.Input((8, 8, 4), name="features")
    g = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, padding="same", activation="relu")(fin))
    stage1 = keras.Model(fin, _dense_head(g, CLASSES, "logits", 9))

    @tf.function(input_signature=[tf.TensorSpec((1, *SHAPE), tf.float32, name="image")])
    def exit_0(image):
        logits, feats = stage0(image)
        return {"logits": logits, "features": feats}

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 4), tf.float32, name="features")])
    def exit_1(features):
        return {"logits": stage1(features)}

    files = {"exit_0.tflite": tflite.convert_signatures({"exit_0": exit_0}, stage0),
             "exit_1.tflite": tflite.convert_signatures({"exit_1": exit_1}, stage1)}
    write_bundle(directory, {"kind": "multi_exit", "threshold": threshold, "exits": ["exit_0", "exit_1"], "stages": {
        "exit_0": {"file": "exit_0.tflite", "logits": "logits", "madds": 300},
        "exit_1": {"file": "exit_1.tflite", "logits": "logits", "madds": 500}}}, files)

    def reference(x):
        logits0, feats = stage0(x)
        return {"exit_0": logits0.numpy(), "exit_1": stage1(feats).numpy()}

    return reference


def ds_net(directory):
    """Three files: gate(image) -> width_logits (2 choices); width_0.5 and width_1.0 (image) -> logits."""
    img = keras.Input(SHAPE, name="image")
    gate = keras.Model(img, _dense_head(L.Flatten()(img), 2, "width_logits", 11))
    narrow, wide = tiny_net(seed=20, name="narrow"), tiny_net(seed=30, name="wide")
    files = {"gate.tflite": tflite.convert(gate), "width_0.5.tflite": tflite.convert(narrow),
             "width_1.0.tflite": tflite.convert(wide)}
    write_bundle(directory, {"kind": "ds_net", "gate": "gate", "gate_output": "output_0",
                             "widths": [[0.5, "width_0.5"], [1.0, "width_1.0"]], "stages": {
                                 "gate": {"file": "gate.tflite", "madds": 10},
                                 "width_0.5": {"file": "width_0.5.tflite", "madds": 200},
                                 "width_1.0": {"file": "width_1.0.tflite", "madds": 800}}}, files)

    def reference(x):
        return {"gate": gate(x).numpy(), "width_0.5": narrow(x).numpy(), "width_1.0": wide(x).numpy()}

    return reference


def images(n=8, seed=0):
    return np.random.RandomState(seed).randn(n, *SHAPE).astype("float32")
