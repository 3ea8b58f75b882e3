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

    from pipelines.mlops import promotions, registry
    from pipelines import tracking

    registry.check_name(args.model)
    client = tracking.client(tracking.resolve_tracking_uri(args.tracking_uri))
    current = registry.get_version(client, args.model, alias=promotions.CHAMPION)  # unknown model -> error
    events = promotions.history(client, args.model)
    if args.json:
        print(json.dumps(events, indent=2))
    else:
        print(promotions.format_history(args.model, events, current.version if current else None))
    return 0
