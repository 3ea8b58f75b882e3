"""Show the promotion history of a registered model: every move of `champion`, who made it, why, and
which version was champion when (recorded by `promote`, including rollbacks).

    python -m pipelines history digits_net
    python -m pipelines history digits_net --json
"""
from pipelines.commands import add_tracking_uri

NAME = "history"
HELP = "show which version was champion when (promotions and rollbacks)"


def add_arguments(p):
    p.add_argument("model", metavar="NAME", help="registered model name")
    p.add_argument("--json", action="store_true", help="print the moves as a JSON list")
    add_tracking_uri(p)


def run(args):
    import json

    from pipelines.mlops import promotions

    events, current = promotions.champion_history(args.model, tracking_uri=args.tracking_uri)
    print(json.dumps(events, indent=2) if args.json else promotions.format_history(args.model, events, current))
    return 0
