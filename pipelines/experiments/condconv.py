"""CondConv (Yang et al., NeurIPS 2019) against its static peer at (nearly) equal MAdds, experts 1/2/4/8.

    python -m pipelines condconv-eval --data cluttered-digits --epochs 10 --experts 1 2 4 8 --seeds 0

The paper's claim: routing E expert kernels per example adds capacity at almost no extra multiply-adds
(the kernels are mixed once per example), so CondConv beats the static network of the same MAdds. Per
seed this trains the static `mobilenet_v2` and `condconv_mobilenet_v2` with each number of experts, the
same architecture config (width, depth, head; the CondConv model's routing is its only extra MAdds), the
same data, epochs, optimizer and seed, each with its family's recipe (`condconv` for CondConv) in the
chosen preset (``--preset paper``: the paper's recipe and CC-MobileNetV2 placement), and measures each as the phone runs it
(`pipelines.experiments.deployed.measure`: test accuracy, MAdds, measured batch-1 LiteRT latency per
image, per difficulty bucket). E = 1 is the control: one "expert" scaled by its routing weight, the
static network's capacity.

Finished runs already in `out` are reused (`deployed.train_or_reuse`), so training can run in a
background queue and the measurement later, side by side. Writes ``<out>/condconv-eval.json``
(``condconv-eval-paper.json`` with the paper preset; an earlier report there is kept as
``condconv-eval.1.json``, ...: `pipelines.experiments.write_report`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

EXPERTS = (1, 2, 4, 8)
# backbone -> the fields of the CondConv model's config its static peer shares
BACKBONES = {"mobilenet_v2": ("width_multiplier", "depth_multiplier", "dropout", "last_channels"),
             "mobilenet_v3": ("width_multiplier", "spec", "dropout", "last_channels", "head_channels")}


def run_stem(backbone):
    """The prefix of the backbone's run names and report: "condconv" (mobilenet_v2, the names of every earlier
    run), "condconv-v3" (mobilenet_v3)."""
    return "condconv" if backbone == "mobilenet_v2" else "condconv-v3"


def configs(experts=EXPERTS, seed=0, data="cluttered-digits", image_size=32, epochs=10, limit=None, out="runs",
            model_config=None, preset=None, recipe_config=None, learning_rate=None, backbone="mobilenet_v2"):
    """{"static": TrainConfig, 1: ..., 2: ...} for one seed, validated. `preset`: the recipes' and the models'
    (`pipelines.experiments.resolve_preset`); the static peer gets the same preset (its `standard` recipe
    and `mobilenet_v2` have no paper values of their own). `learning_rate` (default: `TrainConfig`'s) is
    every model's, static peer included; a non-default one is part of the run names. `backbone`: the static
    network, and ``condconv_<backbone>`` the CondConv one (mobilenet_v3's runs are named ``condconv-v3-...``)."""
    import dataclasses

    from pipelines.experiments import resolve_preset, run_tag
    from pipelines.training import TrainConfig

    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; received backbone={backbone!r}")
    model_config, recipe_config, preset = resolve_preset(preset, model_config, recipe_config)
    lr = {} if learning_rate is None else {"learning_rate": learning_rate}
    peer_preset = {} if preset == "default" else {"preset": preset}
    if "num_experts" in model_config:
        raise ValueError(f"num_experts comes from --experts; received model_config num_experts="
                         f"{model_config['num_experts']!r}")
    if not experts:
        raise ValueError(f"experts must name at least one count; received experts={list(experts)!r}")
    for e in experts:
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ValueError(f"experts must be ints >= 1; received experts={list(experts)!r}")
    common = dict(data=data, image_size=image_size, epochs=epochs, seed=seed, limit=limit, out=out, **lr)
    static = {**{k: v for k, v in model_config.items() if k in BACKBONES[backbone]}, **peer_preset}
    peer = TrainConfig(model=backbone, model_config=static, recipe_config=dict(peer_preset),
                       run_name=f"condconv-static-s{seed}", **common).validate()  # a bad rate fails here
    tag = run_tag(preset) + (f"-lr{peer.learning_rate:g}" if lr else "")
    stem = run_stem(backbone)
    out_cfgs = {"static": dataclasses.replace(peer, run_name=f"{stem}-static{tag}-s{seed}")}
    for e in experts:
        out_cfgs[e] = TrainConfig(model=f"condconv_{backbone}", model_config={**model_config, "num_experts": e},
                                  recipe_config=recipe_config, run_name=f"{stem}-e{e}{tag}-s{seed}",
                                  **common).validate()
    return out_cfgs


def run_experiment(experts=EXPERTS, seeds=(0,), data="cluttered-digits", image_size=32, epochs=10, limit=None,
                   out="runs", model_config=None, threads=1, repeats=3, test_images=None, tracking_uri=None,
                   preset=None, recipe_config=None, learning_rate=None, backbone="mobilenet_v2", log=print):
    """Train (or reuse) and measure the static peer and every CondConv; returns the report (also written to
    ``<out>/condconv-eval.json``; logged to MLflow when `tracking_uri` is given)."""
    from keras_layers import count_madds
    from pipelines.experiments import deployed

    if not seeds:
        raise ValueError(f"seeds must name at least one seed; received seeds={list(seeds)!r}")
    deployed.check_repeats(repeats)
    from pipelines.experiments import recipe_label, resolve_preset

    model_config, recipe_config, preset = resolve_preset(preset, model_config, recipe_config)
    plan = {seed: configs(experts, seed, data, image_size, epochs, limit, out, model_config, preset, recipe_config,
                          learning_rate, backbone) for seed in seeds}
    rows = []
    for seed, cfgs in plan.items():
        for key, cfg in cfgs.items():
            metrics, folder, net = deployed.train_or_reuse(cfg, log)
            m = deployed.measure(net, Path(folder) / "bundle", data=data, image_size=image_size, limit=limit,
                                 threads=threads, repeats=repeats, test_images=test_images, log=log)
            name = f"{backbone} (static) s{seed}" if key == "static" else f"condconv_{backbone} E={key} s{seed}"
            rows.append({"name": name, "experts": 0 if key == "static" else key, "seed": seed,
                         "recipe": recipe_label(cfg.recipe_name(), preset, cfg.recipe_config), "run": str(folder),
                         "val_accuracy": metrics.get("val_accuracy"), "params": metrics.get("params"),
                         "madds": count_madds(net, tuple(net.input_shape[1:])), "measured": m})
    summary = []
    for e in [0, *experts]:
        rs = [r for r in rows if r["experts"] == e]
        summary.append({"experts": e, "seeds": len(rs),
                        "accuracy": float(np.mean([r["measured"]["accuracy"] for r in rs])),
                        "accuracy_std": float(np.std([r["measured"]["accuracy"] for r in rs])),
                        "avg_latency_ms": float(np.mean([r["measured"]["avg_latency_ms"] for r in rs])),
                        "madds": float(np.mean([r["madds"] for r in rs]))})
    report = {"data": data, "image_size": image_size, "epochs": epochs, "limit": limit, "seeds": list(seeds),
              "experts": list(experts), "model_config": model_config, "recipe_config": recipe_config,
              "preset": preset, "learning_rate": plan[seeds[0]]["static"].learning_rate, "backbone": backbone,
              "threads": threads, "repeats": repeats, "rows": rows, "summary": summary}
    from pipelines.experiments import report_name, write_report

    write_report(out, report_name(f"{run_stem(backbone)}-eval", preset), report, log=log)
    if tracking_uri is not None:
        fig = deployed.accuracy_latency_figure(rows, title=f"CondConv vs static on {data}, {epochs} epochs")
        params = {k: report[k] for k in ("data", "image_size", "epochs", "limit", "seeds", "experts", "model_config",
                                         "recipe_config", "preset", "learning_rate", "backbone", "threads",
                                         "repeats")}
        deployed.log_result("condconv-eval", params, rows, report, {"condconv_accuracy_latency.png": fig},
                            tracking_uri=tracking_uri, log=log)
    return report


def format_report(report):
    from pipelines.experiments import deployed

    lines = [deployed.format_rows(report["rows"], (
        f"CondConv vs static {report.get('backbone', 'mobilenet_v2')} on {report['data']} "
        f"{report['image_size']}x{report['image_size']}, "
        f"{report['epochs']} epochs, limit {report['limit']}, seeds {report['seeds']}, preset "
        f"{report.get('preset', 'default')} (test split; latency: LiteRT + "
        f"XNNPACK batch 1, {report['threads']} thread, mean of per-image medians of {report['repeats']} runs)")), "",
        f"  {'experts':<10}{'seeds':>6}{'MAdds':>10}{'test acc (mean +- std)':>26}{'avg ms':>9}{'vs static':>11}"]
    static = report["summary"][0]
    for s in report["summary"]:
        name = "static" if s["experts"] == 0 else str(s["experts"])
        lines.append(f"  {name:<10}{s['seeds']:>6}{s['madds'] / 1e6:>9.2f}M"
                     f"{100 * s['accuracy']:>18.2f} +- {100 * s['accuracy_std']:.2f}{s['avg_latency_ms']:>9.3f}"
                     f"{100 * (s['accuracy'] - static['accuracy']):>+10.2f}p")
    return "\n".join(lines)
