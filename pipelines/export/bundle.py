"""Run an Android bundle exactly as the app does: one image at a time, stage by stage, as model.json says.

    bundle = Bundle.load("bundle/")                 # model.tflite (+ other .tflite), labels.txt, model.json
    for p in bundle.predict(images):                # images already normalised, (N, H, W, C) float32
        print(p.label, p.stopped_at, p.time_ms, p.tflite_ms)   # the policy's time, and its part in LiteRT
    bundle.predict_files(["cat.png"])               # decode + resize + normalise as the app does

`write_bundle` also puts the standard TFLite metadata into model.tflite (`pipelines.export.metadata`: labels,
input normalisation, descriptions; MediaPipe Tasks and the TFLite Support library read it), so a plain bundle
works with Android's standard tooling without model.json.

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

A bundle is untrusted input (downloaded from a registry, sent by someone): `read_spec` refuses, with one
line naming the field and the value, before any model file is opened:
- a model.json that is not a JSON object or is larger than `MAX_SPEC_BYTES`;
- a stage file or the labels file outside the bundle folder (`../`, an absolute path, a symlink leading out);
- a value the runner reads that is not finite (NaN, Infinity), normalisation `std` <= 0, `mean`/`std` not
  one value or one per channel, an `input_range` with lo >= hi, an input shape that is not [H, W, 1|3]
  (H, W <= `MAX_INPUT_SIDE`);
- a `threshold` that is not a probability in [0, 1] (whatever the kind), a `madds` < 0;
- a labels file named but missing, with an empty line, or with another count than `num_classes`
  (the runner also refuses logits whose length differs from the labels').
`preprocess` reads the image header first: formats other than `IMAGE_FORMATS` and images of more than
`MAX_IMAGE_PIXELS` pixels are refused before anything is decoded; a file that does not decode is one line
naming it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from pipelines.data import MAX_IMAGE_PIXELS, open_image  # the bound every image decode of the project uses
from pipelines.export import families
from pipelines.export.policy import BundleError, softmax, stops  # noqa: F401  (the runner's names)
from pipelines.export.policy import need as _need
from pipelines.export.policy import need_probability

FORMAT = 1
MAX_SPEC_BYTES = 1 << 20  # model.json
MAX_LABELS_BYTES = 1 << 20  # labels.txt
MAX_INPUT_SIDE = 4096  # input.shape H and W
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # the decoders run-bundle lets Pillow use


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
    time_ms: float  # wall time of the whole policy: the TFLite calls and the Python between them
    madds: float | None  # sum of the stages' `madds` (None when model.json gives none)
    logits: np.ndarray
    tflite_ms: float | None = None  # the part of time_ms spent inside the LiteRT signature calls

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["logits"] = [float(v) for v in self.logits]
        return d


def read_spec(directory):
    """Parse and validate DIR/model.json (one-line BundleError naming the field on a bad value)."""
    directory = Path(directory)
    path = directory / "model.json"
    _need(directory.is_dir(), f"bundle dir={str(directory)!r} is not a directory")
    inside(directory, "model.json", "model.json")
    _need(path.stat().st_size <= MAX_SPEC_BYTES,
          f"{path}: {path.stat().st_size} bytes, more than the {MAX_SPEC_BYTES} a model.json may have")
    try:
        spec = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from None
    _need(isinstance(spec, dict), f"{path}: must hold a JSON object; received {type(spec).__name__}")
    kind = spec.setdefault("kind", "plain")
    _need(isinstance(kind, str) and kind in families.kinds(),
          f"model.json: unknown kind={kind!r}; valid: {', '.join(families.kinds())}")
    fmt = spec.get("format", spec.get("format_version", FORMAT))
    _need(type(fmt) is int and fmt == FORMAT,
          f"model.json: format={fmt!r} is not supported (this runner reads format {FORMAT})")
    spec["input"] = _input_spec(spec.get("input"))
    family = families.get(kind)
    stages = spec.setdefault("stages", family.default_stages())
    _need(isinstance(stages, dict) and stages, f"model.json: stages must be a non-empty object; received stages={stages!r}")
    for name, st in stages.items():
        _need(isinstance(st, dict) and isinstance(st.get("file"), str),
              f"model.json: stages.{name} needs a \"file\"; received {st!r}")
        inside(directory, st["file"], f"stages.{name}.file")
        for field in ("signature", "logits"):
            _need(st.get(field) is None or isinstance(st[field], str),
                  f"model.json: stages.{name}.{field} must be a name or null; received {field}={st.get(field)!r}")
        madds = st.get("madds")
        _need(madds is None or _number(madds) and madds >= 0,
              f"model.json: stages.{name}.madds must be a number >= 0 or null; received madds={madds!r}")
    family.validate_spec(spec, stages)
    if "threshold" in spec:  # whatever the kind (a plain bundle's too): a confidence threshold is a probability
        th = spec["threshold"]
        for i, t in enumerate(th if isinstance(th, list) else [th]):
            need_probability("threshold" if not isinstance(th, list) else f"threshold[{i}]", t)
    _labels_spec(directory, spec)
    return spec


def inside(directory, name, field):
    """`directory / name` is a file inside `directory` (after following symlinks); one-line BundleError naming
    `field` otherwise. Returns its path."""
    root = Path(directory).resolve()
    _need(isinstance(name, str) and name and "\x00" not in name and not Path(name).is_absolute(),
          f"model.json: {field}={name!r} must be a file name relative to the bundle folder")
    path = (root / name).resolve()
    _need(path.is_relative_to(root), f"model.json: {field}={name!r} is outside the bundle folder")
    _need(path.is_file(), f"model.json: {field}={name!r} not found in the bundle" if field != "model.json"
          else f"bundle dir={str(directory)!r} has no model.json")
    return path


def _number(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _numbers(field, v, length=None, positive=False):
    """A list of finite numbers (> 0 with `positive`), of `length` entries or one."""
    ok = isinstance(v, list) and v and all(_number(x) and (x > 0 or not positive) for x in v)
    if ok and length is not None:
        ok = len(v) in (1, length)
    count = f"1 or {length}" if length is not None else "one or more"
    _need(ok, f"model.json: input.{field} must be a list of {count} finite numbers{' > 0' if positive else ''}; "
              f"received {field}={v!r}")


def _input_spec(inp):
    """`input` as {"shape": [H, W, C], "input_range", "mean", "std"}; accepts the export's form
    ({"shape": [1, H, W, C], "normalization": {"input_range", "mean", "std"}}) too. Values are checked."""
    if not inp:
        return {}
    _need(isinstance(inp, dict), f"model.json: input must be an object; received input={inp!r}")
    norm = inp.get("normalization") or {}
    _need(isinstance(norm, dict), f"model.json: input.normalization must be an object; received normalization={norm!r}")
    out = {k: inp[k] for k in ("input_range", "mean", "std") if k in inp}
    out.update({k: v for k, v in norm.items() if k in ("input_range", "mean", "std")})
    shape = inp.get("shape")
    channels = None
    if shape is not None:
        ok = isinstance(shape, list) and len(shape) in (3, 4) and all(type(d) is int for d in shape)
        dims = shape[-3:] if ok else []
        ok = ok and (len(shape) == 3 or shape[0] == 1) and all(0 < d <= MAX_INPUT_SIDE for d in dims[:2]) \
            and dims[2] in (1, 3)
        _need(ok, f"model.json: input.shape must be [H, W, C] or [1, H, W, C] with 0 < H, W <= {MAX_INPUT_SIDE} "
                  f"and C 1 or 3; received shape={shape!r}")
        out["shape"] = list(dims)
        channels = dims[2]
    if "input_range" in out:
        rng = out["input_range"]
        _need(isinstance(rng, list) and len(rng) == 2 and all(map(_number, rng)) and rng[0] < rng[1],
              f"model.json: input.input_range must be [lo, hi] finite numbers with lo < hi; "
              f"received input_range={rng!r}")
    if "mean" in out:
        _numbers("mean", out["mean"], channels)
    if "std" in out:
        _numbers("std", out["std"], channels, positive=True)
    if channels is None and "mean" in out and "std" in out:
        _need(len(out["mean"]) == len(out["std"]) or 1 in (len(out["mean"]), len(out["std"])),
              f"model.json: input.mean and input.std differ in length; "
              f"received mean={out['mean']!r}, std={out['std']!r}")
    return out


def _labels_spec(directory, spec):
    """Check "labels" (a file in the bundle, named or the default labels.txt) and "num_classes" up front."""
    n = spec.get("num_classes")
    _need(n is None or type(n) is int and n >= 1,
          f"model.json: num_classes must be an int >= 1; received num_classes={n!r}")
    named = "labels" in spec
    name = spec.get("labels", "labels.txt")
    if not named and not (Path(directory) / name).exists():
        return  # no labels: predictions are named by class index
    labels = read_labels(directory, spec)
    _need(n is None or len(labels) == n,
          f"{name}: {len(labels)} label(s) but model.json says num_classes={n}")


def read_labels(directory, spec):
    """The class names of labels.txt (or model.json's "labels" file), one a line; None without one. Refused:
    a file outside the bundle, larger than `MAX_LABELS_BYTES`, not UTF-8, or with an empty line (names
    would shift onto the wrong classes)."""
    name = spec.get("labels", "labels.txt")
    if "labels" not in spec and not (Path(directory) / name).exists():
        return None
    path = inside(directory, name, "labels")
    _need(path.stat().st_size <= MAX_LABELS_BYTES,
          f"{name}: {path.stat().st_size} bytes, more than the {MAX_LABELS_BYTES} a labels file may have")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise BundleError(f"{name}: not UTF-8 text ({err})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    _need(lines and not empty, f"{name}: line {empty[0] if empty else 1} is empty; one class name a line")
    return [line.strip() for line in lines]


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
        self._stage_calls = {}  # stage -> (runner, signature, input names), made on first use
        self._tflite_ms = 0.0  # time inside LiteRT calls since predict_one began (see Prediction.tflite_ms)
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
        call = self._stage_calls.get(name)
        if call is None:
            runner, sig = self._signature(name)
            call = self._stage_calls[name] = (runner, sig, runner.signatures()[sig]["inputs"])
        runner, sig, names = call
        feed = {}
        for n in names:
            if n in state:
                feed[n] = state[n]
            elif n == "image" or len(names) == 1:
                feed[n] = image
            else:
                raise BundleError(f"stage {name!r} needs input {n!r}, which no earlier stage produced")
        start = time.perf_counter()
        out = runner.run_one(feed, sig)
        self._tflite_ms += (time.perf_counter() - start) * 1e3
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
        self._tflite_ms = 0.0
        start = time.perf_counter()
        name, logits, stages = self.family.run_policy(self, image)
        elapsed = (time.perf_counter() - start) * 1e3
        tflite_ms = self._tflite_ms
        _need(not self.labels or len(logits) == len(self.labels),
              f"stage {name!r} gives {len(logits)} logits but the bundle has {len(self.labels)} labels")
        probs = softmax(logits)
        index = int(probs.argmax())
        madds = [self.spec["stages"][n].get("madds") for n in stages]
        return Prediction(index=index, label=self.labels[index] if self.labels else str(index),
                          confidence=float(probs.max()), stopped_at=name, stages=stages, time_ms=elapsed,
                          madds=None if any(m is None for m in madds) else float(sum(madds)),
                          logits=np.asarray(logits, np.float32), tflite_ms=tflite_ms)

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
        """Decode an image file, resize (bilinear) to the input size, scale to [0, 1], normalise.
        The header is read first: a format outside `IMAGE_FORMATS` or more than `MAX_IMAGE_PIXELS` pixels is
        refused before decoding; an undecodable file is a one-line BundleError naming it."""
        inp = self.spec.get("input") or {}
        _need(inp.get("shape"), "model.json: input.shape is needed to read image files")
        h, w, c = inp["shape"]
        img = decode_image(path, "L" if c == 1 else "RGB", (w, h))
        lo, hi = inp.get("input_range", [0.0, 1.0])
        x = np.asarray(img, np.float32).reshape(h, w, c) / 255.0 * (hi - lo) + lo
        mean = np.asarray(inp.get("mean", [0.0] * c), np.float32)
        std = np.asarray(inp.get("std", [1.0] * c), np.float32)
        return (x - mean) / std

    def predict_files(self, paths):
        return [self.predict_one(self.preprocess(p)) for p in paths]


def decode_image(path, mode, size, max_pixels=MAX_IMAGE_PIXELS):
    """The image file `path` as `mode` ("L" or "RGB") resized (bilinear) to `size` (W, H): header checked first
    (format in `IMAGE_FORMATS`, at most `max_pixels` pixels; `pipelines.data.open_image`), then decoded.
    One-line BundleError naming the file."""
    from PIL import Image

    with open_image(path, IMAGE_FORMATS, max_pixels, error=BundleError) as img:
        try:
            return img.convert(mode).resize(size, Image.BILINEAR)
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as err:
            raise BundleError(f"cannot decode image {str(path)!r} ({img.format} {img.size[0]}x{img.size[1]}): "
                              f"{err}") from None


# ---------------------------------------------------------------- writing a bundle (pipelines.export)

BUNDLE_FILES = ("model.tflite", "labels.txt", "model.json")


def json_text(doc):
    """model.json's text: JSON that Android's parsers accept, so a non-finite number (a check that had
    nothing to measure) is written as null rather than NaN / Infinity."""
    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(doc), indent=2, allow_nan=False)


def weights_digest(net):
    """SHA-256 of the Keras net's weights (float32 bytes of each weight, in the net's order, with its shape):
    model.json's ``weights_sha256``, the same for every bundle exported from one trained network (whatever
    exits, thresholds or quantization it was exported with), so tools can tell bundles of one network apart
    from another's (`compare-bundles` fits a stage's cost per network)."""
    import hashlib

    h = hashlib.sha256()
    for w in net.weights:
        value = np.asarray(w.numpy(), np.float32)
        h.update(repr(value.shape).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


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
        "weights_sha256": weights_digest(net),
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
    names = dataset.get("class_names") or [str(i) for i in range(int(dataset["num_classes"]))]
    add_metadata(conversion, net, dataset, names)
    (out / "model.tflite").write_bytes(conversion.tflite)
    for name, data in (extra_files or {}).items():
        (out / name).write_bytes(data)
    (out / "labels.txt").write_text("\n".join(map(str, names)) + "\n")
    doc = model_json(net, conversion.tflite, dataset, conversion.mode, source, checks, conversion.notes,
                     conversion.float_ops)
    doc.update(spec or {})
    (out / "model.json").write_text(json_text(doc))
    return out


def add_metadata(conversion, net, dataset, names):
    """Put TFLite metadata (labels, input normalisation, input/output descriptions: `metadata.with_metadata`)
    into `conversion.tflite`, for subgraph 0 (a dynamic bundle's first signature). A first subgraph that does
    not take the dataset's image gets none, said in `conversion.notes`."""
    from pipelines.export import metadata

    try:
        conversion.tflite = metadata.with_metadata(conversion.tflite, net.name, int(dataset["input_shape"][-1]),
                                                   dataset.get("normalization"), names)
    except metadata.MetadataError as err:
        conversion.notes.append(f"no TFLite metadata: {err}")


def bundle_files(bundle):
    """The files of a bundle: `BUNDLE_FILES` and every other .tflite its model.json stages name."""
    doc = json.loads((Path(bundle) / "model.json").read_text())
    stages = doc.get("stages") or {}
    for name, st in stages.items():
        inside(bundle, st["file"], f"stages.{name}.file")
    extra = sorted({st["file"] for st in stages.values()} - set(BUNDLE_FILES))
    return list(BUNDLE_FILES) + extra


