"""The main job end to end on the embedded default dataset (digits at 32x32), in four steps:

    make demo        # or: python -m pipelines demo [--tracking-uri URI]

1. find the best run   - a smoke Ray Tune search of one dynamic family (default BasisNet) on a local
                         Ray instance, trials logged to MLflow as nested runs (`--search train`:
                         one in-process training run instead)
2. register            - its model becomes a new version of `demo_digits` in the MLflow registry
3. promote             - `champion` moves to it only if it passes the gates (parity, beats the champion),
                         recorded like any promotion (`python -m pipelines history demo_digits`, `--rollback`)
4. export              - the champion becomes an Android bundle (model.tflite, labels.txt, model.json)

then a one-screen summary (accuracy, MAdds, TFLite size and latency, where the files are, how to open
the MLflow UI). The demo only adds: a new run, a new version, maybe a moved alias (through the same
gates as `promote`); it never deletes runs, versions or registered models, so running it again, or
against a store with other work in it, is safe.
"""
import json
import time
from pathlib import Path

from pipelines.commands import add_tracking_uri

NAME = "demo"
HELP = "run the main job end to end on digits (train, register, promote, export)"


def add_arguments(p):
    p.add_argument("--search", default="tune", choices=("tune", "train"),
                   help="step 1: a Ray Tune smoke search of --family (default) or one in-process run of --model")
    p.add_argument("--family", default="basisnet", help="tune space for --search tune (default basisnet)")
    p.add_argument("--trials", type=int, default=2, help="trials of the smoke search (default 2)")
    p.add_argument("--model", default="mobilenet_v2", help="architecture for --search train (default mobilenet_v2)")
    p.add_argument("--model-config", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--limit", type=int, default=None, help="use only N examples per split (smoke tests)")
    p.add_argument("--name", default="demo_digits", help="registered model name (default demo_digits)")
    p.add_argument("--experiment", default="demo", help="MLflow experiment (default demo)")
    p.add_argument("--quantize", default="dynamic", help="export mode: float32|float16|dynamic|int8|qat (default dynamic)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads for latency (default 1)")
    p.add_argument("--out", default="runs", help="folder for run directories (default runs/)")
    p.add_argument("--bundle", default="bundle", help="Android bundle folder (default bundle/)")
    add_tracking_uri(p)


def _say(msg):
    print(msg, flush=True)


def find_best_run(args, tracking_uri, log=_say):
    """Step 1: the best run on digits, tracked in MLflow. Returns `{"run_id", "metrics", "run_dir"}`."""
    if args.search == "tune":
        return best_tuned_run(args, tracking_uri, log)
    from pipelines import training
    from pipelines.commands.train import parse_kv

    cfg = training.TrainConfig(model=args.model, model_config=parse_kv(args.model_config, "--model-config"),
                               data="digits", epochs=args.epochs, out=args.out, run_name="demo",
                               limit=args.limit).validate()
    log(f"   training {cfg.model} on digits (32x32) for {cfg.epochs} epochs, tracked in experiment {args.experiment!r}")
    result = training.run(cfg, tracking=training.TrackingOptions(uri=tracking_uri, experiment=args.experiment),
                          verbose=2)
    return {"run_id": result.run_id, "metrics": result.metrics, "run_dir": str(result.run_dir)}


def best_tuned_run(args, tracking_uri, log=_say):
    """A smoke Tune search of `args.family` on a local Ray instance; its best trial's MLflow run."""
    from pipelines.tuning import tune

    # The whole digits train split (SMOKE's `limit` is for seconds-long CI searches): a few hundred
    # steps are what BatchNorm's moving statistics need to be usable at inference.
    overrides = {"data": "digits", "epochs": args.epochs, "limit": args.limit}
    opts = tune.TuneOptions(family=args.family, smoke_test=True, trials=args.trials, out=f"{args.out}/tune",
                            overrides=overrides).validate()
    log(f"   Ray Tune: {opts.num_trials()} trial(s) of {args.family} on digits, {args.epochs} epoch(s) each, "
        "one at a time on a local Ray instance")
    summary, _, run_id = tune.search(opts, tracking_uri=tracking_uri, log=lambda m: log("   " + m))
    if run_id is None:
        raise RuntimeError(f"no tune trial finished; see {summary['experiment']}/results.csv")
    best = summary["best"]
    metrics = {"val_accuracy": float(best["val_accuracy"]), "madds": best["madds"], "params": best["params"]}
    return {"run_id": run_id, "metrics": metrics, "run_dir": summary["experiment"]}


def promote_step(name, version, tracking_uri, log=_say):
    """Step 3: `promotions.promote` with the default gates, so the move is locked, recorded in `history`
    and can be rolled back like any other. Returns the Promotion."""
    from pipelines.mlops import promotions

    return promotions.promote(name, version=version, tracking_uri=tracking_uri, log=log)


def policy_line(spec):
    """How the bundle's policy splits the validation images (model.json's `threshold_selection`), or "" for a
    bundle that chose nothing."""
    sel = spec.get("threshold_selection") or {}
    if "past_first_stage" in sel:
        return (f"{spec['kind']}: threshold {spec['threshold']:.2f}; on {sel['images']} validation images "
                f"{sel['past_first_stage']:.0%} go past the first stage (at least {sel['min_past_first_stage']:.0%} "
                f"by the export's rule), accuracy {sel['accuracy']:.4f}")
    if "avg_madds" in sel:
        return (f"{spec['kind']}: thresholds {[round(t, 3) for t in spec['threshold']]}, chosen on {sel['images']} "
                f"validation images for {sel['budget_fraction']:g} x the last exit's MAdds")
    return ""


def ui_hint(uri):
    from pipelines import tracking

    if uri.startswith("http"):
        return f"open {uri} in a browser"
    db = tracking.local_sqlite_path(uri)
    if db is not None and db == tracking.PROJECT_ROOT / "mlruns.db":
        return "make mlflow-up, then open http://127.0.0.1:5000  (make mlflow-down to stop)"
    return f"mlflow ui --backend-store-uri {uri} --port 5000, then open http://127.0.0.1:5000"


def run(args):
    from pipelines import export
    from pipelines.mlops import registry, release
    from pipelines import tracking

    export.check_mode(args.quantize)
    if args.search == "tune":
        import tune_spaces

        tune_spaces.module(args.family)
    registry.check_name(args.name)
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    start = time.time()

    _say("== 1/4 find the best run")
    best = find_best_run(args, uri)
    _say(f"   best run {best['run_id']}: val_accuracy {best['metrics']['val_accuracy']:.4f}")

    _say(f"== 2/4 register it as {args.name!r}")
    mv = registry.register(best["run_id"], args.name, tracking_uri=uri, log=lambda m: _say("   " + m))

    _say("== 3/4 promote through the gates")
    promo = promote_step(args.name, mv.version, uri, log=lambda m: _say("   " + m))

    _say(f"== 4/4 export models:/{args.name}@champion to an Android bundle ({args.quantize})")
    exp = release.export_model(f"models:/{args.name}@champion", args.quantize, args.bundle, threads=args.threads,
                              tracking_uri=uri, log=lambda m: _say("   " + m))

    client = tracking.client(uri)
    champ = client.get_model_version_by_alias(args.name, registry.CHAMPION)
    champ_metrics = tracking.run_summary(client, champ.run_id)
    bundle = Path(exp["bundle"])
    policy = policy_line(json.loads((bundle / "model.json").read_text()))
    lines = [
        "",
        "=" * 78,
        f" demo done in {time.time() - start:.0f} s",
        f" this run     {best['run_id']}  val_accuracy {best['metrics']['val_accuracy']:.4f}  -> {args.name} v{mv.version}",
        f" promotion    {'PROMOTED' if promo.promoted else 'not promoted'}: {promo.reason}",
        f" champion     {args.name} v{champ.version}  val_accuracy {champ_metrics.get('val_accuracy', float('nan')):.4f}"
        f"  MAdds {champ_metrics.get('madds', float('nan')) / 1e6:.2f}M  params {champ_metrics.get('params', 0) / 1e3:.0f}K",
        f" TFLite       {args.quantize}: {exp['size_bytes'] / 1024:.1f} KiB, latency {exp['latency']['median_ms']:.3f} ms "
        f"(median, {args.threads} thread, XNNPACK), parity top-1 {exp['parity']['agreement']:.3f}, "
        f"accuracy {exp['parity']['tflite_accuracy']:.3f} on {exp['parity']['images']} images",
        *([f" policy       {policy}"] if policy else []),
        f" bundle       {bundle}/  ({', '.join(export.BUNDLE_FILES)})",
        f" run folder   {best['run_dir']}",
        f" MLflow       {uri}  (bundle also at {exp['artifact_uri']})",
        f" MLflow UI    {ui_hint(uri)}",
        "=" * 78,
    ]
    _say("\n".join(lines))
    (Path(best["run_dir"]) / "demo_summary.json").write_text(json.dumps({
        "run_id": best["run_id"], "version": mv.version, "promoted": promo.promoted, "reason": promo.reason,
        "champion": champ.version, "export": exp, "tracking_uri": uri}, indent=2, default=str))
    return 0
