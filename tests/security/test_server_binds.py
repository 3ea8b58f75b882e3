"""The servers the platform starts, checked with the listening sockets of their own processes (psutil):
a Ray head from `platform/ray/start-head.sh` (with a driver running a task, so workers listen too) and an
MLflow server from `platform/mlflow/server.sh`. Each is stopped by its own process group (never `ray stop`)."""
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tests.integration.mlflow_server import SCRIPT as MLFLOW_SCRIPT
from tests.integration.mlflow_server import running_server, server_env
from tests.integration.ports import free_ports, worker_port_range
from tests.integration.postgres_server import postgres_server  # noqa: F401  (fixture)

START = ROOT / "platform" / "ray" / "start-head.sh"
STOP = ROOT / "platform" / "ray" / "stop-head.sh"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
pytestmark = pytest.mark.slow


def listening(procs):
    """{(process name, ip, port)} of the LISTEN sockets of `procs` (psutil processes)."""
    out = set()
    for p in procs:
        try:
            name = p.name()
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((name, c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return out


def group_of(pid):
    """The processes of process group `pid` and the descendants of `pid`."""
    procs = {}
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pid:
                procs[p.pid] = p
        except (ProcessLookupError, psutil.Error):
            continue
    try:
        root = psutil.Process(pid)
        procs.update({c.pid: c for c in [root, *root.children(recursive=True)]})
    except psutil.Error:
        pass
    return list(procs.values())


def head_env(tmp_path, **extra):
    """start-head.sh settings with every port free, state and HOME (so ~/.ray) inside `tmp_path`."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    port, dash, client, agent, metrics, node, objects, agent_grpc, runtime_env = free_ports(9)
    low, high = worker_port_range()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(HOME=str(home), PY=sys.executable, RAY_STATE_DIR=str(tmp_path / "state"), RAY_PORT=str(port),
               RAY_DASHBOARD_PORT=str(dash), RAY_NUM_CPUS="1", RAY_NUM_GPUS="0", RAY_START_ARGS=(
                   f"--ray-client-server-port={client} --dashboard-agent-listen-port={agent} "
                   f"--metrics-export-port={metrics} --node-manager-port={node} --object-manager-port={objects} "
                   f"--dashboard-agent-grpc-port={agent_grpc} --runtime-env-agent-port={runtime_env} "
                   f"--min-worker-port={low} --max-worker-port={high} --object-store-memory=100000000"))
    env.update(extra)
    return env


DRIVER = """
import sys
import ray
ray.init()
@ray.remote
class Hold:
    def ping(self):
        return 1
hold = Hold.remote()
ray.get(hold.ping.remote())
print("running", ray.util.get_node_ip_address(), flush=True)
sys.stdin.readline()
"""


def test_ray_head_listens_on_loopback_only_with_token_auth(tmp_path):
    """Every socket the head, its workers and a driver on this machine listen on is a loopback one; token
    auth is on with a 0600 token (a fresh HOME: Ray 2.60 alone starts without auth); the temp dir is the
    head's own, in a private folder."""
    env = head_env(tmp_path)
    state = tmp_path / "state"
    res = subprocess.run([str(START)], env=env, capture_output=True, text=True, timeout=300)
    driver = None
    temp = Path((state / "temp_dir").read_text().strip()) if (state / "temp_dir").exists() else None
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        pid = int((state / "head.pid").read_text())
        token = tmp_path / "home" / ".ray" / "auth_token"
        assert token.is_file() and stat.S_IMODE(token.stat().st_mode) == 0o600
        dash = f"http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}/api/version"
        with pytest.raises(urllib.error.HTTPError, match="401"):  # no token, no answer
            urllib.request.urlopen(dash, timeout=30)
        assert temp is not None and temp.name.startswith("ray-head-") and stat.S_IMODE(temp.stat().st_mode) == 0o700
        assert list((temp / "t").glob("session_*")), "the head's session lives in its own temp dir"
        # a driver on this machine, with the settings the script wrote, runs a task: workers listen too
        driver = subprocess.Popen(["bash", "-c", f". {state / 'env'} && exec {sys.executable} -c '{DRIVER}'"],
                                  env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = driver.stdout.readline()
        deadline = time.time() + 180
        while not line.startswith("running") and driver.poll() is None and time.time() < deadline:
            line = driver.stdout.readline()
        assert line.startswith("running 127.0.0.1"), line + (driver.stdout.read() if driver.poll() is not None else "")
        socks = listening(group_of(pid) + [psutil.Process(driver.pid)])
        ports = {port for _, _, port in socks}
        assert int(env["RAY_PORT"]) in ports and int(env["RAY_DASHBOARD_PORT"]) in ports
        assert any(name.startswith("ray::Hold") for name, _, _ in socks), sorted(socks)  # the actor's worker
        open_to_the_network = sorted(s for s in socks if s[1] not in LOOPBACK)
        assert not open_to_the_network, open_to_the_network
    finally:
        if driver is not None:
            driver.kill()
            driver.wait(30)
        subprocess.run([str(STOP)], env=env, capture_output=True, timeout=120)
    assert not (state / "head.pid").exists() and not (state / "env").exists()
    assert not temp.exists()  # stop-head.sh removed the head's temp dir


def test_ray_token_file_is_made_private_and_each_head_gets_its_own_temp_dir(tmp_path):
    """Without starting Ray (a `ray` that does not exist): an existing world-readable token file (as Ray
    writes it) becomes 0600 before the head starts, and two heads get two private temp dirs."""
    temps = []
    for i in range(2):
        d = tmp_path / f"h{i}"
        d.mkdir()
        token = d / "home" / ".ray" / "auth_token"
        token.parent.mkdir(parents=True)
        token.write_text("f" * 64)
        token.chmod(0o644)
        env = head_env(d, PY="/nonexistent/bin/python")
        res = subprocess.run([str(START)], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "ray start failed" in res.stderr, res.stdout + res.stderr
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        temps.append(Path((d / "state" / "temp_dir").read_text().strip()))
        assert stat.S_IMODE(temps[-1].stat().st_mode) == 0o700
        subprocess.run([str(STOP)], env=env, capture_output=True, timeout=60)
        assert not temps[-1].exists()
    assert temps[0] != temps[1]


def test_ray_head_refuses_to_start_without_token_auth(tmp_path):
    env = head_env(tmp_path, RAY_AUTH_MODE="disabled", PY="/nonexistent/bin/python")
    res = subprocess.run([str(START)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "RAY_AUTH_MODE=disabled" in res.stderr
    assert not (tmp_path / "state" / "head.pid").exists()


def test_mlflow_server_listens_on_loopback_only_on_a_plain_postgresql_uri(tmp_path, postgres_server):  # noqa: F811
    """server.sh binds 127.0.0.1 (its own processes' sockets say so), and takes the documented
    `postgresql://` backend URI (it failed with ModuleNotFoundError: psycopg)."""
    from pipelines import tracking

    backend = postgres_server.new_database("plainserver").replace("postgresql+psycopg2://", "postgresql://")
    with running_server(tmp_path, MLFLOW_BACKEND_STORE_URI=backend) as uri:
        pid = int((tmp_path / "state" / "server.pid").read_text())
        socks = listening(group_of(pid))
        assert int(uri.rsplit(":", 1)[1]) in {port for _, _, port in socks}
        assert not [s for s in socks if s[1] not in LOOPBACK], sorted(socks)
        client = tracking.client(uri)
        assert client.get_experiment(client.create_experiment("on-postgres")).name == "on-postgres"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_mlflow_host_off_loopback_is_refused_without_auth(tmp_path, host):
    """MLFLOW_HOST other than loopback without MLFLOW_AUTH=1 fails before anything starts (the backend
    store here is not one MLflow can open either, so no server ever listens: the refusal must come first)."""
    env = server_env(tmp_path, free_ports(1)[0], MLFLOW_HOST=host, MLFLOW_BACKEND_STORE_URI="nonsense://",
                     MLFLOW_START_TIMEOUT="60")
    try:
        res = subprocess.run([str(MLFLOW_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        assert f"MLFLOW_HOST={host}" in res.stderr and "MLFLOW_AUTH=1" in res.stderr
        assert not (tmp_path / "state" / "server.pid").exists()
    finally:
        subprocess.run([str(MLFLOW_SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
