"""Run an Android bundle on image files exactly as the app does (LiteRT, one image at a time).

    python -m pipelines run-bundle bundle/ cat.png dog.jpg
    python -m pipelines run-bundle bundle/ photos/*.png --threads 2 --json

The bundle is the folder `export` writes: model.tflite (and any other .tflite it names), labels.txt,
model.json. Dynamic bundles follow model.json's `kind` (`pipelines/export/bundle.py` runs the policy of
that family's plugin in `pipelines/export/families/`):
BasisNet runs `preview`, then `specialist` only when the preview is not confident enough; multi-exit
runs stage by stage until an exit is confident; DS-Net runs the gate, then the width it chose.
Prints, per image: the label, its probability, where it stopped and the time spent.

The bundle and the images are untrusted input: model.json is checked before any model file is opened
(files must lie inside the bundle folder), and an image is decoded only when its header says PNG, JPEG,
BMP, GIF or WEBP of at most 50 million pixels (`pipelines.export.bundle.MAX_IMAGE_PIXELS`); otherwise,
or when it does not decode, one line names the file.
"""
NAME = "run-bundle"
HELP = "run a TFLite bundle on images as the Android app does"


def add_arguments(p):
    p.add_argument("bundle", metavar="DIR", help="bundle folder (model.json, labels.txt, *.tflite)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (png, jpg, ...)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads (default 1, as on a phone core)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")


def run(args):
    import json
    from pathlib import Path

    from pipelines.export.bundle import Bundle

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1; received threads={args.threads}")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image not found: {missing[0]}")
    bundle = Bundle.load(args.bundle, num_threads=args.threads)
    if not args.json:
        print(f"bundle {args.bundle}: kind={bundle.kind}, stages={list(bundle.spec['stages'])}")
        print(f"{'image':32s} {'label':16s} {'prob':>6s}  {'stopped at':14s} {'stages run':28s} {'ms':>8s}")
    total = lite = 0.0
    for path in args.images:
        p = bundle.predict_one(bundle.preprocess(path))
        total += p.time_ms
        lite += p.tflite_ms
        if args.json:
            d = p.to_dict()
            d.pop("logits")
            print(json.dumps({"image": path, **d}))
        else:
            print(f"{Path(path).name[:32]:32s} {p.label[:16]:16s} {p.confidence:6.3f}  {p.stopped_at:14s} "
                  f"{'>'.join(p.stages)[:28]:28s} {p.time_ms:8.3f}")
    if not args.json:
        print(f"{len(args.images)} image(s), {total:.3f} ms in all, {total / len(args.images):.3f} ms per image "
              f"({lite / len(args.images):.3f} ms of it inside LiteRT)")
    return 0
