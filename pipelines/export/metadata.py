"""TFLite metadata in a bundle's `model.tflite`: what Android's standard tooling reads (MediaPipe Tasks'
`ImageClassifier`, the TFLite Support library, Android Studio's model import).

    data = with_metadata(tflite_bytes, name="mobilenet_v2", channels=3, normalization=dataset["normalization"],
                         labels=["cat", "dog"])
    read_metadata(data)   # {"name", "input": {"color_space", "mean", "std", ...}, "outputs": [...], "files": {...}}

The metadata is the `TFLITE_METADATA` flatbuffer of tflite-support's `metadata_schema.fbs` (file identifier
`M001`, fields of schema 1.0.0: min_parser_version "1.0.0"), written here with the pinned `flatbuffers`
builder, field by field in the schema's order (MediaPipe 1.2.2's `metadata_writers` do not import - its wheel
lacks `mediapipe.tasks.cc` - and `mediapipe` itself cannot be pinned beside this project's absl-py). It is
attached to the model as tflite-support's populator does: a model buffer named by a `metadata` entry
`TFLITE_METADATA` (the model re-packed with LiteRT's own `ai_edge_litert.tools.flatbuffer_utils`), and the
labels file zipped after the flatbuffer (a .tflite with associated files is also a zip archive; LiteRT
ignores the trailing bytes).

What it says, for subgraph 0 (a dynamic bundle's first signature):
- input 0: an image (`ImageProperties`, RGB or GRAYSCALE by its channels, its H x W), its normalisation as
  `NormalizationOptions` in pixel units: `(pixel - mean) / std`, from the bundle's
  `x = (pixel / 255 * (hi - lo) + lo - m) / s` with `mean = (m - lo) * 255 / (hi - lo)`,
  `std = s * 255 / (hi - lo)`, one value when every channel has the same (MediaPipe 1.2.2 refuses
  per-channel values: "Per-channel image normalization is not available"; the project's RGB datasets -
  folders, TFDS - normalise every channel alike); `Stats` min/max of the normalised values;
- every output with `num_classes` values: class logits (`FeatureProperties`) with `labels.txt` as its
  `TENSOR_AXIS_LABELS` file; other outputs: their name and a description.
"""
from __future__ import annotations

import io
import zipfile

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
# metadata_schema.fbs enums and union tags
COLOR_SPACE = {"RGB": 1, "GRAYSCALE": 2}  # ColorSpaceType
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2  # ContentProperties: FeatureProperties, ImageProperties
OPTIONS_NORMALIZATION = 1  # ProcessUnitOptions: NormalizationOptions
TENSOR_AXIS_LABELS = 2  # AssociatedFileType


class MetadataError(ValueError):
    """A model's metadata cannot be written or read; one line."""


def pixel_normalization(normalization, channels):
    """`(mean, std)` per channel in pixel units [0, 255] of a bundle's normalisation
    `{"input_range": [lo, hi], "mean": [...], "std": [...]}` (missing: [0, 1], 0, 1)."""
    lo, hi = (normalization or {}).get("input_range") or (0.0, 1.0)
    mean = list((normalization or {}).get("mean") or [0.0])
    std = list((normalization or {}).get("std") or [1.0])
    mean = mean * channels if len(mean) == 1 else mean
    std = std * channels if len(std) == 1 else std
    scale = 255.0 / (float(hi) - float(lo))
    mean, std = [(float(m) - float(lo)) * scale for m in mean], [float(s) * scale for s in std]
    if len(set(mean)) == 1 and len(set(std)) == 1:  # one value for every channel, as the schema allows:
        mean, std = mean[:1], std[:1]               # MediaPipe refuses per-channel normalisation
    return mean, std


# ---------------------------------------------------------------- writing (flatbuffers builder)

def _strings(b, values):
    return _offsets(b, [b.CreateString(v) for v in values])


def _offsets(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b, values):
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _table(b, slots, offsets=(), bytes_=(), uint32=()):
    """A table of `slots` fields: `offsets` / `bytes_` / `uint32` are (slot, value) pairs."""
    b.StartObject(slots)
    for slot, value in offsets:
        b.PrependUOffsetTRelativeSlot(slot, value, 0)
    for slot, value in uint32:
        b.PrependUint32Slot(slot, value, 0)
    for slot, value in bytes_:
        b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


def _tensor(b, name, description, content, process_units=(), stats=None, files=()):
    """TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4, stats 5,
    associated_files 6."""
    fields = [(0, b.CreateString(name)), (1, b.CreateString(description)), (3, content)]
    if process_units:
        fields.append((4, _offsets(b, list(process_units))))
    if stats is not None:
        fields.append((5, stats))
    if files:
        fields.append((6, _offsets(b, list(files))))
    return _table(b, 7, offsets=fields)


def _labels_file(b, description):
    """AssociatedFile: name 0, description 1, type 2, locale 3."""
    return _table(b, 4, offsets=[(0, b.CreateString(LABELS_FILE)), (1, b.CreateString(description))],
                  bytes_=[(2, TENSOR_AXIS_LABELS)])


def build_metadata(name, description, version, image, outputs):
    """The metadata flatbuffer (bytes, identifier M001).

    `image`: {"name", "description", "height", "width", "channels", "mean", "std", "min", "max"};
    `outputs`: [{"name", "description", "labels": bool}] in the subgraph's output order."""
    import flatbuffers

    b = flatbuffers.Builder(1024)
    # input: Content{ImageProperties{color_space 0, default_size 1: ImageSize{width 0, height 1}}}
    size = _table(b, 2, uint32=[(0, int(image["width"])), (1, int(image["height"]))])
    props = _table(b, 2, offsets=[(1, size)], bytes_=[(0, COLOR_SPACE["GRAYSCALE" if image["channels"] == 1 else "RGB"])])
    content = _table(b, 3, offsets=[(1, props)], bytes_=[(0, CONTENT_IMAGE)])  # Content: type 0, value 1, range 2
    norm = _table(b, 2, offsets=[(0, _floats(b, image["mean"])), (1, _floats(b, image["std"]))])
    unit = _table(b, 2, offsets=[(1, norm)], bytes_=[(0, OPTIONS_NORMALIZATION)])  # ProcessUnit: type 0, options 1
    stats = _table(b, 2, offsets=[(0, _floats(b, image["max"])), (1, _floats(b, image["min"]))])  # Stats: max 0, min 1
    inputs = [_tensor(b, image["name"], image["description"], content, [unit], stats)]
    outs = []
    for out in outputs:
        feature = _table(b, 0)
        content = _table(b, 3, offsets=[(1, feature)], bytes_=[(0, CONTENT_FEATURE)])
        files = [_labels_file(b, "class names, one a line, in the order of the logits")] if out["labels"] else []
        outs.append(_tensor(b, out["name"], out["description"], content, files=files))
    # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3, ...
    subgraph = _table(b, 7, offsets=[(0, b.CreateString(name)), (1, b.CreateString(description)),
                                     (2, _offsets(b, inputs)), (3, _offsets(b, outs))])
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    # associated_files 6, min_parser_version 7
    root = _table(b, 8, offsets=[(0, b.CreateString(name)), (1, b.CreateString(description)),
                                 (2, b.CreateString(version)), (3, _offsets(b, [subgraph])),
                                 (4, b.CreateString("dynamic-nets (pipelines.export)")),
                                 (7, b.CreateString(MIN_PARSER_VERSION))])
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def with_metadata(tflite_bytes, name, channels, normalization, labels, description="", version="1"):
    """`tflite_bytes` with TFLite metadata for subgraph 0 and `labels` zipped in as `labels.txt` (see the
    module doc). An existing `TFLITE_METADATA` entry is replaced."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(strip_files(tflite_bytes)))
    sub = model.subgraphs[0]
    if not sub.inputs:
        raise MetadataError("TFLite metadata: subgraph 0 has no input")
    tensor = sub.tensors[sub.inputs[0]]
    shape = [int(d) for d in tensor.shape]
    if len(shape) != 4 or shape[-1] != channels:
        raise MetadataError(f"TFLite metadata: input 0 has shape {shape}, not [1, H, W, {channels}]")
    mean, std = pixel_normalization(normalization, channels)
    lo = [(0.0 - m) / s for m, s in zip(mean, std)]  # per normalisation value (one, or one per channel)
    hi = [(255.0 - m) / s for m, s in zip(mean, std)]
    image = {"name": _name(tensor.name), "height": shape[1], "width": shape[2], "channels": channels,
             "description": f"{'RGB' if channels == 3 else 'grayscale'} image, {shape[1]}x{shape[2]}, float32 "
                            "(pixel - mean) / std",
             "mean": mean, "std": std, "min": lo, "max": hi}
    outputs = []
    for i in sub.outputs:
        out = sub.tensors[i]
        is_logits = [int(d) for d in out.shape][-1:] == [len(labels)]
        outputs.append({"name": _name(out.name), "labels": is_logits,
                        "description": f"logits of the {len(labels)} classes (softmax gives probabilities)"
                                       if is_logits else "model output"})
    meta = build_metadata(name, description or f"{name}: image classifier, {len(labels)} classes", version, image,
                          outputs)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(meta, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME] + [entry]
    packed = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    with zipfile.ZipFile(packed, "a") as z:  # appended after the flatbuffer, as tflite-support's populator does
        z.writestr(LABELS_FILE, "\n".join(map(str, labels)) + "\n")
    return packed.getvalue()


def _name(value):
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def strip_files(tflite_bytes):
    """The flatbuffer part of a .tflite that may carry zipped associated files after it."""
    data = bytes(tflite_bytes)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        start = min((info.header_offset for info in z.infolist()), default=len(data))
    return data[:start]


# ---------------------------------------------------------------- reading (for checks and tests)

def _reader(buf):
    from flatbuffers import encode, number_types as N, table

    class T:
        def __init__(self, pos):
            self.t = table.Table(buf, pos)

        def _o(self, slot):
            return self.t.Offset(4 + 2 * slot)

        def string(self, slot):
            o = self._o(slot)
            return self.t.String(o + self.t.Pos).decode() if o else None

        def byte(self, slot):
            o = self._o(slot)
            return self.t.Get(N.Uint8Flags, o + self.t.Pos) if o else 0

        def uint32(self, slot):
            o = self._o(slot)
            return self.t.Get(N.Uint32Flags, o + self.t.Pos) if o else 0

        def table(self, slot):
            o = self._o(slot)
            return T(self.t.Indirect(o + self.t.Pos)) if o else None

        def tables(self, slot):
            o = self._o(slot)
            if not o:
                return []
            start = self.t.Vector(o)
            return [T(self.t.Indirect(start + 4 * i)) for i in range(self.t.VectorLen(o))]

        def floats(self, slot):
            o = self._o(slot)
            if not o:
                return []
            start = self.t.Vector(o)
            return [self.t.Get(N.Float32Flags, start + 4 * i) for i in range(self.t.VectorLen(o))]

    return T(encode.Get(N.UOffsetTFlags.packer_type, buf, 0))


def metadata_buffer(tflite_bytes):
    """The `TFLITE_METADATA` flatbuffer of a .tflite, or None."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(tflite_bytes)
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            buf = model.Buffers(entry.Buffer())
            if buf.Offset():
                return bytes(data[buf.Offset():buf.Offset() + buf.Size()])
            return bytes(buf.DataAsNumpy().tobytes())
    return None


def read_metadata(tflite_bytes):
    """The metadata of a .tflite as a dict (None without): name, description, version, min_parser_version,
    input {name, color_space, width, height, mean, std, min, max}, outputs [{name, description,
    labels_file}], files {name: text} of the zipped associated files."""
    raw = metadata_buffer(tflite_bytes)
    if raw is None:
        return None
    if raw[4:8] != FILE_IDENTIFIER:
        raise MetadataError(f"TFLite metadata: file identifier {raw[4:8]!r}, expected {FILE_IDENTIFIER!r}")
    root = _reader(bytearray(raw))
    sub = root.tables(3)[0]
    inp = sub.tables(2)[0]
    props = inp.table(3).table(1)
    size = props.table(1)
    units = [u for u in inp.tables(4) if u.byte(0) == OPTIONS_NORMALIZATION]
    norm = units[0].table(1) if units else None
    stats = inp.table(5)
    outputs = []
    for out in sub.tables(3):
        files = [f.string(0) for f in out.tables(6) if f.byte(2) == TENSOR_AXIS_LABELS]
        outputs.append({"name": out.string(0), "description": out.string(1),
                        "labels_file": files[0] if files else None})
    data = bytes(tflite_bytes)
    files = {}
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            files = {n: z.read(n).decode() for n in z.namelist()}
    return {
        "name": root.string(0), "description": root.string(1), "version": root.string(2),
        "min_parser_version": root.string(7),
        "input": {"name": inp.string(0), "content": inp.table(3).byte(0),
                  "color_space": {1: "RGB", 2: "GRAYSCALE"}.get(props.byte(0), "UNKNOWN"),
                  "width": size.uint32(0) if size else None, "height": size.uint32(1) if size else None,
                  "mean": norm.floats(0) if norm else None, "std": norm.floats(1) if norm else None,
                  "max": stats.floats(0) if stats else None, "min": stats.floats(1) if stats else None},
        "outputs": outputs,
        "files": files,
    }
