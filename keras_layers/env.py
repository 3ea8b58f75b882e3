"""Select the Keras 2 API (tf_keras) before TensorFlow is imported, and import TensorFlow quietly.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy and tensorflow-model-optimization accepts
Keras 2 models only (see DESIGN.md), so every module that needs TensorFlow imports this one first.
TensorFlow's C++ start-up chatter (oneDNN, CUDA probing on a CPU machine) goes to /dev/null so a
command's own output and one-line errors stay readable; Python errors still surface.
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly():
    if "tensorflow" in sys.modules or os.environ.get("PIPELINES_VERBOSE_TF"):
        import tensorflow  # noqa: F401
        return
    try:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no usable fd 2 (embedded interpreters)
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow
        import tf_keras  # noqa: F401

        tensorflow.config.list_physical_devices()  # device probing (cuInit on CPU-only hosts) logs here
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
