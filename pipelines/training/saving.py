"""Loading a saved Keras model safely: the one way every stage reads a `.keras` file.

    net = load_model("runs/mobilenet_v2-20261130/model.keras")
    net = load_model(path, what="run 3f2a... artifact run/model.keras")   # names the source in errors

Only the zip `.keras` format is read, with `safe_mode=True` and not compiled; the project's custom layers
are registered first. Anything else is refused before it is opened as a model, with one line naming the
file (or `what`, where it came from) and the format it holds: tf_keras applies `safe_mode` to the zip format
alone, and an HDF5 file (whatever its name, `model.keras` included) runs a Lambda layer's Python while it
loads. Runs write `model.keras` in the zip format (`net.save(...)`).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_format(path):
    """What `path` holds, in words, as far as its first bytes tell."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return "a zip archive"
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_SIGNATURE:
        return "an HDF5 file"
    return "not a Keras file" if head else "an empty file"


def load_model(path, what=None):
    """A Keras model from a zip `.keras` file (custom layers registered, `safe_mode=True`, not compiled).
    One-line ValueError naming `what` (default: the file) when it is missing or in another format."""
    path = Path(path)
    what = what or f"model file {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{what} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what} is {file_format(path)}, not a Keras zip archive (.keras): refusing to load it "
                         "(only the zip format is read, with safe_mode; an HDF5 model runs its Lambda layers' code "
                         "on load)")
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    import keras_layers  # noqa: F401  (registers the custom layers)

    return keras.models.load_model(path, compile=False, safe_mode=True)
