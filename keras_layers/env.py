"""Select the Keras 2 API (tf_keras) before TensorFlow is imported, and import TensorFlow quietly.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy and tensorflow-model-optimization accepts
Keras 2 models only (see DESIGN.md), so every module that needs TensorFlow imports this one first.
TensorFlow's C++ start-up chatter (oneDNN, CUDA probing on a CPU machine) is kept out of the terminal so
a command's own output and one-line errors stay readable, but not thrown away: `startup_log()` returns
it, and when a GPU is asked for and TensorFlow lists none, `pipelines.training.devices` reports the
loader's messages from it (and from a child process importing TensorFlow at log level 0) as the cause.
Python errors still surface; `PIPELINES_VERBOSE_TF=1` hides nothing.
"""
import os
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


_STARTUP_LOG = []  # what TensorFlow wrote to stderr while it was imported here (one string, or nothing)


def startup_log():
    """TensorFlow's C++ log of its import and device probing that this module kept out of the terminal
    ("" when TensorFlow was imported elsewhere first, or with PIPELINES_VERBOSE_TF set)."""
    return "".join(_STARTUP_LOG)


def _import_tensorflow_quietly():
    if "tensorflow" in sys.modules or os.environ.get("PIPELINES_VERBOSE_TF"):
        import tensorflow  # noqa: F401
        return
    try:
        saved = os.dup(2)
        kept = tempfile.TemporaryFile()
    except OSError:  # no usable fd 2 (embedded interpreters), no temporary folder
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    os.dup2(kept.fileno(), 2)
    try:
        import tensorflow
        import tf_keras  # noqa: F401

        tensorflow.config.list_physical_devices()  # device probing (cuInit on CPU-only hosts) logs here
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        kept.seek(0)
        _STARTUP_LOG.append(kept.read().decode("utf-8", "replace"))
        kept.close()


_import_tensorflow_quietly()
