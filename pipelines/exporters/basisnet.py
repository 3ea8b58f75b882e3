"""Export a BasisNet as one ``.tflite`` with two signatures, so the app can stop after the preview.

* ``preview``: ``image`` (1, H, W, C) -> ``probabilities`` (1, classes), ``coefficients`` (1, groups, bases)
* ``specialist``: ``image``, ``coefficients`` -> ``probabilities`` (1, classes)

On the phone: run ``preview``; if ``max(probabilities) > threshold`` answer with it (early termination),
else run ``specialist`` with the coefficients it returned. ``basisnet.json`` beside the model holds the
threshold, the signatures and the MAdds of each stage. Builtin ops only (checked); the Basis layers
use their batch-1 paths (folded / im2col / matmul kernels). Quantization: the modes every layer
supports (``float32``, ``float16``, ``dynamic``; `pipelines.tflite` refuses ``int8`` naming the layer).

    from pipelines.exporters.basisnet import export
    manifest = export(net, "out/", quantize="float32", threshold=0.7)
"""
from __future__ import annotations

import json
from pathlib import Path

from keras_layers import env  # noqa: F401
import tensorflow as tf

from keras_layers.models.basisnet_mobilenet_v3 import stages
from pipelines import tflite
from pipelines.basisnet_eval import check_threshold, stage_madds

SIGNATURES = ("preview", "specialist")


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
        "rule": "answer with preview if max(preview.probabilities) > threshold, else run specialist",
        "signatures": {
            "preview": {"inputs": ["image"], "outputs": ["probabilities", "coefficients"]},
            "specialist": {"inputs": ["image", "coefficients"], "outputs": ["probabilities"]},
        },
        "coefficients_shape": [1, *specialist.inputs[1].shape[1:]],
        "madds": {"preview": madds["preview"], "specialist": madds["full"] - madds["preview"], "full": madds["full"]},
    }
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2))
    return manifest
