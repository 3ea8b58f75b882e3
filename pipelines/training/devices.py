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
driver error; CUDA libraries missing; the driver sees no GPU. A Ray Train worker that reserved a GPU
checks with `require_worker_gpu` before it builds the net (the GPU Ray gave it is `CUDA_VISIBLE_DEVICES`);
the driver turns a worker's failure back into the worker's one line (`worker_failure`).

    devices.resolve_accelerator("tpu", use_gpu=None)   # --accelerator cpu|gpu|tpu; --use-gpu = gpu, --no-gpu = cpu
    devices.require_tpu()                              # TPU chips and libtpu here, or TpuUnavailableError (one line)
    devices.startable(node_types, "GPU")               # GPUs the autoscaler can start (node types x max count)
"""
from __future__ import annotations

import glob
import importlib.util
import math
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


ACCELERATORS = ("cpu", "gpu", "tpu")


class GpuUnavailableError(RuntimeError):
    """A GPU was asked for and TensorFlow cannot use one; the message names the cause in one line."""


class TpuUnavailableError(RuntimeError):
    """A TPU was asked for and this machine has none TensorFlow can use; the message names the cause in one line."""


def resolve_accelerator(accelerator=None, use_gpu=None):
    """The accelerator of a run: "cpu", "gpu", "tpu" or None (auto: GPUs when there are any) from
    `--accelerator` and its older spelling `--use-gpu` (= "gpu") / `--no-gpu` (= "cpu"); both given must agree."""
    if accelerator is not None and accelerator not in ACCELERATORS:
        raise ValueError(f"unknown accelerator={accelerator!r}; valid choices: {', '.join(ACCELERATORS)}")
    if use_gpu not in (None, True, False):
        raise ValueError(f"use_gpu must be True, False or None (auto); received use_gpu={use_gpu!r}")
    alias = None if use_gpu is None else ("gpu" if use_gpu else "cpu")
    if accelerator is not None and alias is not None and alias != accelerator:
        raise ValueError(f"accelerator={accelerator!r} contradicts use_gpu={use_gpu!r} (--use-gpu means "
                         f"--accelerator gpu, --no-gpu means --accelerator cpu)")
    return accelerator or alias


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


def require_worker_gpu(environ=None, gpus=None, build_info=None, log=None):
    """On a Ray Train worker that reserved a GPU, before the net is built: the GPUs TensorFlow lists, or
    `GpuUnavailableError` with one line naming the GPU Ray reserved (`CUDA_VISIBLE_DEVICES`, which Ray sets
    for the worker) and the cause (`diagnose`: build, driver, CUDA libraries, none visible). The arguments
    default to this process's (see `gpu_problem`)."""
    import tensorflow as tf

    environ = os.environ if environ is None else environ
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    problem = gpu_problem(gpus, build_info, log, environ)
    if problem:
        reserved = environ.get("CUDA_VISIBLE_DEVICES")
        where = f"CUDA_VISIBLE_DEVICES={reserved!r}" if reserved is not None else "CUDA_VISIBLE_DEVICES not set"
        raise GpuUnavailableError(f"a Ray Train worker reserved a GPU ({where}) but TensorFlow cannot use it: "
                                  f"{problem}")
    return gpus


# the one line a worker raised, inside the text of Ray's TrainingFailedError (worker tracebacks included)
_WORKER_LINE = re.compile(r"(GpuUnavailableError|TpuUnavailableError): (.+)")


def worker_failure(err):
    """`GpuUnavailableError` / `TpuUnavailableError` with the one line a Ray Train worker raised, found in
    the error Ray's `trainer.fit()` raised (`WorkerGroupError.worker_failures`, its text, its causes); None when
    the failure was something else."""
    todo, seen = [err], set()
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, (GpuUnavailableError, TpuUnavailableError)):
            return type(err)(str(err).strip().splitlines()[0])
        todo.extend((getattr(err, "worker_failures", None) or {}).values())
        match = _WORKER_LINE.search(str(err))
        if match:
            kind = TpuUnavailableError if match.group(1) == "TpuUnavailableError" else GpuUnavailableError
            return kind(match.group(2).strip())
        todo.extend([err.__cause__, err.__context__])
    return None


# ----------------------------------------------------------------------------- TPU

TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")  # TPU VM chips (v2-v4: accel, v5e/v5p/v6e: vfio)


def tpu_problem(device_files=None, has_libtpu=None):
    """None when this machine has TPU chips and the TPU runtime (libtpu) TensorFlow needs, else the cause in
    one line. The arguments default to this machine's device files and installed packages."""
    import tensorflow as tf

    if device_files is None:
        device_files = sorted(f for pattern in TPU_DEVICE_GLOBS for f in glob.glob(pattern))
    if not device_files:
        return "no TPU chips on this machine (no /dev/accel* or /dev/vfio/* device; run on a TPU VM)"
    if has_libtpu is None:
        has_libtpu = importlib.util.find_spec("libtpu") is not None
    if not has_libtpu:
        return (f"TPU runtime missing: libtpu is not installed (pip install 'tensorflow-tpu=={tf.__version__}' "
                f"-f https://storage.googleapis.com/libtpu-tf-releases/index.html)")
    return None


def require_tpu(device_files=None, has_libtpu=None):
    """`TpuUnavailableError` (one line naming the cause) unless this machine has a TPU TensorFlow can use."""
    problem = tpu_problem(device_files, has_libtpu)
    if problem:
        raise TpuUnavailableError(f"a TPU was asked for (--accelerator tpu) but TensorFlow cannot use one: {problem}")


def tpu_strategy():
    """`TPUStrategy` over this TPU VM's chips (`TPUClusterResolver(tpu="local")`, the TPU system initialized)."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


# ----------------------------------------------------------------------------- what a cluster can start

def node_types(description):
    """The node types of a cluster as `[{"name", "resources", "max_count"}]` from either Ray's autoscaler
    cluster config (the `ClusterConfig` message the autoscaler writes to the GCS: `node_group_configs`) or an
    autoscaler yaml's `available_node_types` mapping (`{name: {"resources": {...}, "max_workers": n}}`).
    `max_count` -1 means unbounded."""
    if description is None:
        return []
    if isinstance(description, dict):
        return [{"name": name, "resources": dict(t.get("resources") or {}),
                 "max_count": int(t.get("max_workers", t.get("max_count", 0)))} for name, t in description.items()]
    return [{"name": g.name, "resources": dict(g.resources), "max_count": int(g.max_count)}
            for g in description.node_group_configs]


def startable(types, resource="GPU"):
    """How many units of `resource` ("GPU", "TPU") the node types `types` (`node_types`) can bring up at
    most: resources per node x the type's maximum node count, summed (math.inf for an unbounded type)."""
    total = 0
    for t in types:
        per_node = float(t["resources"].get(resource, 0) or 0)
        if per_node <= 0 or t["max_count"] == 0:
            continue
        if t["max_count"] < 0:
            return math.inf
        total += per_node * t["max_count"]
    return total


BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # the autoscaler yaml `ray up` leaves on a VM cluster's head


def autoscaler_node_types(bootstrap=BOOTSTRAP_CONFIG):
    """The node types the connected cluster's autoscaler can start (`node_types`): the cluster config an
    autoscaler reports to the GCS (as Ray Train reads it), else the autoscaler yaml `ray up` left on this
    node (a job's driver runs on the head); [] for a fixed cluster."""
    try:
        from ray._private import state

        config = state.state.get_cluster_config()
    except Exception:  # a Ray without the cluster-config key, or no GCS access
        config = None
    types = node_types(config)
    if types:
        return types
    path = os.path.expanduser(bootstrap)
    if os.path.isfile(path):
        import yaml

        with open(path) as f:
            return node_types((yaml.safe_load(f) or {}).get("available_node_types"))
    return []


def cluster_capacity(resource="GPU"):
    """`resource` units the connected Ray cluster has now or its autoscaler can start
    (`autoscaler_node_types`): the shipped clusters' GPU groups start at 0 nodes."""
    import ray

    return max(ray.cluster_resources().get(resource, 0), startable(autoscaler_node_types(), resource))


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


def strategy_for(accelerator):
    """The strategy of an in-process run on `accelerator`: `TPUStrategy` on a TPU VM, else
    `in_process_strategy` (mirrored over several GPUs)."""
    return tpu_strategy() if accelerator == "tpu" else in_process_strategy()


def select_in_process(use_gpu):
    """The in-process meaning of `train --accelerator cpu|gpu|tpu` (or `--use-gpu / --no-gpu`: `use_gpu`
    True / False / None = auto), applied before any data is read or model built: "gpu" (True) requires a GPU
    (`require_gpu`), "tpu" a TPU (`require_tpu`), "cpu" (False) hides the GPUs from TensorFlow, None uses
    what is visible. Returns the number of GPUs the run will use."""
    import tensorflow as tf

    use_gpu = {"gpu": True, "cpu": False}.get(use_gpu, use_gpu)
    if use_gpu == "tpu":
        require_tpu()
        return 0
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
