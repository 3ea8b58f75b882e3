"""Export a Keras model to its Android bundle: the one orchestration for every family.

    options = ExportOptions(quantize="dynamic", parity_images=64).validate()
    result = export_net(net, "bundle/", options, dataset, data_source={"name": "digits", "image_size": 32})

The model's family plugin (`families.family_of`) refuses a mode it cannot convert in, converts the model
into its stages (choosing thresholds on validation images where it has to), `bundle.write_bundle` writes
the one bundle format, and the plugin's `checks` measure parity against the Keras model and latency,
which go into model.json. `pipelines.mlops.release.export_model` resolves a registered model or a run
folder, calls this and logs the bundle to MLflow.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

from pipelines.export import families
from pipelines.export.bundle import Bundle, bundle_files, json_text, write_bundle
from pipelines.export.convert import MODES, float_ops


def _is_int(value, low):
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


def _is_probability(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


@dataclasses.dataclass
class ExportOptions:
    """What an export does, checked up front by `validate` (one-line ValueError naming the field).

    quantize            float32 | float16 | dynamic | int8 (calibrated on train images) | qat
    parity_images       validation images parity and latency are measured on
    selection_images    validation images thresholds are chosen on (BasisNet, multi-exit)
    threads, latency_runs   LiteRT threads and timed runs of the latency check
    calibration_images  train images for int8 calibration
    qat_epochs, qat_limit   QAT fine-tune epochs and train images
    threshold           BasisNet preview threshold in [0, 1] (None: picked on the selection images)
    exit_thresholds     early-exit thresholds, {"exit_0": t, ...} or a list (multi-exit; None: chosen for
                        `budget`); a null threshold leaves that exit out of the bundle (no image stops there);
                        for a plain model they are only written into model.json for the app
    budget              multi-exit: target average cost as a fraction of the last exit's, in (0, 1]; cost is
                        MAdds + `stage_madds` per stage an image runs (the last exit alone: one stage)
    stage_madds         multi-exit: a stage's cost beyond its layers, in MAdds (None: the family's
                        `STAGE_MADDS`, measured on this project's CPU; 0: count MAdds alone)
    data_source         {"name", "image_size", "data_dir"} of the data the model was trained on
                        (`pipelines.data.as_numpy`): validation images for the checks and the selection,
                        train images for int8 / QAT; `release` fills it from the model's run
    main_output         the output that is the prediction (a run's recipe says; `release` fills it)
    """

    quantize: str = "float32"
    parity_images: int = 64
    selection_images: int = 1000
    threads: int = 1
    latency_runs: int = 50
    calibration_images: int = 200
    qat_epochs: int = 1
    qat_limit: int = 512
    threshold: float | None = None
    exit_thresholds: dict | list | None = None
    budget: float = 0.6
    stage_madds: float | None = None
    data_source: dict | None = None
    main_output: str = "logits"

    @classmethod
    def build(cls, options=None, **fields):
        """`options` (or the defaults) with `fields` replaced; an unknown field is a ValueError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown export option {unknown[0]}={fields[unknown[0]]!r}; valid: {', '.join(sorted(known))}")
        return dataclasses.replace(options or cls(), **fields)

    def validate(self):
        if self.quantize not in MODES:
            raise ValueError(f"unknown quantize={self.quantize!r}; valid choices: {', '.join(MODES)}")
        for name in ("parity_images", "selection_images", "threads", "latency_runs", "calibration_images",
                     "qat_epochs", "qat_limit"):
            if not _is_int(getattr(self, name), 1):
                raise ValueError(f"{name} must be an int >= 1; received {name}={getattr(self, name)!r}")
        if self.threshold is not None and not _is_probability(self.threshold):
            raise ValueError(f"threshold must be in [0, 1]; received threshold={self.threshold!r}")
        given = self.exit_thresholds
        if given is not None:
            if isinstance(given, dict) and not all(str(k).startswith("exit_") and str(k)[5:].isdigit() for k in given):
                raise ValueError(f"exit_thresholds keys must be exit_0, exit_1, ...; received exit_thresholds={given!r}")
            values = list(given.values()) if isinstance(given, dict) else given
            if not isinstance(values, (list, tuple)) or not all(v is None or _is_probability(v) for v in values):
                raise ValueError(f"exit_thresholds must be probabilities in [0, 1] or null ({{\"exit_0\": 0.8, ...}} "
                                 f"or a list); received exit_thresholds={given!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not 0 < self.budget <= 1:
            raise ValueError(f"budget must be a fraction in (0, 1]; received budget={self.budget!r}")
        if self.stage_madds is not None:
            from pipelines.export.families.multi_exit import check_stage_madds

            check_stage_madds(self.stage_madds)
        if self.data_source is not None and not (isinstance(self.data_source, dict) and self.data_source.get("name")):
            raise ValueError(f"data_source must be {{\"name\", \"image_size\", \"data_dir\"}}; "
                             f"received data_source={self.data_source!r}")
        if not isinstance(self.main_output, str) or not self.main_output:
            raise ValueError(f"main_output must be an output name; received main_output={self.main_output!r}")
        return self


def export_net(net, out, options, dataset, validation=None, source="", log=print):
    """Convert `net` with its family plugin, write the bundle into `out`, check it; returns a dict:
    kind, bundle (Path), size_bytes (all .tflite files), float_ops, notes, parity, latency.

    `dataset`: the model's dataset info (`pipelines.data` DatasetInfo dict: input_shape, num_classes,
    normalization, class_names). `validation=(images, labels)`: the validation images (default: read
    from `options.data_source`); parity and latency use the first `options.parity_images`, thresholds
    are chosen on the first `options.selection_images`. Nothing is read or written before the options and
    the mode are checked."""
    options.validate()
    family = families.family_of(net)
    family.check_mode(net, options.quantize)
    family.check_options(options)
    log(f"export {source or net.name} -> {out} ({options.quantize}, {family.kind} bundle)")
    needed = max(options.parity_images, options.selection_images) if family.selects(options) else options.parity_images
    if validation is None:
        if options.data_source is None:
            raise ValueError("export needs validation images: give validation=(images, labels) or "
                             "options.data_source={'name', 'image_size', 'data_dir'}")
        from pipelines import data as data_mod

        x, y, _ = data_mod.as_numpy(split="validation", limit=needed, **options.data_source)
    else:
        x, y = validation
    selection = (x[:options.selection_images], y[:options.selection_images])
    images, labels = x[:options.parity_images], y[:options.parity_images]
    conv, extra, spec = family.stages(net, options.quantize, selection, options, log)
    kept = Counter(conv.float_ops)
    for data in extra.values():
        kept.update(float_ops(data, options.quantize))
    if len(spec["stages"]) > 1:
        conv.notes.append(f"{family.kind} bundle: {len(spec['stages'])} stages")
    conv.float_ops = dict(kept)
    out = write_bundle(out, net, conv, dataset, source, None, spec, extra)
    bundle = Bundle.load(out, num_threads=options.threads)
    par, lat = family.checks(net, bundle, images, labels, options, log)
    doc = json.loads((out / "model.json").read_text())
    doc["checks"] = {"parity": par, "latency": lat}
    (out / "model.json").write_text(json_text(doc))
    size = sum((out / f).stat().st_size for f in bundle_files(out) if f.endswith(".tflite"))
    return {"kind": family.kind, "bundle": out, "size_bytes": size, "float_ops": conv.float_ops,
            "notes": conv.notes, "parity": par, "latency": lat}
