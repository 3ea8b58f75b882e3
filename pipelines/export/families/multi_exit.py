"""Export a multi-exit network for Android: TFLite + `multi_exit.json` (thresholds, per-exit MAdds).

    from pipelines.export.families import multi_exit
    manifest = multi_exit.export(net, "out/", quantize="float16", budget=0.6 * last_cost,
                                 validation=(x_val, y_val))

Two layouts (``layout=``):

* ``"segments"`` (default): one `multi_exit.tflite` with a signature per exit. Signature ``exit_0``
  maps the image to ``{"logits", "features"}``; signature ``exit_k`` (k > 0) maps the previous
  signature's ``features`` (and ``previous_logits`` when Inline Subnetwork Collaboration feeds exit
  k) to the next ``{"logits", "features"}``. An early-exit app runs them in order and never
  recomputes a layer, so the cost of stopping at exit k is the cumulative MAdds in the manifest.
* ``"prefixes"``: ``exit_<k>.tflite`` per exit, each the whole network from the image up to exit k
  (output ``exit_<k>``): simplest when the app picks one fixed exit for a device (anytime setting);
  escalating from prefix k to k+1 recomputes the shared layers.

The app stops at the first exit whose top softmax probability is >= that exit's threshold; the last
exit always answers (a threshold above 1 means "never stop here", 0 "always stop"). Thresholds are
given, or chosen on a validation split for a target average MAdds (`pipelines.export.budgeted`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

MANIFEST = "multi_exit.json"
MODEL_FILE = "multi_exit.tflite"
LAYOUTS = ("segments", "prefixes")
NEVER = 2.0  # a threshold no softmax probability reaches


def _json_threshold(t):
    t = float(t)
    if math.isinf(t):
        return NEVER if t > 0 else 0.0
    return min(max(t, 0.0), NEVER)


def choose_thresholds(net, budget, validation, input_shape=None):
    """Thresholds for a target average MAdds `budget`, searched on `validation=(images, labels)`."""
    from keras_layers.models.multi_exit_net import exit_madds
    from pipelines.export import budgeted

    x, y = validation
    costs = exit_madds(net, input_shape or tuple(net.input_shape[1:]))
    return budgeted.search_thresholds(budgeted.exit_probabilities(net, x), y, costs, budget)


def _replay(feeds, targets):
    """Compute keras tensors `targets` of a functional graph from `feeds` {id(keras tensor): tensor},
    calling each layer once (inference mode); only the layers between the feeds and the targets run."""
    import tensorflow as tf

    done = {}

    def value(kt):
        if id(kt) in feeds:
            return feeds[id(kt)]
        layer, node_index, tensor_index = kt._keras_history
        key = (id(layer), node_index)
        if key not in done:
            node = layer._inbound_nodes[node_index]
            if node.is_input:
                raise ValueError(f"segment export: input {kt.name!r} is needed but not fed")
            fill = lambda t: value(t) if hasattr(t, "_keras_history") else t  # noqa: E731
            args = tf.nest.map_structure(fill, node.call_args)
            kwargs = tf.nest.map_structure(fill, dict(node.call_kwargs))
            if getattr(layer, "_expects_training_arg", False):
                kwargs["training"] = False
            done[key] = tf.nest.flatten(layer(*args, **kwargs))
        return done[key][tensor_index]

    return [value(t) for t in targets]


def segment_functions(net, previous_logits="previous_logits"):
    """{"exit_k": tf.function} running the network from stage k-1's features to exit k (see module doc).

    `previous_logits`: the name of exit k-1's logits as an input of exit k (Inline Subnetwork
    Collaboration); the Android bundle of `pipelines.export` names it "logits", the output it comes from.
    """
    import tensorflow as tf
    from keras_layers.models.multi_exit_net import exit_names, stage_outputs

    names, stages = exit_names(net), stage_outputs(net)
    logits = [net._nested_outputs[n] for n in names]
    functions = {}
    for k, name in enumerate(names):
        head = net.get_layer(name)
        fed = [(net.inputs[0], "image")] if k == 0 else [(stages[k - 1], "features")]
        if k > 0 and head.inline_collaboration:
            fed.append((logits[k - 1], previous_logits))
        targets = [("logits", logits[k])] + ([("features", stages[k])] if k < len(names) - 1 else [])
        specs = [tf.TensorSpec((1, *t.shape[1:]), tf.float32, name=n) for t, n in fed]

        def make(fed=fed, targets=targets):
            def fn(*inputs):
                outs = _replay({id(t): x for (t, _), x in zip(fed, inputs)}, [t for _, t in targets])
                return {n: o for (n, _), o in zip(targets, outs)}
            return fn

        functions[name] = tf.function(make(), input_signature=specs)
    return functions


def export(net, out_dir, *, layout="segments", quantize="float32", thresholds=None, budget=None, validation=None, input_shape=None,
           representative=None, metadata=None):
    """Write one TFLite per exit prefix and the manifest into `out_dir`; returns the manifest dict."""
    from keras_layers.models.multi_exit_net import exit_madds, exit_prefix, num_exits
    from pipelines.export import tflite

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; received layout={layout!r}")
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
    tflite.check_quantization(net, quantize)  # fail before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exits = []
    if layout == "segments":
        functions = segment_functions(net)
        data = tflite.convert_signatures(functions, net, quantize, representative=representative)
        tflite.assert_builtin_only(data)
        (out / MODEL_FILE).write_bytes(data)
    for i in range(k):
        threshold = _json_threshold(-math.inf if i == k - 1 else thresholds[i])
        if layout == "segments":
            inputs = [spec.name for spec in functions[f"exit_{i}"].input_signature]
            exits.append({"exit": i, "file": MODEL_FILE, "signature": f"exit_{i}", "inputs": inputs,
                          "outputs": ["logits"] + (["features"] if i < k - 1 else []),
                          "madds": int(costs[i]), "threshold": threshold})
            continue
        data = tflite.convert(exit_prefix(net, i), quantize, representative=representative)
        tflite.assert_builtin_only(data)
        name = f"exit_{i}.tflite"
        (out / name).write_bytes(data)
        exits.append({"exit": i, "file": name, "output": f"exit_{i}", "madds": int(costs[i]), "threshold": threshold})
    manifest = {"format": "multi_exit/1", "layout": layout, "input_shape": list(input_shape),
                "num_classes": int(net.output_shape["exit_0"][-1]), "quantize": quantize,
                "confidence": "max softmax probability; stop at the first exit with confidence >= threshold",
                "exits": exits, **({"budget": float(budget), "validation": {
                    "accuracy": chosen["accuracy"], "avg_madds": chosen["avg_madds"]}} if chosen else {}),
                **(metadata or {})}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def run_exported(out_dir, images, num_threads=None):
    """Run an export the app's way: per example, exit by exit until a threshold is met.

    Returns (predictions (N,), exit index (N,), average MAdds per the manifest).
    """
    from pipelines.export import tflite

    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST).read_text())
    exits_spec = manifest["exits"]
    if manifest["layout"] == "segments":
        shared = tflite.Runner(out / MODEL_FILE, num_threads=num_threads)
        runners = [shared] * len(exits_spec)
    else:
        runners = [tflite.Runner(out / e["file"], num_threads=num_threads) for e in exits_spec]
    preds, exits = [], []
    for x in np.asarray(images, np.float32):
        state = {"image": x[None]}
        for e, runner in zip(exits_spec, runners):
            if manifest["layout"] == "segments":
                result = runner.run_one({n: state[n] for n in e["inputs"]}, signature=e["signature"])
                logits = result["logits"][0]
                state = {"features": result.get("features"), "previous_logits": result["logits"]}
            else:
                logits = runner.run_one(x[None])[e["output"]][0]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            if p.max() >= e["threshold"] or e is exits_spec[-1]:
                preds.append(int(p.argmax()))
                exits.append(e["exit"])
                break
    exits = np.asarray(exits)
    costs = np.asarray([e["madds"] for e in exits_spec], np.float64)
    return np.asarray(preds), exits, float(costs[exits].mean())
