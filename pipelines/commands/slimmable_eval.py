"""Slimmable Networks / DS-Net experiments at 32x32, on digits by default (see `pipelines.experiments.slimmable`).

    python -m pipelines slimmable-eval widths --epochs 15
    python -m pipelines slimmable-eval widths --data cluttered-digits --epochs 10 --recipe-config rule=all
    python -m pipelines slimmable-eval dsnet --epochs 15 --gate-epochs 4 --gates 1.0,0.5,1.0 1.0,0.5,0
    python -m pipelines slimmable-eval widths --epochs 15 --preset paper     # Algorithm 1 (same as --rule all)
    python -m pipelines slimmable-eval dsnet --data cluttered-digits --epochs 10 --measure --tracking-uri URI
    python -m pipelines slimmable-eval widths --epochs 1 --limit 64 --widths 0.5 1.0 --measure \\
        --test-images 20 --repeats 1                                          # smoke test

``widths``: each width of `slimmable_mobilenet_v1` vs the same-width MobileNetV1 trained alone;
``dsnet``: Stage I supernet, BN recalibration, Stage II gates for several target MAdds; each gate also as
"offset": its widest score shifted by the offset that reaches the widest width's validation accuracy (within 0.5
points) for the fewest MAdds, with SGS's try-best targets on validation (how many images need the widest). Prints a
Markdown table and writes JSON + Markdown into --out (widths.json / dsnet.json; widths-paper.json ... with the
paper preset; an earlier report there is kept as widths.1.json, ...).

--measure: every model also measured as the phone runs it (bundles under <out>/bundles/; test accuracy,
average LiteRT latency and MAdds per image, per difficulty bucket): widths - each network trained alone and
each width of the slimmable one as its own plain narrow model; dsnet - each gate's DS-Net bundle (front + gate,
one back per width), before and after the offset, and each static width of the supernet as one plain model. With --tracking-uri (or
MLFLOW_TRACKING_URI) the params, the accuracies per width, the measured fields, the result and the figures
(accuracy vs MAdds; accuracy vs measured latency) are logged to one MLflow run (log_dict, log_figure).
"""
NAME = "slimmable-eval"
HELP = "slimmable widths vs networks trained alone; DS-Net gates against the static widths"


def add_arguments(p):
    from pipelines.commands import add_measure_arguments, add_preset_argument, add_tracking_uri

    p.add_argument("experiment", choices=("widths", "dsnet"))
    p.add_argument("--epochs", type=int, default=15, help="epochs per model (DS-Net: Stage I)")
    p.add_argument("--gate-epochs", type=int, default=4, help="DS-Net Stage II epochs per target")
    p.add_argument("--gates", nargs="+", default=["1.0,0.5,1.0", "1.0,0.5,0.0", "1.0,0.0,0.0"],
                   metavar="TARGET,CPLX,SGS", help="Stage II runs: target MAdds (fraction of the widest), "
                   "complexity loss weight, SGS loss weight (paper: 1.0,0.5,1.0); cls weight 1")
    p.add_argument("--train-shared-fc", action="store_true", help="Stage II also trains the gate's first FC")
    p.add_argument("--gate-augment", type=float, default=0.0,
                   help="augmentation strength in [0, 1] of the Stage II training data (more non-easy examples "
                   "for SGS when the supernet fits the training set)")
    p.add_argument("--supernet", default=None, help="weights file (*.weights.h5): load the Stage I supernet if it "
                   "exists, else train it and save it there")
    p.add_argument("--rule", default=None, choices=("all", "sandwich"),
                   help="slimmable training rule (default: the preset's, sandwich by default, all = Algorithm 1 in "
                        "the paper preset)")
    p.add_argument("--skip-alone", action="store_true",
                   help="widths: train (and measure) only the slimmable network, not each width alone; the "
                        "alone columns read '-' (the networks alone take the standard recipe, the same under "
                        "either preset: compare presets against one run that has them)")
    p.add_argument("--widths", type=float, nargs="+", default=None,
                   help="widths (default 0.25 0.5 0.75 1.0; dsnet with --preset paper: the paper's 0.35..1.0)")
    add_preset_argument(p)
    p.add_argument("--recipe-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="fields of the slimmable (widths) or ds_net (dsnet) recipe, e.g. rule=all or ieb_weight=0.5 "
                        "(the networks trained alone take the standard recipe)")
    p.add_argument("--data", default="digits", help="digits | cluttered-digits | TFDS_NAME | folder:PATH (default digits)")
    p.add_argument("--base-width", type=float, default=0.25)
    p.add_argument("--depth-multiplier", type=float, default=0.2)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--gate-learning-rate", type=float, default=1e-2)
    p.add_argument("--recal-batches", type=int, default=20)
    p.add_argument("--limit", type=int, default=None, help="examples per split (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/slimmable-eval", help="folder for the JSON result (and, with --measure, "
                   "the bundles: <out>/bundles/)")
    p.add_argument("--measure", action="store_true",
                   help="also export every model to its bundle and measure it on the test split: accuracy, average "
                        "LiteRT latency and MAdds per image, per difficulty bucket (widths: each network trained "
                        "alone and each slimmable width as a plain model; dsnet: each gate's DS-Net bundle and "
                        "each static supernet width)")
    add_measure_arguments(p)
    add_tracking_uri(p, "MLflow tracking URI for the experiment's run (default: $MLFLOW_TRACKING_URI, else not logged)")


def run(args):
    from pathlib import Path

    from pipelines.commands import check_measure_args, experiment_tracking_uri
    from pipelines.commands.train import parse_kv
    from pipelines.experiments import report_name, slimmable, write_report

    check_measure_args(args)
    if args.experiment == "widths":  # the dsnet options do nothing here: a given one is a mistake, not a no-op
        if args.supernet:
            raise ValueError(f"supernet is for the dsnet experiment only; received supernet={args.supernet!r} "
                             "with widths")
    elif args.skip_alone:
        raise ValueError("skip_alone is for the widths experiment only; received skip_alone=True with dsnet")
    elif args.gate_epochs < 1:
        raise ValueError(f"gate_epochs must be >= 1; received gate_epochs={args.gate_epochs!r}")
    if args.supernet:  # checked and its folder made before any training: Stage I must not be lost at the save
        supernet = Path(args.supernet)
        if supernet.suffix != ".h5" or (supernet.exists() and not supernet.is_file()):
            raise ValueError("supernet must be an HDF5 weights file (*.weights.h5); "
                             f"received supernet={args.supernet!r}")
        supernet.parent.mkdir(parents=True, exist_ok=True)
    args.recipe_config = parse_kv(args.recipe_config, "--recipe-config")
    tracking_uri = experiment_tracking_uri(args)
    result, table = (slimmable.run_widths if args.experiment == "widths" else slimmable.run_dsnet)(args)
    name = report_name(args.experiment, result["preset"])  # widths.json, widths-paper.json, ...
    write_report(args.out, name, result)  # an earlier report there is kept as widths.1.json, ...
    write_report(args.out, name.replace(".json", ".md"), table + "\n")
    print(table)
    if tracking_uri is not None:
        slimmable.log_result(result, args, tracking_uri, log=lambda m: print(m, flush=True))
    return 0
