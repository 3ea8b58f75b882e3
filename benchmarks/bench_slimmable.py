"""Slimmable / DS-Net speed: does a narrow width really run at narrow speed?

1. TFLite (LiteRT, XNNPACK, batch 1): the 0.5x width exported from a slimmable MobileNetV1
   (`export_width`: sliced weights, plain layers) vs an independently built 0.5x MobileNetV1.
   Target: ratio <= 1.05.
2. Inside Keras (tf.function, batch 32), as Table 1 of the DS-Net paper: a DS-MobileNetV1 at 0.25x by
   *slicing* (static width), by *masking* (the dynamic path: full-width compute, channels zeroed),
   the *full* network, and the *ideal* plain 0.25x model (front + exported back).

    python -m benchmarks slimmable
"""
from __future__ import annotations

import time

from keras_layers import env  # noqa: F401
import numpy as np
import tensorflow as tf
import tf_keras as keras

SHAPE = (32, 32, 3)
ARCH = dict(base_width=1.0, depth_multiplier=1.0)  # full MobileNetV1 channels at 32x32


def _interleaved(fns, rounds=7, per_round=20):
    """Median per-call ms of each fn, measured in interleaved rounds (fair under a noisy shared CPU)."""
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples[name].append((time.perf_counter() - start) * 1e3 / per_round)
    return {k: float(np.median(v)) for k, v in samples.items()}


def tflite_export_vs_independent():
    from keras_layers import count_madds
    from keras_layers.models import build
    from keras_layers.models.slimmable_mobilenet_v1 import build_mobilenet_v1, export_width
    from pipelines.export import tflite

    slim = build("slimmable_mobilenet_v1", SHAPE, 10, **ARCH)
    exported = export_width(slim, 0.5)
    independent = build_mobilenet_v1(SHAPE, 10, width=0.5, **ARCH)
    x = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype("float32")
    runners = {"exported 0.5x": tflite.Runner(tflite.convert(exported), num_threads=1),
               "independent 0.5x": tflite.Runner(tflite.convert(independent), num_threads=1)}
    for r in runners.values():
        for _ in range(10):
            r.run_one(x)
    ms = _interleaved({k: (lambda r=r: r.run_one(x)) for k, r in runners.items()}, rounds=9, per_round=30)
    ratio = ms["exported 0.5x"] / ms["independent 0.5x"]
    print(f"TFLite batch 1, MobileNetV1 base 1.0 at 32x32, 0.5x = {count_madds(exported, SHAPE):,} MAdds")
    for k, v in ms.items():
        print(f"  {k:18s} {v:7.3f} ms")
    print(f"  ratio exported / independent = {ratio:.3f} (target <= 1.05): {'OK' if ratio <= 1.05 else 'MISS'}")
    return ratio


def keras_slicing_vs_masking(batch=32):
    from keras_layers.models import build
    from keras_layers.models import ds_mobilenet_v1 as ds
    from keras_layers.slimmable import set_width

    net = build("ds_mobilenet_v1", SHAPE, 10, gate_after=1, front_width=0.25, **ARCH)
    gate = ds.gate_layer(net)
    gate.b2.assign(np.array([100.0, 0, 0, 0], "float32"))  # the gate picks 0.25x for every example
    front = ds.export_front(net)
    back = ds.export_choice(net, 0.25)
    inp = keras.Input(SHAPE)
    ideal = keras.Model(inp, back(front(inp)["features"]))
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, *SHAPE)).astype("float32"))

    def traced(width):
        set_width(net, width)
        fn = tf.function(lambda t: net(t, training=False)["logits"])
        fn(x)  # trace now, at this width
        return fn

    fns = {"full (1.0x)": traced(1.0), "masking (0.25x)": traced("dynamic"), "slicing (0.25x)": traced(0.25)}
    ideal_fn = tf.function(lambda t: ideal(t, training=False))
    ideal_fn(x)
    fns["ideal (plain 0.25x)"] = ideal_fn
    np.testing.assert_allclose(fns["masking (0.25x)"](x).numpy(), fns["slicing (0.25x)"](x).numpy(), atol=1e-4)
    ms = _interleaved({k: (lambda f=f: f(x).numpy()) for k, f in fns.items()}, rounds=5, per_round=5)
    print(f"Keras forward, batch {batch}, DS-MobileNetV1 (gate after block 1) at 32x32  [DS-Net Table 1]")
    for k, v in ms.items():
        print(f"  {k:20s} {v:8.2f} ms  ({v / ms['full (1.0x)']:.2f}x full)")
    return ms


def main():
    tflite_export_vs_independent()
    keras_slicing_vs_masking()


if __name__ == "__main__":
    main()
