"""Latency of each exit prefix of `multi_exit_net` under LiteRT (batch 1, float32), side by side with
its cumulative MAdds: does stopping at exit k save the time its MAdds promise?

    python -m benchmarks multi_exit
"""
from __future__ import annotations


def main(image_size=32, channels=1, num_exits=4, runs=50):
    from keras_layers import env  # noqa: F401
    import numpy as np

    from keras_layers import models
    from keras_layers.models.multi_exit_net import exit_madds, exit_prefix
    from pipelines.export import tflite

    shape = (image_size, image_size, channels)
    net = models.build("multi_exit_net", input_shape=shape, num_classes=10, num_exits=num_exits)
    costs = exit_madds(net, shape)
    x = np.random.RandomState(0).randn(1, *shape).astype("float32")
    rows = []
    for k in range(num_exits):
        runner = tflite.Runner(tflite.convert(exit_prefix(net, k), "float32"), num_threads=1)
        rows.append((k, costs[k], runner.latency_ms(x, runs=runs)["median_ms"]))
    full_madds, full_ms = rows[-1][1], rows[-1][2]
    print(f"multi_exit_net {shape}, {num_exits} exits, LiteRT float32, 1 thread, median of {runs} runs")
    print(f"{'exit':>4s} {'MAdds (M)':>10s} {'x last':>7s} {'ms':>8s} {'x last':>7s}")
    for k, madds, ms in rows:
        print(f"{k:4d} {madds / 1e6:10.2f} {madds / full_madds:7.2f} {ms:8.3f} {ms / full_ms:7.2f}")


if __name__ == "__main__":
    main()
