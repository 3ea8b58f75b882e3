"""Ray job submission over the cluster's HTTP job API (`JobSubmissionClient`), for `submit` and `jobs`.

    submit(["tune", "--family", "basisnet", "--smoke-test"], address="http://HOST:8265")

The job runs `python -m pipelines ...` with the repo as working dir and `TF_USE_LEGACY_KERAS=1`.

Where its results go (`job_plan`, checked before anything is sent): the job's working dir is Ray's
temporary copy of the repo, deleted when the job ends, so nothing may resolve inside it. On a cluster on
this machine a `tune` / `train` job without `--storage` gets `--storage <--out made absolute here>` and a
relative `--resume` or SQLite store is made absolute here; a job on a remote cluster needs a `--storage`
every node reaches (a bucket URI or a shared mount; relative and node-local paths are refused) and a
tracking server its nodes reach (a SQLite store or a loopback URL is refused), each refusal one line naming
the option to set. `MLFLOW_TRACKING_URI` of the submitting shell is forwarded to the job (and `--env
KEY=VALUE`); the job's env vars are readable by whoever can read the job's info on the dashboard, so pass
credentials through the cluster's own secrets (e.g. a Kubernetes Secret as env), not `--env`.
Dependencies: on a cluster on this machine (127.0.0.1 / localhost) the job runs *this* interpreter,
whose virtualenv already has the pinned requirements; on a remote cluster the job runs the cluster's
`python`, i.e. the project image's packages (`platform/docker/Dockerfile`, `make image`). Nothing is
installed per node unless asked (`pip=True`, `submit --pip`): then `runtime_env.pip` = the runtime
requirements (`requirements.txt`; development tools such as pytest and linters are not in it).
"""
from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import urllib.parse

from pipelines.cluster import upload_check
from pipelines.training.distributed import EXCLUDES, ROOT, WORKER_ENV, use_local_token_auth

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
FORWARDED_ENV = ("MLFLOW_TRACKING_URI",)  # from the submitting shell to the job, unless --env sets them
STORAGE_COMMANDS = ("tune", "train")  # commands that keep runs (`--storage`)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClusterUnreachable(ValueError):
    """The job API at an address cannot be reached (one-line message naming it)."""


def check_address(address):
    parsed = urllib.parse.urlparse(address or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"address must be the job API URL http://HOST:8265; received address={address!r}")
    return address.rstrip("/")


def is_local(address):
    return urllib.parse.urlparse(address).hostname in LOCAL_HOSTS


def client(address):
    """A `JobSubmissionClient`, or `ClusterUnreachable` naming the address."""
    import logging

    from ray.job_submission import JobSubmissionClient

    address = check_address(address)
    logging.getLogger("ray").setLevel(logging.ERROR)
    use_local_token_auth()  # send ~/.ray/auth_token when the user chose no RAY_AUTH_MODE
    try:
        return JobSubmissionClient(address)
    except Exception as err:  # ConnectionError, timeouts, a non-Ray server, a missing auth token
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterUnreachable(f"cannot reach the Ray job API at address={address!r}: {reason[:160]}") from None


DEV_TOOLS = ("pytest", "ruff", "flake8", "pylint", "mypy", "black", "isort", "coverage")


def _pins(path):
    if not path.exists():
        return []
    lines = (l.split("#", 1)[0].strip() for l in path.read_text().splitlines())
    return [l for l in lines if l and not l.startswith("-")]  # no -r / -c / options


def _package(pin):
    return re.split(r"[\[=<>!~; ]", pin, maxsplit=1)[0].lower().replace("_", "-")


def pinned_requirements():
    """The runtime pins for a job's `runtime_env.pip`: `requirements.txt` without development tools (the
    packages of `requirements-dev.txt`, and test / lint tools by name)."""
    dev = {_package(p) for p in _pins(ROOT / "requirements-dev.txt")}
    return [p for p in _pins(ROOT / "requirements.txt")
            if _package(p) not in dev and not _package(p).startswith(DEV_TOOLS)]


def parse_env(items):
    """`["KEY=VALUE", ...]` (`--env`) as a dict; ValueError naming a malformed item."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not ENV_NAME.match(key):
            raise ValueError(f"--env expects KEY=VALUE with KEY a variable name; received env={item!r}")
        out[key] = value
    return out


def job_env(items=(), environ=None):
    """The variables the job gets on top of `WORKER_ENV`: `FORWARDED_ENV` from `environ` (default this
    process's) and `--env` items, which win."""
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in FORWARDED_ENV if environ.get(k)}
    env.update(parse_env(items))
    return env


def _set_flag(argv, flag, value):
    """`argv` with `flag VALUE` set (replaced where given as `flag V` or `flag=V`, else appended)."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == flag and i + 1 < len(out):
            out[i + 1] = value
            return out
        if a.startswith(flag + "="):
            out[i] = f"{flag}={value}"
            return out
    return out + [flag, value]


def job_plan(argv, command, address, env):
    """`(argv, env)` of the job with every place it writes resolved outside Ray's copy of the repo, or a
    one-line ValueError naming the option to set (module docstring). `command`: the parsed job command."""
    from pipelines import tracking
    from pipelines.training import storage
    from pipelines.training.tracked import absolute_store_uri

    argv, env = list(argv), dict(env)
    remote = not is_local(address)
    name = getattr(command, "command", None)
    resume = getattr(command, "resume", None)
    if name in STORAGE_COMMANDS:
        if resume:
            problem = storage.cluster_problem(storage.validate(resume, field="resume"), resume) if remote else None
            if problem:
                raise ValueError(f"a job on the remote cluster {address} resumes from the shared storage: "
                                 f"{problem.replace('storage=', 'resume=')}; pass --resume STORAGE/EXPERIMENT")
            argv = _set_flag(argv, "--resume", storage.validate(resume, field="resume"))
        elif remote:
            problem = storage.cluster_problem(storage.validate(command.storage), command.storage)
            if problem:
                raise ValueError(f"a job on the remote cluster {address} keeps its results only in a shared storage: "
                                 f"{problem}; set --storage s3://BUCKET/PATH, gs://BUCKET/PATH or a path every node mounts")
        elif command.storage is None:
            argv = _set_flag(argv, "--storage", os.path.abspath(command.out))
        else:
            argv = _set_flag(argv, "--storage", storage.validate(command.storage))
    if hasattr(command, "tracking_uri") and not getattr(command, "no_tracking", False):
        uri = command.tracking_uri or env.get("MLFLOW_TRACKING_URI")
        if remote:
            where = "--tracking-uri" if command.tracking_uri else "MLFLOW_TRACKING_URI"
            if uri is None:
                raise ValueError(f"a job on the remote cluster {address} needs a tracking server its nodes reach: "
                                 "set MLFLOW_TRACKING_URI=http://HOST:PORT (or --env MLFLOW_TRACKING_URI=..., or the "
                                 "command's --tracking-uri), or pass --no-tracking")
            uri = tracking.resolve_tracking_uri(uri)
            host = urllib.parse.urlparse(uri).hostname
            if uri.startswith("sqlite:") or host in LOCAL_HOSTS or (host or "").startswith("127."):
                raise ValueError(f"a job on the remote cluster {address} cannot use {where}={uri!r}: it is a store on "
                                 "this machine only; set it to a tracking server the cluster reaches (http://HOST:PORT)")
        elif command.tracking_uri:
            argv = _set_flag(argv, "--tracking-uri", absolute_store_uri(tracking.resolve_tracking_uri(uri)))
        else:  # the job's default store would be the SQLite file in Ray's copy of the repo: use this project's
            env["MLFLOW_TRACKING_URI"] = absolute_store_uri(tracking.resolve_tracking_uri(uri))
    return argv, env


def runtime_env(address, pip=None, env_vars=None):
    """The job's runtime env (see module docstring); pip installs the runtime requirements only when `pip`."""
    env = {"working_dir": str(ROOT), "excludes": upload_check.default_excludes(EXCLUDES),
           "env_vars": {**(env_vars or {}), **WORKER_ENV}}
    if pip:
        env["pip"] = {"packages": pinned_requirements(), "pip_check": False}
    return env


def entrypoint(argv, address):
    python = sys.executable if is_local(address) else "python"
    return " ".join([shlex.quote(python), "-m", "pipelines", *map(shlex.quote, argv)])


def submit(argv, address=DEFAULT_ADDRESS, pip=None, wait=True, out=print, max_upload_mb=upload_check.DEFAULT_MAX_MB,
           command=None, env=(), environ=None):
    """Submit `python -m pipelines ARGV`; stream its logs when `wait`. Returns `(job_id, final status)`.

    `command`: ARGV parsed (`pipelines.commands.submit.check_command`), for `job_plan`; `env`: `--env` items.
    The working dir is size-checked first (`pipelines.cluster.upload_check`): over `max_upload_mb` after the
    excludes, `UploadTooLarge` names the largest paths before the cluster is contacted."""
    check_address(address)
    variables = job_env(env, environ)
    if command is not None:
        argv, variables = job_plan(argv, command, address, variables)
    env = runtime_env(address, pip, variables)
    size = upload_check.check_working_dir(env["working_dir"], env["excludes"], int(max_upload_mb * (1 << 20)))
    c = client(address)
    out(f"uploading working dir {env['working_dir']} ({size / (1 << 20):.1f} MiB after excludes)")
    job_id = c.submit_job(entrypoint=entrypoint(argv, address), runtime_env=env,
                          metadata={"command": " ".join(argv), "submitted_by": "pipelines submit"})
    out(f"submitted job {job_id} to {address}: python -m pipelines {' '.join(argv)}")
    if not wait:
        return job_id, str(c.get_job_status(job_id))
    try:
        asyncio.run(_stream(c, job_id))
    except KeyboardInterrupt:
        out(f"stopped following job {job_id}; it keeps running "
            f"(python -m pipelines jobs --address {address} stop {job_id})")
        return job_id, "RUNNING"
    status = _final_status(c, job_id)
    info = c.get_job_info(job_id)
    out(f"job {job_id} {status}" + (f": {info.message}" if status != "SUCCEEDED" and info.message else ""))
    return job_id, status


async def _stream(c, job_id):
    async for chunk in c.tail_job_logs(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _final_status(c, job_id, timeout=30):
    import time

    deadline = time.time() + timeout
    status = str(c.get_job_status(job_id).value)
    while status not in FINAL and time.time() < deadline:
        time.sleep(0.5)
        status = str(c.get_job_status(job_id).value)
    return status


def list_jobs(address):
    rows = []
    for j in client(address).list_jobs():
        rows.append({"job_id": j.submission_id or j.job_id, "status": str(getattr(j.status, "value", j.status)),
                     "entrypoint": j.entrypoint, "start_time": j.start_time, "message": j.message or ""})
    return rows


def stop_job(address, job_id):
    c = client(address)
    try:
        return c.stop_job(job_id)
    except RuntimeError as err:
        raise ValueError(f"cannot stop job_id={job_id!r}: {str(err).splitlines()[0][:160]}") from None
