"""BasisNet (Zhang et al.): the preview answers when it is sure enough, else the specialist runs with the
coefficients the preview predicted. The family plugin, the early-termination policy (Sec. 4.6) the
experiments and the export share, and the conversion to one ``.tflite`` with two signatures:

* ``preview``: ``image`` (1, H, W, C) -> ``preview_logits`` (1, classes), ``coefficients`` (1, groups, bases)
* ``specialist``: ``image``, ``coefficients`` -> ``logits`` (1, classes)

On the phone: run ``preview``; if its top softmax probability is ``>= threshold``
(`pipelines.export.policy.stops`) answer with it (early termination), else run ``specialist`` with the
coefficients it returned. The threshold is given, or picked on validation images (`select_threshold`:
the cheapest within `pick_threshold`'s accuracy drop of the full BasisNet among the thresholds that send
at least `MIN_SPECIALIST_SHARE` of them on to the specialist, tried at every distinct stop set of those
images and placed midway between their confidences (`select`); model.json's ``threshold_selection``
records the share, ``past_first_stage``). Builtin ops only (checked);
the Basis layers use their batch-1 paths (folded / im2col / matmul kernels). Quantization: the modes
every layer supports (``float32``, ``float16``, ``dynamic``; `int8` is refused naming the layer).

`pipelines.export.export_net` writes the Android bundle with this plugin.
"""
from __future__ import annotations


import numpy as np

from pipelines.export.families import Family, register
from pipelines.export.policy import midpoint, need_probability, need_stage, softmax, stops, top_probability

SIGNATURES = ("preview", "specialist")


# ---------------------------------------------------------------- the early-termination policy (Sec. 4.6)

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2))


def check_threshold(value, name="threshold"):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; received {name}={value!r}")
    return float(value)


def predict(net, images, batch_size=256):
    """Run the net on `images`; returns NumPy {"preview_probs", "probs", "coefficients"}."""
    from pipelines.export.checks import keras_outputs

    out = keras_outputs(net, images, batch_size)
    return {"preview_probs": softmax(out["preview_logits"]), "probs": softmax(out["logits"]),
            "coefficients": out["coefficients"]}


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


def pick_threshold(table, max_drop=0.005, min_past=0.0):
    """The threshold with the lowest average MAdds whose accuracy is within `max_drop` (a fraction:
    0.005 = 0.5 points) of the full BasisNet's; ties go to the more accurate one. With `min_past` > 0 only
    thresholds that send at least that share of the images past the preview to the specialist count (the
    export's deployment rule, `MIN_SPECIALIST_SHARE`); where none of them is within `max_drop`, the most
    accurate of them."""
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0.0 <= max_drop <= 1.0:
        raise ValueError(f"max_drop must be in [0, 1]; received max_drop={max_drop!r}")
    if isinstance(min_past, bool) or not isinstance(min_past, (int, float)) or not 0.0 <= min_past <= 1.0:
        raise ValueError(f"min_past must be in [0, 1]; received min_past={min_past!r}")
    allowed = (1.0 - table["stopped"]) >= min_past - 1e-12
    if not allowed.any():  # no threshold sends that many on (the most confident images reach probability 1)
        allowed = table["stopped"] == table["stopped"].min()
    ok = allowed & (table["accuracy"] >= table["reference_accuracy"] - max_drop - 1e-12)
    if not ok.any():  # every allowed threshold is below the reference: take the most accurate of them
        ok = allowed & (table["accuracy"] == table["accuracy"][allowed].max())
    idx = np.flatnonzero(ok)
    best = idx[np.lexsort((-table["accuracy"][idx], table["madds"][idx]))[0]]
    return row(table, best)


FINE_LEVELS = 1001  # at most this many quantiles of the confidences are tried where there are more images


def fine_thresholds(confidence, levels=FINE_LEVELS):
    """The thresholds `select` tries: the grid and every distinct stop set of these examples (their own
    confidences; past `levels` examples, `levels` quantiles of them). The grid's steps of 0.05 are coarse
    exactly where a trained preview's confidences crowd (0.9-1.0): on cluttered-digits 0.90 and 0.95 stopped
    28% and 21% of the images, and nothing between them was tried."""
    conf = np.asarray(confidence, np.float64).ravel()
    own = conf if conf.size <= levels else np.quantile(conf, np.linspace(0.0, 1.0, levels))
    return np.unique(np.concatenate([np.asarray(DEFAULT_THRESHOLDS, np.float64), np.clip(own, 0.0, 1.0)]))


def select(outputs, labels, madds, max_drop=0.005, min_past=0.0):
    """`pick_threshold` over `fine_thresholds` (the experiment's pick and the export's, one rule): the cheapest
    threshold within `max_drop` of the full BasisNet among those that send at least `min_past` on, moved to
    the `midpoint` of the confidences it separates. Returns its `row` and the reference and preview
    accuracies."""
    conf = np.asarray(outputs["preview_probs"]).max(axis=-1)
    table = early_termination(outputs, labels, madds, fine_thresholds(conf))
    picked = pick_threshold(table, max_drop, min_past)
    picked["threshold"] = float(midpoint(conf, picked["threshold"]))
    return picked | {"reference_accuracy": table["reference_accuracy"],
                     "preview_accuracy": table["preview_accuracy"]}


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


def signature_functions(net):
    """The two batch-1 `tf.function`s of the bundle, {"preview": ..., "specialist": ...}: preview ->
    {"preview_logits", "coefficients"}, specialist -> {"logits"} (the runner takes the softmax itself)."""
    import tensorflow as tf

    from keras_layers.models.basisnet_mobilenet_v3 import stages

    preview, specialist = stages(net)
    shape = tuple(net.input_shape[1:])
    coeff_shape = tuple(specialist.inputs[1].shape[1:])
    image_spec = tf.TensorSpec((1, *shape), tf.float32, name="image")

    @tf.function(input_signature=[image_spec])
    def preview_fn(image):
        out = preview(image, training=False)
        return {"preview_logits": out["preview_logits"], "coefficients": out["coefficients"]}

    @tf.function(input_signature=[image_spec, tf.TensorSpec((1, *coeff_shape), tf.float32, name="coefficients")])
    def specialist_fn(image, coefficients):
        return {"logits": specialist([image, coefficients], training=False)}

    return {"preview": preview_fn, "specialist": specialist_fn}


def convert(net, quantize="float32"):
    """TFLite bytes of `net` with the `preview` and `specialist` signatures (builtin ops only)."""
    from pipelines.export import tflite

    data = tflite.convert_signatures(signature_functions(net), net, quantize)
    tflite.assert_builtin_only(data)
    return data


# ---------------------------------------------------------------- the family plugin

# The export's deployment rule: at least this share of the validation images goes on to the specialist.
# `pick_threshold` alone (the paper's rule: the cheapest threshold within the allowed drop) picks 0.00,
# "the preview answers everything", whenever the preview is within the drop of the full BasisNet on the
# validation split; on digits (270 validation images, 0.5 points = 1.3 images) that happens after a few
# epochs, and a bundle whose specialist never runs ships the specialist's weights for nothing and leaves
# its on-device path unexercised. Kept at 10% the bundle still answers most images at the preview's cost.
MIN_SPECIALIST_SHARE = 0.10


def select_threshold(net, validation, madds=None, log=print, min_past=MIN_SPECIALIST_SHARE):
    """`pick_threshold` of the `early_termination` sweep on `validation=(images, labels)`: the cheapest
    preview threshold within its default accuracy drop of the full BasisNet among those that send at least
    `min_past` of the images on to the specialist; returns its row plus "past_first_stage" (that share)
    and "min_past_first_stage"."""
    x, y = validation
    madds = madds or stage_madds(net, tuple(net.input_shape[1:]))
    picked = select(predict(net, x), y, madds, min_past=min_past)
    picked.update(past_first_stage=1.0 - picked["stopped"], min_past_first_stage=float(min_past))
    log(f"basisnet threshold {picked['threshold']:.4f} picked on {len(x)} validation images (preview answers "
        f"{picked['stopped']:.0%}, {picked['past_first_stage']:.0%} go on to the specialist (at least "
        f"{min_past:.0%}); accuracy {picked['accuracy']:.4f}, full BasisNet {picked['reference_accuracy']:.4f}, "
        f"preview alone {picked['preview_accuracy']:.4f})")
    return picked


@register
class BasisNet(Family):
    """model.json: stages "preview" and "specialist" (one file, two signatures), "threshold"."""

    kind = "basisnet"
    policy_options = ("threshold",)

    def detect(self, net):
        return {"preview_logits", "coefficients"} <= self.output_names(net)

    def selects(self, options):
        return options.threshold is None

    def stages(self, net, mode, selection, options, log):
        from pipelines.export.convert import Conversion

        madds = stage_madds(net, tuple(net.input_shape[1:]))
        threshold, picked = options.threshold, None
        if threshold is None:
            picked = select_threshold(net, selection, madds, log)
            threshold = picked["threshold"]
        threshold = check_threshold(threshold)
        data = convert(net, mode)
        spec = {"kind": self.kind, "threshold": threshold, "stages": {
            "preview": {"file": "model.tflite", "signature": "preview", "logits": "preview_logits",
                        "madds": int(madds["preview"])},
            "specialist": {"file": "model.tflite", "signature": "specialist", "logits": "logits",
                           "madds": int(madds["full"] - madds["preview"])}}}
        if picked:
            spec["threshold_selection"] = {"split": "validation", "images": int(len(selection[0])), **picked}
        return Conversion.of(data, mode), {}, spec

    def validate_spec(self, spec, stages):
        for name in SIGNATURES:
            need_stage(stages, f"stages.{name}", name if name in stages else None)
        need_probability("threshold", spec.get("threshold"))

    def run_policy(self, bundle, image):
        state = {}
        logits = bundle.logits("preview", image, state)
        if stops(top_probability(logits), bundle.spec["threshold"]):
            return "preview", logits, ["preview"]
        return "specialist", bundle.logits("specialist", image, state), ["preview", "specialist"]

    def keras_policy(self, net, spec, images):
        from pipelines.export.checks import keras_outputs

        out = keras_outputs(net, images)
        stop = stops(top_probability(out["preview_logits"]), spec["threshold"])
        return (np.where(stop, "preview", "specialist"),
                np.where(stop[:, None], out["preview_logits"], out["logits"]))
