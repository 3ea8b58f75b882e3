"""A real Ray head on 127.0.0.1 for the integration tests (`ray start --head`), shut down afterwards.

Every server of the head listens on 127.0.0.1 (`--node-ip-address=127.0.0.1` with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, as `platform/ray/start-head.sh` starts it; its drivers set the same,
`pipelines.training.distributed.keep_loopback`), and every RPC needs this head's own auth token.

Every port is picked free, the head has its own `--temp-dir`, and it is stopped by signalling the
process group it was started in: never `ray stop`, which would stop every Ray on the machine.
Test modules import the fixture: `from tests.integration.ray_cluster import ray_head  # noqa: F401`.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.ports import free_ports, worker_port_range

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


@dataclasses.dataclass
class RayHead:
    address: str  # GCS address for ray.init / RAY_ADDRESS
    dashboard: str  # http://127.0.0.1:PORT (job submission API)
    temp_dir: str
    proc: subprocess.Popen
    token: str

    def env(self, **extra):
        """Environment for a child process that should use this head."""
        env = dict(os.environ, RAY_ADDRESS=self.address, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=str(ROOT), RAY_DEDUP_LOGS="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        env.update(extra)
        return env

    def processes(self, name):
        """psutil processes started by this head (its descendants) whose command line contains `name`."""
        import psutil

        found = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if name in " ".join(p.cmdline()):
                    found.append(p)
            except psutil.Error:
                continue
        return found


@dataclasses.dataclass
class RayNode:
    """A worker node joined to a head (`ray start --address HEAD --block`), in its own process group."""

    temp_dir: str
    proc: subprocess.Popen
    resource: str  # a custom resource only this node has (e.g. to pin work to it)


def start_head(num_cpus=4, timeout=120) -> RayHead:
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash, client, node, objects, agent, agent_grpc, metrics, runtime_env = free_ports(9)
    low, high = worker_port_range()
    args = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
            f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={temp_dir}",
            f"--ray-client-server-port={client}", f"--node-manager-port={node}",
            f"--object-manager-port={objects}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}", f"--min-worker-port={low}", f"--max-worker-port={high}",
            "--object-store-memory=400000000", "--disable-usage-stats"]
    token = secrets.token_hex(32)  # Ray 2.60 token auth, with a token of this head only (not ~/.ray/auth_token)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT),
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # keep 127.0.0.1 (see the module docstring)
               # Ray Train's PlacementGroupCleaner finds "its" cluster by auto-detection, which fails when
               # other Ray instances run on the machine: name it for every process of this head.
               RAY_ADDRESS=f"127.0.0.1:{port}")
    log = open(Path(temp_dir) / "head.log", "w")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp_dir, proc, token)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited {proc.returncode}: {Path(temp_dir, 'head.log').read_text()[-2000:]}")
        try:  # the job API answers (401 too: Ray 2.60 enables token auth; clients read ~/.ray/auth_token)
            with urllib.request.urlopen(f"{head.dashboard}/api/version", timeout=2):
                return head
        except urllib.error.HTTPError:
            return head
        except Exception:
            time.sleep(1)
    stop_head(head)
    raise RuntimeError(f"Ray head did not come up in {timeout}s")


# `ray start --address` on 127.0.0.1. Ray refuses to join a node while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the
# variable that keeps the head on loopback, see the module docstring), and with it =1 rewrites the node address
# 127.0.0.1 to the machine's address. So the worker node runs with =1 and `ray start` keeps the address it is
# given: every process of that node registers and listens on 127.0.0.1, like the head's.
JOIN_ON_LOOPBACK = ("import sys; import ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
                    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")


def start_worker_node(head: RayHead, num_cpus=2, resource="worker_node", timeout=120) -> RayNode:
    """Join a worker node to `head`: its own ports, `--temp-dir` and process group, `num_cpus` CPUs and one
    unit of the custom resource `resource`. Returns once the head lists the node as alive."""
    import json

    temp_dir = tempfile.mkdtemp(prefix="rw-", dir="/tmp")
    node, objects, agent, agent_grpc, metrics, runtime_env = free_ports(6)
    low, high = worker_port_range()
    args = [sys.executable, "-c", JOIN_ON_LOOPBACK, "start", "--address", head.address, "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}", "--num-gpus=0", f"--resources={json.dumps({resource: 1})}",
            f"--temp-dir={temp_dir}", f"--node-manager-port={node}", f"--object-manager-port={objects}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--min-worker-port={low}", f"--max-worker-port={high}", "--object-store-memory=300000000",
            "--disable-usage-stats"]
    log = open(Path(temp_dir) / "node.log", "w")
    proc = subprocess.Popen(args, cwd=ROOT, env=head.env(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1"),
                            stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    worker = RayNode(temp_dir, proc, resource)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start --address exited {proc.returncode}: "
                               f"{Path(temp_dir, 'node.log').read_text()[-2000:]}")
        if resource in alive_resources(head):
            return worker
        time.sleep(1)
    stop_head(worker)
    raise RuntimeError(f"the worker node did not join {head.address} in {timeout}s")


def alive_nodes(head: RayHead):
    """{node id: total resources} of the head's alive nodes (Ray's state API, from the GCS, over the dashboard;
    its per-host node summary would merge two nodes of one machine)."""
    import json

    req = urllib.request.Request(f"{head.dashboard}/api/v0/nodes?detail=1&limit=1000",
                                 headers={"Authorization": f"Bearer {head.token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            nodes = json.loads(r.read())["data"]["result"]["result"]
    except Exception:
        return {}
    return {n["node_id"]: dict(n.get("resources_total") or {}) for n in nodes if n.get("state") == "ALIVE"}


def alive_resources(head: RayHead):
    """The total resources of the head's alive nodes."""
    total = {}
    for resources in alive_nodes(head).values():
        for k, v in resources.items():
            total[k] = total.get(k, 0) + v
    return total


def stop_head(head, timeout=10):
    """Stop a head or a worker node by its own process group (never `ray stop`)."""
    try:
        pgid = os.getpgid(head.proc.pid)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGTERM)  # only the group this fixture started
    try:
        head.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")  # one head for the Ray modules (they run on one xdist worker)
def ray_head():
    head = start_head()
    try:
        yield head
    finally:
        stop_head(head)


def run_cli(head, *args, timeout=300, **popen):
    """`python -m pipelines ARGS` against `head`; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=ROOT, env=head.env(), capture_output=True,
                          text=True, timeout=timeout, **popen)


class PoisonWeights:
    """Callback factory for `fit_distributed(callbacks=...)` / `pipelines.tuning.tune.run(callbacks=...)`: sets
    one kernel to NaN at the start of epoch `epoch` (0-based), so that epoch's loss is NaN. Lives here
    (not in a test module) so Ray workers can import it: the repo is their working_dir."""

    def __init__(self, epoch=0):
        self.epoch = epoch

    def __call__(self, ctx):
        from keras_layers import env  # noqa: F401
        import tf_keras as keras

        target = self.epoch

        class _Poison(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == target:
                    w = self.model.net.trainable_weights[0]
                    w.assign(w * float("nan"))

        return _Poison()


def validation_accuracy(model_path, image_size, limit):
    """Top-1 accuracy of a saved model (`.keras`) on the digits validation split (its first `limit` examples)."""
    import numpy as np

    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    from keras_layers import models
    from pipelines import data

    models.names()  # registers every family's layers for loading
    net = keras.models.load_model(model_path, compile=False)
    images, labels, _ = data.as_numpy("digits", "validation", image_size=image_size, limit=limit)
    return float(np.mean(np.argmax(net.predict(images, verbose=0), -1) == labels.reshape(-1)))
