"""DS-Net (dynamic slimmable network): the front and the gate pick a width per image, then the rest of the
network runs at that width.

The bundle (model.json ``kind`` ``ds_net``): ``model.tflite`` is the fixed-width front plus the gate
(outputs ``features`` and ``gate_scores``); ``back_0_5.tflite``, ``back_1.tflite`` ... are the rest of
the network at each candidate width, as ordinary narrow models (sliced weights, no masks). The app runs
the front, takes ``widths[argmax(gate_scores)]`` and runs that back on the front's ``features``.

A slimmable network without a gate is a plain model; one width of it is exported as its own plain
bundle: ``export_net(slimmable_mobilenet_v1.export_width(net, 0.5), ...)``.
"""
from __future__ import annotations

import numpy as np

from pipelines.export.families import Family, register
from pipelines.export.policy import need, need_stage


def back_stage(width):
    """The stage (and file stem) of the back at `width`: 0.5 -> "back_0_5"."""
    return f"back_{width:g}".replace(".", "_")


@register
class DSNet(Family):
    """model.json: "gate" (the stage with the gate), "gate_output", "widths": [[WIDTH, STAGE], ...]."""

    kind = "ds_net"

    def detect(self, net):
        from keras_layers.ds_net import DynamicGate

        return any(isinstance(layer, DynamicGate) for layer in net.layers)

    def stages(self, net, mode, selection, options, log):
        from keras_layers import count_madds
        from keras_layers.models import ds_mobilenet_v1 as ds
        from pipelines.export import tflite
        from pipelines.export.convert import Conversion

        def convert(model):
            data = tflite.convert(model, mode)
            tflite.assert_builtin_only(data)
            return data

        shape = tuple(net.input_shape[1:])
        front = ds.export_front(net)
        front_madds = int(count_madds(front, shape))
        stages = {"front": {"file": "model.tflite", "logits": None, "madds": front_madds}}
        widths, backs = [], {}
        for w, path_madds in zip(ds.gate_layer(net).width_multipliers, ds.choice_madds(net, shape)):
            stage = back_stage(w)
            backs[f"{stage}.tflite"] = convert(ds.export_choice(net, w))
            stages[stage] = {"file": f"{stage}.tflite", "logits": None, "madds": int(path_madds) - front_madds}
            widths.append([float(w), stage])
        log(f"ds_net bundle: front + gate ({front_madds:,} MAdds), widths {[w for w, _ in widths]}")
        spec = {"kind": self.kind, "gate": "front", "gate_output": "gate_scores", "widths": widths, "stages": stages}
        return Conversion.of(convert(front), mode), backs, spec

    def validate_spec(self, spec, stages):
        need_stage(stages, "gate", spec.get("gate"))
        need(isinstance(spec.get("gate_output"), str),
             f"model.json: ds_net needs gate_output; received gate_output={spec.get('gate_output')!r}")
        widths = spec.get("widths")
        need(isinstance(widths, list) and widths and all(isinstance(w, list) and len(w) == 2 for w in widths),
             f"model.json: widths must be [[WIDTH, STAGE], ...]; received widths={widths!r}")
        for i, (_, st) in enumerate(widths):
            need_stage(stages, f"widths[{i}]", st)

    def run_policy(self, bundle, image):
        s, state = bundle.spec, {}
        gate = bundle.run_stage(s["gate"], image, state)
        need(s["gate_output"] in gate,
             f"gate stage has no output gate_output={s['gate_output']!r} (outputs: {sorted(gate)})")
        choice = int(np.argmax(gate[s["gate_output"]][0]))
        need(choice < len(s["widths"]), f"gate chose index {choice} but widths has {len(s['widths'])} entries")
        name = s["widths"][choice][1]
        return name, bundle.logits(name, image, state), [s["gate"], name]

    def keras_policy(self, net, spec, images):
        from pipelines.export.checks import keras_outputs

        out = keras_outputs(net, images)
        choice = np.argmax(out["gate_scores"], -1)  # the gate's argmax picks the width
        return np.asarray([spec["widths"][c][1] for c in choice]), out["logits"]
