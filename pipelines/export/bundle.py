"""Run an Android bundle exactly as the app does: one image at a time, stage by stage, as model.json says.

    bundle = Bundle.load("bundle/")                 # model.tflite (+ other .tflite), labels.txt, model.json
    for p in bundle.predict(images):                # images already normalised, (N, H, W, C) float32
        print(p.label, p.stopped_at, p.time_ms)
    bundle.predict_files(["cat.png"])               # decode + resize + normalise as the app does

The same code serves `python -m pipelines run-bundle` and the MLflow TFLite flavour
(`pipelines.mlops.tflite_flavor`), so a model loaded from the registry predicts with the bytes that ship.

model.json fields read here (`format_version` = 1; other fields are ignored; a bundle without "kind"
is a plain one). Each kind is a family plugin (`pipelines.export.families`): its `validate_spec` checks
the fields of the kind, its `run_policy` is what `predict_one` runs. The kinds of today:

    "kind":      "plain" | "basisnet" | "multi_exit" | "ds_net"            (default "plain")
    "input":     {"shape": [1, H, W, C], "normalization":                 preprocessing: pixel / 255
                  {"input_range": [lo, hi], "mean": [...], "std": [...]}}  * (hi - lo) + lo, then
                                                                             (x - mean[c]) / std[c]
                                                                             (`pipelines.export` writes it)
    "labels":    "labels.txt"                                               one class name a line
    "stages":    {NAME: {"file": "model.tflite", "signature": SIG|null,     the TFLite pieces; a stage's
                         "logits": OUTPUT|null, "madds": N|null}}           inputs are fed by name from
                                                                             the image ("image", or a
                                                                             stage's only input) and
                                                                             from earlier outputs
    plain:       one stage (default {"main": {"file": "model.tflite"}}); run it.
    basisnet:    stages "preview" and "specialist"; "threshold": T. Run preview; if the top softmax
                 probability of its logits >= T stop there, else run specialist (its "coefficients"
                 input comes from preview's output of that name).
    multi_exit:  "exits": [STAGE, ...] in order; "threshold": T or [T_0, ..., T_{n-2}]. Run exit k,
                 stop at the first whose confidence >= its threshold; the last always answers.
    ds_net:      "gate": STAGE, "gate_output": OUTPUT, "widths": [[WIDTH, STAGE], ...]. Run the gate,
                 take argmax of its output as the index into widths, run that width's stage.

`madds` (multiply-adds of one run of the stage, per example) lets the runner report the compute each
example used; `logits` names the output to read when a stage has several.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from pipelines.export import families
from pipelines.export.policy import BundleError, softmax, stops  # noqa: F401  (the runner's names)
from pipelines.export.policy import need as _need

FORMAT = 1


def __getattr__(name):
    if name == "KINDS":  # the registered family kinds, read when asked (a family registered later is in it)
        return families.kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass
class Prediction:
    index: int  # predicted class
    label: str
    confidence: float  # top softmax probability of the answering stage
    stopped_at: str  # the stage that answered (for ds_net: the width stage run)
    stages: list  # the stages run, in order
    time_ms: float  # wall time of the TFLite invocations (and the policy between them)
    madds: float | None  # sum of the stages' `madds` (None when model.json gives none)
    logits: np.ndarray

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["logits"] = [float(v) for v in self.logits]
        return d


def read_spec(directory):
    """Parse and validate DIR/model.json (one-line BundleError naming the field on a bad value)."""
    directory = Path(directory)
    path = directory / "model.json"
    _need(directory.is_dir(), f"bundle dir={str(directory)!r} is not a directory")
    _need(path.is_file(), f"bundle dir={str(directory)!r} has no model.json")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from None
    kind = spec.setdefault("kind", "plain")
    _need(kind in families.kinds(), f"model.json: unknown kind={kind!r}; valid: {', '.join(families.kinds())}")
    fmt = spec.get("format", spec.get("format_version", FORMAT))
    _need(fmt == FORMAT, f"model.json: format={fmt!r} is not supported (this runner reads format {FORMAT})")
    spec["input"] = _input_spec(spec.get("input"))
    family = families.get(kind)
    stages = spec.setdefault("stages", family.default_stages())
    _need(isinstance(stages, dict) and stages, f"model.json: stages must be a non-empty object; received stages={stages!r}")
    for name, st in stages.items():
        _need(isinstance(st, dict) and isinstance(st.get("file"), str),
              f"model.json: stages.{name} needs a \"file\"; received {st!r}")
        _need((directory / st["file"]).is_file(), f"model.json: stages.{name}.file={st['file']!r} not found in the bundle")
    family.validate_spec(spec, stages)
    return spec


def _input_spec(inp):
    """`input` as {"shape": [H, W, C], "input_range", "mean", "std"}; accepts the export's form
    ({"shape": [1, H, W, C], "normalization": {"input_range", "mean", "std"}}) too."""
    if not inp:
        return {}
    _need(isinstance(inp, dict), f"model.json: input must be an object; received input={inp!r}")
    out = {k: inp[k] for k in ("input_range", "mean", "std") if k in inp}
    out.update({k: v for k, v in (inp.get("normalization") or {}).items() if k in ("input_range", "mean", "std")})
    shape = inp.get("shape")
    if shape is not None:
        shape = list(shape)[-3:] if len(shape) == 4 else list(shape)
        _need(len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape),
              f"model.json: input.shape must be [H, W, C] or [1, H, W, C]; received shape={inp.get('shape')!r}")
        out["shape"] = shape
    return out


def read_labels(directory, spec):
    path = Path(directory) / spec.get("labels", "labels.txt")
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class Bundle:
    """A loaded bundle: its spec, labels and one LiteRT interpreter per .tflite file."""

    def __init__(self, directory, spec, num_threads=None):
        from pipelines.export import tflite

        self.dir = Path(directory)
        self.num_threads = num_threads
        self.spec = spec
        self.kind = spec["kind"]
        self.family = families.get(self.kind)
        self.labels = read_labels(directory, spec)
        self._interpreters = {}
        for st in spec["stages"].values():
            if st["file"] not in self._interpreters:
                self._interpreters[st["file"]] = tflite.Runner(self.dir / st["file"], num_threads=num_threads)
        for name, st in spec["stages"].items():  # every named signature must exist, up front
            sigs = self._interpreters[st["file"]].signatures()
            sig = st.get("signature")
            _need(sig is None and len(sigs) == 1 or sig in sigs,
                  f"model.json: stages.{name}.signature={sig!r} not in {st['file']} (has {sorted(sigs)})")

    @classmethod
    def load(cls, directory, num_threads=None):
        return cls(directory, read_spec(directory), num_threads=num_threads)

    # ------------------------------------------------------------ one stage

    def _signature(self, name):
        st = self.spec["stages"][name]
        runner = self._interpreters[st["file"]]
        return runner, st.get("signature") or next(iter(runner.signatures()))

    def run_stage(self, name, image, state):
        """Run stage `name` on one image (1, H, W, C); inputs by name from `state`. Adds its outputs to `state`."""
        runner, sig = self._signature(name)
        names = runner.signatures()[sig]["inputs"]
        feed = {}
        for n in names:
            if n in state:
                feed[n] = state[n]
            elif n == "image" or len(names) == 1:
                feed[n] = image
            else:
                raise BundleError(f"stage {name!r} needs input {n!r}, which no earlier stage produced")
        out = runner.run_one(feed, sig)
        state.update(out)
        return out

    def logits_of(self, name, out):
        want = self.spec["stages"][name].get("logits")
        if want is None:
            if len(out) == 1:
                return next(iter(out.values()))[0]
            want = "logits"
        _need(want in out, f"stage {name!r} has no output {want!r} (outputs: {sorted(out)}); set stages.{name}.logits")
        return out[want][0]

    def logits(self, name, image, state):
        """Run stage `name` (see `run_stage`) and return its logits (1-D)."""
        return self.logits_of(name, self.run_stage(name, image, state))

    # ------------------------------------------------------------ the policy

    def predict_one(self, image):
        """Run one normalised image (H, W, C) or (1, H, W, C) through the policy of the bundle's family."""
        image = np.asarray(image, np.float32)
        if image.ndim == 3:
            image = image[None]
        start = time.perf_counter()
        name, logits, stages = self.family.run_policy(self, image)
        elapsed = (time.perf_counter() - start) * 1e3
        probs = softmax(logits)
        index = int(probs.argmax())
        madds = [self.spec["stages"][n].get("madds") for n in stages]
        return Prediction(index=index, label=self.labels[index] if self.labels and index < len(self.labels) else str(index),
                          confidence=float(probs.max()), stopped_at=name, stages=stages, time_ms=elapsed,
                          madds=None if any(m is None for m in madds) else float(sum(madds)),
                          logits=np.asarray(logits, np.float32))

    def predict(self, images):
        """Predictions for a batch of normalised images (N, H, W, C), one at a time as on the phone."""
        images = np.asarray(images, np.float32)
        shape = self.input_shape()
        if shape and tuple(images.shape[1:]) != tuple(shape):
            raise BundleError(f"images have shape {tuple(images.shape[1:])} but the bundle takes {tuple(shape)}")
        return [self.predict_one(x) for x in images]

    # ------------------------------------------------------------ images as the app reads them

    def input_shape(self):
        inp = self.spec.get("input") or {}
        return tuple(inp["shape"]) if inp.get("shape") else None

    def preprocess(self, path):
        """Decode an image file, resize (bilinear) to the input size, scale to [0, 1], normalise."""
        from PIL import Image

        inp = self.spec.get("input") or {}
        _need(inp.get("shape"), "model.json: input.shape is needed to read image files")
        h, w, c = inp["shape"]
        try:
            img = Image.open(path)
        except (OSError, ValueError) as err:
            raise BundleError(f"cannot read image {str(path)!r}: {err}") from None
        img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        lo, hi = inp.get("input_range", [0.0, 1.0])
        x = np.asarray(img, np.float32).reshape(h, w, c) / 255.0 * (hi - lo) + lo
        mean = np.asarray(inp.get("mean", [0.0] * c), np.float32)
        std = np.asarray(inp.get("std", [1.0] * c), np.float32)
        return (x - mean) / std

    def predict_files(self, paths):
        return [self.predict_one(self.preprocess(p)) for p in paths]


# ---------------------------------------------------------------- writing a bundle (pipelines.export)

BUNDLE_FILES = ("model.tflite", "labels.txt", "model.json")


def model_json(net, tflite_bytes, dataset, mode, source, checks=None, notes=(), float_ops_=None):
    """The `model.json` an Android app reads next to `model.tflite`."""
    from pipelines.export import tflite

    runner = tflite.Runner(tflite_bytes)
    inp = runner.interpreter.get_input_details()
    outs = runner.interpreter.get_output_details()
    norm = dict(dataset.get("normalization") or {})
    h, w, c = dataset["input_shape"]
    doc = {
        "format_version": 1,
        "model": net.name,
        "source": source,
        "quantization": {"mode": mode, "notes": list(notes), "float_ops": float_ops_ or {}},
        "input": {"name": inp[0]["name"], "shape": [1, int(h), int(w), int(c)], "dtype": "float32",
                  "layout": "NHWC", "channels": "grayscale" if int(c) == 1 else "RGB",
                  "normalization": {**norm, "formula": "x = (pixel / 255 * (input_range[1] - input_range[0]) "
                                                       "+ input_range[0] - mean[c]) / std[c]"}},
        "outputs": [{"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": str(d["dtype"].__name__)}
                    for d in outs],
        "keras_outputs": list(net.output_names),
        "signatures": runner.signatures(),
        "labels": "labels.txt",
        "num_classes": int(dataset["num_classes"]),
        "dataset": dataset.get("name"),
        "size_bytes": len(tflite_bytes),
    }
    if checks:
        doc["checks"] = checks
    return doc


def write_bundle(out_dir, net, conversion, dataset, source, checks=None, spec=None, extra_files=None):
    """Write `model.tflite`, `labels.txt`, `model.json` into `out_dir` (created; files replaced): the one
    bundle format, whatever the family.

    `spec`: the runner's fields of the model's family (kind, stages, threshold, ...; its plugin's
    `stages`), merged into model.json; `extra_files`: {file name: bytes} of its other .tflite files."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(conversion.tflite)
    for name, data in (extra_files or {}).items():
        (out / name).write_bytes(data)
    names = dataset.get("class_names") or [str(i) for i in range(int(dataset["num_classes"]))]
    (out / "labels.txt").write_text("\n".join(map(str, names)) + "\n")
    doc = model_json(net, conversion.tflite, dataset, conversion.mode, source, checks, conversion.notes,
                     conversion.float_ops)
    doc.update(spec or {})
    (out / "model.json").write_text(json.dumps(doc, indent=2))
    return out


def bundle_files(bundle):
    """The files of a bundle: `BUNDLE_FILES` and every other .tflite its model.json stages name."""
    doc = json.loads((Path(bundle) / "model.json").read_text())
    extra = sorted({st["file"] for st in (doc.get("stages") or {}).values()} - set(BUNDLE_FILES))
    return list(BUNDLE_FILES) + extra


