"""The main job end to end on the embedded default dataset (digits at 32x32).

    make demo        # or: python -m pipelines demo

Today: trains the `mobilenet_v2` baseline and prints validation accuracy and MAdds.
"""
import json
import time

NAME = "demo"
HELP = "run the main job end to end on digits"


def add_arguments(p):
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="runs")


def run(args):
    from pipelines.train import TrainConfig, train

    start = time.time()
    print("== demo: train the mobilenet_v2 baseline on digits (32x32)")
    cfg = TrainConfig(model="mobilenet_v2", data="digits", epochs=args.epochs, out=args.out, run_name="demo-baseline")
    metrics, run_dir, _ = train(cfg, verbose=2)
    print(json.dumps(metrics, indent=2))
    print(f"== demo done in {time.time() - start:.0f} s: val_accuracy={metrics['val_accuracy']:.4f} "
          f"MAdds={metrics['madds'] / 1e6:.2f}M params={metrics['params'] / 1e3:.0f}K run={run_dir}")
    return 0
