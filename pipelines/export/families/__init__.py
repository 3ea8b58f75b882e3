"""Dynamic families after training: which family a model is, and its staged bundle.

The family is read off the model itself (`family`): ``basisnet`` (outputs ``preview_logits`` and
``coefficients``), ``multi_exit`` (outputs ``exit_0`` ...), ``ds_net`` (a DynamicGate), else ``plain``.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)
from pipelines.export.bundle import write_bundle
from pipelines.export.convert import QUANTIZE_SEMANTICS, Conversion, float_ops

DEFAULT_BUDGET = 0.6  # multi_exit: target average MAdds as a fraction of the last exit's

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
    from pipelines.export import tflite

    tflite.check_quantization(net, mode)
    if kind != "plain" and mode not in FAMILY_MODES:
        raise tflite.ConversionError(f"quantize={mode!r} is not supported for a {kind} bundle ({net.name!r}); "
                                     f"it supports: {', '.join(FAMILY_MODES)}")


def pick_basisnet_threshold(net, validation, madds=None, log=print):
    """`basisnet_eval.pick_threshold` on `validation=(images, labels)`: the cheapest preview threshold
    within its default accuracy drop of the full BasisNet; returns its row (threshold, accuracy, ...)."""
    from pipelines.export.families import basisnet as basisnet_eval

    x, y = validation
    madds = madds or basisnet_eval.stage_madds(net, tuple(net.input_shape[1:]))
    picked = basisnet_eval.pick_threshold(basisnet_eval.early_termination(basisnet_eval.predict(net, x), y, madds))
    log(f"basisnet threshold {picked['threshold']:.2f} picked on {len(x)} validation images (preview answers "
        f"{picked['stopped']:.0%}, accuracy {picked['accuracy']:.4f})")
    return picked


def _basisnet_pieces(net, mode, threshold, validation, log):
    from pipelines.export.families import basisnet as basisnet_eval
    from pipelines.export.families import basisnet

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
    from pipelines.export import tflite
    from pipelines.export.families import multi_exit

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
    from pipelines.export.families import ds_net as slimmable

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

    from pipelines.export.policy import softmax, stops

    out = net.predict(images, batch_size=256, verbose=0)
    kind = spec["kind"]
    if kind == "basisnet":
        stop = stops(softmax(out["preview_logits"]).max(-1), spec["threshold"])
        return (np.where(stop, "preview", "specialist"),
                np.where(stop[:, None], out["preview_logits"], out["logits"]))
    if kind == "multi_exit":
        names = spec["exits"]
        conf = np.stack([softmax(out[n]).max(-1) for n in names])
        from pipelines.export import budgeted

        k = budgeted.exit_points(conf, list(spec["threshold"]) + [0.0])
        return np.asarray(names)[k], np.stack([out[names[j]][i] for i, j in enumerate(k)])
    choice = np.argmax(out["gate_scores"], -1)  # ds_net: the gate's argmax picks the width
    return np.asarray([spec["widths"][c][1] for c in choice]), out["logits"]



def bundle_parity(net, bundle_dir, images, labels=None, threads=None):
    """Run the bundle (`bundle_runner.Bundle.predict`) against the Keras model under the same policy:
    top-1 agreement of the final answers, how often the same stage answered, max abs logit error where
    it did (per stage), accuracy of both, the stages' share and the average MAdds per image."""
    import numpy as np

    from pipelines.export.bundle import Bundle

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

    from pipelines.export.bundle import Bundle

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
