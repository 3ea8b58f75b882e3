"""`python -m pipelines <command>`: the one command line of the platform (see `--help`)."""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import pipelines  # noqa: F401
from pipelines import commands


def _commands():
    mods = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        mods[mod.NAME] = mod
    return mods


def parser():
    p = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Train, tune, register, promote and export dynamic neural networks for phones.",
        epilog="Run `python -m pipelines COMMAND --help` for the options of a command. "
               "MLFLOW_TRACKING_URI is honoured everywhere; --tracking-uri overrides it.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    mods = _commands()
    for name, mod in mods.items():
        sp = sub.add_parser(name, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if not getattr(args, "_run", None):
        parser().print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("PIPELINES_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
