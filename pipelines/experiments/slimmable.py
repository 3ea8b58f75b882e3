"""The numbers issue 6 asks for, at 32x32 on `--data` (digits by default; small, CPU):

* ``widths`` - each width of `slimmable_mobilenet_v1` vs the same-width MobileNetV1 trained alone
  (`build_mobilenet_v1`), same data, epochs, optimizer and schedule (``skip_alone``: the slimmable network
  only, e.g. to compare its presets when the networks alone were trained already: the ``standard`` recipe's
  paper preset is its default, so they do not change with ``--preset``);
* ``dsnet`` - DS-Net: Stage I (IEB supernet) once, BN recalibration of every width, then Stage II
  gate training for several target MAdds; reports each static width and each gate as
  (validation accuracy, average MAdds per example) - the accuracy/MAdds curve. Each gate is reported twice:
  as trained (argmax of its scores) and with an offset on its widest score calibrated on the validation split
  (`ds_net.widest_offset`: the widest width's accuracy within 0.5 points for the fewest MAdds), with the share of
  validation images SGS's try-best rule sends to each end (`ds_net.try_best_shares`).

    python -m pipelines slimmable-eval widths --epochs 15
    python -m pipelines slimmable-eval dsnet --epochs 15 --gate-epochs 4 --gates 1.0,0.5,1.0 1.0,0.5,0
    python -m pipelines slimmable-eval dsnet --data cluttered-digits --epochs 10 --measure \\
        --tracking-uri sqlite:///mlruns.db

With ``measure`` (``--measure``) every model is also measured as the phone runs it
(`pipelines.experiments.deployed.measure`: exported to its bundle under ``<out>/bundles/<experiment>/``, run
on the test split one image at a time: test accuracy, average LiteRT latency and MAdds per image, per
difficulty bucket). ``widths``: each network trained alone (a plain model) and each width of the slimmable
network as its own plain narrow model (`slimmable_mobilenet_v1.export_width`, after BN recalibration: the
weights the experiment ends with); the rows get ``alone_measured`` and ``slimmable_measured``. ``dsnet``: each
gated network as its DS-Net bundle (front + gate, one back per width; ``stage_share`` is the share of test
images the gate sent to each width) and each static width of the supernet as one plain narrow model
(`ds_mobilenet_v1.export_width`), so the gates are compared with the static widths on measured latency;
``static[w]`` and each gate get ``measured``.

`log_result` logs a result to one MLflow run (`deployed.log_result`: params, the accuracies per width and
the measured fields as metrics, the result as ``result.json``, the accuracy-vs-MAdds figure and, when
measured, the accuracy-vs-latency figure).

Prints a Markdown table and writes JSON next to it (``--out``). Uses `TrainingModel` + the recipes
(no training loop of its own).
"""
from __future__ import annotations

import time
from pathlib import Path

import pipelines  # noqa: F401


WIDTHS = (0.25, 0.5, 0.75, 1.0)  # --widths' default (Slimmable Networks' widths); DS-Net's paper preset has its own


def _presets(args, recipe_config=None):
    """(model_config, recipe_config, preset) of `--preset` (`pipelines.experiments.resolve_preset`), the
    recipe config being `args.recipe_config` (a dict: `--recipe-config` as the command parsed it) with
    `recipe_config` over it."""
    from pipelines.experiments import resolve_preset

    given = dict(getattr(args, "recipe_config", None) or {})
    return resolve_preset(getattr(args, "preset", None), {}, {**given, **(recipe_config or {})})


def _data_name(args):
    return getattr(args, "data", "digits")


def _train_split(args, augment=0.0):
    """`(dataset, info)`: the training split of `--data`, augmented with strength `augment`."""
    from pipelines import data

    return data.load(_data_name(args), "train", image_size=args.image_size, batch_size=args.batch_size,
                     augment=augment, limit=args.limit)


def _data(args):
    """`(train, validation, info)` of `--data`, the training split not augmented."""
    from pipelines import data

    train_ds, info = _train_split(args)
    val_ds, _ = data.load(_data_name(args), "validation", image_size=args.image_size, batch_size=256, shuffle=False,
                          limit=args.limit)
    return train_ds, val_ds, info


def _fit(net, recipe, train_ds, val_ds, info, args, epochs, lr=None):
    """`model.fit` of an already built `net` with `recipe` (not `pipelines.training.run`, which builds a
    registered model from a `TrainConfig`): the networks trained alone are plain MobileNetV1s at one width
    (`build_mobilenet_v1`, not a registered model), and each Stage II gate starts from the Stage I
    supernet's weights, which a `TrainConfig` cannot carry. It uses the same `TrainingModel`, recipes and
    optimizer as the entry; the experiment evaluates the final weights."""

    from pipelines.training.recipes.base import TrainingModel
    from pipelines.training.train import TrainConfig, make_optimizer, steps_per_epoch

    cfg = TrainConfig(epochs=epochs, learning_rate=lr or args.learning_rate, batch_size=args.batch_size)
    steps = steps_per_epoch(info, args.batch_size) if not args.limit else max(1, args.limit // args.batch_size)
    model = TrainingModel(net, recipe)
    model.compile(optimizer=make_optimizer(cfg, steps))
    start = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0,
              callbacks=[*recipe.callbacks(model, steps, epochs, train_data=train_ds), _Progress(net.name)])
    return model, time.time() - start


def _progress_class():
    import tf_keras as keras

    class Progress(keras.callbacks.Callback):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_epoch_end(self, epoch, logs=None):
            acc = {k: round(float(v), 3) for k, v in (logs or {}).items() if k.startswith("val_") and "acc" in k}
            print(f"  [{self.name}] epoch {epoch + 1}: {acc}", flush=True)

    return Progress


def _Progress(name):
    return _progress_class()(name)


def _accuracy(net, val_ds, width=None):
    import numpy as np

    from keras_layers.slimmable import set_width

    if width is not None:
        set_width(net, width)
    correct = total = 0
    for x, y in val_ds:
        out = net(x, training=False)
        logits = out["logits"] if isinstance(out, dict) else out
        correct += int(np.sum(np.argmax(logits.numpy(), -1) == y.numpy().reshape(-1)))
        total += int(y.shape[0])
    return correct / total


def _measurer(args, experiment):
    """`net, name -> deployed.measure(...)` of the bundle ``<out>/bundles/<experiment>/<name>`` when
    `args.measure`, else None. `args.repeats` is checked here, before any data is read."""
    if not getattr(args, "measure", False):
        return None
    from pipelines.experiments import deployed

    repeats = deployed.check_repeats(getattr(args, "repeats", 3))
    folder = Path(getattr(args, "out", "runs/slimmable-eval")) / "bundles" / experiment

    def measure(net, name):
        return deployed.measure(net, folder / name, data=_data_name(args), image_size=args.image_size,
                                limit=args.limit, threads=getattr(args, "threads", 1), repeats=repeats,
                                test_images=getattr(args, "test_images", None), log=lambda m: print(m, flush=True))

    return measure


def _measured_cells(m):
    """The Markdown cells of a `deployed.measure` result: test accuracy (%) | average ms per image."""
    return f"{100 * m['accuracy']:.1f} | {m['avg_latency_ms']:.3f}"


def run_widths(args):
    """Each width of a slimmable MobileNetV1 vs the same width trained alone; with `args.measure` each
    network's bundle measured too (see the module doc). Returns (result, Markdown table)."""
    from keras_layers import count_madds, models
    from keras_layers.models.slimmable_mobilenet_v1 import build_mobilenet_v1, export_width
    import tf_keras as keras

    from pipelines.experiments import recipe_label
    from pipelines.training import recipes
    from pipelines.training.bn_recalibration import recalibrate_bn

    _, recipe_config, preset = _presets(args, {"rule": args.rule} if getattr(args, "rule", None) else {})
    recipe = recipes.get("slimmable", **recipe_config)  # bad fields fail here, before data is read
    measure = _measurer(args, "widths")
    train_ds, val_ds, info = _data(args)
    widths = tuple(getattr(args, "widths", None) or WIDTHS)
    arch = dict(base_width=args.base_width, depth_multiplier=args.depth_multiplier)
    alone_label = recipe_label("standard", preset)
    slim_label = (f"{recipe_label('slimmable', preset, {k: v for k, v in recipe_config.items() if k != 'rule'})}, "
                  f"rule {recipe.rule}")
    rows = {w: {"alone": None} for w in widths}
    skip_alone = bool(getattr(args, "skip_alone", False))
    for w in () if skip_alone else widths:
        keras.utils.set_random_seed(args.seed)
        net = build_mobilenet_v1(info.input_shape, info.num_classes, width=w, **arch)
        _, secs = _fit(net, recipes.get("standard", preset=preset), train_ds, val_ds, info, args, args.epochs)
        rows[w].update(alone=_accuracy(net, val_ds), madds=count_madds(net, info.input_shape),
                       alone_seconds=round(secs, 1))
        print(f"alone {w}: {rows[w]}", flush=True)
        if measure:
            rows[w]["alone_measured"] = measure(net, f"alone_{w:g}x")
    keras.utils.set_random_seed(args.seed)
    net = models.build("slimmable_mobilenet_v1", info.input_shape, info.num_classes, width_multipliers=widths,
                       preset=preset, **arch)
    _, secs = _fit(net, recipe, train_ds, val_ds, info, args, args.epochs)
    for w in widths:
        rows[w]["slimmable"] = _accuracy(net, val_ds, w)
        rows[w]["slimmable_madds"] = count_madds(net, info.input_shape, width=w)
        rows[w].setdefault("madds", rows[w]["slimmable_madds"])  # --skip-alone: the width's own count
    for w in widths:
        recalibrate_bn(net, train_ds, w, num_batches=args.recal_batches)
        rows[w]["slimmable_recalibrated"] = _accuracy(net, val_ds, w)
    if measure:  # each width as its own plain narrow model, with the recalibrated statistics
        for w in widths:
            rows[w]["slimmable_measured"] = measure(export_width(net, w), f"slimmable_{w:g}x")
    result = {"experiment": "widths", "data": _data_name(args), "rule": recipe.rule, "preset": preset,
              "recipe_config": recipe_config, "recipes": {"alone": alone_label, "slimmable": slim_label}, "epochs": args.epochs, "seed": args.seed,
              "skip_alone": skip_alone,
              "slimmable_seconds": round(secs, 1), "rows": {str(k): v for k, v in rows.items()}}
    head = f"| width | MAdds | alone: {alone_label} | slimmable: {slim_label} | slimmable (BN recal.) | delta |"
    if measure:
        head += (" alone bundle: test acc | alone bundle: avg ms | slimmable bundle (BN recal.): test acc | "
                 "slimmable bundle: avg ms |")
    lines = [head, "|---" * (10 if measure else 6) + "|"]
    for w in widths:
        r = rows[w]
        alone = "-" if r["alone"] is None else f"{100 * r['alone']:.1f}"
        delta = "-" if r["alone"] is None else f"{100 * (r['slimmable'] - r['alone']):+.1f}"
        line = (f"| {w:g}x | {r['madds']:,} | {alone} | {100 * r['slimmable']:.1f} | "
                f"{100 * r['slimmable_recalibrated']:.1f} | {delta} |")
        if measure:
            alone_cells = _measured_cells(r["alone_measured"]) if "alone_measured" in r else "- | -"
            line += f" {alone_cells} | {_measured_cells(r['slimmable_measured'])} |"
        lines.append(line)
    return result, _with_deployed("\n".join(lines), result)


def parse_gates(specs):
    """The Stage II runs of `--gates` ("TARGET,CPLX,SGS" each) as (target MAdds, complexity weight, SGS weight)
    tuples; a one-line ValueError naming the spec, before any data is read or a model trained."""
    out = []
    for spec in specs:
        try:
            values = tuple(float(v) for v in str(spec).split(","))
        except ValueError:
            values = ()
        if len(values) != 3:
            raise ValueError(f"gates must be TARGET,CPLX,SGS (three numbers); received gates={spec!r}")
        out.append(values)
    return out


def run_dsnet(args):
    """Stage I once, BN recalibration, then Stage II for each target: accuracy vs average MAdds; with
    `args.measure` each static width and each gate measured as bundles too (see the module doc). Returns
    (result, Markdown table)."""
    import tf_keras as keras

    from keras_layers import models
    from keras_layers.models.ds_mobilenet_v1 import choice_madds, expected_madds, export_width, gate_layer
    from pipelines.experiments import recipe_label
    from pipelines.training import recipes
    from pipelines.training.bn_recalibration import recalibrate_bn

    model_config, recipe_config, preset = _presets(args)
    label = recipe_label("ds_net", preset, recipe_config)
    recipes.get("ds_net", **recipe_config)  # bad fields fail here, before data is read
    gate_specs = parse_gates(args.gates)
    measure = _measurer(args, "dsnet")
    train_ds, val_ds, info = _data(args)
    if getattr(args, "widths", None):
        model_config["width_multipliers"] = tuple(args.widths)
    elif preset != "paper":
        model_config["width_multipliers"] = WIDTHS
    model_config.update(base_width=args.base_width, depth_multiplier=args.depth_multiplier)
    keras.utils.set_random_seed(args.seed)
    net = models.build("ds_mobilenet_v1", info.input_shape, info.num_classes, **model_config)
    widths = tuple(gate_layer(net).width_multipliers)
    secs = 0.0
    if args.supernet and Path(args.supernet).exists():
        net.load_weights(args.supernet)
        print(f"loaded the Stage I supernet from {args.supernet}", flush=True)
    else:
        _, secs = _fit(net, recipes.get("ds_net", stage1_fraction=1.0, **recipe_config), train_ds, val_ds, info, args,
                       args.epochs)
        for w in widths:
            recalibrate_bn(net, train_ds, w, num_batches=args.recal_batches)
        if args.supernet:
            net.save_weights(args.supernet)
    table = choice_madds(net, info.input_shape)
    static = {w: {"accuracy": _accuracy(net, val_ds, w), "madds": float(m)} for w, m in zip(widths, table)}
    for w in widths:
        print(f"supernet {w}: {static[w]}", flush=True)
    if measure:  # each static width as one plain narrow model: the gates' peers on measured latency
        for w in widths:
            static[w]["measured"] = measure(export_width(net, w), f"static_{w:g}x")
    supernet_weights = net.get_weights()
    gate_train_ds = train_ds
    if args.gate_augment:
        gate_train_ds, _ = _train_split(args, augment=args.gate_augment)
    gates = []
    for spec, (target, cw, sw) in zip(args.gates, gate_specs):
        keras.utils.set_random_seed(args.seed)
        gated = models.build("ds_mobilenet_v1", info.input_shape, info.num_classes, **model_config)
        gated.set_weights(supernet_weights)
        recipe = recipes.get("ds_net", stage1_fraction=0.0, target_madds=target, complexity_weight=cw,
                             sgs_weight=sw, train_shared_fc=args.train_shared_fc, **recipe_config)
        _fit(gated, recipe, gate_train_ds, val_ds, info, args, args.gate_epochs, lr=args.gate_learning_rate)
        madds, fractions = expected_madds(gated, (x for x, _ in val_ds))
        acc = _accuracy(gated, val_ds, "dynamic")
        gates.append({"target_madds": target, "complexity_weight": cw, "sgs_weight": sw, "accuracy": acc,
                      "madds": madds,
                      "choice_fractions": [round(float(f), 3) for f in fractions]})
        print(f"gate {spec}: {gates[-1]}", flush=True)
        if measure:  # the DS-Net bundle: front + gate, one back per width
            gates[-1]["measured"] = measure(gated, "gate_" + spec.replace(",", "_"))
        gates[-1]["offset"] = _offset_gate(gated, val_ds, table)
        if measure:  # the same gate with the offset in its exported bias
            gates[-1]["offset"]["measured"] = measure(gated, "gate_" + spec.replace(",", "_") + "_offset")
    full = static[widths[-1]]
    head = "| model | recipe | val accuracy | avg MAdds | MAdds vs widest | choices (slim..wide) |"
    rule = "|---" * 6 + "|"
    if measure:
        head, rule = head + " bundle: test acc | bundle: avg ms |", rule + "---|---|"
    lines = [head, rule]
    for w in widths:
        s = static[w]
        lines.append(f"| supernet {w:g}x | {label} | {100 * s['accuracy']:.1f} | {s['madds']:,.0f} | "
                     f"{100 * (s['madds'] / full['madds'] - 1):+.0f}% | - |"
                     + (f" {_measured_cells(s['measured'])} |" if measure else ""))
    for g in gates:
        for name, row in ((_gate_name(g), g), (_offset_name(g), g["offset"])):
            lines.append(f"| {name} | {label} | {100 * row['accuracy']:.1f} | {row['madds']:,.0f} | "
                         f"{100 * (row['madds'] / full['madds'] - 1):+.0f}% | {row['choice_fractions']} |"
                         + (f" {_measured_cells(row['measured'])} |" if measure else ""))
    for g in gates:
        t = g["offset"]["try_best"]
        lines.append(f"\n{_gate_name(g)} on validation: try-best targets the slimmest for "
                     f"{100 * t['slimmest_target']:.1f}% of the images; {100 * t['needs_widest']:.1f}% need the widest "
                     f"(slimmest wrong, widest right); oracle gate {100 * t['oracle_accuracy']:.1f}%. Offset "
                     f"{g['offset']['offset']:+.3f} on the widest score "
                     + ("reaches" if g["offset"]["reached"] else "does not reach")
                     + f" the widest's accuracy - 0.5 points ({100 * g['offset']['target']:.1f}%).")
    result = {"experiment": "dsnet", "data": _data_name(args), "preset": preset, "recipe": label, "widths": list(widths), "epochs": args.epochs, "gate_epochs": args.gate_epochs,
              "gate_augment": args.gate_augment, "train_shared_fc": args.train_shared_fc,
              "stage1_seconds": round(secs, 1), "static": {str(k): v for k, v in static.items()}, "gates": gates}
    return result, _with_deployed("\n".join(lines), result)


def _gate_name(g):
    return f"gate T={g['target_madds']:g} cplx={g['complexity_weight']:g} sgs={g['sgs_weight']:g}"


def _offset_name(g):
    return _gate_name(g) + " offset"


def _gate_outputs(net, val_ds):
    """(scores, correct) of the gated `net` on `val_ds`: the slimming head's scores (N x choices) and whether
    the network at each choice classifies each image right (N x choices, bool)."""
    import numpy as np

    from keras_layers.models.ds_mobilenet_v1 import gate_layer
    from keras_layers.slimmable import DYNAMIC, set_width

    widths = gate_layer(net).width_multipliers
    scores, correct = [], []
    for x, y in val_ds:
        set_width(net, DYNAMIC)
        scores.append(net(x, training=False)["gate_scores"].numpy())
        row = []
        for w in widths:
            set_width(net, w)
            row.append(np.argmax(net(x, training=False)["logits"].numpy(), -1) == y.numpy().reshape(-1))
        correct.append(np.stack(row, axis=1))
    set_width(net, DYNAMIC)
    return np.concatenate(scores), np.concatenate(correct)


def _offset_gate(gated, val_ds, table):
    """Calibrate the trained gate's widest score on the validation split (`ds_net.widest_offset`), add the
    offset to its bias and return the gate's row after it: validation accuracy and average MAdds as the
    network computes them (not the calibration's own estimate), the choice fractions, the offset and the
    try-best diagnostics (`ds_net.try_best_shares`)."""
    from keras_layers.models.ds_mobilenet_v1 import expected_madds, gate_layer
    from pipelines.training.recipes import ds_net

    gate = gate_layer(gated)
    widest = ds_net.widest_allowed(gate)
    scores, correct = _gate_outputs(gated, val_ds)
    cal = ds_net.widest_offset(scores, correct, table, widest)
    ds_net.apply_widest_offset(gate, cal["offset"])
    madds, fractions = expected_madds(gated, (x for x, _ in val_ds))
    row = {"offset": cal["offset"], "reached": cal["reached"], "target": cal["target"],
           "accuracy": _accuracy(gated, val_ds, "dynamic"), "madds": madds,
           "choice_fractions": [round(float(f), 3) for f in fractions],
           "try_best": ds_net.try_best_shares(correct, widest)}
    print(f"gate offset {cal['offset']:+.4f}: {row}", flush=True)
    return row


def measured_rows(result):
    """The measured bundles of a `run_widths` / `run_dsnet` result as `deployed.format_rows` rows (name,
    recipe, measured); empty when nothing was measured."""
    from pipelines.experiments import recipe_label

    rows = []
    if result["experiment"] == "widths":
        slim_label = recipe_label("slimmable", result["preset"],  # the rule is in the table's header
                                  {k: v for k, v in result.get("recipe_config", {}).items() if k != "rule"})
        for w, r in result["rows"].items():
            if "alone_measured" in r:
                rows.append({"name": f"mobilenet_v1 {float(w):g}x alone", "recipe": result["recipes"]["alone"],
                             "measured": r["alone_measured"]})
            if "slimmable_measured" in r:
                rows.append({"name": f"slimmable_mobilenet_v1 {float(w):g}x", "recipe": slim_label,
                             "measured": r["slimmable_measured"]})
    else:
        rows += [{"name": f"supernet {float(w):g}x static", "recipe": result["recipe"], "measured": s["measured"]}
                 for w, s in result["static"].items() if "measured" in s]
        for g in result["gates"]:
            rows += [{"name": name, "recipe": result["recipe"], "measured": row["measured"]}
                     for name, row in ((_gate_name(g), g), (_offset_name(g), g.get("offset", {})))
                     if "measured" in row]
    return rows


def _with_deployed(table, result):
    """The Markdown table, followed by the shared table of the measured bundles (`deployed.format_rows`: the
    stage / width shares and the difficulty buckets) when there are any."""
    rows = measured_rows(result)
    if not rows:
        return table
    from pipelines.experiments import deployed

    m = rows[0]["measured"]
    return "\n".join([table, "", deployed.format_rows(rows, (
        f"Bundles on the test split ({m['test_images']} images; LiteRT + XNNPACK batch 1, {m['threads']} thread(s), "
        f"per image the median of {m['repeats']} runs):"))])


def log_result(result, args, tracking_uri, log=print):
    """`result` (of `run_widths` / `run_dsnet` with `args`) to one MLflow run (`deployed.log_result`): the
    experiment's params, the validation accuracy and MAdds of each width (and gate) as metrics with the measured
    fields of the bundles, ``result.json``, the accuracy-vs-MAdds figure and, when measured, the
    accuracy-vs-latency figure. Returns the run id."""
    from pipelines.experiments import deployed

    experiment = result["experiment"]
    params = {"experiment": experiment, "data": result["data"], "preset": result["preset"],
              "epochs": result["epochs"], "seed": args.seed, "base_width": args.base_width,
              "depth_multiplier": args.depth_multiplier, "image_size": args.image_size, "limit": args.limit}
    metrics = {}
    if experiment == "widths":
        rows = {float(w): r for w, r in result["rows"].items()}
        params.update(rule=result["rule"], recipes=result["recipes"], widths=list(rows))
        for w, r in rows.items():
            for key in ("alone", "slimmable", "slimmable_recalibrated"):
                if r[key] is not None:  # None: --skip-alone
                    metrics[f"w{w:g}.{key}.val_accuracy"] = r[key]
            metrics[f"w{w:g}.madds"] = r["madds"]
        ws = sorted(rows)
        curves = {} if any(rows[w]["alone"] is None for w in ws) else {
            f"alone: {result['recipes']['alone']}": ([rows[w]["madds"] for w in ws], [rows[w]["alone"] for w in ws])}
        curves |= {f"slimmable: {result['recipes']['slimmable']}": ([rows[w]["slimmable_madds"] for w in ws],
                                                                   [rows[w]["slimmable"] for w in ws]),
                   "slimmable (BN recal.)": ([rows[w]["slimmable_madds"] for w in ws],
                                             [rows[w]["slimmable_recalibrated"] for w in ws])}
        points = None
    else:
        static = {float(w): s for w, s in result["static"].items()}
        params.update(recipe=result["recipe"], widths=result["widths"], gate_epochs=result["gate_epochs"],
                      gates=list(args.gates),
                      gate_augment=result["gate_augment"], train_shared_fc=result["train_shared_fc"])
        for w, s in static.items():
            metrics[f"supernet_w{w:g}.val_accuracy"] = s["accuracy"]
            metrics[f"supernet_w{w:g}.madds"] = s["madds"]
        for i, g in enumerate(result["gates"]):
            metrics[f"gate{i}.val_accuracy"] = g["accuracy"]
            metrics[f"gate{i}.avg_madds"] = g["madds"]
            if "offset" in g:
                metrics |= {f"gate{i}.offset.val_accuracy": g["offset"]["accuracy"],
                            f"gate{i}.offset.avg_madds": g["offset"]["madds"],
                            **{f"gate{i}.try_best.{k}": v for k, v in g["offset"]["try_best"].items()}}
        ws = sorted(static)
        curves = {f"supernet static widths: {result['recipe']}": ([static[w]["madds"] for w in ws],
                                                                   [static[w]["accuracy"] for w in ws])}
        points = {_gate_name(g): (g["madds"], g["accuracy"]) for g in result["gates"]}
        points |= {_offset_name(g): (g["offset"]["madds"], g["offset"]["accuracy"])
                   for g in result["gates"] if "offset" in g}
    rows = measured_rows(result)
    if rows:
        m = rows[0]["measured"]
        params.update(threads=m["threads"], repeats=m["repeats"], test_images=m["test_images"])
    figures = {f"slimmable_{experiment}_madds.png": deployed.madds_figure(curves, points,
                                                                           ylabel="validation accuracy (%)")}
    if rows:
        figures[f"slimmable_{experiment}_accuracy_latency.png"] = deployed.accuracy_latency_figure(
            rows, title=f"slimmable-eval {experiment} on {result['data']}, {result['epochs']} epochs")
    return deployed.log_result(f"slimmable-eval-{experiment}", params, rows, result, figures, tracking_uri=tracking_uri,
                               metrics=metrics, log=log)
