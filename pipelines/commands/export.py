"""Export a model to TFLite and write the Android bundle (model.tflite, labels.txt, model.json).

    python -m pipelines export --model models:/digits_net@champion --quantize dynamic --out bundle/
    python -m pipelines export --model runs/mobilenet_v2-20261123-120000 --quantize int8 --threads 2
    python -m pipelines export --model my.keras --data digits --image-size 32 --quantize float16

--quantize: float32 | float16 | dynamic | int8 (calibrated on train images) | qat (tfmot fine-tune).
Parity against the Keras model (top-1 agreement, max abs error) and LiteRT latency are measured and
written into model.json; a registered model's bundle is also logged to MLflow next to its version.
--register-tflite also registers the bundle as the MLflow model NAME.tflite (a pyfunc that runs the
.tflite with LiteRT, see pipelines/mlops/tflite_flavor.py), linked to the Keras version by tags; its
`champion` alias follows the Keras model's.

Dynamic families (read off the model: BasisNet, multi-exit, DS-Net) get the staged bundle that
`run-bundle` runs with its early exit or gate (model.json "kind", "stages", ...): --threshold sets a
BasisNet's preview threshold (default: picked on up to --selection-images validation images); --budget (multi-exit) is the
target average cost as a fraction of the last exit's, the exits kept and their thresholds chosen on the validation
images (or give --exit-thresholds); cost is MAdds plus --stage-madds for every stage an image runs. They convert in float32, float16 or dynamic.
"""
import json

from pipelines.commands import add_stage_madds_argument, add_tracking_uri

NAME = "export"
HELP = "export to TFLite + Android bundle (quantization, parity, latency)"


def add_arguments(p):
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, a run folder or a .keras file")
    p.add_argument("--quantize", default="float32", help="float32 | float16 | dynamic | int8 | qat (default float32)")
    p.add_argument("--out", default="bundle", help="bundle folder (default bundle/)")
    p.add_argument("--parity-images", type=int, default=64, help="validation images for the parity check")
    p.add_argument("--selection-images", type=int, default=1000,
                   help="validation images the BasisNet threshold / multi-exit thresholds are chosen on (default 1000)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads for latency (default 1)")
    p.add_argument("--latency-runs", type=int, default=50)
    p.add_argument("--calibration-images", type=int, default=200, help="train images for int8 calibration")
    p.add_argument("--qat-epochs", type=int, default=1, help="QAT fine-tune epochs (default 1)")
    p.add_argument("--exit-thresholds", default=None, metavar="JSON",
                   help='early-exit thresholds for model.json, e.g. \'{"exit_0": 0.8, "exit_1": 0.7}\'; '
                        'null leaves that exit out of a multi-exit bundle (no image stops there)')
    p.add_argument("--threshold", type=float, default=None,
                   help="BasisNet: preview confidence threshold in [0, 1] (default: picked on the validation images)")
    p.add_argument("--budget", type=float, default=None,
                   help="multi-exit: average cost budget as a fraction of the last exit's (default 0.6); "
                        "the exits kept and their thresholds are chosen on the validation images")
    add_stage_madds_argument(p, "multi-exit: ")
    p.add_argument("--data", default=None, help="dataset of a bare .keras file (digits | cluttered-digits | TFDS_NAME | folder:PATH)")
    p.add_argument("--image-size", type=int, default=32, help="with --data (default 32)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the bundle to MLflow")
    p.add_argument("--register-tflite", action="store_true",
                   help="register the bundle as MLflow model NAME.tflite (pyfunc on LiteRT), linked to the Keras version")
    add_tracking_uri(p)


def options_from(args):
    """The `ExportOptions` of the command line, validated (a bad value fails before anything is loaded)."""
    from pipelines.export import ExportOptions

    thresholds = None
    if args.exit_thresholds:
        try:
            thresholds = json.loads(args.exit_thresholds)
        except json.JSONDecodeError:
            raise ValueError(f"--exit-thresholds must be a JSON object of probabilities in [0, 1]; "
                             f"received exit_thresholds={args.exit_thresholds!r}") from None
    fields = dict(quantize=args.quantize, parity_images=args.parity_images, selection_images=args.selection_images,
                  threads=args.threads, latency_runs=args.latency_runs, calibration_images=args.calibration_images,
                  qat_epochs=args.qat_epochs, threshold=args.threshold, exit_thresholds=thresholds)
    if args.budget is not None:
        fields["budget"] = args.budget
    if args.stage_madds is not None:
        fields["stage_madds"] = args.stage_madds
    return ExportOptions(**fields).validate()


def run(args):
    from pipelines.mlops import release
    from pipelines import tracking

    options = options_from(args)
    if str(args.model).startswith("models:/"):
        tracking.resolve_tracking_uri(args.tracking_uri)
    summary = release.export_model(args.model, options=options, out=args.out, tracking_uri=args.tracking_uri,
                                   log_to_mlflow=not args.no_mlflow, data=args.data, image_size=args.image_size)
    if args.register_tflite:
        from pipelines.mlops import registry, tflite_flavor

        if not summary["model"].startswith("models:/") or args.no_mlflow:
            raise ValueError("--register-tflite needs a registered --model (models:/...) and MLflow logging on")
        client = tracking.client(args.tracking_uri)
        name, _, version = registry.parse_model_uri(summary["model"])
        tmv = tflite_flavor.register_bundle(args.out, client.get_model_version(name, version), client=client)
        tflite_flavor.sync_alias(client, name, registry.CHAMPION)
        summary["tflite_model"] = f"models:/{tmv.name}/{tmv.version}"
    print(json.dumps({k: summary[k] for k in ("model", "quantize", "kind", "bundle", "size_bytes", "artifact_uri",
                                              "tflite_model") if k in summary}, indent=2))
    return 0
