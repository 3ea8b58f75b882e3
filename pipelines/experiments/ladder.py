"""The static reference ladder every dynamic family is compared against: plain `mobilenet_v2` and
`mobilenet_v3` at several widths, trained with the same data, epochs and seed, each measured as the phone
runs it (test accuracy, MAdds, measured batch-1 LiteRT latency per image, per difficulty bucket too).

    python -m pipelines static-ladder --data cluttered-digits --epochs 10 --models mobilenet_v2 --widths 0.35 0.5 1.0

Each member trains through `pipelines.training.run` into ``<out>/ladder-<model>-w<width>-s<seed>``; a
folder that already holds a finished run of the same config (its `config.json` and `model.keras`) is
reused, so a ladder can be trained in a background queue and measured later, when the machine is quiet,
side by side with the dynamic models. Measurement: `pipelines.experiments.deployed.measure` (a plain
bundle through `export_net`, float32, LiteRT + XNNPACK, `threads` threads, median of `repeats` runs per
image). Writes ``<out>/static-ladder.json`` (an earlier one is kept as ``static-ladder.1.json``, ...); `--tracking-uri`/`MLFLOW_TRACKING_URI` also logs params,
metrics, the table and the accuracy-vs-latency figure to MLflow.
"""
from __future__ import annotations

from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

MODELS = ("mobilenet_v2", "mobilenet_v3")
WIDTHS = (0.35, 0.5, 0.75, 1.0)
RECIPE = "default"  # the project's default recipe (the papers' presets are issue 16)


def config_label(model_config):
    """The fields of a ladder's `model_config` as text: "dropout=0, head_channels=0" ("" for none)."""
    return ", ".join(f"{k}={v}" for k, v in sorted((model_config or {}).items()))


def member_config(model, width, seed=0, data="cluttered-digits", image_size=32, epochs=10, limit=None,
                  out="runs", model_config=None):
    """The validated `TrainConfig` of one ladder member."""
    from pipelines.training import TrainConfig

    extra = "".join(f"-{k}{v}" for k, v in sorted((model_config or {}).items()))  # its own run folder
    return TrainConfig(model=model, model_config={**(model_config or {}), "width_multiplier": float(width)},
                       data=data, image_size=image_size, epochs=epochs, seed=seed, limit=limit, out=out,
                       run_name=f"ladder-{model}{extra}-w{float(width):g}-s{seed}").validate()


def run_ladder(models=MODELS, widths=WIDTHS, seeds=(0,), data="cluttered-digits", image_size=32, epochs=10,
               limit=None, out="runs", threads=1, repeats=3, test_images=None, train_only=False,
               tracking_uri=None, log=print, model_config=None):
    """Train (or reuse) and measure every member (`model_config`: fields every model is built with besides its
    width, e.g. ``{"head_channels": 0}``); returns the report (also written to ``<out>/static-ladder.json``; logged
    to MLflow when `tracking_uri` is given)."""
    from keras_layers import count_madds
    from pipelines.experiments import deployed

    for name, values in (("models", models), ("widths", widths), ("seeds", seeds)):
        if not values:
            raise ValueError(f"{name} must name at least one; received {name}={list(values)!r}")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0:
            raise ValueError(f"widths must be numbers > 0; received width={w!r}")
    deployed.check_repeats(repeats)
    if "width_multiplier" in (model_config or {}):
        raise ValueError("model_config: the ladder sets width_multiplier from --widths; received "
                         f"width_multiplier={model_config['width_multiplier']!r}")
    configs = [member_config(m, w, s, data, image_size, epochs, limit, out, model_config) for m in models
               for w in widths for s in seeds]
    label = config_label(model_config)
    rows = []
    for cfg in configs:
        metrics, folder, net = deployed.train_or_reuse(cfg, log)
        if train_only:
            continue
        width = cfg.model_config["width_multiplier"]
        measured = deployed.measure(net, Path(folder) / "bundle", data=data, image_size=image_size, limit=limit,
                                    threads=threads, repeats=repeats, test_images=test_images, log=log)
        name = f"{cfg.model} ({label})" if label else cfg.model  # two ladders of one model stay apart in MLflow
        rows.append({"name": f"{name} x{width:g} s{cfg.seed}", "model": cfg.model, "width": width,
                     "seed": cfg.seed, "recipe": RECIPE, "run": str(folder),
                     "val_accuracy": metrics.get("val_accuracy"), "best_epoch": metrics.get("best_epoch"),
                     "madds": count_madds(net, tuple(net.input_shape[1:])), "params": metrics.get("params"),
                     "measured": measured})
    report = {"data": data, "image_size": image_size, "epochs": epochs, "limit": limit, "seeds": list(seeds),
              "threads": threads, "repeats": repeats, "recipe": RECIPE, "model_config": dict(model_config or {}),
              "rows": rows}
    if train_only:
        return report
    from pipelines.experiments import write_report

    write_report(out, "static-ladder.json", report, log=log)
    if tracking_uri is not None:
        fig = deployed.accuracy_latency_figure([], rows, title=f"static ladder on {data}, {epochs} epochs")
        params = {k: report[k] for k in ("data", "image_size", "epochs", "limit", "seeds", "threads", "repeats",
                                         "recipe", "model_config")}
        params.update(models=list(models), widths=list(widths))
        deployed.log_result("static-ladder", params, rows, report, {"static_ladder.png": fig},
                            tracking_uri=tracking_uri, log=log)
    return report


def format_report(report):
    from pipelines.experiments import deployed

    label = config_label(report.get("model_config"))
    title = (f"Static ladder on {report['data']} {report['image_size']}x{report['image_size']}, {report['epochs']} "
             f"epochs, limit {report['limit']}, seeds {report['seeds']}, recipe {report['recipe']}"
             + (f", {label}" if label else "") + " (test split; "
             f"latency: LiteRT + XNNPACK batch 1, {report['threads']} thread, mean of per-image medians of "
             f"{report['repeats']} runs)")
    return deployed.format_rows(report["rows"], title)
