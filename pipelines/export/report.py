"""The export report of an Android bundle: what runs where, in which dtype, how fast, how faithful.

    python -m pipelines export-report bundle/ --model models:/digits_net/3 --images 64 --log-to-run RUN_ID

    from pipelines.export import report as export_report
    report = export_report.build("bundle/", net=keras_net, images=x, labels=y)   # a JSON-able dict
    print(export_report.summary(report))
    export_report.log(report, run_id)          # export_report/report.json, summary.txt, plots

Per .tflite file of the bundle:
* ops: count per op type, and which ones the XNNPACK delegate (LiteRT's default CPU delegate) takes.
  Found from the interpreter itself: after `allocate_tensors` the delegate's DELEGATE nodes are appended
  to the node list with their partition's boundary tensors; walking back from a partition's outputs to
  its inputs gives the original nodes it replaced. `xnnpack_share` = delegated nodes / all nodes.
* tensor dtypes: activations and weights (constant tensors) by dtype, and `float_layers`: in an
  `int8`/`qat` model every op other than (DE)QUANTIZE that computes in float32 (a layer that silently
  stayed float), in a `dynamic` model every conv/fully-connected whose weights stayed float32 (weights
  of at least 1024 elements: smaller ones stay float by the converter's design); each
  named by its Keras layer (from the tensor names) - `flags` lists them.
* size in bytes; latency median/p95 at 1 and 2 threads (batch 1, as on the phone), measured by LiteRT's own
  benchmark tool (`ai_edge_litert/tools/benchmark_litert_model.py`), which also says whether the model is
  fully accelerated. The per-op XNNPACK facts above have no public source in the pinned wheel (the tool
  reports whole-model facts only, the wheel's analyzer dumps the graph without delegation), so they still
  come from the interpreter's node list.
With a Keras model and images: Keras-vs-TFLite parity (top-1 agreement, max abs error, accuracy with
labels). For dynamic bundles (model.json `kind` != plain) with images: the per-example MAdds
distribution (from the stages each example ran, model.json `madds`) and where examples stopped.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")
QUANT_OPS = ("QUANTIZE", "DEQUANTIZE")
# Dynamic-range quantization leaves weight tensors below this many elements in float by design (the
# converter's default minimum); only larger float weights are flagged in a `dynamic` model.
DYNAMIC_MIN_ELEMENTS = 1024


def _layer_name(*tensor_names):
    """'model/silently_float/Sin;...' -> 'silently_float' (the Keras layer the op came from): from the
    first of `tensor_names` (output first, then inputs) that carries a layer path."""
    for name in tensor_names:
        parts = name.split(";")[0].split("/")
        if len(parts) > 2:
            return parts[1]
        if len(parts) == 2:
            return parts[0]
    return tensor_names[0] if tensor_names else ""


def analyze(tflite_bytes, mode=None):
    """Ops (with XNNPACK delegation), tensor dtypes and float layers of one TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=bytes(tflite_bytes))
    nodes = interp._get_ops_details()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    n = len(nodes)
    produced = {int(o): i for i, d in enumerate(nodes) for o in d["outputs"] if o >= 0}
    model_inputs = {int(d["index"]) for d in interp.get_input_details()}
    constant = {i for i in tensors if i not in produced and i not in model_inputs}

    interp.allocate_tensors()  # applies the default XNNPACK delegate
    after = interp._get_ops_details()
    delegated, partitions = set(), 0
    for d in after[n:]:
        if d["op_name"] != "DELEGATE":
            continue
        partitions += 1
        boundary = {int(t) for t in d["inputs"] if t >= 0}
        stack = [int(t) for t in d["outputs"] if t >= 0]
        while stack:
            t = stack.pop()
            i = produced.get(t)
            if t in boundary or i is None or i in delegated:
                continue
            delegated.add(i)
            stack.extend(int(x) for x in nodes[i]["inputs"] if x >= 0)

    def dt(i):
        return np.dtype(tensors[i]["dtype"]).name

    ops, counts, floats = [], {}, []
    for i, d in enumerate(nodes):
        ins = [int(t) for t in d["inputs"] if t >= 0]
        outs = [int(t) for t in d["outputs"] if t >= 0]
        name = tensors[outs[0]]["name"] if outs else ""
        entry = {"index": i, "op": d["op_name"], "xnnpack": i in delegated,
                 "layer": _layer_name(name, *[tensors[t]["name"] for t in sorted(ins, key=lambda t: t not in constant)]),
                 "output_tensor": name, "activation_dtypes": sorted({dt(t) for t in ins + outs if t not in constant}),
                 "weight_dtypes": sorted({dt(t) for t in ins if t in constant})}
        ops.append(entry)
        c = counts.setdefault(d["op_name"], {"count": 0, "xnnpack": 0})
        c["count"] += 1
        c["xnnpack"] += int(i in delegated)
        if mode in ("int8", "qat") and d["op_name"] not in QUANT_OPS and "float32" in entry["activation_dtypes"]:
            floats.append(entry)
        elif mode == "dynamic" and d["op_name"] in WEIGHTED_OPS and any(
                t in constant and dt(t) == "float32" and int(np.prod(tensors[t]["shape"])) >= DYNAMIC_MIN_ELEMENTS
                for t in ins):
            floats.append(entry)
    acts = Counter(dt(i) for i in tensors if i not in constant)
    weights = Counter(dt(i) for i in constant)
    return {"size_bytes": len(tflite_bytes), "num_ops": n, "ops": ops, "op_counts": counts,
            "xnnpack_ops": len(delegated), "xnnpack_share": len(delegated) / n if n else 0.0,
            "xnnpack_partitions": partitions,
            "tensor_dtypes": {"activations": dict(acts), "weights": dict(weights)},
            "float_layers": [{"op": e["op"], "layer": e["layer"], "tensor": e["output_tensor"]} for e in floats]}


def latency(path, threads=(1, 2), runs=30, warmup=3, signature=None):
    """Latency of one signature of the .tflite file `path` per thread count, measured by LiteRT's own
    benchmark tool (`ai_edge_litert/tools/benchmark_litert_model.py` of the pinned wheel: the CompiledModel
    API on the CPU accelerator, random inputs, batch 1; offline), in this process with the tool's own flags:
    {threads: {median_ms, p95_ms, mean_ms, min_ms, runs, fully_accelerated}} (the tool rounds to 0.01 ms)."""
    import contextlib
    import io
    import sys

    import logging

    from ai_edge_litert.tools import benchmark_litert_model as tool

    logging.getLogger(tool.logger.name).setLevel(logging.WARNING)  # its step-by-step INFO lines
    out = {}
    for t in threads:
        argv = ["benchmark_litert_model", "--model", str(path), "--num_threads", str(t), "--num_runs", str(runs),
                "--warmup_runs", str(warmup)] + (["--signature", signature] if signature else [])
        saved, sys.argv = sys.argv, argv
        try:
            args = tool.parse_args()
        finally:
            sys.argv = saved
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its table; the numbers come back as a dict
                result = tool.run_benchmark(args)
        except SystemExit:  # the tool exits on a missing file or signature
            raise ValueError(f"LiteRT's benchmark tool refused {str(path)!r} (signature={signature!r})") from None
        lat = result["latency"]
        out[str(t)] = {"median_ms": lat["median_ms"], "p95_ms": lat["p95_ms"], "mean_ms": lat["avg_ms"],
                       "min_ms": lat["min_ms"], "runs": lat["num_runs"],
                       "fully_accelerated": bool(result["fully_accelerated"])}
    return out


def build(bundle_dir, net=None, images=None, labels=None, threads=(1, 2), runs=30, main_output="logits", log=print):
    """The report dict of a bundle (see the module doc)."""
    from pipelines.export.bundle import Bundle

    bundle_dir = Path(bundle_dir)
    bundle = Bundle.load(bundle_dir)
    spec = bundle.spec
    mode = (spec.get("quantization") or {}).get("mode") or spec.get("quantize") or "float32"
    report = {"bundle": str(bundle_dir.resolve()), "kind": bundle.kind, "quantization": mode, "files": {}}
    for file in sorted({s["file"] for s in spec["stages"].values()}):
        log(f"analysing {file} ...")
        info = analyze((bundle_dir / file).read_bytes(), mode)
        sigs = [s.get("signature") for s in spec["stages"].values() if s["file"] == file]
        info["latency_ms"] = {str(s or "default"): latency(bundle_dir / file, threads, runs, signature=s)
                              for s in sorted(set(sigs), key=str)}
        report["files"][file] = info
    report["size_bytes"] = sum(f["size_bytes"] for f in report["files"].values())
    report["float_layers"] = [dict(file=f, **e) for f, info in report["files"].items() for e in info["float_layers"]]
    if images is not None:
        images = np.asarray(images, np.float32)
        preds = bundle.predict(images)
        tfl = np.stack([p.logits for p in preds])
        if net is not None and bundle.kind == "plain":
            from pipelines import export
            from pipelines.export import tflite
            from pipelines.export.checks import keras_outputs

            ref = export.main_logits(keras_outputs(net, images), main_output)
            par = tflite.parity(ref, tfl)
            par["top1_agreement"] = float(np.mean(ref.argmax(-1) == tfl.argmax(-1)))
            if labels is not None:
                par["keras_accuracy"] = float(np.mean(ref.argmax(-1) == labels))
                par["tflite_accuracy"] = float(np.mean(tfl.argmax(-1) == labels))
            report["parity"] = par
        elif labels is not None:
            report["accuracy"] = float(np.mean(tfl.argmax(-1) == labels))
        report["bundle_latency_ms"] = {"median_ms": float(np.median([p.time_ms for p in preds])),
                                       "p90_ms": float(np.percentile([p.time_ms for p in preds], 90))}
        madds = [p.madds for p in preds]
        if bundle.kind != "plain" and all(m is not None for m in madds):
            m = np.asarray(madds, float)
            counts, edges = np.histogram(m, bins=min(10, max(1, len(np.unique(m)))))
            report["madds"] = {"mean": float(m.mean()), "min": float(m.min()), "p50": float(np.median(m)),
                               "p90": float(np.percentile(m, 90)), "max": float(m.max()), "n": int(m.size),
                               "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
                               "per_example": m.tolist()}
            report["stopped_at"] = dict(Counter(p.stopped_at for p in preds))
    report["flags"] = [f"{e['file']}: layer {e['layer']!r} ({e['op']}) computes in float32 in a {mode} model"
                       for e in report["float_layers"]]
    return report


def summary(report):
    """A short human summary (a few lines)."""
    lines = [f"export report: {report['bundle']} ({report['kind']}, {report['quantization']}), "
             f"{report['size_bytes'] / 1024:.1f} KiB"]
    for file, info in report["files"].items():
        lines.append(f"  {file}: {info['num_ops']} ops, XNNPACK takes {info['xnnpack_ops']} "
                     f"({100 * info['xnnpack_share']:.0f}%, {info['xnnpack_partitions']} partition(s)); "
                     f"not delegated: {', '.join(sorted({o['op'] for o in info['ops'] if not o['xnnpack']})) or 'none'}")
        lines.append(f"    dtypes: activations {info['tensor_dtypes']['activations']}, weights {info['tensor_dtypes']['weights']}")
        for sig, lat in info["latency_ms"].items():
            lines.append(f"    latency [{sig}] (LiteRT benchmark tool): " + ", ".join(
                f"{t} thread(s) median {v['median_ms']:.2f} ms p95 {v['p95_ms']:.2f} ms" for t, v in lat.items()))
    if "parity" in report:
        p = report["parity"]
        lines.append(f"  parity on {p['n']} images: top-1 agreement {p['top1_agreement']:.4f}, "
                     f"max abs error {p['max_abs_error']:.3g}"
                     + (f", accuracy keras {p['keras_accuracy']:.4f} tflite {p['tflite_accuracy']:.4f}"
                        if "keras_accuracy" in p else ""))
    if "madds" in report:
        m = report["madds"]
        lines.append(f"  MAdds per example over {m['n']} images: mean {m['mean'] / 1e6:.3f}M, p50 {m['p50'] / 1e6:.3f}M, "
                     f"p90 {m['p90'] / 1e6:.3f}M, range {m['min'] / 1e6:.3f}-{m['max'] / 1e6:.3f}M; "
                     f"stopped at {report['stopped_at']}")
    for f in report["flags"]:
        lines.append(f"  FLAG: {f}")
    if not report["flags"]:
        lines.append("  no layer left in float")
    return "\n".join(lines)


def log(report, run_id):
    """Log report.json, summary.txt and plots under `export_report/` of MLflow run `run_id`."""
    from pipelines import tracking

    c = tracking.current_client()  # MLflow's own log_dict / log_text: no files of ours
    c.log_dict(run_id, json.loads(json.dumps(report, default=float)), "export_report/report.json")
    c.log_text(run_id, summary(report) + "\n", "export_report/summary.txt")
    for file, info in report["files"].items():
        stem = file.replace(".", "_")
        ops = sorted(info["op_counts"])
        tracking.log_histogram(f"export_report/{stem}_xnnpack_share", [info["op_counts"][o]["xnnpack"] / info["op_counts"][o]["count"] for o in ops],
                               ops, xlabel="op", title=f"{file}: share of each op type XNNPACK takes", run_id=run_id)
        for sig, lat in info["latency_ms"].items():
            labels = [f"{t}T {k}" for t, v in lat.items() for k in ("median", "p95")]
            vals = [v[k + "_ms"] for v in lat.values() for k in ("median", "p95")]
            tracking.log_histogram(f"export_report/{stem}_{sig}_latency", vals, labels, xlabel="threads",
                                   title=f"{file} [{sig}] latency (ms)", run_id=run_id)
    if "madds" in report:
        h = report["madds"]["histogram"]
        centers = [f"{(a + b) / 2e6:.3f}M" for a, b in zip(h["edges"][:-1], h["edges"][1:])]
        tracking.log_histogram("export_report/madds_per_example", h["counts"], centers, xlabel="MAdds per example",
                               title="per-example MAdds distribution", run_id=run_id)
    metrics = {"export.size_bytes": report["size_bytes"], "export.float_layers": len(report["float_layers"])}
    if "parity" in report:
        metrics["export.parity_top1_agreement"] = report["parity"]["top1_agreement"]
    if "madds" in report:
        metrics.update({"export.madds_mean": report["madds"]["mean"], "export.madds_p90": report["madds"]["p90"]})
    for k, v in metrics.items():
        c.log_metric(run_id, k, float(v))
    return "export_report/report.json"
