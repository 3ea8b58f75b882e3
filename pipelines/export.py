"""Export a trained model to TFLite for Android: quantize, check parity, time it, write the bundle.

    python -m pipelines export --model models:/digits_net@champion --quantize dynamic --out bundle/
    python -m pipelines export --model runs/mobilenet_v2-20261123-1200 --quantize int8 --out bundle/

    from pipelines import export
    result = export.export_model("models:/digits_net@champion", "int8", "bundle/")

Conversion is `pipelines.tflite` (builtin ops only, batch 1, float input/output). Modes:
``float32``; ``float16`` (fp16 weights); ``dynamic`` (int8 weights, float activations); ``int8``
(full integer, calibrated on images drawn from the *train* split); ``qat`` (tensorflow-model-optimization
`quantize_model` + a short fine-tune on the train split, then converted with the learned ranges).
A layer that declares ``quantization_modes`` without the requested mode is refused before conversion
with a message naming it; ops that stay float in a quantized model are listed (`float_ops`).

Checks: parity against the Keras model on N validation images (top-1 agreement of the main output,
max abs error over every output), accuracy of both on those images, and latency measured with
`ai_edge_litert` (XNNPACK, threads configurable). The bundle in `--out`:
``model.tflite``, ``labels.txt`` and ``model.json`` (input shape and normalization from
`pipelines.data.DatasetInfo`, output names and signatures, early-exit thresholds when given, the
checks above).

Dynamic families get the bundle `pipelines.bundle_runner` runs stage by stage (its model.json
``kind``, ``stages`` and policy fields), converted by the family's exporter (`pipelines.exporters`).
The family is read off the model itself (`family`): ``basisnet`` (outputs ``preview_logits`` and
``coefficients``: one model.tflite, signatures ``preview`` / ``specialist``, ``threshold``: given,
else picked on the validation split with `pipelines.basisnet_eval`), ``multi_exit`` (outputs
``exit_0`` ...: one model.tflite, a signature per exit segment, thresholds for ``budget`` x the last
exit's MAdds chosen on the validation split with `pipelines.budgeted`), ``ds_net`` (a DynamicGate:
model.tflite is the front + gate, ``back_<w>.tflite`` one per width), else ``plain``. Their parity
check runs the bundle with `bundle_runner.Bundle.predict` against the Keras model's outputs put
through the same policy; their latency is the bundle's whole per-image policy. Dynamic kinds support
``float32``, ``float16`` and ``dynamic``; a layer that cannot run a mode is named first (protocol).
For a registered model the bundle is logged to MLflow in the version's run under
``android/<mode>/`` and the version is tagged ``android_bundle.<mode>``.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

MODES = ("float32", "float16", "dynamic", "int8", "qat")
# Default parity tolerance on the max abs logit error per mode (None: only top-1 agreement is gated).
DEFAULT_MAX_ERROR = {"float32": 1e-3, "float16": 5e-2, "dynamic": None, "int8": None, "qat": None}
BUNDLE_FILES = ("model.tflite", "labels.txt", "model.json")
DEFAULT_BUDGET = 0.6  # multi_exit: target average MAdds as a fraction of the last exit's
QUANTIZE_SEMANTICS = {"float32": "no quantization", "float16": "float16 weights, float32 compute",
                      "dynamic": "int8 weights, float activations (dynamic range)",
                      "int8": "full integer (int8 weights and activations, float32 input/output)",
                      "qat": "quantization-aware trained, int8 weights and activations"}


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown quantize={mode!r}; valid choices: {', '.join(MODES)}")
    return mode


def main_output_name(config):
    """The name of the output that is "the prediction", from a run's training config (its recipe)."""
    from pipelines import recipes

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


# ---------------------------------------------------------------- conversion

@dataclasses.dataclass
class Conversion:
    tflite: bytes
    mode: str
    float_ops: dict  # op name -> count of ops that compute in float in a quantized model
    notes: list
    reference: object = None  # the Keras model the TFLite model was converted from (QAT: the fine-tuned one)


def _train_images(data, limit, log):
    from pipelines import data as data_mod

    if data is None:
        raise ValueError("this quantization mode needs training images: pass data= (name, image_size) "
                         "or export a registered model / run folder that records its dataset")
    x, y, _ = data_mod.as_numpy(split="train", limit=limit, **data)
    log(f"drew {len(x)} images from the train split of {data['name']}")
    return x, y


def quantize_aware(net, data, epochs=1, limit=512, learning_rate=1e-4, main_output="logits", log=print):
    """tensorflow-model-optimization QAT: `quantize_model(net)` fine-tuned on the train split.

    Refuses (ValueError naming the layer) a model with layers tfmot cannot wrap.
    """
    from keras_layers import env  # noqa: F401
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from pipelines import tflite

    tflite.check_quantization(net, "qat")
    try:
        qnet = tfmot.quantization.keras.quantize_model(net)
    except (RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0][:300]
        raise tflite.ConversionError(f"quantize='qat': tensorflow-model-optimization cannot wrap {net.name!r}: "
                                     f"{first}") from None
    x, y = _train_images(data, limit, log)
    names = list(qnet.output_names)
    target = main_output if main_output in names else names[-1]
    loss = {n: (keras.losses.SparseCategoricalCrossentropy(from_logits=True) if n == target else None)
            for n in names} if len(names) > 1 else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    qnet.compile(keras.optimizers.Adam(learning_rate), loss=loss)
    log(f"QAT fine-tune: {epochs} epoch(s) on {len(x)} train images, lr {learning_rate}")
    qnet.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return qnet


def float_ops(tflite_bytes, mode):
    """Ops that still compute in float in a quantized model: {op name: count}.

    `dynamic`: conv / fully-connected ops whose weights stayed float (e.g. kernels computed at run time);
    `int8` / `qat`: ops with a float32 input other than the QUANTIZE at the model's input.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    if mode in ("float32", "float16"):
        return {}
    interp = Interpreter(model_content=bytes(tflite_bytes))
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    found = Counter()
    weighted = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")
    for op in interp._get_ops_details():
        name, inputs = op["op_name"], [i for i in op["inputs"] if i >= 0]
        if mode == "dynamic":
            if name in weighted and len(inputs) > 1 and dtypes.get(inputs[1]) == np.float32:
                found[name] += 1
        elif name not in ("QUANTIZE", "DEQUANTIZE") and any(dtypes.get(i) == np.float32 for i in inputs):
            found[name] += 1
    return dict(found)


def convert(net, mode="float32", data=None, calibration_images=200, qat_epochs=1, qat_limit=512,
            main_output="logits", log=print):
    """Convert a Keras model with `pipelines.tflite`; returns a `Conversion`.

    `data`: `{"name", "image_size", "data_dir"}` of the training data (int8 calibration, QAT fine-tune).
    """
    from pipelines import tflite

    check_mode(mode)
    tflite.check_quantization(net, mode)  # a layer that declares it cannot run `mode`: refuse now
    notes = [QUANTIZE_SEMANTICS[mode]]
    reference = net
    if mode == "int8":
        x, _ = _train_images(data, calibration_images, log)
        tfl = tflite.convert(net, "int8", representative=list(x))
        notes.append(f"calibrated on {len(x)} train images")
    elif mode == "qat":
        reference = quantize_aware(net, data, epochs=qat_epochs, limit=qat_limit, main_output=main_output, log=log)
        tfl = tflite.convert(reference, "qat")
        notes.append(f"QAT fine-tuned {qat_epochs} epoch(s) on {qat_limit} train images")
    else:
        tfl = tflite.convert(net, mode)
    tflite.assert_builtin_only(tfl)
    kept = float_ops(tfl, mode)
    if kept:
        what = ", ".join(f"{n} x{c}" for n, c in sorted(kept.items()))
        notes.append(f"kept float: {what}")
        log(f"{mode}: ops that stay float (weights the converter leaves float, e.g. small or computed at "
            f"run time): {what}")
    return Conversion(tflite=tfl, mode=mode, float_ops=kept, notes=notes, reference=reference)


# ---------------------------------------------------------------- checks

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

    from pipelines import tflite

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

    from pipelines import tflite

    runner = tflite.Runner(tflite_bytes, num_threads=threads)
    if example is None:
        detail = runner.interpreter.get_input_details()[0]
        example = np.random.RandomState(0).standard_normal(detail["shape"]).astype(np.float32)
    stats = runner.latency_ms(example, runs=runs, warmup=warmup)
    stats.update(threads=threads, runs=runs)
    return stats


# ---------------------------------------------------------------- the Android bundle

def model_json(net, tflite_bytes, dataset, mode, source, checks=None, exit_thresholds=None, notes=(),
               float_ops_=None):
    """The `model.json` an Android app reads next to `model.tflite`."""
    from pipelines import tflite

    runner = tflite.Runner(tflite_bytes)
    inp = runner.interpreter.get_input_details()
    outs = runner.interpreter.get_output_details()
    norm = dict(dataset.get("normalization") or {})
    h, w, c = dataset["input_shape"]
    doc = {
        "format_version": 1,
        "model": net.name,
        "source": source,
        "quantization": {"mode": mode, "notes": list(notes), "float_ops": float_ops_ or {}},
        "input": {"name": inp[0]["name"], "shape": [1, int(h), int(w), int(c)], "dtype": "float32",
                  "layout": "NHWC", "channels": "grayscale" if int(c) == 1 else "RGB",
                  "normalization": {**norm, "formula": "x = (pixel / 255 * (input_range[1] - input_range[0]) "
                                                       "+ input_range[0] - mean[c]) / std[c]"}},
        "outputs": [{"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": str(d["dtype"].__name__)}
                    for d in outs],
        "keras_outputs": list(net.output_names),
        "signatures": runner.signatures(),
        "labels": "labels.txt",
        "num_classes": int(dataset["num_classes"]),
        "dataset": dataset.get("name"),
        "size_bytes": len(tflite_bytes),
    }
    if exit_thresholds:
        doc["early_exit"] = {"thresholds": {str(k): float(v) for k, v in dict(exit_thresholds).items()},
                             "rule": "stop at the first exit whose max softmax probability >= its threshold"}
    if checks:
        doc["checks"] = checks
    return doc


def write_bundle(out_dir, net, conversion, dataset, source, checks=None, exit_thresholds=None, spec=None,
                 extra_files=None):
    """Write `model.tflite`, `labels.txt`, `model.json` into `out_dir` (created; files replaced).

    `spec`: the `bundle_runner` fields of a dynamic family (kind, stages, threshold, ...), merged into
    model.json; `extra_files`: {file name: bytes} of its other .tflite files."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(conversion.tflite)
    for name, data in (extra_files or {}).items():
        (out / name).write_bytes(data)
    names = dataset.get("class_names") or [str(i) for i in range(int(dataset["num_classes"]))]
    (out / "labels.txt").write_text("\n".join(map(str, names)) + "\n")
    doc = model_json(net, conversion.tflite, dataset, conversion.mode, source, checks, exit_thresholds,
                     conversion.notes, conversion.float_ops)
    doc.update(spec or {})
    (out / "model.json").write_text(json.dumps(doc, indent=2))
    return out


# ---------------------------------------------------------------- resolve a model reference

@dataclasses.dataclass
class Source:
    net: object
    config: dict | None
    dataset: dict | None
    uri: str
    version: object = None  # MLflow ModelVersion for registered models
    client: object = None


def load_source(model, tracking_uri=None, data=None, image_size=32):
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION`, a run folder (with model.keras) or a `.keras` file.

    The dataset info comes from the run (`dataset.json`, `config.json`); for a bare `.keras` file give `data`.
    """
    from pipelines import registry

    model = str(model)
    if model.startswith("models:/"):
        name, alias, version = registry.parse_model_uri(model)
        client = registry.tracking.client(tracking_uri)
        mv = registry.get_version(client, name, version=version, alias=alias)
        if mv is None:
            raise ValueError(f"model={model!r}: registered model {name!r} has no alias {alias!r}")
        config, dataset = registry.run_context(client, mv.run_id)
        net = registry.load_version_model(client, mv)
        return Source(net, config, dataset, f"models:/{name}/{mv.version}", mv, client)
    path = Path(model).expanduser()
    if path.is_dir():
        folder, file = path, path / "model.keras"
    else:
        folder, file = path.parent, path
    if not file.exists():
        raise ValueError(f"model={model!r} is not models:/NAME@ALIAS, a run folder with model.keras, or a .keras file")
    registry._keras()
    import tf_keras as keras

    net = keras.models.load_model(file, compile=False)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else None
    dataset = json.loads((folder / "dataset.json").read_text()) if (folder / "dataset.json").exists() else None
    if dataset is None:
        if data is None:
            raise ValueError(f"model={model!r} has no dataset.json beside it; pass --data NAME (and --image-size)")
        from pipelines import data as data_mod

        _, info = data_mod.load(data, "validation", image_size=image_size, batch_size=1, limit=1)
        dataset = info.to_dict()
        config = {"data": data, "image_size": image_size, "data_dir": None}
    return Source(net, config, dataset, str(file.resolve()))


def export_model(model, quantize="float32", out="bundle", parity_images=64, threads=1, latency_runs=50,
                 exit_thresholds=None, tracking_uri=None, log_to_mlflow=True, data=None, image_size=32,
                 calibration_images=200, qat_epochs=1, qat_limit=512, threshold=None, budget=DEFAULT_BUDGET,
                 selection_images=1000, log=print):
    """Convert, check and bundle `model` (see `load_source`); returns a summary dict.

    A dynamic-family model (see `family`) gets its staged bundle: `threshold` (basisnet; default: picked
    on up to `selection_images` validation images), `exit_thresholds` or `budget` (multi_exit: fraction of
    the last exit's MAdds, thresholds chosen on the same images). Parity and latency are checked on the
    first `parity_images` of them."""
    from pipelines import data as data_mod
    from pipelines import registry

    check_mode(quantize)
    for name, value, low in (("parity_images", parity_images, 1), ("threads", threads, 1),
                             ("latency_runs", latency_runs, 1), ("calibration_images", calibration_images, 1),
                             ("qat_epochs", qat_epochs, 1), ("selection_images", selection_images, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; received {name}={value!r}")
    if threshold is not None:
        from pipelines.basisnet_eval import check_threshold

        check_threshold(threshold)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction in (0, 1]; received budget={budget!r}")
    src = load_source(model, tracking_uri, data, image_size)
    kwargs = registry.data_kwargs(src.config) if src.config else None
    main = main_output_name(src.config)
    kind = family(src.net)
    log(f"export {src.uri} -> {out} ({quantize}, {kind} bundle)")
    if kind != "plain":
        check_family_mode(src.net, kind, quantize)  # before reading any data
        images, labels, _ = data_mod.as_numpy(split="validation", limit=max(parity_images, selection_images),
                                              **kwargs)
        bundle, conv, par, lat, size = export_family(src, kind, quantize, out, images[:parity_images],
                                                     labels[:parity_images], threads=threads,
                                                     latency_runs=latency_runs, threshold=threshold,
                                                     exit_thresholds=exit_thresholds, budget=budget,
                                                     selection=(images[:selection_images],
                                                                labels[:selection_images]), log=log)
        return _finish(src, kind, quantize, bundle, conv, par, lat, size, log_to_mlflow, log)
    conv = convert(src.net, quantize, data=kwargs, calibration_images=calibration_images, qat_epochs=qat_epochs,
                   qat_limit=qat_limit, main_output=main, log=log)
    images, labels, _ = data_mod.as_numpy(split="validation", limit=parity_images, **kwargs)
    par = parity(src.net, conv.tflite, images, labels, main_output=main, threads=threads)
    log(f"parity on {par['images']} validation images: top-1 agreement {par['agreement']:.4f}, "
        f"max abs error {par['max_abs_error']:.3g}; accuracy keras {par['keras_accuracy']:.4f} "
        f"tflite {par['tflite_accuracy']:.4f}")
    lat = latency(conv.tflite, threads=threads, runs=latency_runs, example=images[:1])
    log(f"latency: median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({threads} thread(s), XNNPACK)")
    checks = {"parity": par, "latency": lat}
    bundle = write_bundle(out, src.net, conv, src.dataset, src.uri, checks, exit_thresholds)
    return _finish(src, kind, quantize, bundle, conv, par, lat, len(conv.tflite), log_to_mlflow, log)


def _finish(src, kind, quantize, bundle, conv, par, lat, size, log_to_mlflow, log):
    summary = {"model": src.uri, "quantize": quantize, "kind": kind, "bundle": str(bundle.resolve()),
               "size_bytes": size, "float_ops": conv.float_ops, "notes": conv.notes,
               "parity": par, "latency": lat, "artifact_uri": None}
    if src.version is not None and log_to_mlflow:
        summary["artifact_uri"] = log_bundle(src.client, src.version, bundle, quantize)
        log(f"bundle logged to MLflow: {summary['artifact_uri']}")
    log(f"bundle: {bundle}/ ({', '.join(bundle_files(bundle))}), .tflite {size / 1024:.1f} KiB")
    return summary


def bundle_files(bundle):
    """The files of a bundle: `BUNDLE_FILES` and every other .tflite its model.json stages name."""
    doc = json.loads((Path(bundle) / "model.json").read_text())
    extra = sorted({st["file"] for st in (doc.get("stages") or {}).values()} - set(BUNDLE_FILES))
    return list(BUNDLE_FILES) + extra


def log_bundle(client, mv, bundle, mode):
    """Log the bundle into the registered version's run (`android/<mode>/`) and tag the version."""
    path = f"android/{mode}"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / mode
        staged.mkdir()
        for f in bundle_files(bundle):
            shutil.copy2(Path(bundle) / f, staged / f)
        client.log_artifacts(mv.run_id, str(staged), path)
    uri = f"runs:/{mv.run_id}/{path}"
    client.set_model_version_tag(mv.name, mv.version, f"android_bundle.{mode}", uri)
    return uri


# ---------------------------------------------------------------- dynamic families

FAMILY_MODES = ("float32", "float16", "dynamic")  # what the multi-stage bundles are converted in


def family(net):
    """The bundle kind of `net`, read off the model: "basisnet", "multi_exit", "ds_net" or "plain"."""
    outputs = net.output_shape if isinstance(net.output_shape, dict) else {}
    if {"preview_logits", "coefficients"} <= set(outputs):
        return "basisnet"
    if outputs and all(k.startswith("exit_") and k[5:].isdigit() for k in outputs):
        return "multi_exit"
    from keras_layers.ds_net import DynamicGate

    if any(isinstance(layer, DynamicGate) for layer in net.layers):
        return "ds_net"
    return "plain"


def check_family_mode(net, kind, mode):
    """Refuse a mode the bundle of `kind` cannot be converted in: a layer that declares it cannot run
    `mode` is named first (`tflite.check_quantization`), else the bundle kind's limit."""
    from pipelines import tflite

    tflite.check_quantization(net, mode)
    if kind != "plain" and mode not in FAMILY_MODES:
        raise tflite.ConversionError(f"quantize={mode!r} is not supported for a {kind} bundle ({net.name!r}); "
                                     f"it supports: {', '.join(FAMILY_MODES)}")


def pick_basisnet_threshold(net, validation, madds=None, log=print):
    """`basisnet_eval.pick_threshold` on `validation=(images, labels)`: the cheapest preview threshold
    within its default accuracy drop of the full BasisNet; returns its row (threshold, accuracy, ...)."""
    from pipelines import basisnet_eval

    x, y = validation
    madds = madds or basisnet_eval.stage_madds(net, tuple(net.input_shape[1:]))
    picked = basisnet_eval.pick_threshold(basisnet_eval.early_termination(basisnet_eval.predict(net, x), y, madds))
    log(f"basisnet threshold {picked['threshold']:.2f} picked on {len(x)} validation images (preview answers "
        f"{picked['stopped']:.0%}, accuracy {picked['accuracy']:.4f})")
    return picked


def _basisnet_pieces(net, mode, threshold, validation, log):
    from pipelines import basisnet_eval
    from pipelines.exporters import basisnet

    madds = basisnet_eval.stage_madds(net, tuple(net.input_shape[1:]))
    picked = None
    if threshold is None:
        picked = pick_basisnet_threshold(net, validation, madds, log)
        threshold = picked["threshold"]
    threshold = basisnet_eval.check_threshold(threshold)
    data = basisnet.convert(net, mode, outputs="logits")
    spec = {"kind": "basisnet", "threshold": threshold, "stages": {
        "preview": {"file": "model.tflite", "signature": "preview", "logits": "preview_logits",
                    "madds": int(madds["preview"])},
        "specialist": {"file": "model.tflite", "signature": "specialist", "logits": "logits",
                       "madds": int(madds["full"] - madds["preview"])}}}
    if picked:
        spec["threshold_selection"] = {"split": "validation", "images": int(len(validation[0])), **picked}
    return data, {}, spec


def _multi_exit_pieces(net, mode, thresholds, budget, validation, log):
    from keras_layers.models.multi_exit_net import exit_madds, exit_names
    from pipelines import tflite
    from pipelines.exporters import multi_exit

    names = exit_names(net)
    costs = [int(c) for c in exit_madds(net, tuple(net.input_shape[1:]))]
    chosen = None
    if thresholds is None:
        chosen = multi_exit.choose_thresholds(net, budget * costs[-1], validation)
        thresholds = chosen["thresholds"]
        log(f"multi-exit thresholds for {budget:g} x the last exit's MAdds, chosen on {len(validation[0])} "
            f"validation images: {[round(t, 3) for t in thresholds[:-1]]}")
    if len(thresholds) not in (len(names) - 1, len(names)):
        raise ValueError(f"exit_thresholds needs one value per exit but the last ({len(names) - 1}); "
                         f"received {list(thresholds)!r}")
    ths = [min(max(float(t), 0.0), 1.0) for t in list(thresholds)[:len(names) - 1]]  # inf: never stop -> 1.0
    data = tflite.convert_signatures(multi_exit.segment_functions(net, previous_logits="logits"), net, mode)
    tflite.assert_builtin_only(data)
    spec = {"kind": "multi_exit", "exits": names, "threshold": ths,
            "stages": {n: {"file": "model.tflite", "signature": n, "logits": "logits",
                           "madds": costs[k] - (costs[k - 1] if k else 0)} for k, n in enumerate(names)}}
    if chosen:
        spec["threshold_selection"] = {"split": "validation", "images": int(len(validation[0])),
                                       "budget_fraction": float(budget), "budget_madds": float(budget * costs[-1]),
                                       "accuracy": chosen["accuracy"], "avg_madds": chosen["avg_madds"]}
    return data, {}, spec


def _ds_net_pieces(net, mode, log):
    from keras_layers import count_madds
    from keras_layers.models import ds_mobilenet_v1 as ds
    from pipelines.exporters import slimmable

    with tempfile.TemporaryDirectory() as tmp:
        manifest = slimmable.export_ds_net(net, tmp, mode)
        front = (Path(tmp) / manifest["front"]["tflite"]).read_bytes()
        backs = {f"back_{w.replace('.', '_')}.tflite": (w, (Path(tmp) / e["tflite"]).read_bytes(), e["path_madds"])
                 for w, e in manifest["backs"].items()}
    front_madds = int(count_madds(ds.export_front(net), tuple(net.input_shape[1:])))
    stages = {"front": {"file": "model.tflite", "logits": None, "madds": front_madds}}
    widths = []
    for file, (w, _, path_madds) in backs.items():
        stage = file[:-len(".tflite")]
        stages[stage] = {"file": file, "logits": None, "madds": int(path_madds) - front_madds}
        widths.append([float(w), stage])
    log(f"ds_net bundle: front + gate ({front_madds:,} MAdds), widths {[w for w, _ in widths]}")
    spec = {"kind": "ds_net", "gate": "front", "gate_output": "gate_scores", "widths": widths, "stages": stages}
    return front, {f: b for f, (_, b, _) in backs.items()}, spec


def keras_policy(net, spec, images):
    """The Keras model's answer under the bundle's policy: (stage answering each image, its logits)."""
    import numpy as np

    from pipelines.bundle_runner import softmax

    out = net.predict(images, batch_size=256, verbose=0)
    kind = spec["kind"]
    if kind == "basisnet":
        stop = softmax(out["preview_logits"]).max(-1) >= spec["threshold"]
        return (np.where(stop, "preview", "specialist"),
                np.where(stop[:, None], out["preview_logits"], out["logits"]))
    if kind == "multi_exit":
        names = spec["exits"]
        conf = np.stack([softmax(out[n]).max(-1) for n in names])
        from pipelines import budgeted

        k = budgeted.exit_points(conf, list(spec["threshold"]) + [0.0])
        return np.asarray(names)[k], np.stack([out[names[j]][i] for i, j in enumerate(k)])
    choice = np.argmax(out["gate_scores"], -1)  # ds_net: the gate's argmax picks the width
    return np.asarray([spec["widths"][c][1] for c in choice]), out["logits"]


def bundle_parity(net, bundle_dir, images, labels=None, threads=None):
    """Run the bundle (`bundle_runner.Bundle.predict`) against the Keras model under the same policy:
    top-1 agreement of the final answers, how often the same stage answered, max abs logit error where
    it did (per stage), accuracy of both, the stages' share and the average MAdds per image."""
    import numpy as np

    from pipelines.bundle_runner import Bundle

    bundle = Bundle.load(bundle_dir, num_threads=threads)
    preds = bundle.predict(images)
    k_stage, k_logits = keras_policy(net, bundle.spec, images)
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


def bundle_latency(bundle_dir, images, threads=1, runs=50):
    """Median and p90 ms of the bundle's whole per-image policy (`Bundle.predict_one`), cycling `images`."""
    import numpy as np

    from pipelines.bundle_runner import Bundle

    bundle = Bundle.load(bundle_dir, num_threads=threads)
    bundle.predict_one(images[0])  # warm-up
    times = [bundle.predict_one(images[i % len(images)]).time_ms for i in range(runs)]
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "threads": threads,
            "runs": runs, "what": "whole policy per image (all stages run), bundle_runner"}


def export_family(src, kind, quantize, out, images, labels, threads=1, latency_runs=50, threshold=None,
                  exit_thresholds=None, budget=DEFAULT_BUDGET, selection=None, log=print):
    """Convert a dynamic-family model with its exporter, write the staged bundle, check it; returns
    (bundle path, Conversion of model.tflite, parity, latency, size in bytes of all .tflite files).

    Thresholds not given are chosen on `selection=(images, labels)` (default: the parity images);
    parity and latency are measured on `images`."""
    check_family_mode(src.net, kind, quantize)
    validation = selection if selection is not None else (images, labels)
    if kind == "basisnet":
        main, extra, spec = _basisnet_pieces(src.net, quantize, threshold, validation, log)
    elif kind == "multi_exit":
        given = None
        if exit_thresholds:
            if isinstance(exit_thresholds, dict) and not all(str(k).startswith("exit_") and str(k)[5:].isdigit()
                                                             for k in exit_thresholds):
                raise ValueError(f"exit_thresholds keys must be exit_0, exit_1, ...; received "
                                 f"exit_thresholds={exit_thresholds!r}")
            given = ([exit_thresholds[k] for k in sorted(exit_thresholds, key=lambda n: int(str(n).split("_")[-1]))]
                     if isinstance(exit_thresholds, dict) else list(exit_thresholds))
        main, extra, spec = _multi_exit_pieces(src.net, quantize, given, budget, validation, log)
    else:
        main, extra, spec = _ds_net_pieces(src.net, quantize, log)
    kept = float_ops(main, quantize)
    for data in extra.values():
        kept = dict(Counter(kept) + Counter(float_ops(data, quantize)))
    conv = Conversion(tflite=main, mode=quantize, float_ops=kept,
                      notes=[QUANTIZE_SEMANTICS[quantize], f"{kind} bundle: {len(spec['stages'])} stages"])
    bundle = write_bundle(out, src.net, conv, src.dataset, src.uri, None,
                          exit_thresholds if kind == "plain" else None, spec, extra)
    par = bundle_parity(src.net, bundle, images, labels, threads=threads)
    log(f"{kind} bundle parity on {par['images']} validation images: top-1 agreement {par['agreement']:.4f}, "
        f"same stage {par['stage_agreement']:.4f}, max abs error {par['max_abs_error']:.3g}; stopped at "
        f"{par['stopped_at']}")
    lat = bundle_latency(bundle, images, threads=threads, runs=latency_runs)
    log(f"latency (whole policy): median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms")
    doc = json.loads((bundle / "model.json").read_text())
    doc["checks"] = {"parity": par, "latency": lat}
    (bundle / "model.json").write_text(json.dumps(doc, indent=2))
    return bundle, conv, par, lat, len(main) + sum(len(d) for d in extra.values())
