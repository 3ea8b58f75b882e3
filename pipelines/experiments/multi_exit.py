"""IMTA on a multi-exit MobileNetV2: GE + ISC + OFA vs plain summed losses, and budgeted inference.

    python -m pipelines multi-exit-eval --epochs 15 --seeds 0 1 2      # digits at 32x32, CPU, minutes

Trains `multi_exit_net` once per variant and seed with the same epochs, data and optimizer:
* ``plain``: no Gradient Equilibrium, no Inline Subnetwork Collaboration, summed CE of the exits;
* ``imta``: GE + ISC + One-for-All distillation in phase 2 (the second half of the epochs);
* ablations ``ge``, ``isc``, ``ofa``: one technique on top of ``plain`` (``--variants``);
* the control ``last``: only the last exit's loss (no GE / ISC / OFA): the same network trained as a static
  one, to tell what the early exits' losses do to the last exit;
then reports each exit's test accuracy (anytime prediction, mean over seeds) and, for the budgeted variant
(``budgeted``: by default ``imta`` if trained, else the last variant listed that trains its exits), budgeted batch
classification: thresholds chosen on the validation split for a range of average-MAdds budgets, test accuracy
and average MAdds at each.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time

import numpy as np

_OFF = {"gradient_equilibrium": False, "inline_collaboration": False}
_OFA = {"distill": True}  # alpha, temperature, phase1_fraction: the recipe's defaults or --recipe-config
VARIANTS = {  # name -> the switches each variant sets over the user's config (the paper's Table 2 rows)
    "plain": {"model_config": _OFF, "recipe_config": {"distill": False}},
    "ge": {"model_config": {**_OFF, "gradient_equilibrium": True}, "recipe_config": {"distill": False}},
    "isc": {"model_config": {**_OFF, "inline_collaboration": True}, "recipe_config": {"distill": False}},
    "ofa": {"model_config": _OFF, "recipe_config": _OFA},
    "imta": {"model_config": {"gradient_equilibrium": True, "inline_collaboration": True}, "recipe_config": _OFA},
    "last": {"model_config": _OFF, "recipe_config": {"distill": False, "last_exit_only": True}},
}
UNTRAINED_EXITS = ("last",)  # variants whose early exits learn nothing: never budgeted
DEFAULT_VARIANTS = ("plain", "imta")
BUDGET_FRACTIONS = tuple(round(0.3 + 0.05 * i, 2) for i in range(15))  # 0.30, 0.35, ..., 1.00


def variant_config(name, seed, epochs, data, image_size, model_config, recipe_config, out, limit, optimizer,
                   learning_rate, batch_size):
    """The `TrainConfig` of one variant and seed (validated; `out` is set when the run starts)."""
    from pipelines.experiments import run_tag
    from pipelines.training import TrainConfig

    spec = VARIANTS[name]
    return TrainConfig(model="multi_exit_net", data=data, image_size=image_size, epochs=epochs, seed=seed,
                       optimizer=optimizer, learning_rate=learning_rate, batch_size=batch_size,
                       model_config={**model_config, **spec["model_config"]},
                       recipe_config={**recipe_config, **spec["recipe_config"]},
                       out=out, run_name=f"{name}{run_tag(recipe_config.get('preset'))}-seed{seed}",
                       limit=limit).validate()


def choose_budgeted(variants, budgeted=None):
    """The variant whose early exits are budgeted: `budgeted` if given, else ``imta`` if listed, else the last
    listed variant that trains its exits."""
    trained = [v for v in variants if v not in UNTRAINED_EXITS]
    if budgeted is None:
        if not trained:
            raise ValueError(f"variants trains no early exit to budget (only {', '.join(UNTRAINED_EXITS)}); list "
                             f"another variant too; received variants={list(variants)!r}")
        return "imta" if "imta" in trained else trained[-1]
    if budgeted not in trained:
        raise ValueError(f"budgeted must be one of the variants that train their exits ({', '.join(trained)}); "
                         f"received budgeted={budgeted!r}")
    return budgeted


def last_exit_alone(net):
    """`net` up to its last exit as a plain single-output model sharing its weights (no early exits; with
    ISC it still runs the earlier classifiers whose logits feed the last one): the static network the
    budgeted bundle is measured against."""
    import tf_keras as keras

    from keras_layers.models.multi_exit_net import exit_prefix, num_exits

    prefix = exit_prefix(net, num_exits(net) - 1)
    return keras.Model(prefix.inputs, prefix.outputs[0], name=f"{net.name}_last_exit")


def deployed_thresholds(curve, val_last_accuracy, max_drop=0.005):
    """The early-exit thresholds the phone gets: those of the cheapest budget of `curve` (one seed's
    `budget_curve`) whose *validation* accuracy is within `max_drop` of the last exit's, else of the most
    accurate budget ("cheapest": the lowest average cost, MAdds and stages, on validation); as model.json
    writes them (one per exit but the last, probabilities; None for a left-out exit).
    Returns (thresholds, that curve row)."""
    ok = [r for r in curve if r["val_accuracy"] >= val_last_accuracy - max_drop - 1e-12]
    best = min(ok, key=lambda r: r["val_avg_cost"]) if ok \
        else max(curve, key=lambda r: r["val_accuracy"])
    return row_thresholds(best), best


def row_thresholds(row):
    """A budget curve row's thresholds as model.json takes them: one per exit but the last, in [0, 1], and
    None (the exit is left out of the bundle) for an exit the row does not keep (its ``exits``, chosen by
    `search_policy`)."""
    return [min(max(float(t), 0.0), 1.0) if k in row["exits"] else None
            for k, t in enumerate(row["thresholds"][:-1])]


def check_deploy_budgets(deploy_budgets, budget_fractions, measure):
    """`deploy_budgets` as a tuple of fractions that are all in `budget_fractions` (and only with `measure`)."""
    deploy_budgets = tuple(deploy_budgets or ())
    if deploy_budgets and not measure:
        raise ValueError(f"deploy_budgets needs measure (each is an exported bundle measured on the test split); "
                         f"received deploy_budgets={list(deploy_budgets)!r} with measure=False")
    off = [f for f in deploy_budgets if isinstance(f, bool) or not isinstance(f, (int, float))
           or not any(abs(f - b) < 1e-9 for b in budget_fractions)]
    if off:
        among = ", ".join(f"{b:.2f}" for b in budget_fractions)
        raise ValueError(f"deploy_budgets must be among the budget fractions ({among}); "
                         f"received deploy_budgets={list(deploy_budgets)!r}")
    return deploy_budgets


def run(epochs=15, seeds=(0,), data="digits", image_size=32, model_config=None, recipe_config=None,
        optimizer="adam", learning_rate=3e-3, variants=DEFAULT_VARIANTS, budget_fractions=BUDGET_FRACTIONS, out=None,
        limit=None, batch_size=64, measure=False, threads=1, repeats=3, test_images=None, tracking_uri=None,
        preset=None, budgeted=None, deploy_budgets=(), stage_madds=None, log=print):
    """Run the comparison; returns a dict with the per-exit table and the budgeted curve (see module doc).
    A finished run of the same config already in `out` is reused (`deployed.train_or_reuse`). With
    `measure`, each seed's budgeted net is exported with `deployed_thresholds` and its bundle measured on
    the test split (`deployed.measure`: accuracy, average latency and MAdds per image, per difficulty
    bucket, the share of images leaving at each exit): the result's "deployed" rows; every variant's net is
    also measured without early exits (`last_exit_alone`, a plain bundle; rows with ``policy``). With `tracking_uri` the
    params, metrics, the result (`mlflow.log_dict`) and the budget curve (`mlflow.log_figure`) go to MLflow.
    `preset` ("paper" | "default" | None: `pipelines.experiments.resolve_preset`) is every variant's recipe and
    model preset; the variants' switches still apply on top of it. `budgeted` names the variant whose exits
    are budgeted (and, with `measure`, deployed): one of `variants` that trains its exits. `deploy_budgets`
    (among `budget_fractions`; with `measure`) also exports and measures the budgeted net at each of those
    budgets' thresholds (rows with ``policy`` "budget F"): its measured curve. A budget is a fraction of the
    last exit's cost, MAdds + `stage_madds` (None: the export's `STAGE_MADDS`) per stage an image runs; each
    budget's exits and thresholds are chosen on validation (`search_policy`), as the export chooses them."""
    from keras_layers.models.multi_exit_net import exit_madds
    from pipelines import data as data_mod
    from pipelines.experiments import deployed
    from pipelines.export.families import multi_exit as family

    from pipelines.experiments import recipe_label, resolve_preset

    model_config, recipe_config, preset = resolve_preset(preset, model_config, recipe_config)
    label = recipe_label("multi_exit", preset, recipe_config)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be among {', '.join(VARIANTS)}; received variants={list(variants)!r}")
    budget_variant = choose_budgeted(variants, budgeted)
    deploy_budgets = check_deploy_budgets(deploy_budgets, budget_fractions, measure)
    stage_madds = family.check_stage_madds(family.STAGE_MADDS if stage_madds is None else stage_madds)
    if not seeds:
        raise ValueError(f"seeds must name at least one seed; received seeds={seeds!r}")
    configs = {(seed, v): variant_config(v, seed, epochs, data, image_size, model_config, recipe_config, out, limit,
                                         optimizer, learning_rate, batch_size) for seed in seeds for v in variants}
    out = out or tempfile.mkdtemp(prefix="multi_exit_eval-")
    x_val, y_val, info = data_mod.as_numpy(data, "validation", image_size=image_size, limit=limit)
    x_test, y_test, _ = data_mod.as_numpy(data, "test", image_size=image_size, limit=limit)
    anytime, curves, costs, measured = {v: [] for v in variants}, [], None, []
    for seed in seeds:
        for variant in variants:
            start = time.time()
            _, run_dir, net = deployed.train_or_reuse(dataclasses.replace(configs[seed, variant], out=out),
                                                      log=lambda m: None)
            test_probs = family.exit_probabilities(net, x_test)
            acc = family.anytime_accuracy(test_probs, y_test)
            anytime[variant].append(acc)
            log(f"[seed {seed}] {variant:5s} {time.time() - start:5.0f} s  test accuracy per exit: "
                + " ".join(f"{a:.4f}" for a in acc) + f"  ({run_dir})")
            if variant == budget_variant:
                costs = exit_madds(net, info.input_shape)
                full = costs[-1] + stage_madds  # the last exit alone: one stage
                val_probs = family.exit_probabilities(net, x_val)
                budgets = [f * full for f in budget_fractions if f * full >= costs[0] + stage_madds]
                curves.append(family.budget_curve(val_probs, y_val, test_probs, y_test,
                                                  family.kept_exit_madds(net, info.input_shape), budgets, stage_madds))
                if measure:
                    val_last = float(family.anytime_accuracy(val_probs, y_val)[-1])
                    thresholds, row = deployed_thresholds(curves[-1], val_last)
                    m = deployed.measure(net, f"{run_dir}/bundle", data=data, image_size=image_size, limit=limit,
                                         export={"exit_thresholds": thresholds}, threads=threads, repeats=repeats,
                                         test_images=test_images, log=log)
                    measured.append({"name": f"multi_exit {variant} s{seed} (budget {row['budget'] / full:.2f}, "
                                             f"{len(row['exits'])} stages)",
                                     "recipe": label, "seed": seed, "run": str(run_dir), "measured": m})
                    for f in deploy_budgets:
                        rows = [r for r in curves[-1] if abs(r["budget"] / full - f) < 1e-9]
                        if not rows:
                            log(f"[seed {seed}] budget {f:.2f} is below the first exit's cost: not deployed")
                            continue
                        m = deployed.measure(net, f"{run_dir}/bundle-budget{f:.2f}", data=data,
                                             image_size=image_size, limit=limit,
                                             export={"exit_thresholds": row_thresholds(rows[0])}, threads=threads,
                                             repeats=repeats, test_images=test_images, log=log)
                        measured.append({"name": f"multi_exit {variant} s{seed} budget {f:.2f}", "recipe": label,
                                         "seed": seed, "run": str(run_dir), "variant": variant,
                                         "policy": f"budget {f:.2f}", "budget_fraction": f, "measured": m})
            if measure:  # the same network without early exits: what the exits buy on the clock
                m = deployed.measure(last_exit_alone(net), f"{run_dir}/bundle-last-exit", data=data,
                                     image_size=image_size, limit=limit, threads=threads, repeats=repeats,
                                     test_images=test_images, log=log)
                measured.append({"name": f"multi_exit {variant} s{seed} last exit alone", "recipe": label,
                                 "seed": seed, "run": str(run_dir), "variant": variant, "policy": "last exit alone",
                                 "measured": m})
    table = {v: np.mean(a, axis=0).tolist() for v, a in anytime.items()}
    curve = []
    for i, budget in enumerate(curves[0]):
        rows = [c[i] for c in curves]
        curve.append({"budget_fraction": budget["budget"] / (costs[-1] + stage_madds),
                      "test_accuracy": float(np.mean([r["test_accuracy"] for r in rows])),
                      "test_avg_madds": float(np.mean([r["test_avg_madds"] for r in rows])),
                      "test_avg_cost": float(np.mean([r["test_avg_cost"] for r in rows])),
                      "stages": [len(r["exits"]) for r in rows],
                      "exit_share": np.mean([r["exit_share"] for r in rows], axis=0).tolist()})
    last_acc = table[budget_variant][-1]
    reached = [r for r in curve if r["test_accuracy"] >= last_acc - 0.005]
    best = min(reached, key=lambda r: r["test_avg_madds"]) if reached else None
    result = {"epochs": epochs, "seeds": list(seeds), "optimizer": optimizer, "learning_rate": learning_rate,
              "data": data, "image_size": image_size, "limit": limit, "recipe": label, "preset": preset,
              "exit_madds": costs, "stage_madds": float(stage_madds), "per_exit_test_accuracy": table,
              "per_exit_per_seed": {v: [a.tolist() for a in accs] for v, accs in anytime.items()},
              "budgeted_variant": budget_variant, "budgeted": curve, "last_exit_accuracy": last_acc,
              "cheapest_within_half_point": best, "deployed": measured, "out": out}
    if tracking_uri is not None:
        log_result(result, tracking_uri, log)
    return result


def log_result(result, tracking_uri, log=print):
    """The result to one MLflow run: params, per-exit and deployed metrics, result.json, the budget curve."""
    from pipelines.experiments import deployed

    curves = {"budgeted (thresholds on val)": ([r["test_avg_madds"] for r in result["budgeted"]],
                                               [r["test_accuracy"] for r in result["budgeted"]])}
    curves.update({f"{v}: each exit alone": (result["exit_madds"], accs)
                   for v, accs in result["per_exit_test_accuracy"].items()})
    fig = deployed.madds_figure(curves)
    figures = {"multi_exit_budget_curve.png": fig}
    if result["deployed"]:
        figures["multi_exit_accuracy_latency.png"] = deployed.accuracy_latency_figure(result["deployed"])
    params = {k: result[k] for k in ("epochs", "seeds", "optimizer", "learning_rate", "data", "image_size", "limit",
                                     "recipe", "preset", "budgeted_variant") if k in result}
    rows = list(result["deployed"])
    extra = {f"{v}.exit_{i}.test_accuracy": a for v, accs in result["per_exit_test_accuracy"].items()
             for i, a in enumerate(accs)}
    return deployed.log_result("multi-exit-eval", params, rows, result, figures, tracking_uri=tracking_uri,
                               metrics=extra, log=log)


def format_report(result):
    """Markdown tables of a `run` result."""
    k = len(result["exit_madds"])
    lines = [f"{result['data']} {result['image_size']}x{result['image_size']}, {result['epochs']} epochs, "
             f"{result['optimizer']} lr {result['learning_rate']}, "
             f"seeds {result['seeds']} (test accuracy, mean over seeds)", "",
             "| variant | recipe | " + " | ".join(f"exit {i}" for i in range(k)) + " |",
             "|---" * (k + 2) + "|",
             "| cumulative MAdds (M) | | " + " | ".join(f"{c / 1e6:.2f}" for c in result["exit_madds"]) + " |"]
    label = result.get("recipe", "multi_exit (default)")
    for v, accs in result["per_exit_test_accuracy"].items():
        lines.append(f"| {v} | {label} | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |")
    table = result["per_exit_test_accuracy"]
    if "plain" in table:
        for v in table:
            if v != "plain":
                diff = np.subtract(table[v], table["plain"])
                lines.append(f"| {v} - plain | | " + " | ".join(f"{100 * d:+.2f}" for d in diff) + " |")
    lines += ["", f"Budgeted batch classification ({result['budgeted_variant']}, recipe {label}; exits kept and "
              f"thresholds from the validation split, cost = MAdds + {result.get('stage_madds', 0) / 1e6:.2f} M a "
              "stage):", "",
              "| budget (x last exit's cost) | stages (per seed) | test avg MAdds (M) | saving vs last exit | "
              "test accuracy | exit shares |", "|---|---|---|---|---|---|"]
    last = result["exit_madds"][-1]
    for r in result["budgeted"]:
        stages = "/".join(str(n) for n in r["stages"]) if "stages" in r else ""
        lines.append(f"| {r['budget_fraction']:.2f} | {stages} | {r['test_avg_madds'] / 1e6:.2f} | "
                     f"{100 * (1 - r['test_avg_madds'] / last):.1f}% | {100 * r['test_accuracy']:.2f} | "
                     + " ".join(f"{s:.2f}" for s in r["exit_share"]) + " |")
    best = result["cheapest_within_half_point"]
    lines.append("")
    lines.append(f"last exit alone: {100 * result['last_exit_accuracy']:.2f}% at {last / 1e6:.2f} M MAdds")
    if best:
        lines.append(f"cheapest budget within 0.5 points of it: {100 * best['test_accuracy']:.2f}% at "
                     f"{best['test_avg_madds'] / 1e6:.2f} M MAdds ({100 * (1 - best['test_avg_madds'] / last):.1f}% fewer)")
    else:
        lines.append("no budget reached the last exit's accuracy within 0.5 points")
    if result.get("deployed"):
        from pipelines.experiments import deployed

        lines += ["", deployed.format_rows(result["deployed"], "Deployed policy (bundle, thresholds of the cheapest "
                                           "budget within 0.5 points on validation) and each variant's net without "
                                           "early exits (last exit alone), test split:")]
    return "\n".join(lines)


def to_json(result):
    return json.dumps(result, indent=2, default=float)
