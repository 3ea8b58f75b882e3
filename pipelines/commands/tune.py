"""Tune a model family's recipe with Ray Tune (Optuna: accuracy up, MAdds down; ASHA early stopping).

    python -m pipelines tune --family baseline --smoke-test
    python -m pipelines tune --family basisnet --trials 32 --max-concurrent-trials 4 --workers-per-trial 2
    python -m pipelines tune --resume runs/tune/basisnet-20260101-120000
    python -m pipelines submit --address http://HOST:8265 -- tune --family basisnet --smoke-test

Connects to $RAY_ADDRESS when set, else starts a local Ray. The search space is `tune_spaces/<family>.py`;
it is validated (every choice, both ends of every range) before any trial starts. Results go to
OUT/NAME/ (or STORAGE/NAME/ with --storage): results.csv, pareto.csv, pareto.png, best/ (model.keras +
checkpoint), summary.json. Console: one line per trial report; Ray's status tables are not printed.
"""
NAME = "tune"
HELP = "tune a family's recipe on Ray Tune (Optuna multi-objective + ASHA)"


def add_arguments(p):
    import tune_spaces

    p.add_argument("--family", default=None, help=f"search space in tune_spaces/ ({', '.join(tune_spaces.names())})")
    p.add_argument("--smoke-test", action="store_true", help="tiny search (the space's SMOKE sizes), seconds per trial")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: SMOKE's with --smoke-test, else 16)")
    p.add_argument("--max-concurrent-trials", type=int, default=1, help="trials running at once (default 1)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per Train worker (default 1)")
    p.add_argument("--cpus-per-trial", type=float, default=0.1, help="CPUs reserved by each trial's driver (default 0.1)")
    p.add_argument("--accelerator", default=None, choices=("cpu", "gpu", "tpu"),
                   help="cpu | gpu (one GPU per worker) | tpu (one worker per trial on a single-host TPU VM, bf16, "
                        "XLA) (default: GPUs when the cluster has or its autoscaler can start them)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="the same as --accelerator gpu")
    p.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="the same as --accelerator cpu")
    p.add_argument("--tpus-per-worker", type=int, default=4, help="TPU chips per TPU VM host (default 4)")
    p.add_argument("--max-failures", type=int, default=0, help="worker-group restarts per trial (default 0)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped (default 1)")
    p.add_argument("--reduction-factor", type=int, default=4,
                   help="ASHA reduction factor: a trial goes on past a rung when in the top 1/N there (default 4)")
    p.add_argument("--seed", type=int, default=0, help="Optuna sampler seed")
    p.add_argument("--data", default=None, help="override the space's dataset (digits | TFDS_NAME | folder:PATH)")
    p.add_argument("--data-dir", default=None, help="folder with prepared TFDS data")
    p.add_argument("--epochs", type=int, default=None, help="override the space's epochs (ASHA's max_t)")
    p.add_argument("--limit", type=int, default=None, help="use only N examples per split")
    p.add_argument("--out", default="runs/tune", help="experiments folder (default runs/tune)")
    p.add_argument("--storage", default=None, metavar="PATH|s3://...|gs://...",
                   help="where the experiment goes instead of --out (checkpoints, results, Pareto files, best "
                        "model): a path every node mounts or a bucket URI, passed to Ray unchanged; required on "
                        "a remote Ray cluster")
    p.add_argument("--name", default=None, help="experiment name (default FAMILY-TIMESTAMP)")
    p.add_argument("--resume", default=None, metavar="EXPERIMENT_DIR", help="continue an interrupted experiment")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI for the parent run + one nested run per trial "
                        "(default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns.db)")
    p.add_argument("--no-tracking", action="store_true", help="do not log the experiment to MLflow")


def options_from_args(args):
    from pipelines.tuning import tune

    if not args.family:
        raise ValueError("tune needs --family (or --resume EXPERIMENT_DIR)")
    overrides = {k: v for k, v in (("data", args.data), ("data_dir", args.data_dir), ("epochs", args.epochs),
                                   ("limit", args.limit)) if v is not None}
    return tune.TuneOptions(
        family=args.family, smoke_test=args.smoke_test, trials=args.trials,
        max_concurrent_trials=args.max_concurrent_trials, workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker, cpus_per_trial=args.cpus_per_trial, use_gpu=args.use_gpu,
        accelerator=args.accelerator, tpus_per_worker=args.tpus_per_worker,
        max_failures=args.max_failures, grace_period=args.grace_period, reduction_factor=args.reduction_factor,
        seed=args.seed, out=args.out, name=args.name, storage=args.storage, overrides=overrides)


def run(args):
    from pipelines.tuning import tune

    summary, _, _ = tune.search(None if args.resume else options_from_args(args), resume_dir=args.resume,
                                tracking_uri=args.tracking_uri, track=not args.no_tracking)
    if summary["interrupted"]:
        return 130
    return 0 if summary["completed"] + summary["stopped_early"] > 0 else 1
