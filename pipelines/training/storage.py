"""Where runs are kept (`--storage`): run folders, Ray checkpoints and results, Tune's reports and best model.

    storage.validate("s3://bucket/dynnets")        # a bucket URI: handed to Ray unchanged
    storage.validate("/mnt/shared/runs")           # a path every node mounts (a ReadWriteMany volume)
    storage.validate(None, default="runs")         # in-process and local-head runs: ./runs, made absolute

A path is made absolute here, on the machine that parses the command, so that a Ray job (whose working
directory is Ray's temporary copy of the repo) and every worker write to the same place. A bucket URI
(`s3://`, `gs://`, ...) is passed to `RunConfig(storage_path=...)` as given; the files this project writes
itself next to Ray's (run folders, `results.csv`, `pareto.*`, `best/`) are written to a local staging folder
and copied there with `pyarrow.fs` (`upload`).

`cluster_problem(storage)` says why a storage cannot serve a multi-node cluster (relative, or node-local
such as /tmp), for the refusals of `pipelines submit` and of drivers of a remote cluster.
"""
from __future__ import annotations

import os
import re
import tempfile

import pipelines  # noqa: F401

URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
# Node-local folders: a run kept there is lost to the other nodes (and with the node).
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")


def is_uri(storage):
    return bool(storage) and bool(URI.match(str(storage)))


def validate(storage, default=None, field="storage"):
    """`storage` (or `default` when None) as Ray takes it: a URI unchanged, a path absolute (~ expanded);
    ValueError naming `field` and the value for anything else. None stays None when `default` is None."""
    if storage is None:
        storage = default
        if storage is None:
            return None
    if not isinstance(storage, (str, os.PathLike)) or not str(storage).strip():
        raise ValueError(f"{field} must be a folder path or a bucket URI (s3://..., gs://...); "
                         f"received {field}={storage!r}")
    storage = str(storage).strip()
    if is_uri(storage):
        scheme = storage.split("://", 1)[0].lower()
        if scheme in ("http", "https", "sqlite", "postgresql", "file") or len(storage) <= len(scheme) + 3:
            raise ValueError(f"{field} must be a folder path or a bucket URI (s3://BUCKET/PATH, gs://BUCKET/PATH); "
                             f"received {field}={storage!r}")
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def cluster_problem(storage, given=None):
    """Why `storage` cannot hold a multi-node cluster's runs (None when it can): the option was not set
    (`given` is the value the user gave, None when it fell back to a default), it is relative, or node-local."""
    if given is None or storage is None:
        return "no --storage was given (the default runs/ is inside the job's copy of the repo on one node)"
    if is_uri(storage):
        return None
    if not os.path.isabs(str(given)) and not str(given).startswith("~"):
        return f"storage={given!r} is relative (it would resolve inside the job's copy of the repo)"
    path = os.path.abspath(os.path.expanduser(str(given)))
    local = next((p for p in NODE_LOCAL if path == p or path.startswith(p + "/")), None)
    if local:
        return f"storage={given!r} is under {local}, which every node has to itself"
    return None


def join(storage, *parts):
    if is_uri(storage):
        return "/".join([storage.rstrip("/"), *[str(p).strip("/") for p in parts]])
    return os.path.join(storage, *map(str, parts))


def staging(storage, local):
    """The local folder the project's own files of a run under `storage` are written to: `local` itself
    for a path, a fresh temporary folder for a URI (`upload` copies it there, then removes it)."""
    if is_uri(storage):
        return tempfile.mkdtemp(prefix="storage-")
    return local


def filesystem(uri):
    """`(pyarrow FileSystem, path inside it)` of a URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def upload(local_dir, dest, remove=True):
    """Copy the folder `local_dir` to `dest` (a URI; a path `dest` is `local_dir` itself: nothing to do)."""
    import shutil

    if not is_uri(dest) or local_dir is None:
        return
    import pyarrow.fs

    fs, path = filesystem(dest)
    fs.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(str(local_dir), path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)
    if remove:
        shutil.rmtree(local_dir, ignore_errors=True)


def download(storage, path, local_dir):
    """Copy folder `path` (as Ray reports it: inside `storage`'s filesystem, no scheme for a URI) to
    `local_dir`; for a path storage `path` is a local folder and is copied as it is."""
    import shutil

    if not is_uri(storage):
        shutil.copytree(path, local_dir, dirs_exist_ok=True)
        return
    import pyarrow.fs

    fs, _ = filesystem(storage)
    os.makedirs(local_dir, exist_ok=True)
    pyarrow.fs.copy_files(path, str(local_dir), source_filesystem=fs,
                          destination_filesystem=pyarrow.fs.LocalFileSystem())


def exists(storage, path):
    if not is_uri(storage):
        return os.path.exists(path)
    import pyarrow.fs

    fs, _ = filesystem(storage)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def fetch_file(uri, local_path):
    """Copy the file at `uri` to `local_path` when it exists there; returns whether it did."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return False
    with fs.open_input_stream(path) as src, open(local_path, "wb") as dst:
        dst.write(src.read())
    return True
