"""Train a registered model on a dataset with its recipe, in-process or on Ray Train workers (--workers),
logged to MLflow either way (--no-tracking: not at all). One call: `pipelines.training.run`.

    python -m pipelines train --model mobilenet_v2 --data digits --epochs 10
    python -m pipelines train --model condconv_mobilenet_v2 --data folder:~/photos --image-size 64
    python -m pipelines train --model mobilenet_v2 --data cifar10 --data-dir ~/tensorflow_datasets
    python -m pipelines train --model mobilenet_v2 --workers 2          # Ray Train, 2 workers (pipelines.training.distributed)
    RAY_ADDRESS=HOST:6379 python -m pipelines train --workers 8 --use-gpu   # on a cluster, 1 GPU per worker
    python -m pipelines train --model mobilenet_v2 --use-gpu --precision bf16 --jit-compile   # in-process GPU(s)
    RAY_ADDRESS=HOST:6379 python -m pipelines train --workers 1 --accelerator tpu   # one single-host TPU VM

--accelerator cpu|gpu|tpu (--use-gpu is gpu, --no-gpu is cpu; default: GPUs when there are any). In-process,
gpu means the GPUs or a one-line error naming why TensorFlow cannot use one (no GPU support in the build,
driver, CUDA libraries, none visible), checked before any data is read; several visible GPUs train under
MirroredStrategy; cpu hides them; tpu means this TPU VM's chips (TPUStrategy) or one line why not. On Ray
every worker checks the device it reserved the same way. tpu defaults to --precision bf16 and --jit-compile.

Model and recipe fields are given as KEY=VALUE (values parsed as JSON when they can be):
    --model-config width_multiplier=0.35 --recipe-config label_smoothing=0.1

Re-running and resuming a run folder:
    python -m pipelines train --config runs/NAME/config.json --epochs 20   # a new run: NAME's config, flags override
    python -m pipelines train --resume runs/NAME     # continue NAME from its last checkpoint (same config; in-process)
A flag given with --resume that changes the run's config is refused (one line naming the field).
"""
import argparse
import dataclasses
import json
from pathlib import Path

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


class Given(argparse.Action):
    """Stores the value and records the flag's dest in `args._given`: with --config / --resume only the
    flags given on the command line override the file's fields."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, "_given", {*getattr(namespace, "_given", ()), self.dest})


class GivenTrue(Given):
    """`store_true` that records the flag as given (see `Given`)."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, True, option_string)


KV_FIELDS = {"model_config": "--model-config", "recipe_config": "--recipe-config"}


def add_arguments(p):
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", default=None, metavar="CONFIG_JSON",
                     help="start a new run from a run's config.json (runs/NAME/config.json); flags given override "
                          "its fields (--model-config / --recipe-config: KEY by KEY)")
    src.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="continue the in-process run folder RUN_DIR from its last checkpoint (next epoch, "
                          "optimizer state) with its config.json; a flag that changes that config is refused")
    p.add_argument("--model", default="mobilenet_v2", action=Given, help="registered model (see `models`)")
    p.add_argument("--data", default="digits", action=Given, help="digits | TFDS_NAME | folder:PATH (default digits)")
    p.add_argument("--data-dir", default=None, action=Given, help="folder with prepared TFDS data (no download)")
    p.add_argument("--image-size", type=int, default=32, action=Given)
    p.add_argument("--epochs", type=int, default=10, action=Given)
    p.add_argument("--batch-size", type=int, default=64, action=Given)
    p.add_argument("--learning-rate", type=float, default=3e-3, action=Given)
    p.add_argument("--optimizer", default="adam", action=Given, help="adam | sgd | adamw")
    p.add_argument("--recipe", default=None, action=Given, help="training recipe (default: the model's own)")
    p.add_argument("--model-config", nargs="*", default=[], action=Given, metavar="KEY=VALUE")
    p.add_argument("--recipe-config", nargs="*", default=[], action=Given, metavar="KEY=VALUE")
    p.add_argument("--early-stopping", type=int, default=0, action=Given, help="patience in epochs (0 = off)")
    p.add_argument("--precise-bn-batches", type=int, default=0, action=Given, metavar="N",
                   help="before each validation, recompute BatchNorm statistics from N training batches (precise "
                        "BN; 0 = off, the default): honest metrics from the first epoch on short epochs")
    p.add_argument("--seed", type=int, default=0, action=Given)
    p.add_argument("--out", default="runs", action=Given, help="folder for run directories (default runs/)")
    p.add_argument("--storage", default=None, action=Given, metavar="PATH|s3://...|gs://...",
                   help="where the run folder and Ray's checkpoints go instead of --out: a path every node mounts "
                        "or a bucket URI (passed to Ray unchanged); required on a remote Ray cluster")
    p.add_argument("--run-name", default=None, action=Given)
    p.add_argument("--limit", type=int, default=None, action=Given,
                   help="use only N examples per split (smoke tests)")
    p.add_argument("--precision", default=None, action=Given,
                   help="float32 | bf16 | fp16: Keras mixed precision (fp16 with loss scaling; default float32, "
                        "bf16 with --accelerator tpu)")
    p.add_argument("--jit-compile", action=GivenTrue, default=None,
                   help="compile the train step with XLA (fixed-size training batches; on by default with "
                        "--accelerator tpu)")
    add_tracking_uri(p)
    p.add_argument("--experiment", default="pipelines", help="MLflow experiment name (default pipelines)")
    p.add_argument("--no-tracking", action="store_true", help="do not log the run to MLflow")
    g = p.add_argument_group("distributed (Ray Train)")
    g.add_argument("--workers", type=int, default=0, action=Given,
                   help="Ray Train workers under MultiWorkerMirroredStrategy (0 = in-process, no Ray; default 0); "
                        "connects to $RAY_ADDRESS or starts a local Ray")
    g.add_argument("--accelerator", default=None, choices=("cpu", "gpu", "tpu"),
                   help="cpu | gpu (one GPU per Ray worker; in-process the visible GPUs) | tpu (one Ray worker on a "
                        "single-host TPU VM; in-process this TPU VM) - or a one-line error naming why not "
                        "(default: GPUs when the cluster has or can start them / TensorFlow sees them)")
    g.add_argument("--use-gpu", action="store_true", default=None, help="the same as --accelerator gpu")
    g.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="the same as --accelerator cpu")
    g.add_argument("--tpus-per-worker", type=int, default=4,
                   help="TPU chips of one TPU VM host reserved per Ray worker with --accelerator tpu (default 4)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (default 1)")
    g.add_argument("--max-failures", type=int, default=2,
                   help="worker-group restarts from the last checkpoint before the run fails (default 2)")


def read_config(path):
    """A run's config.json as a dict (`workers` of a Ray Train run kept); one-line errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not JSON: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"config file {str(path)!r} holds {type(d).__name__}, not a train config object")
    return d


def config_source(args):
    """The config.json that --config or --resume names, or None."""
    if getattr(args, "resume", None):
        return Path(args.resume).expanduser() / "config.json"
    return getattr(args, "config", None)


# what --accelerator tpu changes in the fields neither given nor in the --config file (a TPU runs bf16, XLA)
TPU_DEFAULTS = {"precision": "bf16", "jit_compile": True}


def config_from_args(args):
    """The `TrainConfig` of the command line: the flags; with --config / --resume the file's fields,
    overridden by the flags given; with --accelerator tpu, `TPU_DEFAULTS` for the fields left open."""
    from pipelines.training import TrainConfig

    source = config_source(args)
    base = read_config(source) if source else {}
    base.pop("workers", None)
    given = getattr(args, "_given", set())
    values = dict(base)
    for f in dataclasses.fields(TrainConfig):
        if not hasattr(args, f.name) or (source and f.name not in given):
            continue
        value = getattr(args, f.name)
        if value is None and f.name in TPU_DEFAULTS:  # left open: the file's, the TPU's or TrainConfig's default
            continue
        if f.name in KV_FIELDS:
            value = {**(base.get(f.name) or {}), **parse_kv(value, KV_FIELDS[f.name])}
        values[f.name] = value
    if getattr(args, "accelerator", None) == "tpu":
        for name, value in TPU_DEFAULTS.items():
            values.setdefault(name, value)
    return TrainConfig.from_dict(values)


def workers_from_args(args):
    """--workers if given, else the `workers` of a Ray Train run's config.json (--config), else 0."""
    if "workers" in getattr(args, "_given", set()) or not getattr(args, "config", None):
        return args.workers
    return int(read_config(args.config).get("workers", 0) or 0)


def run(args):
    from pipelines import training

    n = workers_from_args(args)
    workers = training.ScalingOptions(num_workers=n, cpus_per_worker=args.cpus_per_worker,
                                      max_failures=args.max_failures, tpus_per_worker=args.tpus_per_worker) if n else 0
    tracking = None if args.no_tracking else training.TrackingOptions(uri=args.tracking_uri,
                                                                       experiment=args.experiment).validate()
    result = training.run(config_from_args(args), workers=workers, tracking=tracking, storage=args.storage,
                          resume_dir=str(Path(args.resume).expanduser()) if args.resume else None,
                          use_gpu=args.use_gpu, accelerator=args.accelerator)
    print(json.dumps(result.metrics, indent=2))
    print(f"run saved to {result.run_dir}")
    if result.run_id:
        print(f"MLflow run {result.run_id} ({tracking.uri}); register it with: "
              f"python -m pipelines register --run {result.run_id} --name NAME")
    return 0
