"""Checks of an exported model: parity against the Keras model, and LiteRT latency.

Parity: top-1 agreement of the main output and max abs error over every output on N validation images
(and the accuracy of both with labels); latency: median and p90 ms of batch-1 invocations with
`ai_edge_litert` (XNNPACK). A staged bundle is checked as the phone runs it (`bundle_parity`,
`bundle_latency`): the whole policy of its family, against the family's Keras reference policy.
"""
from __future__ import annotations

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)


def main_output_name(config):
    """The name of the output that is "the prediction", from a run's training config (its recipe)."""
    from pipelines.training import recipes

    name = (config or {}).get("recipe")
    try:
        return recipes.get(name).main_output if name else "logits"
    except ValueError:
        return "logits"


def keras_outputs(net, images, batch_size=256):
    """`net` on `images` in batches (``training=False``), as NumPy: an array, or a dict / list of arrays as
    the model's outputs are. Eager calls instead of `Model.predict`: predict traces a new function for every
    model it sees, and the exports and experiments here see many (TensorFlow warns of "retracing" each time)."""
    import numpy as np

    parts = [net(images[i:i + batch_size], training=False) for i in range(0, len(images), batch_size)]
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return [np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(len(first))]
    return np.concatenate([np.asarray(p) for p in parts])


def main_logits(outputs, main_output="logits"):
    """The main logits from a model's outputs (an array, or a dict of named outputs)."""
    if not isinstance(outputs, dict):
        return outputs
    if main_output in outputs:
        return outputs[main_output]
    return outputs[sorted(outputs)[-1]]


def _tflite_outputs_by_name(net, tfl_out):
    """Map the TFLite signature's outputs to the Keras output names (`output_0` for one unnamed output)."""
    if not isinstance(tfl_out, dict):
        return {net.output_names[0]: tfl_out}
    if set(tfl_out) == {"output_0"}:
        return {net.output_names[0] if len(net.output_names) == 1 else "output_0": tfl_out["output_0"]}
    return tfl_out


def parity(net, tflite_bytes, images, labels=None, main_output="logits", threads=None):
    """Keras vs TFLite on `images`: top-1 agreement of the main output, max abs error over all outputs,
    and (with `labels`) the accuracy of each."""
    import numpy as np

    from pipelines.export import tflite

    ref = keras_outputs(net, images)
    ref = ref if isinstance(ref, dict) else {net.output_names[0]: ref}
    out = _tflite_outputs_by_name(net, tflite.Runner(tflite_bytes, num_threads=threads).run(images))
    errors = {}
    for name, value in ref.items():
        if name in out:
            errors[name] = tflite.parity(value, out[name])["max_abs_error"]
    if not errors:
        raise ValueError(f"parity: TFLite outputs {sorted(out)} match none of the Keras outputs {sorted(ref)}")
    k_main = main_logits(ref, main_output)
    t_main = main_logits(out, main_output) if isinstance(out, dict) else out
    result = {"images": int(len(images)),
              "agreement": float(np.mean(np.argmax(k_main, -1) == np.argmax(t_main, -1))),
              "max_abs_error": float(max(errors.values())),
              "max_abs_error_per_output": errors}
    if labels is not None:
        result["keras_accuracy"] = float(np.mean(np.argmax(k_main, -1) == labels))
        result["tflite_accuracy"] = float(np.mean(np.argmax(t_main, -1) == labels))
    return result


def latency(tflite_bytes, threads=1, runs=50, warmup=5, example=None):
    """Median and p90 ms of one batch-1 invocation with ai_edge_litert (XNNPACK), `threads` threads."""
    import numpy as np

    from pipelines.export import tflite

    runner = tflite.Runner(tflite_bytes, num_threads=threads)
    if example is None:
        detail = runner.interpreter.get_input_details()[0]
        example = np.random.RandomState(0).standard_normal(detail["shape"]).astype(np.float32)
    stats = runner.latency_ms(example, runs=runs, warmup=warmup)
    stats.update(threads=threads, runs=runs)
    return stats


def bundle_parity(net, bundle, images, labels=None):
    """Run a loaded bundle (`bundle.Bundle.predict`) against the Keras model under the same policy (its
    family's `keras_policy`): top-1 agreement of the final answers, how often the same stage answered,
    max abs logit error where it did (per stage), accuracy of both, the stages' share and the average
    MAdds per image."""
    import numpy as np

    preds = bundle.predict(images)
    k_stage, k_logits = bundle.family.keras_policy(net, bundle.spec, images)
    t_logits = np.stack([p.logits for p in preds])
    t_stage = np.asarray([p.stopped_at for p in preds])
    same = t_stage == k_stage
    errors = {}
    for stage in sorted(set(t_stage[same])):
        sel = same & (t_stage == stage)
        errors[stage] = float(np.max(np.abs(t_logits[sel] - k_logits[sel])))
    result = {"images": int(len(images)), "policy": bundle.kind,
              "agreement": float(np.mean(np.argmax(k_logits, -1) == np.argmax(t_logits, -1))),
              "stage_agreement": float(np.mean(same)),
              "max_abs_error": float(max(errors.values())) if errors else float("nan"),
              "max_abs_error_per_output": errors,
              "stopped_at": {s: int(np.sum(t_stage == s)) for s in bundle.spec["stages"] if np.any(t_stage == s)},
              "avg_madds": (float(np.mean([p.madds for p in preds])) if all(p.madds is not None for p in preds)
                            else None)}
    if labels is not None:
        result["keras_accuracy"] = float(np.mean(np.argmax(k_logits, -1) == labels))
        result["tflite_accuracy"] = float(np.mean(np.argmax(t_logits, -1) == labels))
    return result


def bundle_latency(bundle, images, runs=50):
    """Median and p90 ms of a loaded bundle's whole per-image policy (`Bundle.predict_one`), cycling `images`."""
    import numpy as np

    bundle.predict_one(images[0])  # warm-up
    times = [bundle.predict_one(images[i % len(images)]).time_ms for i in range(runs)]
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "threads": bundle.num_threads, "runs": runs, "what": "whole policy per image (all stages run), bundle runner"}
