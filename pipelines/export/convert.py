"""Quantization modes and conversion of a Keras model to TFLite (`pipelines.export.tflite` underneath).

Modes: ``float32``; ``float16`` (fp16 weights); ``dynamic`` (int8 weights, float activations); ``int8``
(full integer, calibrated on images drawn from the *train* split); ``qat`` (tensorflow-model-optimization
`quantize_model` + a short fine-tune on the train split, then converted with the learned ranges).
A layer that declares ``quantization_modes`` without the requested mode is refused before conversion
with a message naming it; ops that stay float in a quantized model are listed (`float_ops`).
"""
from __future__ import annotations

import dataclasses
from collections import Counter

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

MODES = ("float32", "float16", "dynamic", "int8", "qat")
# Default parity tolerance on the max abs logit error per mode (None: only top-1 agreement is gated).
DEFAULT_MAX_ERROR = {"float32": 1e-3, "float16": 5e-2, "dynamic": None, "int8": None, "qat": None}
QUANTIZE_SEMANTICS = {"float32": "no quantization", "float16": "float16 weights, float32 compute",
                      "dynamic": "int8 weights, float activations (dynamic range)",
                      "int8": "full integer (int8 weights and activations, float32 input/output)",
                      "qat": "quantization-aware trained, int8 weights and activations"}


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown quantize={mode!r}; valid choices: {', '.join(MODES)}")
    return mode


# ---------------------------------------------------------------- conversion

@dataclasses.dataclass
class Conversion:
    tflite: bytes
    mode: str
    float_ops: dict  # op name -> count of ops that compute in float in a quantized model
    notes: list
    reference: object = None  # the Keras model the TFLite model was converted from (QAT: the fine-tuned one)

    @classmethod
    def of(cls, tflite_bytes, mode, notes=()):
        """The Conversion of bytes converted elsewhere (a family's staged pieces): the mode's semantics
        as its first note, the ops that stay float (`float_ops`)."""
        return cls(tflite=tflite_bytes, mode=mode, float_ops=float_ops(tflite_bytes, mode),
                   notes=[QUANTIZE_SEMANTICS[mode], *notes])


def _train_images(data, limit, log):
    from pipelines import data as data_mod

    if data is None:
        raise ValueError("this quantization mode needs training images: pass data= (name, image_size) "
                         "or export a registered model / run folder that records its dataset")
    x, y, _ = data_mod.as_numpy(split="train", limit=limit, **data)
    log(f"drew {len(x)} images from the train split of {data['name']}")
    return x, y


def quantize_aware(net, data, epochs=1, limit=512, learning_rate=1e-4, main_output="logits", log=print):
    """tensorflow-model-optimization QAT: `quantize_model(net)` fine-tuned on the train split.

    Refuses (ValueError naming the layer) a model with layers tfmot cannot wrap.
    """
    from keras_layers import env  # noqa: F401
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from pipelines.export import tflite

    tflite.check_quantization(net, "qat")
    try:
        qnet = tfmot.quantization.keras.quantize_model(net)
    except (RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0][:300]
        raise tflite.ConversionError(f"quantize='qat': tensorflow-model-optimization cannot wrap {net.name!r}: "
                                     f"{first}") from None
    x, y = _train_images(data, limit, log)
    names = list(qnet.output_names)
    target = main_output if main_output in names else names[-1]
    loss = {n: (keras.losses.SparseCategoricalCrossentropy(from_logits=True) if n == target else None)
            for n in names} if len(names) > 1 else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    qnet.compile(keras.optimizers.Adam(learning_rate), loss=loss)
    log(f"QAT fine-tune: {epochs} epoch(s) on {len(x)} train images, lr {learning_rate}")
    qnet.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[epoch_progress("QAT fine-tune", epochs, log)])
    return qnet


def epoch_progress(what, epochs, log=print):
    """A Keras callback that reports one line per epoch through `log`: `WHAT epoch 2/3: loss 0.41 (12.3 s)`."""
    import time

    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    class _Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            values = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items() if k.endswith("loss"))
            log(f"{what} epoch {epoch + 1}/{epochs}: {values or 'done'} ({time.time() - self.start:.1f} s)")

    return _Progress()


def float_ops(tflite_bytes, mode):
    """Ops that still compute in float in a quantized model: {op name: count}.

    `dynamic`: conv / fully-connected ops whose weights stayed float (e.g. kernels computed at run time);
    `int8` / `qat`: ops with a float32 input other than the QUANTIZE at the model's input.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    if mode in ("float32", "float16"):
        return {}
    interp = Interpreter(model_content=bytes(tflite_bytes))
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    found = Counter()
    weighted = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")
    for op in interp._get_ops_details():
        name, inputs = op["op_name"], [i for i in op["inputs"] if i >= 0]
        if mode == "dynamic":
            if name in weighted and len(inputs) > 1 and dtypes.get(inputs[1]) == np.float32:
                found[name] += 1
        elif name not in ("QUANTIZE", "DEQUANTIZE") and any(dtypes.get(i) == np.float32 for i in inputs):
            found[name] += 1
    return dict(found)


def convert(net, mode="float32", data=None, calibration_images=200, qat_epochs=1, qat_limit=512,
            main_output="logits", log=print):
    """Convert a Keras model with `pipelines.tflite`; returns a `Conversion`.

    `data`: `{"name", "image_size", "data_dir"}` of the training data (int8 calibration, QAT fine-tune).
    """
    from pipelines.export import tflite

    check_mode(mode)
    tflite.check_quantization(net, mode)  # a layer that declares it cannot run `mode`: refuse now
    notes = [QUANTIZE_SEMANTICS[mode]]
    reference = net
    if mode == "int8":
        x, _ = _train_images(data, calibration_images, log)
        tfl = tflite.convert(net, "int8", representative=list(x))
        notes.append(f"calibrated on {len(x)} train images")
    elif mode == "qat":
        reference = quantize_aware(net, data, epochs=qat_epochs, limit=qat_limit, main_output=main_output, log=log)
        tfl = tflite.convert(reference, "qat")
        notes.append(f"QAT fine-tuned {qat_epochs} epoch(s) on {qat_limit} train images")
    else:
        tfl = tflite.convert(net, mode)
    tflite.assert_builtin_only(tfl)
    kept = float_ops(tfl, mode)
    if kept:
        what = ", ".join(f"{n} x{c}" for n, c in sorted(kept.items()))
        notes.append(f"kept float: {what}")
        log(f"{mode}: ops that stay float (weights the converter leaves float, e.g. small or computed at "
            f"run time): {what}")
    return Conversion(tflite=tfl, mode=mode, float_ops=kept, notes=notes, reference=reference)


