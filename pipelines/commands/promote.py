"""Move the `champion` alias of a registered model to a candidate version, only through the gates.

    python -m pipelines promote --model digits_net                       # newest version vs champion
    python -m pipelines promote --model digits_net --version 3 --metric val_loss
    python -m pipelines promote --model digits_net --quantize int8 --latency-budget-ms 2 --threads 2

Gates, in order: the candidate's TFLite export (--quantize) agrees with the Keras model on
--parity-images validation images; it beats the champion on --metric on the same validation data;
(optional) its measured TFLite latency is within --latency-budget-ms. A refusal leaves `champion`
where it was, says why, and exits with status 1. Who/what/why are stored as version tags.

Every move is recorded (`python -m pipelines history NAME`), promotions of one model run one at a
time (a lock in the registry), and `--rollback` moves `champion` back to the previous champion
(no gates: it was the champion before); see `pipelines/mlops/promotions.py`. Every flag is checked
(`promotions.PromotionGates`) before MLflow is contacted.
    python -m pipelines promote --model digits_net --rollback --reason "crash on Android 12"
"""
from pipelines.commands import add_tracking_uri

NAME = "promote"
HELP = "promote a registered version to `champion` if it passes the gates"


def add_arguments(p):
    p.add_argument("--model", required=True, help="registered model NAME")
    p.add_argument("--version", default=None, help="candidate version (default: the newest)")
    p.add_argument("--metric", default="val_accuracy", help="val_accuracy (higher wins) | val_loss (lower wins)")
    p.add_argument("--min-delta", type=float, default=0.0, help="margin (>= 0) the candidate must win by (default 0)")
    p.add_argument("--quantize", default="float32", help="TFLite mode for the parity gate (default float32)")
    p.add_argument("--parity-images", type=int, default=64, help="validation images for parity (default 64)")
    p.add_argument("--min-agreement", type=float, default=0.99, help="min top-1 agreement (default 0.99)")
    p.add_argument("--max-error", type=float, default=None,
                   help="max abs logit error (default per mode: float32 1e-3, float16 5e-2, else unchecked)")
    p.add_argument("--latency-budget-ms", type=float, default=None, help="optional TFLite latency budget (ms)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads for the latency gate (default 1)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N validation images only")
    p.add_argument("--reason", default=None, help="a note stored with the promotion tags and history")
    p.add_argument("--rollback", action="store_true",
                   help="move champion back to the previous champion (from the promotion history); no gates")
    add_tracking_uri(p)


def run(args):
    import dataclasses

    from pipelines.mlops import promotions

    gates = promotions.PromotionGates(
        metric=args.metric, quantize=args.quantize, parity_images=args.parity_images, min_agreement=args.min_agreement,
        max_error=args.max_error, latency_budget_ms=args.latency_budget_ms, threads=args.threads, limit=args.limit,
        min_delta=args.min_delta)
    if args.rollback:
        if args.version is not None:
            raise ValueError(f"--rollback restores the previous champion; it takes no --version (received version={args.version!r})")
        changed = [f.name for f in dataclasses.fields(gates) if getattr(gates, f.name) != f.default]
        if changed:
            raise ValueError(f"--rollback runs no gates; it takes no gate options (received "
                             f"{changed[0]}={getattr(gates, changed[0])!r})")
        promotions.rollback(args.model, reason=args.reason, tracking_uri=args.tracking_uri)
        return 0
    result = promotions.promote(args.model, gates=gates, version=args.version, reason=args.reason,
                                tracking_uri=args.tracking_uri)
    return 0 if result.promoted else 1
