"""CondConv / Basis layers vs static layers: the training step and the phone (LiteRT batch 1), side by side.

    python -m benchmarks kernel_mixing            # part of `make bench`
    python -m benchmarks --quick kernel_mixing    # fewer rounds, no per-operator table

Part 1 -- training (issue 17): forward + backward (gradients of the inputs and of every weight) at batch
32, 8 experts, 32x32x64 -> 64, traced with an unknown batch as in `model.fit`; each CondConv layer with
its own router (pooling and dense included, `method="auto"`) against the static Keras layer of the same
shape. Targets: `CondDepthwiseConv2D` <= 1.6x, `CondConv2D` 3x3 <= 1.2x, 1x1 <= 1.1x. The full run also
times the naive mixture of experts (E convolutions, then mix) and the other 3x3 methods but
``grouped`` (TF 2.21 has no CPU gradient for grouped convolutions).

Part 2 -- the phone: registry defaults of `condconv_mobilenet_v2` against `mobilenet_v2` at 224x224 and
32x32, float32 and dynamic-range, LiteRT + XNNPACK (the default delegate), batch 1, 1 thread. Targets:
whole-model ratio <= 1.15x at 224x224 and <= 2.0x at 32x32; Keras parity < 1e-3 (float32) and top-1
agreement >= 0.99 on 64 images (digits, weights of a sensible random scale); XNNPACK runs >= 95% of
the operators (`pipelines.export.tflite.delegation`, read from the interpreter's graph). The full run
then prints where the time goes, operator by operator (`benchmarks.litert_profile`).

How it is timed: the compared callables run in turn, round after round (A B A B ...), so that load from
other processes hits both alike; a round's ratio is taken within the round, and the table gives the
median over rounds and the [min - max] spread. On a shared machine quote the median and the spread.

Tried for issue 17 at batch 1 (the phone path of `keras_layers.kernel_mixing`), LiteRT 2.3 + XNNPACK, 1
thread, on the shared 2-core development machine, medians of rounds run side by side; "CPU" marks CPU
time of the process (steadier there than wall time, which the rest is):

* KEPT - the folded kernel drops its batch axis by RESHAPE, not ``mixed[0]``: that STRIDED_SLICE was not
  delegated (5 in condconv_mobilenet_v2, 0.19 ms of 1.46 summed over its operators run alone at 32x32).
  Whole model 32x32 float32, CondConv / static: 4.80x -> 4.38x (CPU).
* KEPT - 3x3 im2col at batch 1: taps as stride-1 slices of a (B, H/s, s, W/s, s*C) reshape, one
  concatenation + product per group of <= 5 taps, the products summed (XNNPACK takes neither a stride
  > 1 nor a 9-input CONCATENATION). 4 layers 3x3, CondConv / static, CPU: 32x32x32 1.96x -> 1.75x
  float32, 1.68x -> 1.52x dynamic; 16x16x64 2.07x -> 1.81x, 1.78x -> 1.56x; 68/72 -> 100/100
  operators on XNNPACK. A tree of concatenations instead (all delegated, but the patches copied
  twice): 2.11x vs 1.89x at 32x32x32.
* KEPT - 1x1 at batch 1 as ONE matrix product: BATCH_MATMUL (1, 1, H*W, C_in) x (1, 1, C_out, C_in)^T,
  the kernel mixed in the (C_out, C_in) layout XNNPACK packs without a transpose. Given the einsum's
  (1, H, W, C_in) - or a (1, H*W, C_in) reshape, which the converter folds back - XNNPACK runs H
  products of W rows. Per layer, chained past the L3 size, CPU (4-D einsum -> one product):
  4x4 160->1280 0.97 -> 0.88 ms, 8x8 48->288 0.067 -> 0.053 ms, 14x14 48->288 0.124 -> 0.110 ms.
  Whole model, CondConv / static, CPU, 25 rounds: 32x32 float32 3.77x -> 3.60x, dynamic 2.62x ->
  2.47x; 224x224 float32 1.96x -> 1.88x, dynamic 1.48x -> 1.40x. The (C_out, C_in) layout alone in
  the 4-D product (what a transposed product ``y^T = K^T x^T`` becomes after conversion): no gain
  (32x32 3.77x vs 3.80x).
* KEPT (already so) - mixing = one FULLY_CONNECTED (1, E) x (E, P) per layer: it was already delegated
  (the issue's premise that the kernels were mixed outside XNNPACK does not hold for LiteRT 2.3);
  dynamic-range stores the bases int8 and XNNPACK runs it, but with a scale and a sum per output
  channel (P channels of only E = 8 values) it reads about half of the float bytes, not a quarter.
* REJECTED - the same FULLY_CONNECTED over G rows, ``(G, E*G) x (E*G, P/G)`` with the coefficients on a
  block diagonal (fewer per-channel scales to read): head mixing alone, cache evicted, dynamic-range
  0.36 ms for G = 1 and G = 4, 0.58 ms for G = 8; float32 whole model 5.2x (G = 1) vs 7.0x / 10.9x.
* REJECTED - one mixing FULLY_CONNECTED per block for its three convolutions (concatenated bases,
  then slices), CPU: the 5 CondConv blocks 0.92 -> 0.97 ms float32, 0.76 -> 0.82 ms dynamic at 32x32,
  1.51 -> 1.55 / 1.35 -> 1.39 ms at 224x224: same bytes, more operators.
* REJECTED - the mixed kernel (C_out, C_in) as the right operand with adj_y: head 1.51 vs 1.54 ms,
  8x8 48->288 0.117 vs 0.098 ms: within the noise. As a FULLY_CONNECTED filter computed at run time
  XNNPACK does not take it: 1.5 vs 0.83 ms (head).
* REJECTED - a delegated 3x3 conv with constant weights: the inputs scaled per expert and one CONV_2D
  of E*C_in channels, 16.7x static, or E convs then mix, 19.5x; im2col + matmul 5.2x (all wall, loaded
  machine; im2col's best round 2.3x).
* REJECTED - the same for 1x1 (constant (E*C_in, C_out) weights that XNNPACK prepacks, one byte per
  weight in dynamic-range): head 1.2-1.65 ms vs 0.83-0.85 float32, 0.70-0.78 vs 0.59-0.61 dynamic.
* NO GAIN - float16 weights (XNNPACK widens them to float32 when it loads the model: head 0.840 vs
  0.852 ms) and per-tensor dynamic-range (a 2.5x smaller file, 0.608 vs 0.589 ms).

Where the rest goes (float32, 32x32): the E expert kernels, 16 MB at the registry defaults (40% of it
the 1280-wide CondConv head), are read at every inference. Its operators run alone with a warm cache
sum to 1.25 ms (mixing FULLY_CONNECTED 0.42, BATCH_MATMUL 0.36, static CONV_2D 0.16, RESHAPE of the
mixed kernels 0.11, the 5 run-time-filter depthwise convs on LiteRT's own kernel 0.07), the whole
model takes 2.3-3.3 ms (CPU): in the whole model the bases do not stay in the 32 MB L3 that other
processes share, and the mixing is memory-bound (head mixing alone: 0.16 ms warm, 0.64 ms with the
cache evicted). Without the CondConv head (``cond_head=False``), same run: 32x32 float32 4.19x ->
2.63x, dynamic 2.45x -> 1.61x; 224x224 2.11x -> 1.62x, 1.37x -> 1.16x.

Training, tried (CPU ms, fwd+bwd parts at B=32, 32x32x64): the per-example depthwise (batch folded
into channels) costs 7.4 fwd / 7.2 input grad / 12.1 filter grad vs the static 6.3 / 6.2 / 5.0, plus
4 transposes of 3.5-3.9 each and the router's pooling (2 fwd, 3.3 bwd). REJECTED: the filter
gradient as a depthwise conv with dy as a 32x32 filter, 43 ms vs 12.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from keras_layers import env  # noqa: F401
import numpy as np
import tensorflow as tf
import tf_keras as keras

B, E, H, C = 32, 8, 32, 64
L = keras.layers
TRAINING_TARGETS = {"depthwise 3x3": 1.6, "3x3": 1.2, "1x1": 1.1}
TFLITE_TARGETS = {224: 1.15, 32: 2.0}
MODES = ("float32", "dynamic")


def side_by_side(fns, rounds, repeat=1):
    """Run the callables in turn, `rounds` times; each round times `repeat` calls of each (median).

    Returns {"wall": {name: per-round seconds}, "cpu": {name: per-round CPU seconds of this process}}
    (CPU time leaves out the time other processes held the cores: steadier on a loaded machine);
    ratios should be taken round by round.
    """
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            w, c = [], []
            for _ in range(repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                c.append(time.process_time() - start_cpu)
                w.append(time.perf_counter() - start)
            wall[k].append(float(np.median(w)))
            cpu[k].append(float(np.median(c)))
    return {"wall": {k: np.asarray(v) for k, v in wall.items()}, "cpu": {k: np.asarray(v) for k, v in cpu.items()}}


def ratio(times, a, b):
    """Median and spread over rounds of times[a] / times[b] (one of side_by_side's dicts)."""
    r = times[a] / times[b]
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max())}


# ------------------------------------------------------------------ part 1: training

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


def training(rounds=9, full=False):
    from keras_layers.condconv import CondConv2D, CondDepthwiseConv2D

    cases = {
        "3x3": (lambda: L.Conv2D(C, 3, padding="same"), lambda m: CondConv2D(C, 3, E, method=m)),
        "1x1": (lambda: L.Conv2D(C, 1), lambda m: CondConv2D(C, 1, E, method=m)),
        "depthwise 3x3": (lambda: L.DepthwiseConv2D(3, padding="same"), lambda m: CondDepthwiseConv2D(3, E, method=m)),
    }
    print(f"training: forward+backward, batch {B}, {E} experts, {H}x{H}x{C} -> {C}, own router; "
          f"{rounds} rounds side by side", flush=True)
    rows = []
    for kind, (static, cond) in cases.items():
        fns = {"static": _train_step(static()), "condconv": _train_step(cond("auto"))}
        if full:
            fns["naive"] = _train_step(cond("experts"))
            if kind == "3x3":
                for method in ("map_fn", "im2col"):  # (grouped: TF 2.21 has no CPU gradient for grouped convs)
                    fns[method] = _train_step(cond(method))
                fns["unrolled (static batch)"] = _train_step(cond("unrolled"), dynamic=False)
        t = side_by_side(fns, rounds)
        wall = t["wall"]
        rows.append({"kind": kind, "ratio": ratio(wall, "condconv", "static"), "target": TRAINING_TARGETS[kind],
                     "cpu_ratio": ratio(t["cpu"], "condconv", "static"),
                     "ms": {k: float(np.median(v)) * 1e3 for k, v in wall.items()}})
        for name in fns:
            if name in ("static", "condconv"):
                continue
            o = ratio(wall, name, "static")
            print(f"    {kind:14s} {name:24s} {np.median(wall[name]) * 1e3:8.1f} ms  {o['median']:5.2f}x static", flush=True)
    print(f"  {'layer':14s} {'static ms':>9s} {'CondConv ms':>11s} {'ratio':>6s} {'[min - max]':>13s} {'target':>7s}"
          f"        {'CPU-time ratio':>14s}")
    for row in rows:
        r, c = row["ratio"], row["cpu_ratio"]
        print(f"  {row['kind']:14s} {row['ms']['static']:9.1f} {row['ms']['condconv']:11.1f} {r['median']:5.2f}x "
              f"[{r['min']:.2f} - {r['max']:.2f}] {'<=':>3s}{row['target']:.2f}x "
              f"{'ok' if r['median'] <= row['target'] else 'MISSED':6s} {c['median']:5.2f}x [{c['min']:.2f} - {c['max']:.2f}]",
              flush=True)
    return rows


# ------------------------------------------------------------------ part 2: the phone

def _sensible_weights(model):
    """Random weights of a sensible scale and non-trivial batch norms (the tests' helper)."""
    helpers = str(Path(__file__).resolve().parents[1] / "tests" / "keras_layers")
    if helpers not in sys.path:
        sys.path.insert(0, helpers)
    from random_weights import randomize

    return randomize(model)


def _images(size, n=64):
    from pipelines import data

    x, _, _ = data.as_numpy("digits", "validation", image_size=size, channels=3, limit=n)
    return x


def tflite_models(rounds=15, repeat=10, full=False, sizes=(224, 32)):
    from keras_layers import models
    from pipelines.export import tflite

    rows, blobs = [], {}
    print(f"\nphone: registry defaults, LiteRT + XNNPACK, batch 1, 1 thread; {rounds} rounds side by side "
          f"(median of {repeat} invocations each)", flush=True)
    for size in sizes:
        images = _images(size)
        nets = {name: _sensible_weights(models.build(name, input_shape=(size, size, 3)))
                for name in ("mobilenet_v2", "condconv_mobilenet_v2")}
        runners, info = {}, {}
        for name, net in nets.items():
            reference = net.predict(images, batch_size=16, verbose=0)
            for mode in MODES:
                start = time.time()
                blob = blobs[size, name, mode] = tflite.convert(net, mode)
                seconds = time.time() - start
                runner = tflite.Runner(blob, num_threads=1)
                p = tflite.parity(reference, runner.run(images))
                info[name, mode] = {"parity": p, "delegation": tflite.delegation(blob), "convert_s": seconds,
                                    "mb": len(blob) / 1e6}
                example = images[:1]
                runner.run_one(example)
                runners[name, mode] = (lambda r=runner, e=example: r.run_one(e))
        t = side_by_side(runners, rounds, repeat)
        for mode in MODES:
            pair = (("condconv_mobilenet_v2", mode), ("mobilenet_v2", mode))
            rows.append({"size": size, "mode": mode, "ratio": ratio(t["wall"], *pair), "cpu_ratio": ratio(t["cpu"], *pair),
                         "target": TFLITE_TARGETS[size],
                         "ms": {name: float(np.median(t["wall"][name, mode])) * 1e3 for name in nets},
                         **{name: info[name, mode] for name in nets}})
    print(f"  {'input':8s} {'mode':8s} {'static ms':>9s} {'CondConv ms':>11s} {'ratio':>6s} {'[min - max]':>13s} "
          f"{'target':>7s}        {'CPU-time ratio':>14s} {'XNNPACK ops':>15s} {'max|err|':>9s} {'top-1':>6s} {'MB':>5s}")
    for row in rows:
        r, cr, c = row["ratio"], row["cpu_ratio"], row["condconv_mobilenet_v2"]
        d = c["delegation"]
        print(f"  {row['size']}x{row['size']:<4d} {row['mode']:8s} {row['ms']['mobilenet_v2']:9.3f} "
              f"{row['ms']['condconv_mobilenet_v2']:11.3f} {r['median']:5.2f}x [{r['min']:.2f} - {r['max']:.2f}] "
              f"{'<=':>3s}{row['target']:.2f}x {'ok' if r['median'] <= row['target'] else 'MISSED':6s} "
              f"{cr['median']:5.2f}x [{cr['min']:.2f} - {cr['max']:.2f}] "
              f"{d['delegated']:4d}/{d['ops']:<4d} {100 * d['share']:3.0f}% {c['parity']['max_abs_error']:9.2e} "
              f"{c['parity']['top1_agreement']:6.3f} {c['mb']:5.1f}", flush=True)
    for row in rows:
        left = row["condconv_mobilenet_v2"]["delegation"]["not_delegated"]
        s = row["mobilenet_v2"]["delegation"]
        print(f"  {row['size']}x{row['size']} {row['mode']}: CondConv operators left to LiteRT's own kernels {left}; "
              f"static model {s['delegated']}/{s['ops']} on XNNPACK", flush=True)
    if full:
        from benchmarks import litert_profile

        for size in sizes:
            for mode in MODES:
                print(f"\n  where the time goes: condconv_mobilenet_v2 {size}x{size} {mode}, each operator alone "
                      f"(benchmarks.litert_profile)", flush=True)
                litert_profile.print_table(litert_profile.op_table(blobs[size, "condconv_mobilenet_v2", mode]),
                                           top=8, indent="    ")
    return rows


def main(quick=False):
    start = time.time()
    results = {"training": training(rounds=7 if quick else 15, full=not quick)}
    middle = time.time()
    results["tflite"] = tflite_models(rounds=9 if quick else 25, full=not quick)
    print(f"(bench_kernel_mixing took {time.time() - start:.0f} s: training {middle - start:.0f} s, "
          f"TFLite {time.time() - middle:.0f} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
