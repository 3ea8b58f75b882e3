"""Export a slimmable network per width, and a DS-Net per gate choice, as ordinary narrow models.

Slimmable (`slimmable_mobilenet_v1`): every width becomes a plain Keras model with the sliced weights
(`export_width`: Conv2D / DepthwiseConv2D / BatchNormalization / Dense of the narrow size: no masks, no
unused channels), saved as ``width_0_5.keras`` and converted to ``width_0_5.tflite``.

DS-Net (`ds_mobilenet_v1`): ``front.tflite`` is the fixed-width front plus the gate (outputs
``features`` and ``gate_scores``); ``back_0_5.tflite`` ... are the rest of the network at each candidate
width. The app runs the front, takes ``width_multipliers[argmax(gate_scores)]`` and runs that back.

``manifest.json`` lists the files, the widths (in the gate's choice order) and the MAdds of each.

    from pipelines.exporters.slimmable import export
    manifest = export(net, "out/", quantize="dynamic")
"""
from __future__ import annotations

import json
from pathlib import Path

from keras_layers import env  # noqa: F401

from keras_layers import count_madds
from keras_layers.ds_net import DynamicGate
from keras_layers.models import ds_mobilenet_v1 as ds
from keras_layers.models.slimmable_mobilenet_v1 import export_width
from keras_layers.slimmable import check_width, model_width_multipliers
from pipelines import tflite
from pipelines.recipes.slimmable import width_name


def _is_gated(net):
    return any(isinstance(l, DynamicGate) for l in net.layers)


def _write(model, out, stem, quantize, representative):
    model.save(out / f"{stem}.keras")
    data = tflite.convert(model, quantize, representative=representative)
    (out / f"{stem}.tflite").write_bytes(data)
    return {"keras": f"{stem}.keras", "tflite": f"{stem}.tflite", "tflite_bytes": len(data)}


def export_slimmable(net, out_dir, widths=None, quantize="float32", representative=None):
    """Each width of a slimmable net -> narrow Keras + TFLite; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_widths = model_width_multipliers(net)
    widths = tuple(widths or all_widths)
    for w in widths:
        check_width(w, all_widths)
    shape = tuple(net.input_shape[1:])
    manifest = {"family": "slimmable", "model": net.name, "input_shape": list(shape), "quantize": quantize,
                "widths": {}}
    for w in widths:
        narrow = export_width(net, w)
        entry = _write(narrow, out, f"width_{width_name(w)[1:]}", quantize, representative)
        entry["madds"] = count_madds(narrow, shape)
        entry["params"] = int(narrow.count_params())
        manifest["widths"][f"{w:g}"] = entry
        print(f"exported width {w:g}: {entry['tflite']} ({entry['madds']:,} MAdds)", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def export_ds_net(net, out_dir, quantize="float32", representative=None):
    """A DS-Net -> front (+gate) model and one narrow back model per gate choice; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gate = ds.gate_layer(net)
    shape = tuple(net.input_shape[1:])
    table = ds.choice_madds(net, shape)
    front = ds.export_front(net)
    manifest = {"family": "ds_net", "model": net.name, "input_shape": list(shape), "quantize": quantize,
                "choices": [float(w) for w in gate.width_multipliers],
                "front": _write(front, out, "front", quantize, representative), "backs": {}}
    for w, madds in zip(gate.width_multipliers, table):
        back = ds.export_choice(net, w)
        entry = _write(back, out, f"back_{width_name(w)[1:]}", quantize, None if quantize != "int8" else
                       _features(front, representative))
        entry["path_madds"] = int(madds)
        manifest["backs"][f"{w:g}"] = entry
        print(f"exported gate choice {w:g}: {entry['tflite']} ({int(madds):,} MAdds with the front)", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _features(front, representative):
    if representative is None:
        return None
    import numpy as np

    return [front(np.asarray(x, np.float32)[None], training=False)["features"].numpy()[0] for x in representative]


def export(net, out_dir, quantize="float32", representative=None):
    """Export a slimmable or DS-Net model (picked by the presence of a DynamicGate)."""
    if _is_gated(net):
        return export_ds_net(net, out_dir, quantize, representative)
    return export_slimmable(net, out_dir, quantize=quantize, representative=representative)
