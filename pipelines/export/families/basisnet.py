"""Export a BasisNet as one ``.tflite`` with two signatures, so the app can stop after the preview.

* ``preview``: ``image`` (1, H, W, C) -> ``probabilities`` (1, classes), ``coefficients`` (1, groups, bases)
* ``specialist``: ``image``, ``coefficients`` -> ``probabilities`` (1, classes)

On the phone: run ``preview``; if ``max(probabilities) >= threshold`` answer with it (early termination),
else run ``specialist`` with the coefficients it returned. ``basisnet.json`` beside the model holds the
threshold, the signatures and the MAdds of each stage. Builtin ops only (checked); the Basis layers
use their batch-1 paths (folded / im2col / matmul kernels). Quantization: the modes every layer
supports (``float32``, ``float16``, ``dynamic``; `pipelines.export.tflite` refuses ``int8`` naming the layer).

    from pipelines.export.families.basisnet import export
    manifest = export(net, "out/", quantize="float32", threshold=0.7)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras_layers import _env  # noqa: F401
import tensorflow as tf

from keras_layers.models.basisnet_mobilenet_v3 import stages
from pipelines.export import tflite
from pipelines.export.policy import stops

SIGNATURES = ("preview", "specialist")


# ---------------------------------------------------------------- the early-termination policy (Sec. 4.6)

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2))


def check_threshold(value, name="threshold"):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; received {name}={value!r}")
    return float(value)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(net, images, batch_size=256):
    """Run the net on `images`; returns NumPy {"preview_probs", "probs", "coefficients"}."""
    outs = {"preview_probs": [], "probs": [], "coefficients": []}
    for i in range(0, len(images), batch_size):
        out = net(images[i:i + batch_size], training=False)
        outs["preview_probs"].append(_softmax(np.asarray(out["preview_logits"], np.float64)))
        outs["probs"].append(_softmax(np.asarray(out["logits"], np.float64)))
        outs["coefficients"].append(np.asarray(out["coefficients"]))
    return {k: np.concatenate(v) for k, v in outs.items()}


def stage_madds(net, input_shape):
    """MAdds per example of the preview alone and of the whole BasisNet (preview + specialist)."""
    from keras_layers import count_madds

    return {"preview": count_madds(net, tuple(input_shape), output="preview_logits"),
            "full": count_madds(net, tuple(input_shape))}


def early_termination(outputs, labels, madds, thresholds=DEFAULT_THRESHOLDS):
    """Sweep thresholds (vectorised). Returns a dict of arrays, one entry per threshold:
    threshold, accuracy, stopped (fraction of examples answered by the preview), madds (average)."""
    t = np.asarray([check_threshold(v) for v in thresholds], np.float64)
    labels = np.asarray(labels).reshape(-1)
    conf = outputs["preview_probs"].max(axis=-1)
    preview_ok = outputs["preview_probs"].argmax(axis=-1) == labels
    final_ok = outputs["probs"].argmax(axis=-1) == labels
    stop = stops(conf[None, :], t[:, None])  # (thresholds, examples)
    correct = np.where(stop, preview_ok[None, :], final_ok[None, :])
    stopped = stop.mean(axis=1)
    return {
        "threshold": t,
        "accuracy": correct.mean(axis=1),
        "stopped": stopped,
        "madds": madds["preview"] + (1.0 - stopped) * (madds["full"] - madds["preview"]),
        "reference_accuracy": float(final_ok.mean()),
        "preview_accuracy": float(preview_ok.mean()),
        "full_madds": float(madds["full"]),
        "preview_madds": float(madds["preview"]),
    }


def pick_threshold(table, max_drop=0.005):
    """The threshold with the lowest average MAdds whose accuracy is within `max_drop` (a fraction:
    0.005 = 0.5 points) of the full BasisNet's; ties go to the more accurate one."""
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0.0 <= max_drop <= 1.0:
        raise ValueError(f"max_drop must be in [0, 1]; received max_drop={max_drop!r}")
    ok = table["accuracy"] >= table["reference_accuracy"] - max_drop - 1e-12
    if not ok.any():  # only possible when every threshold is below the reference: take the most accurate
        ok = table["accuracy"] == table["accuracy"].max()
    idx = np.flatnonzero(ok)
    best = idx[np.lexsort((-table["accuracy"][idx], table["madds"][idx]))[0]]
    return row(table, best)


def row(table, i):
    r = {k: float(table[k][i]) for k in ("threshold", "accuracy", "stopped", "madds")}
    r["accuracy_drop"] = table["reference_accuracy"] - r["accuracy"]
    r["madds_saving"] = 1.0 - r["madds"] / table["full_madds"]
    return r


def apply_threshold(outputs, labels, madds, threshold):
    """Accuracy, fraction stopped and average MAdds at one threshold (e.g. the picked one on test)."""
    table = early_termination(outputs, labels, madds, [check_threshold(threshold)])
    return row(table, 0) | {"reference_accuracy": table["reference_accuracy"]}


# ---------------------------------------------------------------- conversion


def signature_functions(net, outputs="probabilities"):
    """The two batch-1 `tf.function`s, {"preview": ..., "specialist": ...}.

    `outputs="probabilities"` (this exporter's layout): preview -> {"probabilities", "coefficients"},
    specialist -> {"probabilities"}. `outputs="logits"` (the Android bundle of `pipelines.export`, whose
    runner takes the softmax itself): preview -> {"preview_logits", "coefficients"}, specialist -> {"logits"}.
    """
    if outputs not in ("probabilities", "logits"):
        raise ValueError(f"outputs must be 'probabilities' or 'logits'; received outputs={outputs!r}")
    as_logits = outputs == "logits"
    preview, specialist = stages(net)
    shape = tuple(net.input_shape[1:])
    coeff_shape = tuple(specialist.inputs[1].shape[1:])
    image_spec = tf.TensorSpec((1, *shape), tf.float32, name="image")

    @tf.function(input_signature=[image_spec])
    def preview_fn(image):
        out = preview(image, training=False)
        if as_logits:
            return {"preview_logits": out["preview_logits"], "coefficients": out["coefficients"]}
        return {"probabilities": tf.nn.softmax(out["preview_logits"]), "coefficients": out["coefficients"]}

    @tf.function(input_signature=[image_spec, tf.TensorSpec((1, *coeff_shape), tf.float32, name="coefficients")])
    def specialist_fn(image, coefficients):
        logits = specialist([image, coefficients], training=False)
        return {"logits": logits} if as_logits else {"probabilities": tf.nn.softmax(logits)}

    return {"preview": preview_fn, "specialist": specialist_fn}


def convert(net, quantize="float32", outputs="probabilities"):
    """TFLite bytes of `net` with the `preview` and `specialist` signatures (builtin ops only)."""
    data = tflite.convert_signatures(signature_functions(net, outputs), net, quantize)
    tflite.assert_builtin_only(data)
    return data


def export(net, out_dir, quantize="float32", threshold=0.7, name="basisnet"):
    """Write ``<name>.tflite`` and ``<name>.json`` under `out_dir`; returns the manifest."""
    threshold = check_threshold(threshold)
    preview, specialist = stages(net)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = convert(net, quantize)
    (out / f"{name}.tflite").write_bytes(data)
    shape = tuple(net.input_shape[1:])
    madds = stage_madds(net, shape)
    manifest = {
        "family": "basisnet", "model": net.name, "tflite": f"{name}.tflite", "tflite_bytes": len(data),
        "quantize": quantize, "input_shape": list(shape), "threshold": threshold,
        "rule": "answer with preview if max(preview.probabilities) >= threshold, else run specialist",
        "signatures": {
            "preview": {"inputs": ["image"], "outputs": ["probabilities", "coefficients"]},
            "specialist": {"inputs": ["image", "coefficients"], "outputs": ["probabilities"]},
        },
        "coefficients_shape": [1, *specialist.inputs[1].shape[1:]],
        "madds": {"preview": madds["preview"], "specialist": madds["full"] - madds["preview"], "full": madds["full"]},
    }
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2))
    return manifest
