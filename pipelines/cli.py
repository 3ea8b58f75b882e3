"""`python -m pipelines <command>`: the one command line of the platform (see `--help`).

An error the platform expects (a bad value, a missing file, a refused model or bundle, an unreachable
server, an error MLflow answered with: `ValueError` and `FileNotFoundError`, every exception class the
project defines, `MlflowException`) is printed as one line `error: ...` with exit status 2; anything else
is a bug and keeps its traceback. `python -m pipelines --debug COMMAND` (or `PIPELINES_DEBUG=1`) shows
the traceback of every error.
"""
from __future__ import annotations

import os
import sys

import pipelines  # noqa: F401
from pipelines.commands import parser

OWN_PACKAGES = ("pipelines", "keras_layers", "tune_spaces")


def expected(err):
    """Whether `err` is an error the platform reports in one line (see the module doc)."""
    if isinstance(err, (ValueError, FileNotFoundError)):
        return True
    return any(cls.__module__.split(".")[0] in OWN_PACKAGES + ("mlflow",) for cls in type(err).__mro__
               if issubclass(cls, Exception) and cls.__module__ != "builtins")


def one_line(err):
    """The message of `err` on one line."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def debugging(args=None):
    return bool(getattr(args, "debug", False)) or os.environ.get("PIPELINES_DEBUG", "") not in ("", "0")


def main(argv=None):
    args = parser().parse_args(argv)
    if not getattr(args, "_run", None):
        parser().print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debugging(args) or not expected(err):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
