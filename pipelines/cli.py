"""`python -m pipelines <command>`: the one command line of the platform (see `--help`)."""
from __future__ import annotations

import os
import sys

import pipelines  # noqa: F401
from pipelines.commands import parser


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
