"""The devices a run trains on, and the cause when a GPU that was asked for is not there.

    devices.require_gpu()            # the visible GPUs, or GpuUnavailableError: one line naming the cause
    devices.in_process_strategy()    # MirroredStrategy over the visible GPUs when there are several
    devices.select_in_process(True)  # `train --use-gpu` in-process: require a GPU (False: hide them)

`keras_layers.env` imports TensorFlow with its C++ start-up log (the CUDA loader's messages among it) kept
out of the terminal. When a GPU is asked for and TensorFlow lists none, `gpu_problem` names the cause from
what TensorFlow says: `tf.sysconfig.get_build_info()` (a build without CUDA), `CUDA_VISIBLE_DEVICES`
(hidden on purpose), and the loader's messages - the log `keras_layers.env` kept, and a second import of
TensorFlow in a child process at log level 0, which also shows the loader's warnings (a missing
`libcudnn.so.9` is a warning). Causes: no GPU support in this TensorFlow build; no NVIDIA driver or a
driver error; CUDA libraries missing; the driver sees no GPU. Ray Train workers can call `require_gpu`
too, before they build a model.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pipelines  # noqa: F401

# the glog prefix of a TensorFlow C++ log line: "E0000 00:00:1796029853.239679    2963 cuda_platform.cc:52] "
_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [^\]]+\] ")
_PROBE = "import tensorflow as tf; tf.config.list_physical_devices('GPU')"
PROBE_TIMEOUT_S = 120

# (cause, what to do, substrings of the loader's messages), checked in this order
_CAUSES = (
    ("none visible: the NVIDIA driver sees no GPU", "check `nvidia-smi` and the GPUs given to this container",
     ("CUDA_ERROR_NO_DEVICE", "no CUDA-capable device")),
    ("CUDA libraries missing", "pip install 'tensorflow[and-cuda]=={version}' (CUDA {cuda}, cuDNN {cudnn})",
     ("Cannot dlopen some GPU libraries", "Could not load dynamic library", "cannot open shared object file")),
    ("no usable NVIDIA driver", "install the NVIDIA driver (libcuda.so.1) or run on a GPU node",
     ("Could not find cuda drivers", "cuInit", "kernel driver does not appear to be running",
      "CUDA_ERROR_INSUFFICIENT_DRIVER", "driver version is insufficient", "libcuda")),
)


class GpuUnavailableError(RuntimeError):
    """A GPU was asked for and TensorFlow cannot use one; the message names the cause in one line."""


def _messages(log):
    """The lines of a TensorFlow log without their glog prefixes."""
    return [_GLOG_PREFIX.sub("", line).strip() for line in (log or "").splitlines() if line.strip()]


def diagnose(build_info, log, environ):
    """Why TensorFlow lists no GPU, in one line: from its build info, the loader's messages (`log`) and
    the environment (`CUDA_VISIBLE_DEVICES`)."""
    import tensorflow as tf

    version = tf.__version__
    if not build_info.get("is_cuda_build") and not build_info.get("is_rocm_build"):
        return (f"TensorFlow {version} was built without GPU support; pip install 'tensorflow[and-cuda]=={version}'")
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "NoDevFiles"):
        return f"none visible: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU from TensorFlow"
    lines = _messages(log)
    for cause, fix, marks in _CAUSES:
        evidence = [line for line in lines if any(m in line for m in marks)]
        if evidence:
            fix = fix.format(version=version, cuda=build_info.get("cuda_version", "?"),
                             cudnn=build_info.get("cudnn_version", "?"))
            quoted = "; ".join(dict.fromkeys(e[:200] for e in evidence[:3]))
            return f"{cause} ({fix}); TensorFlow said: {quoted}"
    return "none visible: TensorFlow lists no GPU and its loader logged no error (check `nvidia-smi`)"


def loader_log(timeout=PROBE_TIMEOUT_S):
    """What TensorFlow logs while it looks for GPUs: the start-up log `keras_layers.env` kept, then a
    child process importing TensorFlow at log level 0 (warnings included) with nothing hidden."""
    from keras_layers import env

    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "PIPELINES_VERBOSE_TF": "1", "TF_USE_LEGACY_KERAS": "1"}
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=child_env, capture_output=True, text=True,
                               timeout=timeout)
        child = probe.stderr
    except (OSError, subprocess.TimeoutExpired) as err:
        child = f"(probe failed: {err})"
    return env.startup_log() + "\n" + child


def gpu_problem(gpus=None, build_info=None, log=None, environ=None):
    """None when TensorFlow lists a GPU, else the one-line cause (`diagnose`); the arguments default to
    this process's devices, build, loader log (`loader_log`, read only when no GPU is listed) and environment."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        return None
    return diagnose(dict(tf.sysconfig.get_build_info()) if build_info is None else build_info,
                    loader_log() if log is None else log, os.environ if environ is None else environ)


def require_gpu():
    """The GPUs TensorFlow lists; `GpuUnavailableError` naming the cause when there is none."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    problem = gpu_problem(gpus)
    if problem:
        raise GpuUnavailableError(f"a GPU was asked for (--use-gpu) but TensorFlow cannot use one: {problem}")
    return gpus


def choose_strategy(gpu_names, mirrored=None):
    """`MirroredStrategy(gpu_names)` for several GPUs (`mirrored` makes it; a fake in tests), else the
    default strategy (one device: TensorFlow places ops on the GPU when there is one)."""
    import tensorflow as tf

    names = list(gpu_names)
    if len(names) > 1:
        return (mirrored or tf.distribute.MirroredStrategy)(devices=names)
    return tf.distribute.get_strategy()


def in_process_strategy():
    """The strategy of an in-process run: mirrored over the visible GPUs when there are several."""
    import tensorflow as tf

    return choose_strategy([d.name for d in tf.config.list_logical_devices("GPU")])


def select_in_process(use_gpu):
    """The in-process meaning of `train --use-gpu / --no-gpu` (`use_gpu` True / False / None = auto), applied
    before any data is read or model built: True requires a GPU (`require_gpu`), False hides the GPUs from
    TensorFlow, None uses what is visible. Returns the number of GPUs the run will use."""
    import tensorflow as tf

    if use_gpu not in (None, True, False):
        raise ValueError(f"use_gpu must be True, False or None (auto); received use_gpu={use_gpu!r}")
    if use_gpu is False:
        if tf.config.list_physical_devices("GPU"):
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError as err:  # TensorFlow's runtime already started with the GPUs
                raise ValueError(f"use_gpu=False: this process already uses its GPUs ({err}); "
                                 f"run the training in a new process") from err
        return 0
    if use_gpu:
        return len(require_gpu())
    return len(tf.config.list_physical_devices("GPU"))
