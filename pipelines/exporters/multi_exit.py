"""Export a multi-exit network for Android: one TFLite model per exit prefix + `multi_exit.json`.

    from pipelines.exporters import multi_exit
    manifest = multi_exit.export(net, "out/", quantize="float16", budget=0.6 * last_cost,
                                 validation=(x_val, y_val))

Writes ``exit_<k>.tflite`` for every exit k: the network from the image up to exit k (everything
that exit depends on, earlier heads included when Inline Subnetwork Collaboration feeds it), batch 1,
output ``exit_<k>`` (logits). The app runs ``exit_0``; if its top softmax probability is >= the
exit's threshold it stops, otherwise it runs the next prefix, and so on; the last exit always
answers. `multi_exit.json` beside them lists, per exit, the file, the cumulative MAdds of reaching
it, and the threshold (a threshold above 1 means "never stop here", 0 "always stop").
Thresholds are given, or chosen on a validation split for a target average MAdds
(`pipelines.budgeted.search_thresholds`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

MANIFEST = "multi_exit.json"
NEVER = 2.0  # a threshold no softmax probability reaches


def _json_threshold(t):
    t = float(t)
    if math.isinf(t):
        return NEVER if t > 0 else 0.0
    return min(max(t, 0.0), NEVER)


def choose_thresholds(net, budget, validation, input_shape=None):
    """Thresholds for a target average MAdds `budget`, searched on `validation=(images, labels)`."""
    from keras_layers.models.multi_exit_net import exit_madds
    from pipelines import budgeted

    x, y = validation
    costs = exit_madds(net, input_shape or tuple(net.input_shape[1:]))
    return budgeted.search_thresholds(budgeted.exit_probabilities(net, x), y, costs, budget)


def export(net, out_dir, *, quantize="float32", thresholds=None, budget=None, validation=None, input_shape=None,
           representative=None, metadata=None):
    """Write one TFLite per exit prefix and the manifest into `out_dir`; returns the manifest dict."""
    from keras_layers.models.multi_exit_net import exit_madds, exit_prefix, num_exits
    from pipelines import tflite

    k = num_exits(net)
    input_shape = tuple(input_shape or net.input_shape[1:])
    chosen = None
    if thresholds is None and budget is not None:
        if validation is None:
            raise ValueError("budget= needs validation=(images, labels) to choose the thresholds on")
        chosen = choose_thresholds(net, budget, validation, input_shape)
        thresholds = chosen["thresholds"]
    if thresholds is None:
        thresholds = [math.inf] * (k - 1) + [-math.inf]  # no early exit until the app sets its own
    thresholds = list(thresholds)
    if len(thresholds) != k:
        raise ValueError(f"thresholds needs one value per exit ({k}); received thresholds={thresholds!r}")
    costs = exit_madds(net, input_shape)
    for m in [net]:
        tflite.check_quantization(m, quantize)  # fail before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exits = []
    for i in range(k):
        data = tflite.convert(exit_prefix(net, i), quantize, representative=representative)
        tflite.assert_builtin_only(data)
        name = f"exit_{i}.tflite"
        (out / name).write_bytes(data)
        threshold = -math.inf if i == k - 1 else thresholds[i]
        exits.append({"exit": i, "file": name, "output": f"exit_{i}", "madds": int(costs[i]),
                      "threshold": _json_threshold(threshold)})
    manifest = {"format": "multi_exit/1", "input_shape": list(input_shape),
                "num_classes": int(net.output_shape["exit_0"][-1]), "quantize": quantize,
                "confidence": "max softmax probability; stop at the first exit with confidence >= threshold",
                "exits": exits, **({"budget": float(budget), "validation": {
                    "accuracy": chosen["accuracy"], "avg_madds": chosen["avg_madds"]}} if chosen else {}),
                **(metadata or {})}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def run_exported(out_dir, images, num_threads=None):
    """Run the exported prefixes the app's way: per example, exit by exit until a threshold is met.

    Returns (predictions (N,), exit index (N,), average MAdds) — the on-device early-exit path.
    """
    from pipelines import tflite

    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST).read_text())
    runners = [tflite.Runner(out / e["file"], num_threads=num_threads) for e in manifest["exits"]]
    preds, exits = [], []
    for x in np.asarray(images, np.float32):
        for e, runner in zip(manifest["exits"], runners):
            logits = runner.run_one(x[None])[e["output"]][0]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            if p.max() >= e["threshold"] or e is manifest["exits"][-1]:
                preds.append(int(p.argmax()))
                exits.append(e["exit"])
                break
    exits = np.asarray(exits)
    costs = np.asarray([e["madds"] for e in manifest["exits"]], np.float64)
    return np.asarray(preds), exits, float(costs[exits].mean())
