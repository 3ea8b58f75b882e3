"""Checks of an exported model: parity against the Keras model, and LiteRT latency.

Parity: top-1 agreement of the main output and max abs error over every output on N validation images
(and the accuracy of both with labels); latency: median and p90 ms of batch-1 invocations with
`ai_edge_litert` (XNNPACK). Staged bundles are checked as the phone runs them in
`pipelines.export.families` (`bundle_parity`, `bundle_latency`).
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

    ref = net.predict(images, batch_size=256, verbose=0)
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
