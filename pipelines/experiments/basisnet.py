"""BasisNet evaluations (Zhang et al., Sec. 4.6 and 4.9): early termination and coefficient disturbance.

    out = predict(net, images)                                     # both stages, one pass
    cost = stage_madds(net, images.shape[1:])                      # {"preview": ..., "full": ...}
    table = early_termination(out, labels, cost)                   # per grid threshold: accuracy, stopped, MAdds
    best = select(out, labels, cost, max_drop=0.005)               # cheapest within 0.5 points, every stop set
    disturbance(net, images, labels)                               # predicted vs top-1/mean/uniform/shuffled
    per_layer_disturbance(net, images, labels)                     # one layer shuffled within at a time

Early termination: when the preview's max softmax probability is at or above the threshold
(`pipelines.export.policy.stops`, the rule the bundle runner applies), its initial prediction is the
answer and the specialist is skipped. The average cost is ``preview + (1 - stopped) * (full - preview)``
MAdds per example, both from `count_madds`.

`run_experiment` is the must-show comparison on a dataset (digits at 32x32 by default): BasisNet vs the
static specialist of the same MAdds (`mobilenet_v3` at the width whose MAdds are closest; they move in
steps because channels round to multiples of 8), same epochs and seeds; then the threshold sweep and the
disturbance table. CLI: ``python -m pipelines basisnet-eval --help``.
"""
from __future__ import annotations

import json

import numpy as np

import pipelines  # noqa: F401

from pipelines.export.families.basisnet import (DEFAULT_THRESHOLDS, apply_threshold, check_threshold,  # noqa: F401
                                              early_termination, pick_threshold, predict, row, select,
                                              stage_madds)



DISTURBANCES = ("predicted", "top1", "mean", "uniform", "shuffled", "shuffled_within")


def shuffle_within_layer(alpha, groups=None, seed=0):
    """Coefficients (examples, groups, bases) with the entries of each example's vector permuted within a
    layer (Zhang et al., Sec. 4.9: "shuffled within a layer"): for every example and every group in `groups`
    (None: all) an independent random permutation of the bases; other groups unchanged."""
    alpha = np.asarray(alpha, np.float32)
    if alpha.ndim != 3:
        raise ValueError(f"coefficients must have shape (examples, groups, bases); received shape={alpha.shape}")
    selected = range(alpha.shape[1]) if groups is None else list(groups)
    for g in selected:
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 0 <= g < alpha.shape[1]:
            raise ValueError(f"groups must be indices in [0, {alpha.shape[1]}); received groups={groups!r}")
    rng = np.random.RandomState(seed)
    order = np.argsort(rng.random_sample(alpha.shape), axis=-1)  # one uniform permutation per (example, group)
    out = alpha.copy()
    for g in selected:
        out[:, g] = np.take_along_axis(alpha[:, g], order[:, g], axis=-1)
    return out


def disturbed_coefficients(alpha, kind, seed=0):
    """The paper's disturbances of coefficients (examples, groups, bases): "shuffled" permutes the examples
    (each gets another example's coefficients), "shuffled_within" permutes each example's coefficient
    vector within every layer (`shuffle_within_layer`)."""
    alpha = np.asarray(alpha, np.float32)
    n = alpha.shape[-1]
    if kind == "predicted":
        return alpha
    if kind == "top1":
        return np.eye(n, dtype=np.float32)[alpha.argmax(axis=-1)]
    if kind == "mean":
        return np.broadcast_to(alpha.mean(axis=0, keepdims=True), alpha.shape).copy()
    if kind == "uniform":
        return np.full_like(alpha, 1.0 / n)
    if kind == "shuffled":
        return alpha[np.random.RandomState(seed).permutation(len(alpha))]
    if kind == "shuffled_within":
        return shuffle_within_layer(alpha, None, seed)
    raise ValueError(f"unknown disturbance={kind!r}; valid choices: {', '.join(DISTURBANCES)}")


def _coefficients(preview, images, batch_size):
    from pipelines.export.checks import keras_outputs

    return keras_outputs(preview, images, batch_size)["coefficients"]


def _specialist_accuracy(specialist, images, coefficients, labels, batch_size):
    preds = np.concatenate([
        np.asarray(specialist([images[i:i + batch_size], coefficients[i:i + batch_size]], training=False)).argmax(-1)
        for i in range(0, len(images), batch_size)])
    return float((preds == labels).mean())


def disturbance(net, images, labels, kinds=DISTURBANCES, seed=0, batch_size=256):
    """Specialist accuracy with the predicted coefficients and with each disturbance of them."""
    from keras_layers.models.basisnet_mobilenet_v3 import stages

    preview, specialist = stages(net)
    labels = np.asarray(labels).reshape(-1)
    alpha = _coefficients(preview, images, batch_size)
    return {kind: _specialist_accuracy(specialist, images, disturbed_coefficients(alpha, kind, seed), labels,
                                       batch_size) for kind in kinds}


def group_layers(specialist):
    """{group: names of the specialist layers its coefficients synthesize} (read from the functional config)."""
    groups = {}
    for layer in specialist.get_config()["layers"]:
        text = json.dumps(layer.get("inbound_nodes", []))
        for g in range(int(specialist.input[1].shape[1])):
            if f'"coefficients_{g}"' in text:
                groups.setdefault(g, []).append(layer["name"])
    return groups


def per_layer_disturbance(net, images, labels, seed=0, batch_size=256):
    """The paper's per-layer table (Sec. 4.9): specialist accuracy when only one layer's coefficients are
    shuffled within the layer (per example), for each coefficient group; the drop is against the predicted
    coefficients. One group per synthesized layer with ``per_layer=True`` (one for the whole model otherwise)."""
    from keras_layers.models.basisnet_mobilenet_v3 import stages

    preview, specialist = stages(net)
    labels = np.asarray(labels).reshape(-1)
    alpha = _coefficients(preview, images, batch_size)
    reference = _specialist_accuracy(specialist, images, alpha, labels, batch_size)
    names = group_layers(specialist)
    rows = []
    for g in range(alpha.shape[1]):
        acc = _specialist_accuracy(specialist, images, shuffle_within_layer(alpha, [g], seed), labels, batch_size)
        rows.append({"group": g, "layers": names.get(g, []), "accuracy": acc, "drop": reference - acc})
    return {"reference_accuracy": reference, "rows": rows}


# -- the must-show experiment ------------------------------------------------------------------------
def matched_static_width(target_madds, input_shape, num_classes, base_config, low=0.1, high=3.0, steps=9):
    """Width multiplier of `mobilenet_v3` whose MAdds are closest to `target_madds` (bisection, ~0.005 wide)."""
    from keras_layers import count_madds, models

    seen = {}

    def cost(w):
        if w not in seen:
            seen[w] = count_madds(models.build("mobilenet_v3", input_shape=input_shape, num_classes=num_classes,
                                               width_multiplier=w, **base_config), input_shape)
        return seen[w]

    for _ in range(steps):
        mid = round((low + high) / 2, 4)
        if cost(mid) < target_madds:
            low = mid
        else:
            high = mid
    best = min(seen, key=lambda w: abs(seen[w] - target_madds))
    return best, seen[best]


def evaluate(net, data="digits", image_size=32, max_drop=0.005, seed=0, limit=None):
    """Threshold sweep + pick on validation, the pick checked on test, disturbance on both splits."""
    from pipelines import data as datasets

    check_threshold(max_drop, "max_drop")
    shape = tuple(net.input_shape[1:])
    madds = stage_madds(net, shape)
    splits = {}
    for split in ("validation", "test"):
        images, labels, _ = datasets.as_numpy(data, split, image_size=image_size, limit=limit)
        splits[split] = (images, labels, predict(net, images))
    table = early_termination(splits["validation"][2], splits["validation"][1], madds)  # the grid: the report's sweep
    best = {k: v for k, v in select(splits["validation"][2], splits["validation"][1], madds, max_drop).items()
            if k not in ("reference_accuracy", "preview_accuracy")}
    return {
        "data": data, "image_size": image_size,
        "madds": {"preview": madds["preview"], "specialist": madds["full"] - madds["preview"], "full": madds["full"]},
        "val_accuracy": table["reference_accuracy"], "preview_val_accuracy": table["preview_accuracy"],
        "early_termination": {"table": [row(table, i) for i in range(len(table["threshold"]))],
                              "reference_accuracy": table["reference_accuracy"], "max_drop": max_drop,
                              "picked": best,
                              "test_at_picked": apply_threshold(splits["test"][2], splits["test"][1], madds,
                                                                best["threshold"])},
        "disturbance": {split: disturbance(net, images, labels, seed=seed)
                        for split, (images, labels, _) in splits.items()},
        "disturbance_per_layer": {split: per_layer_disturbance(net, images, labels, seed=seed)
                                  for split, (images, labels, _) in splits.items()},
    }


def evaluate_saved(path, **kwargs):
    """`evaluate` a saved BasisNet (a `.keras` file or a run directory holding `model.keras`)."""
    from pathlib import Path

    from pipelines.training.saving import load_model

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "model.keras"
    if not p.exists():
        raise FileNotFoundError(f"no saved model at run={str(path)!r} (expected a .keras file or a run directory)")
    net = load_model(p)
    return evaluate(net, **kwargs), net


def test_accuracy(net, data, image_size, limit=None, output="logits"):
    from pipelines import data as datasets

    from pipelines.export.checks import keras_outputs

    images, labels, _ = datasets.as_numpy(data, "test", image_size=image_size, limit=limit)
    out = keras_outputs(net, images)
    preds = (out[output] if isinstance(out, dict) else out).argmax(-1)
    return float((preds == labels.reshape(-1)).mean())


def run_experiment(data="digits", image_size=32, epochs=10, num_bases=None, seeds=(0,), max_drop=0.005,
                   model_config=None, recipe_config=None, out="runs", limit=None, measure=False, threads=1,
                   repeats=3, test_images=None, tracking_uri=None, preset=None, log=None):
    """For each seed: train BasisNet and the MAdds-matched static specialist (same epochs, same seed), then
    `evaluate` the BasisNet. Returns `(report, net of the first seed)`; the report (first seed's tables,
    every seed's summary) is also written to `<out>/basisnet-eval.json`. Finished runs of the same config in
    `out` are reused. With `measure`, both are exported and their bundles measured on the test split as the
    phone runs them (`deployed.measure`; BasisNet with the export's threshold rule): the report's
    "deployed" rows. With `tracking_uri` the report, params, metrics and figures go to MLflow.
    `preset` ("paper" | "default" | None, `pipelines.experiments.resolve_preset`): both recipes' and the
    BasisNet architecture's preset; `num_bases` None: the resolved model's (4 by default, 16 in the paper's).
    """
    from pathlib import Path

    from keras_layers import count_madds, models
    from pipelines.experiments import deployed
    from pipelines.training import TrainConfig, recipes

    from pipelines.experiments import recipe_label, resolve_preset, run_tag

    log = log or (lambda message: print(message, flush=True))
    seeds = [int(s) for s in seeds] or [0]
    model_config, recipe_config, preset = resolve_preset(preset, model_config, recipe_config)
    if num_bases is not None:
        model_config = {"num_bases": num_bases, **model_config}
    check_threshold(max_drop, "max_drop")
    common = dict(data=data, image_size=image_size, epochs=epochs, out=out, limit=limit)
    TrainConfig(model="basisnet_mobilenet_v3", model_config=model_config, recipe_config=recipe_config,
                **common).validate()
    resolved_model = {**models.config_fields("basisnet_mobilenet_v3"),
                      **models.resolve_config("basisnet_mobilenet_v3", model_config)}
    num_bases = resolved_model["num_bases"]
    # the static peer trains with the standard recipe and the BasisNet recipe's regularization as given
    # (with the paper preset: as the preset resolves it, e.g. the paper's weight decay)
    given = recipes.resolve(recipes.recipe_class("basisnet"), recipe_config) if preset == "paper" else recipe_config
    static_recipe = {k: v for k, v in given.items() if k in ("label_smoothing", "weight_decay", "augment", "mixup")}
    if preset != "default":
        static_recipe["preset"] = preset
    basis_label = recipe_label("basisnet", preset, recipe_config)
    static_label = recipe_label("standard", preset, {k: v for k, v in recipe_config.items() if k in static_recipe})

    report, first_net, rows, measured = None, None, [], []
    for seed in seeds:
        log(f"== seed {seed}: BasisNet-MV3 ({num_bases} bases), {epochs} epochs on {data} at "
            f"{image_size}x{image_size}")
        cfg = TrainConfig(model="basisnet_mobilenet_v3", model_config=model_config, recipe_config=recipe_config,
                          seed=seed, run_name=f"basisnet-eval-basisnet{run_tag(preset)}-s{seed}", **common)
        basis_metrics, basis_dir, net = deployed.train_or_reuse(cfg, log)
        shape = tuple(net.input_shape[1:])
        full = count_madds(net, shape)
        static_defaults = models.config_fields("mobilenet_v3")
        static_base = {k: resolved_model[k] for k in ("spec", "dropout", "last_channels", "head_channels")
                       if resolved_model[k] != static_defaults[k]}
        width, static_madds = matched_static_width(full, shape, int(net.output["logits"].shape[-1]), static_base)
        log(f"== seed {seed}: static specialist mobilenet_v3 x{width} ({static_madds / 1e6:.2f}M MAdds vs "
            f"BasisNet {full / 1e6:.2f}M), {epochs} epochs")
        static_cfg = TrainConfig(model="mobilenet_v3", model_config={**static_base, "width_multiplier": width},
                                 recipe_config=static_recipe, seed=seed, run_name=f"basisnet-eval-static{run_tag(preset)}-s{seed}",
                                 **common)
        static_metrics, static_dir, static_net = deployed.train_or_reuse(static_cfg, log)
        log(f"== seed {seed}: early termination and disturbance")
        ev = evaluate(net, data=data, image_size=image_size, max_drop=max_drop, seed=seed, limit=limit)
        rows.append({
            "seed": seed,
            "basisnet": {"recipe": basis_label, "val_accuracy": basis_metrics["val_accuracy"], "best_epoch": basis_metrics["best_epoch"],
                         "test_accuracy": test_accuracy(net, data, image_size, limit), "madds": full,
                         "params": basis_metrics["params"], "run": str(basis_dir)},
            "static": {"model": "mobilenet_v3", "width_multiplier": width, "recipe": static_label,
                       "val_accuracy": static_metrics["val_accuracy"], "best_epoch": static_metrics["best_epoch"],
                       "test_accuracy": test_accuracy(static_net, data, image_size, limit),
                       "madds": static_metrics["madds"], "params": static_metrics["params"], "run": str(static_dir)},
            "picked": ev["early_termination"]["picked"], "test_at_picked": ev["early_termination"]["test_at_picked"],
            "disturbance_validation": ev["disturbance"]["validation"],
        })
        if measure:
            kw = dict(data=data, image_size=image_size, limit=limit, threads=threads, repeats=repeats,
                      test_images=test_images, log=log)
            b = deployed.measure(net, Path(basis_dir) / "bundle", **kw)
            sel = b["policy"].get("threshold_selection", {})
            measured.append({"name": f"BasisNet {num_bases} bases s{seed} (t={b['policy']['threshold']:.4f}, "
                                     f"{sel.get('past_first_stage', float('nan')):.0%} on)",
                             "recipe": basis_label, "seed": seed, "run": str(basis_dir), "measured": b})
            measured.append({"name": f"static mobilenet_v3 x{width} s{seed}", "recipe": static_label, "seed": seed,
                             "run": str(static_dir),
                             "measured": deployed.measure(static_net, Path(static_dir) / "bundle", **kw)})
        if report is None:
            report, first_net = ev, net
    report.update({"epochs": epochs, "num_bases": num_bases, "model_config": model_config, "limit": limit,
                   "recipe_config": recipe_config, "recipe": basis_label, "static_recipe": static_label,
                   "preset": preset, "seeds": rows,
                   "deployed": measured})
    from pipelines.experiments import report_name, write_report

    write_report(out, report_name("basisnet-eval", preset), report, log=log)
    if tracking_uri is not None:
        log_result(report, tracking_uri, log)
    return report, first_net


def log_result(report, tracking_uri, log=print):
    """The report to one MLflow run: params, metrics, report.json, the early-termination curve."""
    from pipelines.experiments import deployed

    table = report["early_termination"]["table"]
    p = report["early_termination"]["picked"]
    fig = deployed.madds_figure({"preview threshold sweep (validation)": ([r["madds"] for r in table],
                                                                         [r["accuracy"] for r in table])},
                                {f"picked t={p['threshold']:.4f}": (p["madds"], p["accuracy"])},
                                ylabel="validation accuracy (%)")
    figures = {"basisnet_early_termination.png": fig}
    if report["deployed"]:
        figures["basisnet_accuracy_latency.png"] = deployed.accuracy_latency_figure(report["deployed"])
    params = {k: report.get(k) for k in ("data", "image_size", "epochs", "num_bases", "model_config",
                                         "recipe_config", "limit", "recipe", "static_recipe", "preset")}
    metrics = {}
    for r in report["seeds"]:
        for name in ("basisnet", "static"):
            metrics[f"s{r['seed']}.{name}.test_accuracy"] = r[name]["test_accuracy"]
        metrics[f"s{r['seed']}.picked.madds_saving"] = r["picked"]["madds_saving"]
        metrics[f"s{r['seed']}.picked.accuracy_drop"] = r["picked"]["accuracy_drop"]
    return deployed.log_result("basisnet-eval", params, report["deployed"], report, figures,
                               tracking_uri=tracking_uri, metrics=metrics, log=log)


def format_report(report):
    """The report as plain-text tables."""
    m, et = report["madds"], report["early_termination"]
    lines = []
    if "seeds" in report:
        rows = report["seeds"]
        lines += [
            f"BasisNet vs static specialist of the same MAdds ({report['data']} {report['image_size']}x"
            f"{report['image_size']}, {report['epochs']} epochs each; val and test of the best validation epoch)",
            f"  {'seed':<5}{'model':<40}{'recipe':<18}{'MAdds':>9}{'params':>9}{'val acc':>9}{'test acc':>9}",
        ]
        labels = {"basisnet": report.get("recipe", "basisnet (default)"),
                  "static": report.get("static_recipe", "standard (default)")}
        def seed_row(seed, model, label, m):
            return (f"  {seed:<5}{model:<40}{label:<18}{m['madds'] / 1e6:>8.2f}M{m['params'] / 1e3:>8.0f}K"
                    f"{m['val_accuracy']:>9.4f}{m['test_accuracy']:>9.4f}")

        for r in rows:
            lines += [seed_row(r["seed"], f"BasisNet-MV3 {report['num_bases']} bases (preview+specialist)",
                               labels["basisnet"], r["basisnet"]),
                      seed_row(r["seed"], f"static mobilenet_v3 x{r['static']['width_multiplier']}", labels["static"],
                               r["static"])]
        for name in ("basisnet", "static"):
            val = np.mean([r[name]["val_accuracy"] for r in rows])
            test = np.mean([r[name]["test_accuracy"] for r in rows])
            lines.append(f"  {'mean':<5}{name:<40}{labels[name]:<18}{'':>18}{val:>9.4f}{test:>9.4f}")
        lines += ["", "Per seed: picked threshold on validation -> its MAdds saving and accuracy drop (val / test); "
                      "disturbance (val)"]
        for r in rows:
            p, t, d = r["picked"], r["test_at_picked"], r["disturbance_validation"]
            lines.append(f"  seed {r['seed']}: t={p['threshold']:.4f} saving {p['madds_saving']:.1%} / "
                         f"{t['madds_saving']:.1%}, drop {p['accuracy_drop'] * 100:.2f} / "
                         f"{t['accuracy_drop'] * 100:.2f} points; " +
                         ", ".join(f"{k} {d[k]:.4f}" for k in DISTURBANCES if k in d))
        if report.get("deployed"):
            from pipelines.experiments import deployed

            lines += ["", deployed.format_rows(report["deployed"], "Deployed bundles on the test split (LiteRT + "
                                               "XNNPACK batch 1; BasisNet with the export's threshold rule):")]
        lines += ["", f"Tables below: seed {rows[0]['seed']}", ""]
    lines += [
        f"Final BasisNet on validation: specialist {report['val_accuracy']:.4f}, preview alone "
        f"{report['preview_val_accuracy']:.4f}; MAdds preview {m['preview'] / 1e6:.3f}M, "
        f"specialist {m['specialist'] / 1e6:.3f}M, full {m['full'] / 1e6:.3f}M",
        "",
        f"Early termination on validation (stop after the preview when max softmax >= threshold)",
        f"  {'threshold':>9}{'accuracy':>10}{'stopped':>9}{'avg MAdds':>11}{'saving':>8}",
    ]
    for r in et["table"]:
        lines.append(f"  {r['threshold']:>9.2f}{r['accuracy']:>10.4f}{r['stopped']:>9.3f}"
                     f"{r['madds'] / 1e6:>10.3f}M{r['madds_saving']:>8.1%}")
    p, t = et["picked"], et["test_at_picked"]
    lines += [
        f"  picked threshold {p['threshold']:.4f} (allowed drop {et['max_drop'] * 100:.2f} points): accuracy "
        f"{p['accuracy']:.4f} vs {et['reference_accuracy']:.4f} (drop {p['accuracy_drop'] * 100:.2f} points), "
        f"{p['stopped']:.1%} stopped, average MAdds -{p['madds_saving']:.1%}",
        f"  same threshold on test: accuracy {t['accuracy']:.4f} vs {t['reference_accuracy']:.4f} without "
        f"(drop {t['accuracy_drop'] * 100:.2f} points), {t['stopped']:.1%} stopped, average MAdds "
        f"-{t['madds_saving']:.1%}",
        "",
        "Disturbance of the coefficients (specialist accuracy)",
        f"  {'coefficients':<16}{'validation':>11}{'test':>9}",
    ]
    for kind in DISTURBANCES:
        if kind in report["disturbance"]["validation"]:
            lines.append(f"  {kind:<16}{report['disturbance']['validation'][kind]:>11.4f}"
                         f"{report['disturbance']['test'][kind]:>9.4f}")
    per_layer = report.get("disturbance_per_layer")
    if per_layer:
        val, test = per_layer["validation"], per_layer["test"]
        lines += ["", "Per layer: coefficients of one layer shuffled within the layer (per example), the others "
                      "predicted; accuracy drop in points vs the predicted coefficients "
                      f"({100 * val['reference_accuracy']:.2f} / {100 * test['reference_accuracy']:.2f}%)",
                  f"  {'group':<6}{'layers':<44}{'val drop':>9}{'test drop':>10}"]
        for rv, rt in zip(val["rows"], test["rows"]):
            names = ", ".join(rv["layers"]) or "-"
            lines.append(f"  {rv['group']:<6}{names[:43]:<44}{100 * rv['drop']:>+9.2f}{100 * rt['drop']:>+10.2f}")
    return "\n".join(lines)


def export_bundle(net, out, data="digits", image_size=32, threshold=None, limit=None, log=print):
    """The Android bundle of `net` (the same `pipelines.export.export_net` as `python -m pipelines export`),
    float32, with `threshold` (None: picked on the validation split); returns export_net's summary
    (parity and the LiteRT latency of the whole policy per image)."""
    from pipelines import data as data_mod
    from pipelines.export import ExportOptions, export_net

    x, y, info = data_mod.as_numpy(name=data, split="validation", image_size=image_size, limit=limit)
    options = ExportOptions(quantize="float32", threshold=threshold, parity_images=min(len(x), 256),
                            latency_runs=100)
    return export_net(net, out, options, info.to_dict(), validation=(x, y), source=net.name, log=log)
