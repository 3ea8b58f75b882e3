"""One module per command of `python -m pipelines`; each defines `NAME`, `HELP`, `add_arguments(parser)`
and `run(args) -> int`. Modules are discovered automatically, so a new command is a new file."""


TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns.db)"


def add_tracking_uri(parser, help=TRACKING_URI_HELP):
    """The `--tracking-uri` option every MLflow-facing command shares."""
    parser.add_argument("--tracking-uri", default=None, help=help)
