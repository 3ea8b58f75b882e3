"""Submit a pipelines command to a Ray cluster as a job (HTTP job API), stream its logs, report its status.

    python -m pipelines submit --address http://HOST:8265 -- tune --family basisnet --smoke-test
    python -m pipelines submit --address http://127.0.0.1:8265 -- train --model mobilenet_v2 --workers 2
    python -m pipelines submit --no-wait -- tune --family ds_net        # print the job id and return

    MLFLOW_TRACKING_URI=http://mlflow:5000 python -m pipelines submit --address http://HOST:8265 \
        -- tune --family basisnet --storage s3://bucket/dynnets

The job's working dir is this repo (Ray copies it, and deletes the copy when the job ends); its runtime
env sets TF_USE_LEGACY_KERAS=1, MLFLOW_TRACKING_URI of this shell and every --env KEY=VALUE. On a cluster
on this machine (127.0.0.1/localhost) the job reuses this interpreter and its virtualenv, and a tune/train
job without --storage keeps its results in --out resolved here (not in Ray's copy). On a remote cluster the
job runs the cluster image's python (the project image: nothing installed; --pip installs the runtime
requirements.txt in the job's env) and needs --storage (a bucket or a path every node mounts) and a
tracking server the cluster reaches. The command is checked here before anything is sent.
Exit status: 0 when the job SUCCEEDED, 1 when it FAILED or was STOPPED, 2 for bad input or an
unreachable address. List or stop jobs with `python -m pipelines jobs`.
"""
import argparse
import os

NAME = "submit"
HELP = "run a pipelines command as a job on a Ray cluster and stream its logs"


def add_arguments(p):
    from pipelines.cluster.jobs import DEFAULT_ADDRESS

    p.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", DEFAULT_ADDRESS),
                   help=f"job API URL of the cluster's head (default $RAY_API_SERVER_ADDRESS or {DEFAULT_ADDRESS})")
    p.add_argument("--pip", dest="pip", action="store_true", default=False,
                   help="pip install the runtime requirements.txt in the job's env (default: no; the project "
                        "image and this machine's virtualenv have them)")
    p.add_argument("--no-pip", dest="pip", action="store_false", help="never install requirements (the default)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for the job (repeatable); MLFLOW_TRACKING_URI of this shell is "
                        "forwarded unless set here. Job env vars are readable in the job's info: no secrets")
    p.add_argument("--max-upload-mb", type=float, default=None,
                   help="refuse to upload a working dir larger than this after excludes (default 100)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="submit and return without following logs")
    p.add_argument("job", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the pipelines command to run, after `--` (e.g. -- tune --family basisnet --smoke-test)")


def check_command(argv):
    """Parse and validate the job's command here, so a bad value fails before the cluster is touched."""
    from pipelines.commands import parser

    if not argv:
        raise ValueError("submit needs a command after `--`, e.g. -- tune --family basisnet --smoke-test")
    if argv[0] in ("submit", "jobs"):
        raise ValueError(f"cannot submit command={argv[0]!r} as a job")
    args = parser().parse_args(argv)  # argparse reports unknown flags itself (exit 2)
    if args.command == "tune" and not args.resume:
        from pipelines.commands.tune import options_from_args

        options_from_args(args).validate().space()
    elif args.command == "train":
        from pipelines.commands.train import config_from_args

        config_from_args(args).validate()
    return args


def run(args):
    from pipelines.cluster import jobs

    argv = list(args.job)
    if argv and argv[0] == "--":
        argv = argv[1:]
    jobs.check_address(args.address)
    jobs.parse_env(args.env)
    command = check_command(argv)
    from pipelines.cluster import upload_check

    max_mb = upload_check.DEFAULT_MAX_MB if args.max_upload_mb is None else args.max_upload_mb
    if not max_mb > 0:
        raise ValueError(f"--max-upload-mb must be > 0; received max_upload_mb={args.max_upload_mb}")
    _, status = jobs.submit(argv, address=args.address, pip=args.pip, wait=args.wait, max_upload_mb=max_mb,
                            command=command, env=args.env)
    if not args.wait:
        return 0
    return 0 if status == "SUCCEEDED" else 1
