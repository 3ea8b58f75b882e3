"""TFLite conversion, a LiteRT runner, parity and latency: the one path every exporter uses.

    tflite_bytes = convert(net, "dynamic")                         # builtin ops only, batch 1
    tflite_bytes = convert(net, "int8", representative=images)     # full integer, float I/O
    tflite_bytes = convert_signatures({"preview": fn1, "specialist": fn2}, net)   # several signatures
    runner = Runner(tflite_bytes, num_threads=2)
    runner.run(x)                              # or runner.run({"image": x, ...}, signature="specialist")
    parity(lambda x: net(x).numpy(), runner, images)   # {"max_abs_error": ..., "top1_agreement": ...}
    delegation(tflite_bytes)                   # {"ops": 123, "delegated": 118, "not_delegated": {...}}: XNNPACK's share

Quantization modes: ``float32`` (none), ``float16`` (fp16 weights), ``dynamic`` (int8 weights,
float activations), ``int8`` (full integer, needs a representative dataset), ``qat`` (a model already
made quantization-aware with tensorflow-model-optimization, converted with its learned ranges).

Layer protocol: a layer class may declare ``quantization_modes = ("float32", ...)``, the modes its
TFLite conversion supports (dynamic-kernel layers cannot run full-integer: LiteRT's conv kernels
reject a run-time int8 filter). `check_quantization` refuses the others before conversion with a
message naming the layer, rather than producing a model that fails on the phone.
"""
from __future__ import annotations

import tempfile
import time

from keras_layers import env  # noqa: F401
import numpy as np
import tensorflow as tf
import tf_keras as keras

MODES = ("float32", "float16", "dynamic", "int8", "qat")


class ConversionError(ValueError):
    """A model that cannot be converted with the requested settings (one-line message)."""


def iter_layers(model):
    """Every layer of `model`, recursing into nested models and wrappers."""
    for layer in model.layers if hasattr(model, "layers") else ():
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        inner = getattr(layer, "layer", None)
        if isinstance(inner, keras.layers.Layer):
            yield inner


def check_quantization(model, mode):
    """Raise ConversionError naming the first layer that cannot be converted in `mode`."""
    if mode not in MODES:
        raise ConversionError(f"unknown quantize={mode!r}; valid choices: {', '.join(MODES)}")
    for layer in iter_layers(model):
        supported = getattr(layer, "quantization_modes", None)
        if supported is not None and mode not in supported:
            raise ConversionError(
                f"quantize={mode!r} is not supported by layer {layer.name!r} ({type(layer).__name__}); "
                f"it supports: {', '.join(supported)}")


def float_layers(model, mode):
    """Names of layers that stay float in `mode` (declared by the layer protocol)."""
    if mode in ("float32", "float16"):
        return []
    return [l.name for l in iter_layers(model)
            if getattr(l, "quantization_modes", None) is not None and mode not in l.quantization_modes]


def serving_function(model, batch_size=1):
    """A concrete inference function of `model` with a static batch (batch 1 = the phone's case)."""
    specs = [tf.TensorSpec((batch_size, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        out = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return out if isinstance(out, dict) else {"output_0": out}

    return serve


def variables_holder(models, **functions):
    """A bare `tf.Module` tracking the variables of `models` and holding `functions`.

    The converter saves the object it is given as a SavedModel before converting; given the Keras model
    it re-serializes every layer (configs, traced call functions), about 2/3 of the conversion time,
    for nothing: the functions only capture the variables.
    """
    module = tf.Module()
    module.held_variables = [v for m in models for v in m.variables]
    for name, fn in functions.items():
        setattr(module, name, fn)
    return module


def _configure(converter, mode, representative):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode in ("dynamic", "qat"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if representative is None:
            raise ConversionError("quantize='int8' needs a representative dataset (images from the train split)")
        def gen():  # each sample: one image (H, W, C), or a list of per-input arrays, without batch axis
            for sample in representative:
                items = sample if isinstance(sample, (list, tuple)) else [sample]
                yield [np.asarray(item, np.float32)[None] for item in items]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _run_converter(converter, what):
    try:
        return converter.convert()
    except Exception as err:  # converter errors are long MLIR dumps: keep the first useful line
        first = next((l.strip() for l in str(err).splitlines() if "error" in l.lower()), str(err).splitlines()[0])
        raise ConversionError(f"TFLite conversion of {what} failed (builtin ops only): {first[:300]}") from None


def convert(model, mode="float32", representative=None, batch_size=1):
    """Convert a Keras model to TFLite bytes (builtin ops only, static batch).

    `representative`: iterable of single images (H, W, C) for int8 calibration.
    """
    check_quantization(model, mode)
    fn = serving_function(model, batch_size)
    holder = variables_holder([model], serve=fn)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], holder)
    _configure(converter, mode, representative)
    return _run_converter(converter, model.name)


def convert_signatures(functions, model, mode="float32", representative=None):
    """Convert several `tf.function`s (each with an `input_signature`) into one TFLite model whose
    signatures carry their names, e.g. {"preview": ..., "specialist": ...}.

    `model` is the Keras model (or list of models) whose variables the functions use; it is checked
    with `check_quantization` first.
    """
    models = model if isinstance(model, (list, tuple)) else [model]
    for m in models:
        check_quantization(m, mode)
    module = variables_holder(models, **functions)
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={n: f.get_concrete_function() for n, f in functions.items()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(functions))
        _configure(converter, mode, representative)
        return _run_converter(converter, "+".join(functions))


def op_names(tflite_bytes):
    """Operator names used by a TFLite model (e.g. to check that no Flex/custom op slipped in)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=bytes(tflite_bytes))
    return sorted({d["op_name"] for d in interp._get_ops_details()})


def delegation(tflite_bytes, num_threads=1):
    """Which operators LiteRT's default delegate (XNNPACK) takes, read from the interpreter's graph.

    After `allocate_tensors` the interpreter lists the model's own operators followed by one
    ``DELEGATE`` node per partition that XNNPACK took; an operator belongs to a partition when it lies
    between that node's inputs and outputs (walked back from its outputs). Returns
    ``{"ops": n, "delegated": k, "share": k / n, "not_delegated": {op name: count}}``.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=bytes(tflite_bytes), num_threads=num_threads)
    interp.allocate_tensors()
    details = interp._get_ops_details()
    own = [d for d in details if d["op_name"] != "DELEGATE"]
    producer = {int(t): d["index"] for d in own for t in d["outputs"]}
    by_index = {d["index"]: d for d in own}
    inside = set()
    for node in (d for d in details if d["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer or producer[tensor] in inside:
                continue
            inside.add(producer[tensor])
            stack.extend(int(t) for t in by_index[producer[tensor]]["inputs"] if t >= 0)
    left = {}
    for d in own:
        if d["index"] not in inside:
            left[d["op_name"]] = left.get(d["op_name"], 0) + 1
    return {"ops": len(own), "delegated": len(inside), "share": len(inside) / max(len(own), 1),
            "not_delegated": dict(sorted(left.items()))}


def assert_builtin_only(tflite_bytes):
    bad = [op for op in op_names(tflite_bytes) if op.startswith("Flex") or op == "CUSTOM"]
    if bad:
        raise ConversionError(f"TFLite model uses non-builtin ops: {', '.join(bad)}")


class Runner:
    """Runs a TFLite model with ai_edge_litert the way the app does (one example at a time)."""

    def __init__(self, model, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, (bytes, bytearray)):
            self.interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            self.interpreter = Interpreter(model_path=str(model), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self._runners = {}
        self._signatures = self.interpreter.get_signature_list()  # fixed for the model; read once (~5 us a call)

    def signatures(self):
        """{signature: {"inputs": [...], "outputs": [...]}} of the model (do not modify)."""
        return self._signatures

    def _runner(self, signature):
        if signature is None:
            sigs = self.signatures()
            signature = next(iter(sigs)) if len(sigs) == 1 else None
            if signature is None:
                raise ValueError(f"this model has several signatures; pass signature= one of {sorted(sigs)}")
        if signature not in self._runners:
            self._runners[signature] = self.interpreter.get_signature_runner(signature)
        return signature, self._runners[signature]

    def run_one(self, inputs, signature=None):
        """Run one example (arrays with a leading batch axis of 1). Returns {output name: array}."""
        signature, runner = self._runner(signature)
        if not isinstance(inputs, dict):
            names = self.signatures()[signature]["inputs"]
            if len(names) != 1:
                raise ValueError(f"signature {signature!r} takes inputs {names}; pass a dict")
            inputs = {names[0]: inputs}
        return runner(**{k: np.asarray(v, np.float32) for k, v in inputs.items()})

    def run(self, inputs, signature=None):
        """Run a batch one example at a time; returns {output name: stacked array}."""
        if not isinstance(inputs, dict):
            inputs = {None: inputs}
        n = len(next(iter(inputs.values())))
        outs = []
        for i in range(n):
            one = {k: np.asarray(v[i:i + 1]) for k, v in inputs.items()}
            outs.append(self.run_one(one[None] if None in one else one, signature))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def latency_ms(self, example, signature=None, runs=50, warmup=5):
        """Median and p90 wall time (ms) of one invocation on `example` (batch 1)."""
        for _ in range(warmup):
            self.run_one(example, signature)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.run_one(example, signature)
            times.append((time.perf_counter() - start) * 1e3)
        return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def parity(reference, tflite_outputs, output=None):
    """Compare Keras outputs to TFLite outputs: max abs error and top-1 agreement.

    `reference` and `tflite_outputs` are arrays (batch, classes) or dicts of them; `output` picks a key.
    """
    if isinstance(reference, dict):
        reference = reference[output] if output else next(iter(reference.values()))
    if isinstance(tflite_outputs, dict):
        tflite_outputs = tflite_outputs[output] if output else next(iter(tflite_outputs.values()))
    a, b = np.asarray(reference, np.float32), np.asarray(tflite_outputs, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"parity: shapes differ, keras {a.shape} vs tflite {b.shape}")
    return {"max_abs_error": float(np.max(np.abs(a - b))) if a.size else 0.0,
            "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))) if a.ndim > 1 else 1.0,
            "n": int(a.shape[0])}
