"""The deployed policy, measured: a trained net exported to its Android bundle (`pipelines.export.export_net`,
the family plugin's stages, thresholds and gate) and run on the test split one image at a time, as the
phone runs it, with LiteRT + XNNPACK at batch 1 on `threads` threads.

    m = measure(net, "runs/x/bundle", data="cluttered-digits", export={"threshold": 0.8})
    m["accuracy"], m["avg_latency_ms"], m["avg_madds"], m["stage_share"], m["buckets"]["hard"]

Each image's latency is the median of `repeats` runs of the whole policy on it (`Bundle.predict_one`:
every stage that runs, and the policy between them); the average latency per image is the mean of those
medians over the test images, so an early-exit policy is charged exactly for the stages it ran.
`avg_tflite_ms` is the part of it spent inside the LiteRT signature calls (input resize check, allocation
check, copies in and out, invoke): what is left (`avg_latency_ms - avg_tflite_ms`) is this Python runner's
policy between the stages (softmax, threshold, feeding the next stage), which an app in Kotlin or C++ pays
far less of; a policy of several stages pays it once per stage. On a
dataset that records difficulty (`cluttered-digits`) every number is also given per difficulty bucket
(`pipelines.data.difficulty_bucket`: easy / medium / hard): accuracy, the share of images answered by
each stage (or gate width), average latency and MAdds.

Latency depends on the machine as much as on the model (the same bundle measured 0.04 ms on one host of this
project's CPU pool and 0.13 ms on another): every measurement records `machine()` (CPU model, its vector
extensions, cores), and `log_result` logs it as params, so that numbers from different hosts are not set
side by side unawares.

`log_result` writes an experiment's params, metrics, tables (`mlflow.log_dict`) and figures
(`mlflow.log_figure`) to one MLflow run; `format_rows` prints the table the experiment commands share.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

ALL = "all"
BUCKET_ORDER = ("easy", "medium", "hard")  # pipelines.data.DIFFICULTY_BUCKETS (data is imported lazily here)


def finished_run(cfg):
    """The run folder of `cfg` (``<out>/<run_name>``) when it holds a finished run of the same config made from
    the same data (`data.generator_version`), else None."""
    folder = Path(cfg.out) / cfg.run_name
    try:
        saved = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    want = json.loads(json.dumps(cfg.to_dict(), default=str))  # as config.json stores it (tuples are lists)
    same = all(saved.get(k) == v for k, v in want.items() if k not in ("out", "run_name"))
    from pipelines import data

    try:  # made from the same images: an embedded dataset's generator may have changed since
        same = same and json.loads((folder / "dataset.json").read_text()).get(
            "generator_version") == data.generator_version(cfg.data)
    except (OSError, ValueError, AttributeError):
        return None
    return folder if same and (folder / "model.keras").exists() and (folder / "metrics.json").exists() else None


def train_or_reuse(cfg, log=print):
    """(metrics, run folder, net) of `cfg`: loaded from a finished run folder, else trained."""
    from pipelines.training import code_version, run
    from pipelines.training.saving import load_model

    folder = finished_run(cfg)
    if folder is not None:
        log(f"reusing {folder}")
        note = code_version.stale(folder)
        if note:
            log(note)
        return json.loads((folder / "metrics.json").read_text()), folder, load_model(folder / "model.keras")
    log(f"training {cfg.run_name}: {cfg.model} {cfg.model_config}, {cfg.epochs} epochs on {cfg.data}")
    metrics, folder, net, _ = run(cfg, verbose=2)
    return metrics, folder, net


VECTOR_FLAGS = ("avx512f", "avx512_bf16", "avx2", "fma", "sse4_2", "asimd", "sve")  # what XNNPACK's kernels use


def machine(cpuinfo="/proc/cpuinfo"):
    """The CPU latency was measured on: {"cpu": model name, "vector": its vector extensions among
    `VECTOR_FLAGS` (space-separated), "cores": logical CPUs}. Read from `cpuinfo` where there is one (the
    first CPU's block), else what `platform` knows and "unknown"."""
    import os
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f.read(1 << 20).splitlines():  # the first CPU's block is enough; bounded read
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                if not line.strip() and flags:
                    break
    except OSError:
        pass
    return {"cpu": model, "vector": " ".join(f for f in VECTOR_FLAGS if f in flags) or "unknown",
            "cores": os.cpu_count() or 0}


def check_repeats(repeats):
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1; received repeats={repeats!r}")
    return repeats


def run_bundle(bundle, images, repeats=3):
    """One image at a time through `bundle` (a loaded `Bundle`): per image the prediction, the stage that
    answered, MAdds, the median over `repeats` runs of the policy's wall time (ms) and of the part of it spent
    inside LiteRT (`tflite_ms`: the rest is the Python between the stages and around them)."""
    check_repeats(repeats)
    bundle.predict_one(images[0])  # warm-up (XNNPACK packs weights on the first invocation)
    preds, stages, madds, times, lite = [], [], [], [], []
    for image in images:
        runs = [bundle.predict_one(image) for _ in range(repeats)]
        p = runs[0]
        preds.append(p.index)
        stages.append(p.stopped_at)
        madds.append(np.nan if p.madds is None else p.madds)
        times.append(float(np.median([r.time_ms for r in runs])))
        lite.append(float(np.median([r.tflite_ms for r in runs])))
    return {"prediction": np.asarray(preds), "stage": np.asarray(stages), "madds": np.asarray(madds, float),
            "latency_ms": np.asarray(times, float), "tflite_ms": np.asarray(lite, float)}


def summarize(per_image, labels, buckets=None, stage_order=None):
    """Accuracy, average latency and MAdds, and the share answered by each stage: over all images and, with
    `buckets` (a label per image), per bucket. Returns {"all": {...}, "easy": {...}, ...}."""
    labels = np.asarray(labels).reshape(-1)
    correct = per_image["prediction"] == labels
    stage = per_image["stage"]
    order = list(stage_order or sorted(set(stage.tolist())))
    groups = {ALL: np.ones(len(labels), bool)}
    if buckets is not None:
        buckets = np.asarray(buckets)
        known = [b for b in BUCKET_ORDER if b in set(buckets.tolist())]
        for name in known + sorted(set(buckets.tolist()) - set(known)):
            groups[str(name)] = buckets == name
    out = {}
    for name, sel in groups.items():
        n = int(sel.sum())
        out[name] = {
            "images": n,
            "accuracy": float(correct[sel].mean()) if n else float("nan"),
            "avg_latency_ms": float(per_image["latency_ms"][sel].mean()) if n else float("nan"),
            "avg_madds": float(np.mean(per_image["madds"][sel])) if n else float("nan"),
            "stage_share": {s: float(np.mean(stage[sel] == s)) if n else 0.0 for s in order},
        }
        if "tflite_ms" in per_image:  # the part of the latency inside LiteRT (`run_bundle`)
            out[name]["avg_tflite_ms"] = float(per_image["tflite_ms"][sel].mean()) if n else float("nan")
    return out


def measure(net, out, data="cluttered-digits", image_size=32, limit=None, export=None, quantize="float32",
            threads=1, repeats=3, test_images=None, log=print):
    """Export `net` to the bundle `out` (`export`: extra `ExportOptions` fields such as ``threshold``,
    ``exit_thresholds`` or ``budget``; thresholds left open are chosen on the validation split as the export
    does) and measure the deployed policy on the test split (the first `test_images`, default all).
    Returns a dict: kind, bundle, policy (model.json's policy fields), size_bytes, accuracy,
    avg_latency_ms, avg_madds, stage_share, buckets (per difficulty bucket, when the data records it)."""
    from pipelines import data as data_mod
    from pipelines.export import ExportOptions, export_net
    from pipelines.export.bundle import Bundle

    check_repeats(repeats)
    # the export's own latency check (into model.json) needs few runs: the measurement below is per image
    options = ExportOptions.build(quantize=quantize, threads=threads, latency_runs=10, **(export or {})).validate()
    x_val, y_val, info = data_mod.as_numpy(data, "validation", image_size=image_size, limit=limit)
    x_val, y_val = x_val[:options.selection_images], y_val[:options.selection_images]
    result = export_net(net, out, options, info.to_dict(), validation=(x_val, y_val), source=net.name,
                        log=lambda m: None)
    loaded = Bundle.load(result["bundle"], num_threads=threads)
    x, y, _ = data_mod.as_numpy(data, "test", image_size=image_size, limit=limit)
    buckets = None
    if data == data_mod.CLUTTERED:
        buckets = data_mod.difficulty_bucket(data_mod.difficulty(data, "test", limit=limit))
    if test_images:
        x, y = x[:test_images], y[:test_images]
        buckets = None if buckets is None else buckets[:test_images]
    per_image = run_bundle(loaded, x, repeats)
    if np.isnan(per_image["madds"]).all():  # a plain bundle: model.json gives no per-stage MAdds
        from keras_layers import count_madds

        per_image["madds"][:] = count_madds(net, tuple(net.input_shape[1:]))
    spec = json.loads((Path(result["bundle"]) / "model.json").read_text())
    summary = summarize(per_image, y, buckets, stage_order=list(spec.get("stages") or []))
    policy = {k: spec[k] for k in ("threshold", "threshold_selection", "gate") if k in spec}
    log(f"deployed {result['kind']} bundle {result['bundle']}: test accuracy {summary[ALL]['accuracy']:.4f}, "
        f"{summary[ALL]['avg_latency_ms']:.3f} ms per image (mean of per-image medians, {threads} thread), "
        f"stages {summary[ALL]['stage_share']}")
    return {"kind": result["kind"], "bundle": str(result["bundle"]), "policy": policy,
            "size_bytes": result["size_bytes"], "test_images": int(len(y)), "threads": threads,
            "repeats": repeats, "quantize": quantize, "machine": machine(), **summary[ALL],
            "buckets": {k: v for k, v in summary.items() if k != ALL}}


def share_text(stage_share):
    """The stages that answered some images, with their shares ("back_0_35 94% back_1 6%"): a stage at 0%
    is left out of the printed line (a DS-Net front never answers; 14 widths would print 13 zeros), not out of
    the result."""
    return " ".join(f"{s} {v:.0%}" for s, v in stage_share.items() if v > 0) or "-"


def bucket_lines(name, m):
    """One printed line per difficulty bucket of a `measure` result (nothing when the data has none)."""
    lines = []
    for bucket, b in m.get("buckets", {}).items():
        shares = share_text(b["stage_share"])
        lines.append(f"    {name} {bucket:<7} n={b['images']:<5} acc {b['accuracy']:.4f}  "
                     f"{b['avg_latency_ms']:.3f} ms  {b['avg_madds'] / 1e6:.2f}M  {shares}")
    return lines


def format_rows(rows, title=""):
    """The shared table: one row per measured model/policy (`name`, `measure` fields, optional `recipe`),
    then its per-bucket lines."""
    lines = [title] if title else []
    width = max([42] + [len(r["name"]) + 1 for r in rows])  # a long name never runs into the next column
    lines.append(f"  {'model / policy':<{width}}{'recipe':<22}{'test acc':>9}{'avg MAdds':>11}{'avg ms':>9}"
                 f"{'in LiteRT':>10}  stages")
    for r in rows:
        m = r["measured"]
        shares = share_text(m["stage_share"])
        lite = m.get("avg_tflite_ms", float("nan"))  # absent from results measured before it was recorded
        lines.append(f"  {r['name']:<{width}}{r.get('recipe', 'default'):<22}{m['accuracy']:>9.4f}"
                     f"{m['avg_madds'] / 1e6:>10.2f}M{m['avg_latency_ms']:>9.3f}"
                     f"{lite:>10.3f}  {shares}")
    for r in rows:
        lines += bucket_lines(r["name"], r["measured"])
    return "\n".join(lines)


def flat_metrics(rows):
    """MLflow metric names -> values of `format_rows`' rows (names sanitised for MLflow)."""
    import re

    out = {}
    for r in rows:
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", r["name"]).strip("_")
        m = r["measured"]
        for field in ("accuracy", "avg_latency_ms", "avg_tflite_ms", "avg_madds"):
            if field in m:
                out[f"{key}.{field}"] = m[field]
        for bucket, b in m.get("buckets", {}).items():
            out[f"{key}.{bucket}.accuracy"] = b["accuracy"]
            out[f"{key}.{bucket}.avg_latency_ms"] = b["avg_latency_ms"]
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}


def accuracy_latency_figure(rows, ladder=None, title=""):
    """Test accuracy against measured average latency per image: the measured rows as points, a static
    ladder (rows of `pipelines.experiments.ladder`) as lines, one per model."""
    from pipelines import tracking

    plt = tracking.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    by_model = {}
    for r in ladder or []:
        by_model.setdefault(r["model"], []).append(r)
    for model, rs in sorted(by_model.items()):
        rs = sorted(rs, key=lambda r: r["measured"]["avg_latency_ms"])
        ax.plot([r["measured"]["avg_latency_ms"] for r in rs], [100 * r["measured"]["accuracy"] for r in rs],
                marker="o", ms=4, label=f"static {model}", alpha=0.7)
        for r in rs:
            ax.annotate(f"x{r['width']:g}", (r["measured"]["avg_latency_ms"], 100 * r["measured"]["accuracy"]),
                        fontsize=7)
    for r in rows:
        ax.scatter([r["measured"]["avg_latency_ms"]], [100 * r["measured"]["accuracy"]], s=40, zorder=3,
                   label=r["name"])
    ax.set_xlabel("measured average latency per image (ms, LiteRT + XNNPACK, batch 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def madds_figure(curves, points=None, ylabel="test accuracy (%)"):
    """Accuracy (fractions, plotted in %) against average MAdds per image: `curves` {label: (madds, accuracy)}
    as lines, `points` {label: (madds, accuracy)} as marked points."""
    from pipelines import tracking

    plt = tracking.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot([x / 1e6 for x in xs], [100 * y for y in ys], marker="o", ms=4, label=label)
    for label, (x, y) in (points or {}).items():
        ax.scatter([x / 1e6], [100 * y], s=60, zorder=3, label=label)
    ax.set_xlabel("average MAdds per image (M)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def log_result(name, params, rows, result, figures=None, tracking_uri=None, experiment="experiments", metrics=None,
               log=print):
    """One MLflow run named `name` in `experiment`: `params`, `flat_metrics(rows)` (+ `metrics`), the whole `result` as
    `result.json` (`mlflow.log_dict`) and `figures` ({file name: matplotlib figure}, `mlflow.log_figure`).
    Returns the run id."""
    from pipelines import tracking

    with tracking.experiment_run(name, experiment=experiment, uri=tracking_uri) as run_id:
        tracking.log_params_dict({**params, "machine": machine()})
        tracking.log_metrics_dict({**flat_metrics(rows), **(metrics or {})})
        tracking.log_dict(result, "result.json")
        for fname, fig in (figures or {}).items():
            tracking.log_figure(fig, fname)
    log(f"logged to MLflow run {run_id} (experiment {experiment!r})")
    return run_id
