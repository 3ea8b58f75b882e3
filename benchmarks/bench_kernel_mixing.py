"""Kernel-mixing layers (CondConv / Basis) vs static layers: training step and TFLite batch-1 latency.

    python -m benchmarks kernel_mixing        # or `make bench`; about 2-3 minutes on 2 cores

Part 1 -- forward+backward (gradients of inputs and weights) at batch 32, 8 experts, 32x32x64 -> 64,
traced with an unknown batch size as in `model.fit`, for 3x3, 1x1 and depthwise 3x3: the CondConv
layer (router included, `method="auto"`) against a static Keras layer of the same shape and against
the naive mixture-of-experts formula (E convolutions, then mix the outputs; `method="experts"`).
The other 3x3 methods of `keras_layers.kernel_mixing` are timed too (the data behind "auto").
Targets (issue 4): CondConv/static <= 1.5x for 1x1 and depthwise, <= 2.5x for 3x3; naive/CondConv >= 3x.

Part 2 -- TFLite (LiteRT, XNNPACK, 1 thread) batch-1 latency: 2 stacked layers of each kind, CondConv
vs static, and the registry models `condconv_mobilenet_v2` vs `mobilenet_v2` at 32x32x3 (float32, the
CondConv blocks alone, and both models dynamic-range quantized).
Target: <= 1.15x the static model.

All timings of one comparison are interleaved (round-robin, best of the rounds) so that load from
other processes hits both sides alike; only the ratios are meaningful.
"""
from __future__ import annotations

import time

from keras_layers import env  # noqa: F401
import numpy as np
import tensorflow as tf
import tf_keras as keras

B, E, H, C = 32, 8, 32, 64
L = keras.layers


def _interleaved(fns, rounds):
    """Best-of-rounds seconds of each callable, timed round-robin (the minimum is the time without
    preemption, which is what a loaded shared machine distorts; medians were far noisier there)."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: float(np.min(v)) for k, v in times.items()}


def _train_step(layer, dynamic=True):
    """A compiled forward+backward of `layer` on (B, H, W, C) inputs; returns a no-arg callable."""
    x = tf.constant(np.random.RandomState(0).randn(B, H, H, C).astype("float32"))
    layer(x[:1])  # build
    spec = tf.TensorSpec((None if dynamic else B, H, H, C))

    @tf.function(input_signature=[spec])
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            loss = tf.reduce_mean(tf.square(y))
        return tape.gradient(loss, [inputs, *layer.trainable_variables])

    step(x)  # trace + warm up

    def run():
        for g in step(x):
            g.numpy()

    run()
    return run


def training(rounds=7):
    from keras_layers.condconv import CondConv2D, CondDepthwiseConv2D

    rows = []
    cases = {
        "3x3": (lambda: L.Conv2D(C, 3, padding="same"), lambda m: CondConv2D(C, 3, E, method=m)),
        "1x1": (lambda: L.Conv2D(C, 1), lambda m: CondConv2D(C, 1, E, method=m)),
        "depthwise 3x3": (lambda: L.DepthwiseConv2D(3, padding="same"), lambda m: CondDepthwiseConv2D(3, E, method=m)),
    }
    print(f"forward+backward, batch {B}, {E} experts, {H}x{H}x{C} -> {C} (best-of-rounds ms, ratio to static)", flush=True)
    for kind, (static, cond) in cases.items():
        fns = {"static": _train_step(static()), "condconv": _train_step(cond("auto")),
               "naive": _train_step(cond("experts"))}
        if kind == "3x3":
            for method in ("map_fn", "grouped", "im2col"):
                fns[method] = _train_step(cond(method))
            fns["unrolled (static batch)"] = _train_step(cond("unrolled"), dynamic=False)
        t = _interleaved(fns, rounds)
        base = t["static"]
        for name, sec in t.items():
            print(f"  {kind:14s} {name:24s} {sec * 1e3:8.1f} ms  {sec / base:5.2f}x static", flush=True)
        rows.append({"kind": kind, "condconv/static": t["condconv"] / base, "naive/condconv": t["naive"] / t["condconv"],
                     "ms": {k: v * 1e3 for k, v in t.items()}})
    print("  summary:", flush=True)
    for r in rows:
        print(f"    {r['kind']:14s} CondConv/static {r['condconv/static']:.2f}x   "
              f"naive MoE / CondConv {r['naive/condconv']:.1f}x faster", flush=True)
    return rows


def _stack(kind, cond, layers=2):
    from keras_layers.condconv import CondConv2D, CondDepthwiseConv2D

    x = inputs = keras.Input((H, H, C))
    for _ in range(layers):
        if kind == "3x3":
            x = CondConv2D(C, 3, E)(x) if cond else L.Conv2D(C, 3, padding="same")(x)
        elif kind == "1x1":
            x = CondConv2D(C, 1, E)(x) if cond else L.Conv2D(C, 1)(x)
        else:
            x = CondDepthwiseConv2D(3, E)(x) if cond else L.DepthwiseConv2D(3, padding="same")(x)
    return keras.Model(inputs, x)


def tflite_latency(rounds=60):
    from keras_layers import models
    from pipelines.export import tflite

    print("TFLite batch 1 (LiteRT + XNNPACK, 1 thread), best-of-rounds ms, ratio to static", flush=True)
    pairs = {f"2 x {k} at {H}x{H}x{C}": (_stack(k, False), _stack(k, True)) for k in ("3x3", "1x1", "depthwise")}
    pairs["mobilenet_v2 32x32x3"] = (models.build("mobilenet_v2"), models.build("condconv_mobilenet_v2"))
    pairs["  ... CondConv blocks only (cond_head=False)"] = (
        pairs["mobilenet_v2 32x32x3"][0], models.build("condconv_mobilenet_v2", cond_head=False))
    pairs["  ... dynamic-range quantization (int8 bases), both"] = pairs["mobilenet_v2 32x32x3"]
    rows, blobs = [], {}
    for name, (static, cond) in pairs.items():
        runners = {}
        mode = "dynamic" if "dynamic-range" in name else "float32"
        for key, model in (("static", static), ("condconv", cond)):
            if (id(model), mode) not in blobs:  # conversion is the slow part: once per model and mode
                blobs[id(model), mode] = tflite.convert(model, mode)
            runner = tflite.Runner(blobs[id(model), mode], num_threads=1)
            example = np.random.RandomState(0).randn(1, *model.input_shape[1:]).astype("float32")
            runner.run_one(example)
            runners[key] = (lambda r=runner, e=example: r.run_one(e))
        t = _interleaved(runners, rounds)
        ratio = t["condconv"] / t["static"]
        print(f"  {name:46s} static {t['static'] * 1e3:7.3f} ms  condconv {t['condconv'] * 1e3:7.3f} ms  "
              f"{ratio:5.2f}x", flush=True)
        rows.append({"case": name, "ratio": ratio, "ms": {k: v * 1e3 for k, v in t.items()}})
    return rows


def main():
    start = time.time()
    results = {"training": training()}
    middle = time.time()
    results["tflite"] = tflite_latency()
    print(f"(bench_kernel_mixing took {time.time() - start:.0f} s: training {middle - start:.0f} s, "
          f"TFLite {time.time() - middle:.0f} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
