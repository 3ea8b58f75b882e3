"""Measure several Android bundles side by side on the same test images, interleaved, on this machine.

    python -m pipelines compare-bundles runs/a/bundle runs/b/bundle --rounds 5
    python -m pipelines compare-bundles static/ dynamic/ --data cluttered-digits --test-images 500 --json cmp.json

Latency on a shared machine drifts by 10-25% between two runs of the same bundle a minute apart, so two
bundles measured one after the other (as each experiment measures its own) compare badly. This command runs
every bundle over the same images, one image at a time as the app does, interleaved in blocks of --block
images (each block through every bundle in turn, the order rotated each block and round; one uncounted call
after each switch warms the caches), --rounds times; per image the median over the rounds counts. Slow spells
of a shared machine outlast a block, so they fall on every bundle alike. It prints, per bundle: test accuracy, the
mean of the per-image medians (all of the policy and the part inside LiteRT), each round's mean (the spread),
average MAdds where model.json gives them per stage, the share of images each stage answered, and the ratio of
its time to the first bundle's. With multi-exit bundles of one network that keep different exits (export
--stage-madds 0 and the default, say), it also fits what a stage costs beyond its layers on this machine
(ms = intercept + per M MAdds + per stage run, over every image) and prints it in MAdds: the value to give the
export's --stage-madds for this machine. The fit is made per network (model.json's weights_sha256: the same for
every bundle exported from one trained net), never across two networks, whose speeds per MAdd differ.

The bundles are untrusted input, checked before anything runs: each folder is read as `run-bundle` reads it
(model.json first, files inside the folder), all must take the same input shape, and the test split is that of
--data (default: the dataset the first bundle's model.json names).
"""
NAME = "compare-bundles"
HELP = "measure bundles side by side, interleaved, on the same test images"


def add_arguments(p):
    p.add_argument("bundles", metavar="DIR", nargs="+", help="bundle folders (at least two); the first is the "
                                                             "reference of the ratios")
    p.add_argument("--data", default=None, help="digits | cluttered-digits | TFDS_NAME | folder:PATH (default: the "
                                                "dataset in the first bundle's model.json)")
    p.add_argument("--rounds", type=int, default=3, help="passes over the images per bundle; per image the "
                                                         "median over the rounds counts (default 3)")
    p.add_argument("--block", type=int, default=50, help="images each bundle runs in a row before the next bundle's "
                                                         "turn (default 50)")
    p.add_argument("--test-images", type=int, default=None, help="the first N test images (default all)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1, as on a phone core)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON to FILE")


def check_args(args):
    """One-line ValueErrors naming the field, before any bundle is opened."""
    if len(args.bundles) < 2:
        raise ValueError(f"bundles: give at least two folders to compare; received bundles={args.bundles!r}")
    if len(set(args.bundles)) != len(args.bundles):
        raise ValueError(f"bundles: a folder is listed twice; received bundles={args.bundles!r}")
    from pathlib import Path

    from pipelines.commands import check_measure_args

    check_measure_args(args)  # --threads, --test-images
    if args.rounds < 1:
        raise ValueError(f"rounds must be >= 1; received rounds={args.rounds!r}")
    if args.block < 1:
        raise ValueError(f"block must be >= 1; received block={args.block!r}")

    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise ValueError(f"json: the folder of {args.json!r} does not exist; received json={args.json!r}")
    missing = [b for b in args.bundles if not Path(b).is_dir()]
    if missing:
        raise ValueError(f"bundles: no such folder {missing[0]!r}")


def run(args):
    check_args(args)
    import json
    from pathlib import Path

    from pipelines.export.bundle import Bundle
    from pipelines.experiments import compare

    loaded = [Bundle.load(b, num_threads=args.threads) for b in args.bundles]  # each checked before any runs
    data = args.data or loaded[0].spec.get("dataset")
    if not data:
        raise ValueError(f"data: the first bundle's model.json names no dataset; pass --data "
                         f"(received bundles={args.bundles!r})")
    x, y = compare.test_split(loaded, args.bundles, data, args.test_images)
    result = {"data": data, **compare.compare_bundles(loaded, args.bundles, x, y, rounds=args.rounds, block=args.block,
                                                      log=lambda m: print(m, flush=True))}
    print(compare.format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"result written to {args.json}")
    return 0
