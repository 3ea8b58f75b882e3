"""A tracking server that is down or silent, stores MLflow refuses, and MLflow errors that are not "not found":
each is one line naming the tracking URI within seconds, never minutes of silence or a wrong "no such model"."""
import socket
import subprocess
import sys
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

from pipelines import tracking
from pipelines.mlops import promotions, registry
from tests.conftest import ROOT
from tests.integration.ports import free_port
from tests.integration.postgres_server import postgres_server  # noqa: F401  (fixture)


def test_a_closed_port_is_one_line_naming_the_uri_at_once():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable, match=rf"tracking server {uri} cannot be reached "
                                                           r"\(\[Errno 111\] Connection refused\)") as err:
        tracking.client(uri)
    assert time.monotonic() - start < tracking.CONNECT_TIMEOUT_S and "\n" not in str(err.value)


def test_a_server_that_never_answers_is_given_up_after_the_timeout(monkeypatch):
    """A socket that accepts connections (the kernel's backlog) but never answers: the request times out."""
    monkeypatch.setattr(tracking, "CONNECT_TIMEOUT_S", 2.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(tracking.TrackingUnavailable, match=rf"tracking server {uri} did not answer within 2 s"):
            tracking.configure(uri)
        assert 1.5 < time.monotonic() - start < 10


def test_cli_with_the_tracking_server_down_is_one_line_in_seconds():
    """Was: about 4 minutes of silent retries, then "no registered model" (every MlflowException read as
    not-found)."""
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pipelines", "history", "digits_net", "--tracking-uri", uri],
                         cwd=ROOT, capture_output=True, text=True, timeout=90)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: tracking server {uri} cannot be reached"), lines
    assert "no registered model" not in res.stderr
    assert time.monotonic() - start < 60  # a Python + MLflow start-up on a loaded machine; the wait itself is ~0


SERVER_DOWN = "API request to http://127.0.0.1:9/api/2.0/mlflow/... failed with exception ConnectionError"


class _Failing:
    """A client whose calls named in `on` raise MlflowException(`message`, `code`): by default what MLflow
    raises when the server cannot be reached (not a "not found")."""

    tracking_uri = "http://127.0.0.1:9"

    def __init__(self, code="INTERNAL_ERROR", on=(), message=SERVER_DOWN):
        self.code, self.on, self.message = code, on, message

    def _fail(self, *_, **__):
        raise MlflowException(self.message, error_code=ErrorCode.Value(self.code))

    def __getattr__(self, name):
        if name in self.on:
            return self._fail
        raise AttributeError(name)

    def get_registered_model(self, name):
        if "get_registered_model" in self.on:
            self._fail()
        return object()


def test_an_mlflow_error_is_not_read_as_a_missing_model_or_champion():
    with pytest.raises(MlflowException, match="failed with exception"):
        registry.get_version(_Failing(on=("get_registered_model",)), "digits_net")
    # an alias lookup that fails must not read as "no champion" (promote would then skip the champion gate)
    with pytest.raises(MlflowException, match="failed with exception"):
        registry.get_version(_Failing(on=("get_model_version_by_alias",)), "digits_net", alias="champion")
    with pytest.raises(MlflowException, match="failed with exception"):
        promotions.current_version(_Failing(on=("get_model_version_by_alias",)), "digits_net")
    # what MLflow answers for a missing model or alias still reads as missing
    with pytest.raises(ValueError, match="no registered model name='digits_net'"):
        registry.get_version(_Failing("RESOURCE_DOES_NOT_EXIST", on=("get_registered_model",)), "digits_net")
    missing_alias = _Failing("INVALID_PARAMETER_VALUE", on=("get_model_version_by_alias",),
                             message="Registered model alias champion not found.")
    assert registry.get_version(missing_alias, "digits_net", alias="champion") is None
    assert promotions.current_version(missing_alias, "digits_net") is None


@pytest.mark.parametrize("uri", ["file:/tmp/mlruns", "file:///tmp/mlruns", "/tmp/mlruns", "mysql://u@h/db"])
def test_stores_mlflow_cannot_open_are_refused_without_suggesting_them(uri):
    with pytest.raises(ValueError, match=r"is not a tracking URI; use http://HOST:PORT, sqlite:///PATH\.db or "
                                         r"postgresql://USER@HOST/DB$") as err:
        tracking.resolve_tracking_uri(uri)
    assert "file:" not in str(err.value).split("; use", 1)[1]


def test_postgresql_uri_uses_the_pinned_driver():
    assert tracking.resolve_tracking_uri("postgresql://u@h:5432/db") == "postgresql+psycopg2://u@h:5432/db"
    assert tracking.resolve_tracking_uri("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"


@pytest.mark.slow
def test_a_plain_postgresql_uri_works_against_a_real_server(postgres_server):  # noqa: F811
    """The project documents PostgreSQL; `postgresql://` failed with ModuleNotFoundError: psycopg."""
    uri = postgres_server.new_database("plainuri").replace("postgresql+psycopg2://", "postgresql://")
    client = tracking.client(uri)
    exp = client.create_experiment("plain-uri")
    assert client.get_experiment(exp).name == "plain-uri"
