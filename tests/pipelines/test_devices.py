"""`--use-gpu` means the GPUs or one line naming why not; several GPUs in-process train under MirroredStrategy.

The causes are read from what TensorFlow says (`pipelines.training.devices.diagnose`): its build info, the
CUDA loader's messages and `CUDA_VISIBLE_DEVICES`; the loader lines below are TensorFlow 2.21's own.
"""

import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf

from pipelines.training import devices

CUDA_BUILD = {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}
GLOG = "W0000 00:00:1796029853.239679    2963 gpu_device.cc:2341] "


@pytest.mark.parametrize("build, log, environ, expected", [
    ({"is_cuda_build": False}, "", {}, "was built without GPU support; pip install 'tensorflow[and-cuda]=="),
    (CUDA_BUILD, "", {"CUDA_VISIBLE_DEVICES": "-1"}, "none visible: CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
    (CUDA_BUILD, "", {"CUDA_VISIBLE_DEVICES": ""}, "none visible: CUDA_VISIBLE_DEVICES=''"),
    (CUDA_BUILD, GLOG + "Cannot dlopen some GPU libraries. Please make sure the missing libraries mentioned above "
     "are installed properly", {}, "CUDA libraries missing (pip install 'tensorflow[and-cuda]=="),
    (CUDA_BUILD, "E0000 00:00:17.2   1 cuda_executor.cc:1228] failed call to cuInit: INTERNAL: CUDA error: "
     "Failed call to cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected", {},
     "none visible: the NVIDIA driver sees no GPU"),
    (CUDA_BUILD, "I0000 00:00:17.2   1 cuda_executor.cc:1015] Could not find cuda drivers on your machine, GPU "
     "will not be used.", {}, "no usable NVIDIA driver"),
    (CUDA_BUILD, "", {}, "none visible: TensorFlow lists no GPU and its loader logged no error"),
])
def test_the_cause_is_named_from_what_tensorflow_says(build, log, environ, expected):
    message = devices.diagnose(build, log, environ)
    assert expected in message
    assert "\n" not in message
    if log:
        assert "TensorFlow said: " in message and GLOG not in message  # the loader's words, not its prefix


def test_no_problem_when_a_gpu_is_listed():
    assert devices.gpu_problem(gpus=["/physical_device:GPU:0"]) is None


class FakeMirrored:
    def __init__(self, devices):
        self.devices = devices


def test_several_gpus_train_under_mirrored_strategy_one_under_the_default():
    two = devices.choose_strategy(["/device:GPU:0", "/device:GPU:1"], mirrored=FakeMirrored)
    assert isinstance(two, FakeMirrored) and two.devices == ["/device:GPU:0", "/device:GPU:1"]
    assert devices.choose_strategy(["/device:GPU:0"], mirrored=FakeMirrored) is tf.distribute.get_strategy()
    assert devices.choose_strategy([], mirrored=FakeMirrored) is tf.distribute.get_strategy()
    assert devices.in_process_strategy() is tf.distribute.get_strategy()  # this CPU machine


def test_use_gpu_must_be_true_false_or_auto():
    with pytest.raises(ValueError, match="use_gpu must be True, False or None"):
        devices.select_in_process("yes")


@pytest.mark.slow
@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="this machine has a GPU")
def test_train_use_gpu_without_a_gpu_is_one_line_naming_the_cause_before_any_data_is_read(cli, tmp_path):
    # a folder that does not exist: reading data first would fail on it instead
    done = cli("train", "--use-gpu", "--no-tracking", "--data", f"folder:{tmp_path / 'no-such-folder'}", "--out",
               tmp_path, "--epochs", "1")
    line = done.error_line()
    assert "Traceback" not in done.stderr
    assert line.startswith("error: a GPU was asked for (--use-gpu) but TensorFlow cannot use one: "), line
    assert any(cause in line for cause in ("built without GPU support", "driver", "CUDA libraries",
                                           "none visible")), line
    assert "no-such-folder" not in line and not list(tmp_path.iterdir())  # no data read, no run folder
