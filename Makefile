# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1
# pytest-xdist workers for `make test` (a module, or a group of modules sharing servers, stays on one
# worker: see tests/conftest.py); TEST_WORKERS=0 runs the suite in this process, one test at a time.
TEST_WORKERS ?= 2
PYTEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)

# `postgres`: Debian's postgresql package for MLflow's PostgreSQL backend (tests/integration start a
# throwaway server with platform/mlflow/postgres.sh); a no-op when it is installed.
.PHONY: postgres install demo test test-extended test-multinode test-xla test-unit test-integration test-gpu bench clean cluster-up cluster-down mlflow-up mlflow-down image image-gpu image-tpu

install: $(VENV)/.installed

# requirements-dev.txt = the runtime pins (requirements.txt) + the test tools. `.venv/bin/pip install --no-deps -e .`
# adds the `dynnets` command (pyproject.toml); the two commands below do not need it. The installed modules
# are compiled to bytecode on every core after pip (pip compiles one file at a time; the tests run with
# PYTHONDONTWRITEBYTECODE, so a module left uncompiled would be compiled again in every process); a file
# that does not compile stays as pip would leave it.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements-dev.txt
	@$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	@touch $@

demo: install
	$(PY) -m pipelines demo

# `make test` is the suite a developer runs (goal <= 15 min on 2 cores from a fresh clone, .venv included;
# measured 13 min 15 s and 14 min 26 s on 2026-11-30; 6 min 45 s, 7 min 41 s and 7 min 0 s on a newer machine on 2026-12-01). It leaves out three kinds of test, each with its own target:
# - `extended` (`make test-extended`; CI runs it after `make test`): the Ray fault paths (a
#   killed worker, an interrupted search, a NaN trial), every family's recipe under a 2-replica strategy,
#   every model learning digits (CondConv's routers too), bf16 training, two models under XLA, the
#   PostgreSQL run of the MLflow stories whose steps do not depend on the store (the promotion lock and
#   concurrent promotions run on both in `make test`), the paper-preset train command of the families
#   beyond one, and the end-to-end runs of basisnet-eval, slimmable-eval and the multi-exit experiment
#   (`make test` runs condconv-eval end to end);
# - the 2-node Ray cluster tests (`make test-multinode`, 6 min on 2 quiet cores, 2026-11-30);
# - the XLA compile of every family beyond those two models (`make test-xla`, 5-20 min).
test: install postgres
	$(PY) -m pytest -q $(PYTEST_PAR) -m "not extended and not multinode and not xla_sweep" tests

test-extended: install postgres
	$(PY) -m pytest -q $(PYTEST_PAR) -m "extended" tests

test-xla: install
	$(PY) -m pytest -q $(PYTEST_PAR) -m xla_sweep tests/pipelines/test_precision_xla.py

test-multinode: install postgres
	$(PY) -m pytest -q -p no:xdist -m multinode tests/integration/test_ray_multinode.py

test-unit: install
	$(PY) -m pytest -q $(PYTEST_PAR) -m "not extended and not xla_sweep" tests --ignore=tests/integration

test-integration: install postgres
	$(PY) -m pytest -q $(PYTEST_PAR) -m "not extended and not multinode" tests/integration

# On a machine with an NVIDIA GPU: every family 1 epoch in bf16 / fp16, CondConv vs static timings (< 8 min).
test-gpu: install
	PY=$(PY) tests/gpu/run_gpu_checks.sh

# `make bench BENCH_ARGS="--quick kernel_mixing"`: fewer rounds, one benchmark.
BENCH_ARGS ?=
bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)

postgres:
	bash platform/mlflow/postgres.sh install

mlflow-up:
	platform/mlflow/server.sh start

mlflow-down:
	platform/mlflow/server.sh stop

clean:
	rm -rf runs .pytest_cache

# A local Ray head (dashboard / job API on http://127.0.0.1:8265); see platform/ray/start-head.sh.
cluster-up: install
	platform/ray/start-head.sh

cluster-down:
	platform/ray/stop-head.sh

# The project image every cluster node runs (platform/docker/Dockerfile: Ray 2.60 + the runtime requirements.txt
# + the packages at /app), so jobs install nothing per node. IMAGE=registry/name pushes somewhere else.
IMAGE ?= dynnets/platform
image:
	docker build -f platform/docker/Dockerfile -t $(IMAGE):latest .

image-gpu:
	docker build -f platform/docker/Dockerfile --build-arg BASE=rayproject/ray:2.60.0-py311-gpu --build-arg ACCELERATOR=gpu -t $(IMAGE):latest-gpu .

# TPU VM pods (platform/kubernetes/raycluster-tpu.yaml): tensorflow-tpu at the pinned TensorFlow version.
image-tpu:
	docker build -f platform/docker/Dockerfile --build-arg ACCELERATOR=tpu -t $(IMAGE):latest-tpu .
