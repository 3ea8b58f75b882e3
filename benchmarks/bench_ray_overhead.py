"""Ray platform costs: a 1-worker Ray Train run vs in-process `fit` (same config and epochs), and the
share of trial-epochs ASHA saves in an 8-trial smoke search.

    python -m benchmarks ray_overhead          # or: make bench

Uses $RAY_ADDRESS when set, else starts a local Ray (2 CPUs are enough; with other Ray instances on
the same machine give RAY_ADDRESS of a head: Ray Train's placement-group cleaner auto-detects its
cluster and fails when there are several). Both training runs use the same tiny MobileNetV2 on digits;
"wall" includes building the model and, for Ray, starting the worker process and the strategy;
"fit" is the sum of per-epoch seconds. Timings on a shared machine are noisy: compare the ratio.
"""
import json
import os
import tempfile
import time

EPOCHS = 4
TRIALS = 8


def _cfg(out):
    from pipelines.training.train import TrainConfig

    return TrainConfig(model_config={"width_multiplier": 0.25, "depth_multiplier": 0.25}, image_size=16,
                       batch_size=32, limit=512, epochs=EPOCHS, out=out)


def overhead(out):
    from pipelines.training.distributed import ScalingOptions, ensure_ray, fit_distributed
    from pipelines.training.train import train

    t = time.time()
    local, _, _ = train(_cfg(out), verbose=0)
    local_wall = time.time() - t
    ensure_ray()
    t = time.time()
    ray_metrics, _, _ = fit_distributed(_cfg(out), ScalingOptions(num_workers=1, cpus_per_worker=1.0), verbose=False)
    ray_wall = time.time() - t
    return {"epochs": EPOCHS, "in_process_wall_s": round(local_wall, 1), "ray_1_worker_wall_s": round(ray_wall, 1),
            "wall_ratio": round(ray_wall / local_wall, 2),
            "in_process_fit_s": local["train_seconds"], "ray_1_worker_fit_s": ray_metrics["train_seconds"],
            "fit_ratio": round(ray_metrics["train_seconds"] / local["train_seconds"], 2),
            "val_accuracy": {"in_process": round(local["val_accuracy"], 4),
                             "ray_1_worker": round(ray_metrics["val_accuracy"], 4)}}


def asha_share(out):
    from pipelines.tuning import tune

    opts = tune.TuneOptions(family="baseline", smoke_test=True, trials=TRIALS, cpus_per_worker=0.5, out=out,
                            name="asha", overrides={"epochs": EPOCHS, "limit": 384, "batch_size": 16})
    t = time.time()
    summary = tune.run(opts)
    return {"trials": summary["trials"], "epochs_per_trial": EPOCHS, "trial_epochs_run": summary["trial_epochs_run"],
            "trial_epochs_budget": summary["trial_epochs_budget"], "asha_saved_share": summary["asha_saved_share"],
            "stopped_early": summary["stopped_early"], "search_wall_s": round(time.time() - t, 1)}


def main():
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    with tempfile.TemporaryDirectory() as out:
        result = {"overhead": overhead(out)}
        print(json.dumps(result["overhead"], indent=2), flush=True)
        result["asha"] = asha_share(out)
        print(json.dumps(result["asha"], indent=2), flush=True)
    print(f"1-worker Ray Train / in-process: wall {result['overhead']['wall_ratio']}x, "
          f"fit {result['overhead']['fit_ratio']}x over {EPOCHS} epochs; "
          f"ASHA saved {result['asha']['asha_saved_share']:.0%} of {result['asha']['trial_epochs_budget']} "
          f"trial-epochs in a {TRIALS}-trial smoke search")
    return result


if __name__ == "__main__":
    main()
