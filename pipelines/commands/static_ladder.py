"""The static reference ladder: `mobilenet_v2` / `mobilenet_v3` at several widths, each measured as the phone
runs it (test accuracy, MAdds, measured batch-1 LiteRT latency per image, per difficulty bucket): the
curve every dynamic family is compared against.

    python -m pipelines static-ladder --data cluttered-digits --epochs 10                 # 2 models x 4 widths
    python -m pipelines static-ladder --models mobilenet_v2 --widths 0.35 0.5 1.0 --train-only   # a queue
    python -m pipelines static-ladder --models mobilenet_v3 --model-config head_channels=0 dropout=0  # no hidden layer

Finished runs in --out (same config) are reused, so `--train-only` can train in a background queue and a
later call measures every member side by side. Prints the table; writes <out>/static-ladder.json; with
--tracking-uri (or MLFLOW_TRACKING_URI) logs params, metrics, the report and the figure to MLflow.
"""
NAME = "static-ladder"
HELP = "static mobilenet_v2/v3 width ladder: test accuracy, MAdds, measured batch-1 TFLite latency"


def add_arguments(p):
    from pipelines.commands import add_experiment_arguments, add_measure_arguments, add_tracking_uri

    add_experiment_arguments(p, "cluttered-digits", "epochs for every member", "static-ladder.json")
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "mobilenet_v3"])
    p.add_argument("--widths", type=float, nargs="+", default=[0.35, 0.5, 0.75, 1.0])
    p.add_argument("--train-only", action="store_true", help="train (or reuse) the members, measure nothing")
    p.add_argument("--model-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="fields every member is built with besides its width, e.g. head_channels=0 dropout=0 "
                        "(mobilenet_v3 without its hidden layer); the runs get their own folders")
    add_measure_arguments(p)
    add_tracking_uri(p)


def run(args):
    from keras_layers import models
    from pipelines.commands import check_measure_args, experiment_tracking_uri
    from pipelines.commands.train import parse_kv
    from pipelines.experiments import ladder

    check_measure_args(args)
    for m in args.models:
        if m not in models.names():
            raise ValueError(f"unknown model={m!r}; valid: {', '.join(models.names())}")
    model_config = parse_kv(args.model_config, "--model-config")
    report = ladder.run_ladder(models=tuple(args.models), widths=tuple(args.widths), seeds=tuple(args.seeds),
                               data=args.data, image_size=args.image_size, epochs=args.epochs, limit=args.limit,
                               out=args.out, threads=args.threads, repeats=args.repeats,
                               test_images=args.test_images, train_only=args.train_only,
                               tracking_uri=experiment_tracking_uri(args), log=lambda m: print(m, flush=True),
                               model_config=model_config)
    if not args.train_only:
        print(ladder.format_report(report))
    return 0
