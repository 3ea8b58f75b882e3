"""IMTA experiment on digits: per-exit accuracy with GE + ISC + OFA vs plain summed losses, and
budgeted inference (test accuracy vs average MAdds with thresholds chosen on validation).

    python -m pipelines multi-exit-eval --epochs 15 --seeds 0 1 2
    python -m pipelines multi-exit-eval --epochs 15 --variants plain ge isc ofa imta   # ablation
    python -m pipelines multi-exit-eval --epochs 15 --variants plain last --budgeted plain  # vs no deep supervision
    python -m pipelines multi-exit-eval --epochs 16 --preset paper --optimizer sgd --learning-rate 0.1  # IMTA's recipe
    python -m pipelines multi-exit-eval --epochs 1 --limit 128 --json out.json     # smoke test
    python -m pipelines multi-exit-eval --data cluttered-digits --epochs 10 --variants imta --measure --out runs/results

Finished runs of the same config in --out are reused. With --tracking-uri (or MLFLOW_TRACKING_URI) the
params, metrics, the result and the budget curve are logged to MLflow (log_dict, log_figure).

Model and recipe fields (applied to both variants) as KEY=VALUE, e.g. --model-config num_exits=5.
"""
NAME = "multi-exit-eval"
HELP = "compare IMTA training with plain summed losses and evaluate budgeted inference"


def add_arguments(p):
    from pipelines.commands import add_measure_arguments, add_preset_argument, add_stage_madds_argument, add_tracking_uri

    p.add_argument("--epochs", type=int, default=15, help="epochs per training run (default 15)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (results are averaged; default 0)")
    p.add_argument("--data", default="digits", help="digits | cluttered-digits | TFDS_NAME | folder:PATH (default digits)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--variants", nargs="+", default=["plain", "imta"],
                   help="variants to train: plain imta ge isc ofa last (default: plain imta; last = only the last "
                        "exit's loss, the same network trained as a static one)")
    p.add_argument("--budgeted", default=None, metavar="VARIANT",
                   help="the variant whose early exits are budgeted and, with --measure, deployed (default: imta if "
                        "listed, else the last listed variant but 'last')")
    p.add_argument("--optimizer", default="adam",
                   help="adam | sgd | adamw (default adam, the platform's; the paper uses SGD. Adam normalises "
                        "per-parameter step sizes, which largely cancels Gradient Equilibrium's per-stage "
                        "rescaling; with SGD it lowers the early stages' effective learning rate)")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="(default 3e-3; 0.05 suits sgd)")
    p.add_argument("--model-config", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--recipe-config", nargs="*", default=[], metavar="KEY=VALUE")
    add_preset_argument(p)
    p.add_argument("--limit", type=int, default=None, help="use only N examples per split (smoke tests)")
    p.add_argument("--out", default=None, help="folder for the training runs (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the full result as JSON to this file")
    p.add_argument("--measure", action="store_true",
                   help="export each seed's budgeted net (thresholds of the cheapest budget within 0.5 points on "
                        "validation) and measure the bundle on the test split: accuracy, average LiteRT latency and "
                        "MAdds per image, exit shares, per difficulty bucket; and every variant's net without early "
                        "exits (its last exit alone, a plain bundle): the static reference on the clock")
    p.add_argument("--deploy-budgets", type=float, nargs="+", default=[], metavar="F",
                   help="with --measure, also export and measure the budgeted net at each of these budgets (fractions "
                        "of the last exit's cost, among 0.30, 0.35, ..., 1.00; exits and thresholds from validation): the "
                        "family's accuracy against measured latency, to set beside the static ladder")
    add_stage_madds_argument(p)
    add_measure_arguments(p)
    add_tracking_uri(p, "MLflow tracking URI for the experiment's run (default: $MLFLOW_TRACKING_URI, else not logged)")


def run(args):
    from pathlib import Path

    from pipelines.experiments import multi_exit as exp
    from pipelines.commands import check_measure_args, experiment_tracking_uri
    from pipelines.commands.train import parse_kv

    check_measure_args(args)
    result = exp.run(epochs=args.epochs, seeds=tuple(args.seeds), data=args.data, image_size=args.image_size,
                     model_config=parse_kv(args.model_config, "--model-config"),
                     recipe_config=parse_kv(args.recipe_config, "--recipe-config"), optimizer=args.optimizer,
                     variants=tuple(args.variants),
                     learning_rate=args.learning_rate, out=args.out, limit=args.limit, measure=args.measure,
                     threads=args.threads, repeats=args.repeats, test_images=args.test_images,
                     tracking_uri=experiment_tracking_uri(args), preset=args.preset, budgeted=args.budgeted,
                     deploy_budgets=tuple(args.deploy_budgets), stage_madds=args.stage_madds,
                     log=lambda s: print(s, flush=True))
    print(exp.format_report(result))
    if args.json:
        Path(args.json).write_text(exp.to_json(result))
        print(f"result written to {args.json}")
    return 0
