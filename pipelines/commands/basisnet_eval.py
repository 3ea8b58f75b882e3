"""BasisNet experiment: BasisNet vs the static specialist of the same MAdds, early termination, disturbance.

    python -m pipelines basisnet-eval                                  # digits at 32x32, 10 epochs, 4 bases
    python -m pipelines basisnet-eval --epochs 15 --num-bases 8 --max-drop 0.5 --seeds 0 1 2
    python -m pipelines basisnet-eval --preset paper --epochs 15     # the paper's recipe and BasisNet-MV3 shape
    python -m pipelines basisnet-eval --run runs/basisnet-eval-basisnet-s0 --export out/   # evaluate a trained run

Trains `basisnet_mobilenet_v3` and `mobilenet_v3` widened to the closest MAdds (preview + specialist; the
static net's MAdds move in steps as channels round to multiples of 8) for the same epochs and seeds, then on the validation split sweeps early-termination thresholds (accuracy, fraction stopped
after the preview, average MAdds per example; the table steps by 0.05), picks the cheapest threshold within
--max-drop points of the full BasisNet (tried at every distinct stop set of the validation images, not only
the table's), checks it on the test split, and runs the disturbance analysis (predicted
coefficients vs top-1, mean, uniform, shuffled across examples, shuffled within each layer; and the
per-layer table: one layer's coefficients shuffled within the layer at a time). Prints the tables; writes <out>/basisnet-eval.json
(basisnet-eval-paper.json with the paper preset).
"""
import json

NAME = "basisnet-eval"
HELP = "BasisNet vs static specialist, early-termination threshold sweep, coefficient disturbance"


def add_arguments(p):
    from pipelines.commands import add_experiment_arguments, add_measure_arguments, add_tracking_uri

    add_experiment_arguments(p, "digits", "epochs for each of the two models", "basisnet-eval.json",
                             "train both models once per seed (default 0); tables for the first")
    p.add_argument("--num-bases", type=int, default=None,
                   help="bases of the specialist (default 4; 16 with --preset paper)")
    p.add_argument("--max-drop", type=float, default=0.5,
                   help="accuracy points the picked threshold may lose on validation (default 0.5)")
    p.add_argument("--model-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra basisnet_mobilenet_v3 fields, e.g. per_layer=false")
    p.add_argument("--recipe-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="basisnet recipe fields, e.g. basis_dropout=0.1 preview_weight=1.0")
    p.add_argument("--run", default=None,
                   help="evaluate the model.keras of this run directory (or a .keras file) instead of training")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also write the Android bundle (run-bundle / export format) with the picked threshold")
    p.add_argument("--measure", action="store_true",
                   help="export BasisNet and its static peer and measure the bundles on the test split: accuracy, "
                        "average LiteRT latency and MAdds per image, stage shares, per difficulty bucket")
    add_measure_arguments(p)
    add_tracking_uri(p, "MLflow tracking URI for the experiment's run (default: $MLFLOW_TRACKING_URI, else not logged)")


def run(args):
    from pipelines.experiments import basisnet as ev
    from pipelines.commands import check_measure_args, experiment_tracking_uri
    from pipelines.commands.train import parse_kv

    check_measure_args(args)
    if not 0 <= args.max_drop <= 100:
        raise ValueError(f"--max-drop is in accuracy points in [0, 100]; received max_drop={args.max_drop!r}")
    if args.num_bases is not None and args.num_bases < 1:
        raise ValueError(f"num_bases must be an int >= 1; received num_bases={args.num_bases!r}")
    model_config = parse_kv(args.model_config, "--model-config")
    recipe_config = parse_kv(args.recipe_config, "--recipe-config")
    if args.run:
        report, net = ev.evaluate_saved(args.run, data=args.data, image_size=args.image_size,
                                        max_drop=args.max_drop / 100, seed=args.seeds[0], limit=args.limit)
    else:
        report, net = ev.run_experiment(data=args.data, image_size=args.image_size, epochs=args.epochs,
                                        num_bases=args.num_bases, seeds=args.seeds, max_drop=args.max_drop / 100,
                                        model_config=model_config, recipe_config=recipe_config, out=args.out,
                                        limit=args.limit, measure=args.measure, threads=args.threads,
                                        repeats=args.repeats, test_images=args.test_images,
                                        tracking_uri=experiment_tracking_uri(args), preset=args.preset)
    print(ev.format_report(report))
    if args.export:
        picked = report["early_termination"]["picked"]
        result = ev.export_bundle(net, args.export, data=args.data, image_size=args.image_size,
                                  threshold=picked["threshold"], limit=args.limit)
        par, lat = result["parity"], result["latency"]
        print(f"bundle {result['bundle']}/ (preview + specialist, threshold {picked['threshold']:.4f}): "
              f"{result['size_bytes'] / 1024:.0f} KiB; on {par['images']} validation images the preview answers "
              f"{par['stopped_at'].get('preview', 0)}, top-1 agreement with Keras {par['agreement']:.3f}; "
              f"LiteRT latency of the whole policy {lat['median_ms']:.3f} ms per image (median, 1 thread)")
    if not args.run:  # trained here: run_experiment wrote the report (named for its preset)
        from pipelines.experiments import report_name

        print(json.dumps({"report": f"{args.out}/{report_name('basisnet-eval', report.get('preset'))}"}))
    return 0
