"""TFLite size, latency and accuracy drop per quantization mode on the MobileNetV2 baseline (digits, 32x32).

    python -m benchmarks export            # part of `make bench`
    BENCH_EXPORT_RUN=runs/demo python -m benchmarks export    # reuse a trained run folder

Trains the baseline briefly (or reuses BENCH_EXPORT_RUN), exports it in every mode with
`pipelines.export`, and measures, side by side in one process: model size, LiteRT latency (median of
200 batch-1 invocations, XNNPACK, 1 and 2 threads; and the same by LiteRT's own benchmark tool,
`ai_edge_litert/tools/benchmark_litert_model.py`, through `pipelines.export.report.latency`) and top-1 accuracy of Keras vs TFLite on the
whole validation split. Writes the table to `runs/bench_export.json`.
"""
import json
import os
import time
from pathlib import Path

EPOCHS = 5


def main():
    from pipelines import data, export
    from pipelines.export import report as export_report
    from pipelines.mlops import release
    from pipelines.training.train import TrainConfig, train

    run = os.environ.get("BENCH_EXPORT_RUN")
    if run:
        run_dir = Path(run)
    else:
        print(f"training the mobilenet_v2 baseline on digits for {EPOCHS} epochs ...", flush=True)
        cfg = TrainConfig(model="mobilenet_v2", data="digits", epochs=EPOCHS, out="runs", run_name="bench-export")
        _, run_dir, _ = train(cfg, verbose=0)
    x, _, _ = data.as_numpy("digits", "validation", image_size=32)
    rows = []
    for mode in export.MODES:
        start = time.time()
        s = release.export_model(run_dir, mode, Path("runs") / "bench-export-bundles" / mode, parity_images=len(x),
                                latency_runs=200, log_to_mlflow=False, log=lambda *_: None)
        lat2 = export.latency((Path(s["bundle"]) / "model.tflite").read_bytes(), threads=2, runs=200, example=x[:1])
        tool = export_report.latency(Path(s["bundle"]) / "model.tflite", threads=(1, 2), runs=200, warmup=10)
        p = s["parity"]
        rows.append({"mode": mode, "size_kib": round(s["size_bytes"] / 1024, 1),
                     "latency_ms_1t": round(s["latency"]["median_ms"], 4), "latency_ms_2t": round(lat2["median_ms"], 4),
                     "keras_accuracy": round(p["keras_accuracy"], 4), "tflite_accuracy": round(p["tflite_accuracy"], 4),
                     "accuracy_drop": round(p["keras_accuracy"] - p["tflite_accuracy"], 4),
                     "top1_agreement": round(p["agreement"], 4), "max_abs_error": float(f"{p['max_abs_error']:.3g}"),
                     "litert_tool_ms_1t": tool["1"]["median_ms"], "litert_tool_ms_2t": tool["2"]["median_ms"],
                     "fully_accelerated": tool["1"]["fully_accelerated"],
                     "float_ops": s["float_ops"], "seconds": round(time.time() - start, 1)})
        print(f"  {mode}: done in {rows[-1]['seconds']} s", flush=True)
    base = rows[0]
    print(f"\nmobilenet_v2 baseline, digits 32x32, {len(x)} validation images (run {run_dir})")
    print(f"{'mode':8s} {'size KiB':>9s} {'x f32':>6s} {'ms 1t':>7s} {'ms 2t':>7s} {'keras acc':>9s} {'tflite acc':>10s} "
          f"{'drop':>7s} {'agree':>6s} {'max err':>8s} {'tool 1t':>7s} {'tool 2t':>7s}")
    for r in rows:
        print(f"{r['mode']:8s} {r['size_kib']:9.1f} {r['size_kib'] / base['size_kib']:6.2f} {r['latency_ms_1t']:7.3f} "
              f"{r['latency_ms_2t']:7.3f} {r['keras_accuracy']:9.4f} {r['tflite_accuracy']:10.4f} "
              f"{r['accuracy_drop']:+7.4f} {r['top1_agreement']:6.3f} {r['max_abs_error']:8.3g} "
              f"{r['litert_tool_ms_1t']:7.2f} {r['litert_tool_ms_2t']:7.2f}")
    print("ms 1t / 2t: the Interpreter (XNNPACK); tool 1t / 2t: LiteRT's own benchmark tool "
          "(ai_edge_litert/tools/benchmark_litert_model.py, CompiledModel on the CPU accelerator)")
    out = Path("runs") / "bench_export.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"run": str(run_dir), "validation_images": len(x), "rows": rows}, indent=2))
    print(f"written {out}")
