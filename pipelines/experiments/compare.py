"""Bundles measured side by side: every bundle over the same images, interleaved in blocks of images, the order
rotated each block and round, per image the median over the rounds (`python -m pipelines compare-bundles`). Two
bundles measured minutes apart on a shared machine differ by the machine's drift; interleaved, the drift falls
on both."""
from __future__ import annotations

import numpy as np


def test_split(bundles, names, data, test_images=None):
    """`(x, y)`: the first `test_images` test images of `data` at the bundles' input size. Raises ValueError
    (naming the bundle or the data) when the bundles' input shapes differ, or differ from the data's, or a
    bundle's labels are not the data's classes."""
    from pipelines import data as data_mod

    shapes = [b.input_shape() for b in bundles]
    for name, shape in zip(names, shapes):
        if shape != shapes[0]:
            raise ValueError(f"bundles: {name} takes input shape {shape} but {names[0]} takes {shapes[0]}")
    size = int(shapes[0][0]) if shapes[0] else 32  # (H, W, C)
    x, y, info = data_mod.as_numpy(data, "test", image_size=size)
    if shapes[0] and tuple(x.shape[1:]) != tuple(shapes[0]):
        raise ValueError(f"data: {data} gives images of shape {tuple(x.shape[1:])} but the bundles take "
                         f"{tuple(shapes[0])}")
    for name, b in zip(names, bundles):
        if b.labels and len(b.labels) != info.num_classes:
            raise ValueError(f"bundles: {name} has {len(b.labels)} labels but {data} has {info.num_classes} classes")
    return (x[:test_images], y[:test_images]) if test_images else (x, y)


def compare_bundles(bundles, names, x, y, rounds=3, block=50, log=print):
    """`bundles` (loaded `Bundle`s, labelled by `names`) on the images `x` with labels `y`, one image at a time,
    interleaved in blocks: `rounds` passes, each over the images in blocks of `block`; every block runs through
    every bundle in turn (the order rotated by one each block and each round), after one uncounted call that
    warms the caches the previous bundle left. A slow spell of the machine (they last longer than a block, tens
    of ms) then falls on every bundle alike, and a bundle still runs `block` images in a row, as the app does.

    Returns {test_images, rounds, block, machine, bundles: [{name, kind, accuracy, avg_latency_ms,
    avg_tflite_ms, round_ms, avg_madds, stage_share, ratio}], stage_costs}: per image the median over the
    rounds; ``round_ms`` each round's mean; ``ratio`` the bundle's mean time over the first bundle's;
    ``avg_madds`` None where model.json gives no MAdds per stage; ``stage_costs`` `stage_cost_fits`: one fit
    per network among the multi-exit bundles."""
    from pipelines.experiments.deployed import ALL, machine, run_bundle, summarize

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1; received rounds={rounds!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an int >= 1; received block={block!r}")
    n, k = len(x), len(bundles)
    blocks = [[[] for _ in range(rounds)] for _ in bundles]  # per bundle and round: `run_bundle` of each block
    for b in bundles:
        b.predict_one(x[0])  # warm-up (XNNPACK packs weights on the first invocation)
    for r in range(rounds):
        for i_block, start in enumerate(range(0, n, block)):
            for i in [(r + i_block + j) % k for j in range(k)]:  # run_bundle's warm-up call: after the switch
                blocks[i][r].append(run_bundle(bundles[i], x[start:start + block], repeats=1))
        for i in [(r + j) % k for j in range(k)]:
            log(f"round {r + 1}/{rounds}: {names[i]} "
                f"{np.concatenate([p['latency_ms'] for p in blocks[i][r]]).mean():.3f} ms per image")
    rows, samples = [], {}  # samples: per network, {bundle name: (ms, MAdds, stages)}
    for name, b, parts in zip(names, bundles, blocks):
        runs = [{key: np.concatenate([p[key] for p in part]) for key in part[0]} for part in parts]
        per_image = dict(runs[0])  # predictions, stages and MAdds of the first round
        per_image["latency_ms"] = np.median([run["latency_ms"] for run in runs], axis=0)
        per_image["tflite_ms"] = np.median([run["tflite_ms"] for run in runs], axis=0)
        s = summarize(per_image, y, stage_order=list(b.spec.get("stages") or []))[ALL]
        madds = None if np.isnan(per_image["madds"]).all() else float(np.nanmean(per_image["madds"]))
        rows.append({"name": name, "kind": b.kind, "accuracy": s["accuracy"], "avg_latency_ms": s["avg_latency_ms"],
                     "avg_tflite_ms": s["avg_tflite_ms"], "avg_madds": madds,
                     "round_ms": [float(run["latency_ms"].mean()) for run in runs], "stage_share": s["stage_share"]})
        exits = b.spec.get("exits") if b.kind == "multi_exit" else None
        if exits and madds is not None:  # stages run per image: the answering exit's place in the bundle + 1
            network = b.spec.get("weights_sha256") or f"unknown ({name})"  # a bundle without it: its own network
            samples.setdefault(network, {})[name] = (
                per_image["latency_ms"], per_image["madds"],
                np.asarray([exits.index(st) + 1 for st in per_image["stage"]], float))
    for row in rows:
        row["ratio"] = row["avg_latency_ms"] / rows[0]["avg_latency_ms"]
    return {"test_images": int(n), "rounds": rounds, "block": block, "machine": machine(), "bundles": rows,
            "stage_costs": stage_cost_fits(samples)}


def stage_cost_fits(samples):
    """`stage_cost_fit` for each network's multi-exit bundles apart (`samples`: {network: {bundle name: (ms,
    MAdds, stages)}}, the network being model.json's ``weights_sha256``): two networks differ in speed per
    MAdd as well as in paths, and a fit over both mixes the two (x1.0 and x0.75 bundles together gave 0.7-1.85
    M MAdds a stage where each network's own bundles give 0.45). Returns [{network, bundle_names, fit}], fit
    None where that network's bundles take too few paths."""
    return [{"network": network, "bundle_names": list(per_bundle), "fit": stage_cost_fit(list(per_bundle.values()))}
            for network, per_bundle in samples.items()]


def stage_cost_fit(samples, min_paths=4):
    """What a stage costs in time beyond its layers, read off measured images: a least-squares fit of
    ms = intercept + b * (M MAdds) + s * (stages run) over every image of every multi-exit bundle (`samples`:
    (ms, MAdds, stages) arrays per bundle). Bundles of one network that keep different exits separate the two
    costs; `s / b` is the stage's cost in MAdds on this machine (the export's ``stage_madds``). None when the
    images take fewer than `min_paths` distinct (MAdds, stages) paths or the fit cannot separate them."""
    if not samples:
        return None
    ms, madds, stages = (np.concatenate([smp[i] for smp in samples]) for i in range(3))
    ok = np.isfinite(ms) & np.isfinite(madds)
    ms, madds, stages = ms[ok], madds[ok], stages[ok]
    design = np.column_stack([np.ones_like(ms), madds / 1e6, stages])
    paths = len({(round(float(m)), int(n)) for m, n in zip(madds, stages)})
    if paths < min_paths or np.linalg.matrix_rank(design) < 3:
        return None
    (intercept, per_m, per_stage), *_ = np.linalg.lstsq(design, ms, rcond=None)
    resid = ms - design @ np.array([intercept, per_m, per_stage])
    return {"images": int(len(ms)), "bundles": len(samples), "paths": paths, "intercept_ms": float(intercept),
            "ms_per_m_madds": float(per_m), "ms_per_stage": float(per_stage),
            "stage_madds": float(per_stage / per_m * 1e6) if per_m > 0 else None,
            "r2": float(1 - resid.var() / ms.var()) if ms.var() > 0 else None}


def format_table(result):
    """The comparison as a Markdown table (one row per bundle) with the machine and the protocol above it."""
    from pipelines.experiments.deployed import share_text

    m = result["machine"]
    lines = [f"{result['test_images']} test images of {result.get('data', '?')}, {result['rounds']} rounds interleaved in "
             f"blocks of {result.get('block', '?')} images, per image the median over the rounds; {m.get('cpu', '?')}, "
             f"{m.get('cores', '?')} cores",
             "",
             "| bundle | kind | test % | ms / image (in LiteRT) | per round | avg MAdds (M) | x first | stages |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["bundles"]:
        madds = "-" if r["avg_madds"] is None else f"{r['avg_madds'] / 1e6:.2f}"
        rounds = " / ".join(f"{v:.3f}" for v in r["round_ms"])
        lines.append(f"| {r['name']} | {r['kind']} | {100 * r['accuracy']:.2f} | {r['avg_latency_ms']:.3f} "
                     f"({r['avg_tflite_ms']:.3f}) | {rounds} | {madds} | {r['ratio']:.2f} | "
                     f"{share_text(r['stage_share'])} |")
    for group in result.get("stage_costs") or []:
        fit, network = group["fit"], group["network"][:12]
        if fit is None:
            lines += ["", f"stage cost of network {network}: not fitted, its {len(group['bundle_names'])} multi-exit "
                          f"bundle(s) take too few distinct (MAdds, stages) paths (export it with other exits too)"]
            continue
        in_madds = "-" if fit["stage_madds"] is None else f"{fit['stage_madds'] / 1e6:.2f} M MAdds"
        lines += ["", f"stage cost of network {network}, fitted over {fit['images']} images of its {fit['bundles']} "
                      f"multi-exit bundles ({fit['paths']} paths): {fit['ms_per_stage']:.4f} ms a stage, "
                      f"{fit['ms_per_m_madds']:.4f} ms per M MAdds, so a stage costs {in_madds} (export --stage-madds); "
                      f"intercept {fit['intercept_ms']:.4f} ms, R^2 {fit['r2'] if fit['r2'] is None else round(fit['r2'], 3)}"]
    return "\n".join(lines)
