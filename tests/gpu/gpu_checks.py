"""GPU checks of issue 19 (run by `tests/gpu/run_gpu_checks.sh`, `make test-gpu`; not part of `make test`).

1. TensorFlow sees a GPU (`pipelines.training.devices.require_gpu`; else the one-line cause, exit 2).
2. Every registered model trains 1 short epoch on the GPU with its own recipe in bf16 and in fp16 (loss
   scaling): the step ran in that compute dtype, the weights live on a GPU, every loss is finite.
3. Kernel mixing on the GPU: a CondConv2D 3x3 training step (forward + backward, batch 128, 8 experts,
   32x32x64) per method (auto = grouped on a GPU, map_fn, im2col) against the static Conv2D.
4. The `condconv_mobilenet_v2` train step vs `mobilenet_v2` (same widths) at batch 128, 32x32, float32
   and bf16, with the GPU choice (grouped) and the CPU choice (map_fn at batch 128) of kernel mixing.

Timings run side by side, round after round (`benchmarks.bench_kernel_mixing.side_by_side`); the tables
give medians and [min - max] over rounds. Exit status 0 only when every check passed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time

from keras_layers import env  # noqa: F401
import numpy as np
import tensorflow as tf
import tf_keras as keras

from benchmarks.bench_kernel_mixing import ratio, side_by_side
from keras_layers import kernel_mixing, models
from keras_layers.condconv import CondConv2D
from pipelines.training import TrainConfig, devices, train
from pipelines.training.train import build_training, load_data, steps_per_epoch
from tests.pipelines.test_every_model_learns import SMALL
from tests.pipelines.test_precision_xla import Record

BATCH = 128  # --batch
FAILURES = []
ALLOW_CPU = False  # --allow-cpu: a dry run of this script on a machine without a GPU


def check(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILURES.append(what)


def families(out, names, epochs=1):
    print("every family, 1 epoch on the GPU (digits 32x32, batch 64, 512 examples) in bf16 and fp16", flush=True)
    for name in names:
        config = SMALL.get(name, ({}, 1))[0]
        for precision, dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
            cfg = TrainConfig(model=name, model_config=config, image_size=32, batch_size=64, epochs=epochs,
                              limit=512, precision=precision, out=out, run_name=f"{name}-{precision}")
            seen = Record()
            start = time.time()
            try:
                metrics, run_dir, _ = train(cfg, callbacks=[seen], verbose=0)
            except Exception as err:  # noqa: BLE001 - reported, the other families still run
                check(False, f"{name} {precision}: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
                continue
            history = (run_dir / "history.json").read_text()
            finite = all(math.isfinite(v) for v in json.loads(history)["loss"])
            on_gpu = "GPU" in seen.seen.get("device", "") or ALLOW_CPU
            check(seen.seen.get("compute_dtype") == dtype and on_gpu and finite,
                  f"{name} {precision}: compute {seen.seen.get('compute_dtype')} on {seen.seen.get('device')}, "
                  f"loss finite {finite}, val_accuracy {metrics['val_accuracy']:.3f}, {time.time() - start:.0f} s")


def _layer_step(layer, x):
    @tf.function(jit_compile=False)
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_mean(tf.square(layer(inputs, training=True)))
        return tape.gradient(loss, [inputs, *layer.trainable_variables])

    def run():
        for g in step(x):
            g.numpy()

    run()
    return run


def layer_methods(rounds):
    print(f"CondConv2D 3x3 train step on the GPU: batch {BATCH}, 8 experts, 32x32x64 -> 64 ({rounds} rounds)",
          flush=True)
    x = tf.constant(np.random.RandomState(0).randn(BATCH, 32, 32, 64).astype("float32"))
    fns = {"static": _layer_step(keras.layers.Conv2D(64, 3, padding="same"), x)}
    # (no grouped-convolution gradient on a CPU: the dry run leaves grouped out)
    for method in ("map_fn", "im2col") if ALLOW_CPU else ("auto", "grouped", "map_fn", "im2col"):
        fns[method] = _layer_step(CondConv2D(64, 3, 8, method=method), x)
    wall = side_by_side(fns, rounds)["wall"]
    for name in fns:
        r = ratio(wall, name, "static")
        print(f"    {name:8s} {np.median(wall[name]) * 1e3:8.2f} ms  {r['median']:5.2f}x static "
              f"[{r['min']:.2f} - {r['max']:.2f}]", flush=True)
    check(ALLOW_CPU or kernel_mixing.choose_conv_method((3, 3), BATCH, kernel_mixing.device_kind()) == "grouped",
          f"auto on this device ({kernel_mixing.device_kind()}) is grouped")


def _model_step(name, config, precision, device_kind):
    cfg = TrainConfig(model=name, model_config=config, image_size=32, batch_size=BATCH, epochs=1, limit=BATCH,
                      precision=precision).validate()
    _, info = load_data(cfg, "train")
    rng = np.random.RandomState(0)
    x = rng.rand(BATCH, 32, 32, info.input_shape[-1]).astype("float32")
    y = rng.randint(0, info.num_classes, BATCH)
    with kernel_mixing.on_device(device_kind):  # the method is chosen when the step is traced
        model = build_training(cfg, info, steps_per_epoch(info, BATCH))
        model.train_on_batch(x, y)
    return lambda: model.train_on_batch(x, y)


def model_steps(rounds):
    widths = {"width_multiplier": 0.5, "last_channels": 256}
    print(f"condconv_mobilenet_v2 / mobilenet_v2 train step on the GPU, batch {BATCH}, 32x32, {widths} "
          f"({rounds} rounds)", flush=True)
    for precision in ("float32", "bf16"):
        fns = {"static": _model_step("mobilenet_v2", widths, precision, "cpu")}
        if not ALLOW_CPU:
            fns["condconv (gpu: grouped)"] = _model_step("condconv_mobilenet_v2", widths, precision, "gpu")
        fns["condconv (cpu: map_fn)"] = _model_step("condconv_mobilenet_v2", widths, precision, "cpu")
        wall = side_by_side(fns, rounds)["wall"]
        for name in fns:
            r = ratio(wall, name, "static")
            print(f"    {precision:7s} {name:24s} {np.median(wall[name]) * 1e3:8.2f} ms  {r['median']:5.2f}x static "
                  f"[{r['min']:.2f} - {r['max']:.2f}]", flush=True)


def main(argv=None):
    global ALLOW_CPU, BATCH
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer timing rounds")
    p.add_argument("--models", default=",".join(sorted(models.names())), help="comma-separated (default: all)")
    p.add_argument("--batch", type=int, default=BATCH, help=f"batch of the timed steps (default {BATCH})")
    p.add_argument("--allow-cpu", action="store_true", help="dry run of the script without a GPU (1 round)")
    args = p.parse_args(argv)
    ALLOW_CPU, BATCH = args.allow_cpu, args.batch
    try:
        gpus = devices.require_gpu()
    except devices.GpuUnavailableError as err:
        if not ALLOW_CPU:
            print(f"error: {err}", file=sys.stderr)
            return 2
        gpus = []
    print(f"TensorFlow {tf.__version__} sees {len(gpus)} GPU(s): {[g.name for g in gpus]}", flush=True)
    rounds = 1 if ALLOW_CPU else 5 if args.quick else 15
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        families(out, [n for n in args.models.split(",") if n])
    layer_methods(rounds)
    model_steps(rounds)
    print(f"{len(FAILURES)} failure(s) in {time.time() - start:.0f} s", flush=True)
    for f in FAILURES:
        print(f"  FAILED: {f}", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
