#!/usr/bin/env bash
# The GPU checks of issue 19, for a machine with an NVIDIA GPU (`make test-gpu`); < 8 minutes on one GPU.
# Exits non-zero when TensorFlow sees no GPU (the one-line cause), a family fails to train, or a loss is not
# finite. Prints the CondConv / static train-step ratios at batch 128 for the closing note.
#   tests/gpu/run_gpu_checks.sh            # everything
#   tests/gpu/run_gpu_checks.sh --quick    # fewer timing rounds
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not found or failed"
exec timeout 480 "$PY" -m tests.gpu.gpu_checks "$@"
