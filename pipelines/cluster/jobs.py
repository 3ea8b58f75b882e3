"""Ray job submission over the cluster's HTTP job API (`JobSubmissionClient`), for `submit` and `jobs`.

    submit(["tune", "--family", "basisnet", "--smoke-test"], address="http://HOST:8265")

The job runs `python -m pipelines ...` with the repo as working dir and `TF_USE_LEGACY_KERAS=1`.
Dependencies: on a cluster on this machine (127.0.0.1 / localhost) the job runs *this* interpreter,
whose virtualenv already has the pinned requirements, so nothing is installed; on a remote cluster the
job runs the cluster's `python` with `runtime_env.pip` = the pinned `requirements.txt` (pass
`pip=False` when the cluster's image already has them, as the project's Docker image does).
"""
from __future__ import annotations

import asyncio
import shlex
import sys
import urllib.parse

from pipelines.cluster import upload_check
from pipelines.training.distributed import EXCLUDES, ROOT, WORKER_ENV, use_local_token_auth

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


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


def pinned_requirements():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]


def runtime_env(address, pip=None):
    """The job's runtime env (see module docstring); `pip=None` decides from the address."""
    env = {"working_dir": str(ROOT), "excludes": upload_check.default_excludes(EXCLUDES), "env_vars": dict(WORKER_ENV)}
    if pip is None:
        pip = not is_local(address)
    if pip:
        env["pip"] = {"packages": pinned_requirements(), "pip_check": False}
    return env


def entrypoint(argv, address):
    python = sys.executable if is_local(address) else "python"
    return " ".join([shlex.quote(python), "-m", "pipelines", *map(shlex.quote, argv)])


def submit(argv, address=DEFAULT_ADDRESS, pip=None, wait=True, out=print, max_upload_mb=upload_check.DEFAULT_MAX_MB):
    """Submit `python -m pipelines ARGV`; stream its logs when `wait`. Returns `(job_id, final status)`.

    The working dir is size-checked first (`pipelines.cluster.upload_check`): over `max_upload_mb` after the
    excludes, `UploadTooLarge` names the largest paths before the cluster is contacted."""
    env = runtime_env(address, pip)
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
