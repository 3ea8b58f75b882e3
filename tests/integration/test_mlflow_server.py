"""platform/mlflow/server.sh: the basic-auth option really enforces credentials; bad settings fail fast."""
import base64
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.integration.mlflow_server import SCRIPT, free_port, running_server, server_env


def get(url, auth=None):
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_basic_auth_server_requires_credentials(tmp_path):
    password = "it-secret-0123456789"
    with running_server(tmp_path, MLFLOW_AUTH="1", MLFLOW_AUTH_ADMIN_PASSWORD=password,
                        MLFLOW_AUTH_DB=f"sqlite:///{tmp_path / 'auth.db'}") as uri:
        api = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
        assert get(api) == 401
        assert get(api, ("admin", "wrong")) == 401
        assert get(api, ("admin", password)) == 200
    assert (tmp_path / "auth.db").exists()
    assert not (tmp_path / "state" / "server.pid").exists()  # stopped


def test_auth_without_password_fails_before_starting(tmp_path):
    env = server_env(tmp_path, free_port(), MLFLOW_AUTH="1")
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    res = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in res.stderr
    assert not (tmp_path / "state" / "server.pid").exists()


def test_usage_message():
    res = subprocess.run([str(SCRIPT), "restart-everything"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "start|stop|status" in res.stderr
