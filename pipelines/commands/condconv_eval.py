"""CondConv experiment: CondConv vs the static mobilenet_v2 of (nearly) equal MAdds, experts 1/2/4/8,
each measured as the phone runs it (test accuracy, MAdds, measured batch-1 LiteRT latency, per difficulty
bucket).

    python -m pipelines condconv-eval --data cluttered-digits --epochs 10 --experts 1 2 4 8 --seeds 0 1 2
    python -m pipelines condconv-eval --data cluttered-digits --epochs 10 --experts 8 --preset paper   # CC-MobileNetV2
    python -m pipelines condconv-eval --data cluttered-digits --epochs 10 --experts 1 2 --backbone mobilenet_v3
    python -m pipelines condconv-eval --epochs 1 --limit 64 --image-size 16 --experts 1 2 \\
        --model-config width_multiplier=0.25 depth_multiplier=0.25 last_channels=64        # smoke test

Prints the table; writes <out>/condconv-eval.json (condconv-v3-eval.json with --backbone mobilenet_v3); with --tracking-uri (or MLFLOW_TRACKING_URI) logs the
params, metrics, the report (log_dict) and the accuracy-vs-latency figure (log_figure) to MLflow.
"""
NAME = "condconv-eval"
HELP = "CondConv vs its static backbone (mobilenet_v2 or v3) at equal MAdds, experts 1/2/4/8: accuracy and measured latency"


def add_arguments(p):
    from pipelines.commands import add_experiment_arguments, add_measure_arguments, add_tracking_uri

    add_experiment_arguments(p, "cluttered-digits", "epochs for every model", "condconv-eval.json")
    p.add_argument("--experts", type=int, nargs="+", default=[1, 2, 4, 8], help="expert counts (default 1 2 4 8)")
    p.add_argument("--backbone", choices=("mobilenet_v2", "mobilenet_v3"), default="mobilenet_v2",
                   help="the static peer, and condconv_<backbone> (default mobilenet_v2)")
    p.add_argument("--model-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="condconv_<backbone> fields; the backbone's (width, depth or spec, dropout, last/head "
                        "channels) also go to the static peer")
    p.add_argument("--recipe-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="condconv recipe fields, e.g. label_smoothing=0.1 (the static peer keeps its own recipe)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="every model's, the static peer's too (default: train's, 3e-3); more experts may need less")
    add_measure_arguments(p)
    add_tracking_uri(p)


def run(args):
    from pipelines.commands import check_measure_args, experiment_tracking_uri
    from pipelines.commands.train import parse_kv
    from pipelines.experiments import condconv

    check_measure_args(args)
    report = condconv.run_experiment(experts=tuple(args.experts), seeds=tuple(args.seeds), data=args.data,
                                     image_size=args.image_size, epochs=args.epochs, limit=args.limit, out=args.out,
                                     model_config=parse_kv(args.model_config, "--model-config"), threads=args.threads,
                                     repeats=args.repeats, test_images=args.test_images,
                                     tracking_uri=experiment_tracking_uri(args), preset=args.preset,
                                     recipe_config=parse_kv(args.recipe_config, "--recipe-config"),
                                     learning_rate=args.learning_rate, backbone=args.backbone,
                                     log=lambda m: print(m, flush=True))
    print(condconv.format_report(report))
    return 0
