"""Per-operator LiteRT timing: where the time of a .tflite model goes, op by op.

The pinned `ai_edge_litert` wheel (2.3) ships no C++ `benchmark_model` binary and its Python
interpreter exposes no op profiler (`tools/benchmark_litert_model.py` times whole models only). So
each operator is cut out of the model into a one-operator model (its constant inputs kept, its other
inputs made model inputs; the flatbuffer tools of the wheel do the surgery), run alone with the
default delegate (XNNPACK takes it if it can, exactly as in the whole model) and timed: median of
`runs` invocations after a warm-up, 1 thread. With ``cold=True`` a 64 MiB buffer is written before
each timed invocation, so the operator reads its weights from memory rather than from the cache, as
in a whole model whose weights do not fit in the cache.

The sum over operators is not the whole model's time (no partition boundaries, different cache
state); the shares are what tell where the time goes.

    python -m benchmarks.litert_profile model.tflite [--cold] [--top 15]
"""
from __future__ import annotations

import argparse
import copy
import time
from collections import defaultdict

import numpy as np

_FLUSH = []


def _flush_cache():
    if not _FLUSH:
        _FLUSH.append(np.zeros(16 << 20, np.float32))  # 64 MiB, twice the L3 of the 2-core dev machine
    _FLUSH[0] += 1.0


def _feed(interpreter):
    rng = np.random.RandomState(0)
    for d in interpreter.get_input_details():
        value = (0.5 * rng.rand(*d["shape"])).astype(d["dtype"]) if d["dtype"] == np.float32 else \
            np.zeros(d["shape"], d["dtype"])
        interpreter.set_tensor(d["index"], value)


def median_ms(interpreter, runs=100, warmup=5, cold=False):
    """Median wall time (ms) of `interpreter.invoke()` on fixed random inputs."""
    _feed(interpreter)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        if cold:
            _flush_cache()
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def one_op_models(tflite_bytes):
    """Yield (operator index, op name, one-operator model bytes) for each operator of subgraph 0."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    graph = model.subgraphs[0]
    for index, op in enumerate(graph.operators):
        single = schema.ModelT()
        single.version, single.operatorCodes, single.description = model.version, model.operatorCodes, b"one op"
        single.buffers = [schema.BufferT()]
        sub = schema.SubGraphT()
        sub.tensors, remap = [], {}

        def take(t):
            if t < 0:
                return -1
            if t not in remap:
                tensor = copy.copy(graph.tensors[t])
                data = model.buffers[tensor.buffer].data if tensor.buffer else None
                if data is not None and len(data):
                    single.buffers.append(model.buffers[tensor.buffer])
                    tensor.buffer = len(single.buffers) - 1
                else:
                    tensor.buffer = 0
                remap[t] = len(sub.tensors)
                sub.tensors.append(tensor)
            return remap[t]

        new_op = copy.copy(op)
        new_op.inputs = [take(int(t)) for t in op.inputs]
        new_op.outputs = [take(int(t)) for t in op.outputs]
        sub.inputs = [i for i in new_op.inputs if i >= 0 and sub.tensors[i].buffer == 0]
        sub.outputs, sub.operators = list(new_op.outputs), [new_op]
        single.subgraphs = [sub]
        yield index, flatbuffer_utils.opcode_to_name(model, op.opcodeIndex), bytes(
            flatbuffer_utils.convert_object_to_bytearray(single))


def op_table(tflite_bytes, runs=60, cold=False):
    """One row per operator: index, op name, delegated to XNNPACK, median ms alone, output shape."""
    from ai_edge_litert.interpreter import Interpreter

    rows = []
    for index, name, blob in one_op_models(tflite_bytes):
        interpreter = Interpreter(model_content=blob, num_threads=1)
        interpreter.allocate_tensors()
        delegated = any(d["op_name"] == "DELEGATE" for d in interpreter._get_ops_details())
        shape = tuple(int(v) for v in interpreter.get_output_details()[0]["shape"])
        rows.append({"index": index, "op": name, "xnnpack": delegated,
                     "ms": median_ms(interpreter, runs, cold=cold), "shape": shape})
    return rows


def by_op(rows):
    """Total ms per (op name, delegated), largest first, with its share of the sum."""
    totals = defaultdict(float)
    for r in rows:
        totals[r["op"], r["xnnpack"]] += r["ms"]
    whole = sum(totals.values()) or 1.0
    return [{"op": op, "xnnpack": d, "ms": ms, "share": ms / whole}
            for (op, d), ms in sorted(totals.items(), key=lambda kv: -kv[1])]


def print_table(rows, top=10, indent="  "):
    whole = sum(r["ms"] for r in rows)
    print(f"{indent}sum of the {len(rows)} operators run alone: {whole:.3f} ms", flush=True)
    for g in by_op(rows):
        print(f"{indent}  {g['op']:18s} {'XNNPACK' if g['xnnpack'] else 'builtin':8s} {g['ms']:7.3f} ms "
              f"{100 * g['share']:5.1f}%", flush=True)
    if top:
        print(f"{indent}largest operators:", flush=True)
        for r in sorted(rows, key=lambda r: -r["ms"])[:top]:
            print(f"{indent}  #{r['index']:<4d} {r['op']:18s} {'XNNPACK' if r['xnnpack'] else 'builtin':8s} "
                  f"{r['ms']:7.3f} ms  -> {r['shape']}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.litert_profile", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .tflite file")
    parser.add_argument("--cold", action="store_true", help="evict the cache before each timed invocation")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--top", type=int, default=15, help="list the N slowest operators")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1. Received: runs={args.runs}")
    with open(args.model, "rb") as f:
        blob = f.read()
    from pipelines.export import tflite

    d = tflite.delegation(blob)
    print(f"{args.model}: XNNPACK runs {d['delegated']}/{d['ops']} operators; not delegated: {d['not_delegated']}")
    print_table(op_table(blob, args.runs, args.cold), args.top)


if __name__ == "__main__":
    main()
