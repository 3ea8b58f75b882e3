"""Train a registered model on a dataset with its recipe, in-process or on Ray Train workers (--workers),
logged to MLflow either way (--no-tracking: not at all). One call: `pipelines.training.run`.

    python -m pipelines train --model mobilenet_v2 --data digits --epochs 10
    python -m pipelines train --model condconv_mobilenet_v2 --data folder:~/photos --image-size 64
    python -m pipelines train --model mobilenet_v2 --data cifar10 --data-dir ~/tensorflow_datasets
    python -m pipelines train --model mobilenet_v2 --workers 2          # Ray Train, 2 workers (pipelines.training.distributed)
    RAY_ADDRESS=HOST:6379 python -m pipelines train --workers 8 --use-gpu   # on a cluster, 1 GPU per worker

Model and recipe fields are given as KEY=VALUE (values parsed as JSON when they can be):
    --model-config width_multiplier=0.35 --recipe-config label_smoothing=0.1
"""
import json

from pipelines.commands import add_tracking_uri

NAME = "train"
HELP = "train a model (in-process or on Ray Train workers)"


def parse_kv(items, flag):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects KEY=VALUE; received {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def add_arguments(p):
    p.add_argument("--model", default="mobilenet_v2", help="registered model (see `models`)")
    p.add_argument("--data", default="digits", help="digits | TFDS_NAME | folder:PATH (default digits)")
    p.add_argument("--data-dir", default=None, help="folder with prepared TFDS data (no download)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--optimizer", default="adam", help="adam | sgd | adamw")
    p.add_argument("--recipe", default=None, help="training recipe (default: the model's own)")
    p.add_argument("--model-config", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--recipe-config", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--early-stopping", type=int, default=0, help="patience in epochs (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs", help="folder for run directories (default runs/)")
    p.add_argument("--storage", default=None, metavar="PATH|s3://...|gs://...",
                   help="where the run folder and Ray's checkpoints go instead of --out: a path every node mounts "
                        "or a bucket URI (passed to Ray unchanged); required on a remote Ray cluster")
    p.add_argument("--run-name", default=None)
    p.add_argument("--limit", type=int, default=None, help="use only N examples per split (smoke tests)")
    add_tracking_uri(p)
    p.add_argument("--experiment", default="pipelines", help="MLflow experiment name (default pipelines)")
    p.add_argument("--no-tracking", action="store_true", help="do not log the run to MLflow")
    g = p.add_argument_group("distributed (Ray Train)")
    g.add_argument("--workers", type=int, default=0,
                   help="Ray Train workers under MultiWorkerMirroredStrategy (0 = in-process, no Ray; default 0); "
                        "connects to $RAY_ADDRESS or starts a local Ray")
    g.add_argument("--use-gpu", action="store_true", default=None,
                   help="one GPU per worker (default: on when the Ray cluster has GPUs)")
    g.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="never use GPUs")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (default 1)")
    g.add_argument("--max-failures", type=int, default=2,
                   help="worker-group restarts from the last checkpoint before the run fails (default 2)")


def config_from_args(args):
    from pipelines.training import TrainConfig

    return TrainConfig(
        model=args.model, model_config=parse_kv(args.model_config, "--model-config"), data=args.data,
        data_dir=args.data_dir, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, optimizer=args.optimizer, recipe=args.recipe,
        recipe_config=parse_kv(args.recipe_config, "--recipe-config"), early_stopping=args.early_stopping,
        seed=args.seed, out=args.out, run_name=args.run_name, limit=args.limit)


def run(args):
    from pipelines import training

    workers = training.ScalingOptions(num_workers=args.workers, use_gpu=args.use_gpu,
                                      cpus_per_worker=args.cpus_per_worker,
                                      max_failures=args.max_failures) if args.workers else 0
    tracking = None if args.no_tracking else training.TrackingOptions(uri=args.tracking_uri,
                                                                       experiment=args.experiment).validate()
    result = training.run(config_from_args(args), workers=workers, tracking=tracking, storage=args.storage)
    print(json.dumps(result.metrics, indent=2))
    print(f"run saved to {result.run_dir}")
    if result.run_id:
        print(f"MLflow run {result.run_id} ({tracking.uri}); register it with: "
              f"python -m pipelines register --run {result.run_id} --name NAME")
    return 0
