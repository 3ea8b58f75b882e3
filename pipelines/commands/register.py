"""Register a tracked training run's model in the MLflow model registry (a new version of NAME).

    python -m pipelines register --run 3f2a... --name digits_net
    python -m pipelines register --run 3f2a... --name digits_net --tracking-uri http://127.0.0.1:5000

The run must come from `python -m pipelines train` with tracking on (it logs `run/model.keras`). The
model is logged with the mlflow.tensorflow flavour and a tensor signature; promote it with
`python -m pipelines promote --model NAME`.
"""
from pipelines.commands import add_tracking_uri

NAME = "register"
HELP = "register a tracked run's model in the MLflow registry"


def add_arguments(p):
    p.add_argument("--run", required=True, metavar="RUN_ID", help="MLflow run id printed by `train`")
    p.add_argument("--name", required=True, help="registered model name (letters, digits, _ . -)")
    add_tracking_uri(p)


def run(args):
    from pipelines.mlops import registry

    mv = registry.register(args.run, args.name, tracking_uri=args.tracking_uri)
    print(f"registered models:/{mv.name}/{mv.version} from run {args.run}")
    print(f"promote it with: python -m pipelines promote --model {mv.name} --version {mv.version}")
    return 0
