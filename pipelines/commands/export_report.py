"""Report on an exported bundle: ops and the share XNNPACK takes, tensor dtypes (flags layers left in
float by quantization), size, latency median/p95 at 1 and 2 threads (LiteRT's own benchmark tool),
Keras-vs-TFLite parity on N validation images, and for dynamic bundles the per-example MAdds distribution.

    python -m pipelines export-report bundle/                                   # the .tflite files alone
    python -m pipelines export-report bundle/ --model models:/digits_net/3 --images 64
    python -m pipelines export-report bundle/ --model models:/digits_net@champion --json report.json

With a registered --model the report (report.json, summary.txt, plots) is logged to that version's
MLflow run under export_report/ (--no-log to skip). Exit status 1 when a layer was flagged.
"""
from pipelines.commands import add_tracking_uri

NAME = "export-report"
HELP = "report on a bundle: XNNPACK share, dtypes/float layers, latency, parity, MAdds distribution"


def add_arguments(p):
    p.add_argument("bundle", metavar="DIR", help="bundle folder written by `export`")
    p.add_argument("--model", default=None,
                   help="the Keras model it came from (models:/NAME/V, models:/NAME@ALIAS, run folder, .keras): "
                        "parity, validation images, and where to log")
    p.add_argument("--data", default=None, help="dataset of a bare .keras --model (digits | cluttered-digits | TFDS_NAME | folder:PATH)")
    p.add_argument("--image-size", type=int, default=32, help="with --data (default 32)")
    p.add_argument("--images", type=int, default=64, help="validation images for parity and MAdds (default 64)")
    p.add_argument("--threads", default="1,2", help="thread counts to time (default 1,2)")
    p.add_argument("--runs", type=int, default=30, help="timed invocations per setting (default 30)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the report to this JSON file")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    add_tracking_uri(p)


def run(args):
    import json

    from pipelines.export import report as export_report
    from pipelines.export.bundle import read_spec

    try:
        threads = tuple(int(t) for t in str(args.threads).split(","))
    except ValueError:
        threads = ()
    if not threads or min(threads) < 1:
        raise ValueError(f"--threads must be comma-separated ints >= 1; received threads={args.threads!r}")
    for name in ("images", "runs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1; received {name}={getattr(args, name)}")
    read_spec(args.bundle)  # a bad bundle fails before any model is loaded
    net = images = labels = src = None
    main = "logits"
    if args.model:
        from pipelines import data as data_mod
        from pipelines import export
        from pipelines.mlops import registry, release

        src = release.load_source(args.model, args.tracking_uri, args.data, args.image_size)
        net, main = src.net, export.main_output_name(src.config)
        if src.config:
            images, labels, _ = data_mod.as_numpy(split="validation", limit=args.images, **registry.data_kwargs(src.config))
    report = export_report.build(args.bundle, net=net, images=images, labels=labels, threads=threads,
                                 runs=args.runs, main_output=main)
    print(export_report.summary(report))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1, default=float)
    if src is not None and src.version is not None and not args.no_log:
        export_report.log(report, src.version.run_id)
        print(f"logged to MLflow run {src.version.run_id} under export_report/")
    return 1 if report["flags"] else 0
