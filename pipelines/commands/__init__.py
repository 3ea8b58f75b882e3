"""One module per command of `python -m pipelines`; each defines `NAME`, `HELP`, `add_arguments(parser)`
and `run(args) -> int`. Modules are discovered automatically, so a new command is a new file;
`parser()` builds the whole command line (`pipelines.cli` runs it, `submit` checks a job's command with it)."""
import argparse
import importlib
import os
import pkgutil
import sys


DEBUG_HELP = "show the traceback of an error instead of one line (also PIPELINES_DEBUG=1)"
TRACKING_URI_HELP = ("MLflow tracking URI: http(s)://HOST:PORT, sqlite:///PATH.db or postgresql://USER@HOST/DB "
                     "(default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns.db)")


def add_tracking_uri(parser, help=TRACKING_URI_HELP):
    """The `--tracking-uri` option every MLflow-facing command shares."""
    parser.add_argument("--tracking-uri", default=None, help=help)


PRESET_HELP = ("paper: each model trains with its paper's recipe (and the paper's architecture where the family has "
               "one; docs/papers.md); default: the project's (default: the recipe config's preset, else default)")


def add_preset_argument(p):
    """`--preset paper|default` of every experiment command (`pipelines.experiments.resolve_preset` applies it)."""
    p.add_argument("--preset", default=None, choices=("default", "paper"), help=PRESET_HELP)


def add_experiment_arguments(p, data, epochs_help, out_file, seeds_help="seeds (default 0)"):
    """--data, --image-size, --epochs, --seeds, --limit, --out, --preset: what the experiment commands that
    train models side by side share."""
    p.add_argument("--data", default=data, help=f"digits | cluttered-digits | TFDS_NAME | folder:PATH (default {data})")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10, help=f"{epochs_help} (default 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help=seeds_help)
    p.add_argument("--limit", type=int, default=None, help="use only N examples per split (smoke tests)")
    p.add_argument("--out", default="runs", help=f"folder for runs and {out_file} (with --preset paper: "
                   f"{out_file.replace('.json', '-paper.json')}; default runs/)")
    add_preset_argument(p)


STAGE_MADDS_HELP = ("what one stage costs beyond its layers, in MAdds, when the exits and thresholds are chosen "
                    "(default 600000; fitted by compare-bundles: 0.44-0.47 M on an Intel AVX-512 CPU, 0.89-1.15 M on "
                    "an AVX2-only AMD one; 0: count MAdds alone)")


def add_stage_madds_argument(p, prefix=""):
    """`--stage-madds` of the commands that choose a multi-exit bundle's exits (export, multi-exit-eval)."""
    p.add_argument("--stage-madds", type=float, default=None, metavar="MADDS", help=prefix + STAGE_MADDS_HELP)


def add_measure_arguments(p):
    """--threads, --repeats, --test-images of the experiment commands that measure bundles (`deployed.measure`)."""
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads for latency (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per test image; its median counts (default 3)")
    p.add_argument("--test-images", type=int, default=None, help="measure on the first N test images (default all)")


def check_measure_args(args):
    """One-line ValueErrors naming the flag, before any work."""
    for name in ("epochs", "threads", "repeats", "image_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1; received {name}={value!r}")
    for name in ("limit", "test_images"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 or unset; received {name}={value!r}")


def experiment_tracking_uri(args):
    """The MLflow store an experiment logs to: --tracking-uri, else $MLFLOW_TRACKING_URI, else None (not logged)."""
    return args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _commands():
    mods = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        mods[mod.NAME] = mod
    return mods


def program():
    """How the user called the CLI: `dynnets` (the console script) or `python -m pipelines`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and not name.endswith((".py", "python", "python3")) and name != "-c" else "python -m pipelines"


def parser():
    p = argparse.ArgumentParser(
        prog=program(),
        description="Train, tune, register, promote and export dynamic neural networks for phones.",
        epilog="Run `python -m pipelines COMMAND --help` for the options of a command. "
               "MLFLOW_TRACKING_URI is honoured everywhere; --tracking-uri overrides it. An error is one line "
               "(exit status 2); --debug (or PIPELINES_DEBUG=1) shows its traceback.")
    p.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    mods = _commands()
    for name, mod in mods.items():
        sp = sub.add_parser(name, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        # also after the command (`pipelines export --debug ...`); SUPPRESS keeps the global flag's value
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        sp.set_defaults(_run=mod.run)
    return p
