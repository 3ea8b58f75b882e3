"""Loading a saved Keras model safely: the one way every stage reads a `.keras` file.

    net = load_model("runs/mobilenet_v2-20261130/model.keras")

Only the zip `.keras` format is read, with `safe_mode=True` and not compiled; the project's custom layers
are registered first. Anything else is refused before it is opened as a model: tf_keras applies
`safe_mode` to the zip format alone, and an HDF5 file (whatever its name, `model.keras` included) runs a
Lambda layer's Python while it loads. Runs write `model.keras` in the zip format (`net.save(...)`).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)


def load_model(path):
    """A Keras model from a zip `.keras` file (custom layers registered, `safe_mode=True`, not compiled).
    One-line ValueError naming the file when it is missing or in another format."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file path={str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"model file path={str(path)!r} is not a Keras zip archive (.keras); refusing to load "
                         "it (HDF5 runs a Lambda layer's code even with safe_mode)")
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    import keras_layers  # noqa: F401  (registers the custom layers)

    return keras.models.load_model(path, compile=False, safe_mode=True)
