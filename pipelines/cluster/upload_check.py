"""What a Ray job uploads as its working dir, checked before anything is sent.

    excludes = default_excludes()                          # .git, .venv, runs, mlruns, data caches, bundles, ...
    check_working_dir(ROOT, excludes, max_bytes=100 << 20)  # UploadTooLarge names the largest paths

Ray zips the working dir (minus `excludes`, `.gitignore` and `.rayignore` patterns) and uploads it to
the cluster's GCS; past its gRPC limit the upload fails with a generic error, after zipping
everything. This walks the same tree with the same gitwildmatch rules (Ray's own PathSpec) and
refuses, in one line naming the largest files and folders, before the cluster is touched.
"""
from __future__ import annotations

import os
from pathlib import Path

# Never shipped: VCS and environments, run outputs and tracking stores, data caches, exported bundles.
DEFAULT_EXCLUDES = (
    ".git/", ".venv/", "venv/", "__pycache__/", ".pytest_cache/", ".mypy_cache/", ".ipynb_checkpoints/",
    "runs/", "mlruns/", "mlartifacts/", "mlruns.db", "mlflow_auth.db", ".mlflow/", "ray_results/",
    "data/", "datasets/", "tensorflow_datasets/", ".cache/", "bundle/", "bundles/",
    "*.keras", "*.tflite", "*.h5", "*.ckpt*", "*.tfrecord*",
)
DEFAULT_MAX_MB = 100  # Ray warns from half its gRPC limit; a job working dir is code: 100 MiB is plenty


class UploadTooLarge(ValueError):
    """The working dir (after excludes) is over the budget; the message names the largest paths."""


def default_excludes(extra=()):
    """DEFAULT_EXCLUDES plus `extra` patterns, without duplicates, in order."""
    out = []
    for p in (*DEFAULT_EXCLUDES, *extra):
        if p not in out:
            out.append(p)
    return out


def _matcher(root, patterns):
    from ray._private.thirdparty.pathspec import PathSpec

    spec = PathSpec.from_lines("gitwildmatch", list(patterns))

    def match(path):
        rel = os.path.relpath(path, root)
        return spec.match_file(rel) or (os.path.isdir(path) and spec.match_file(rel + "/"))

    return match


def _ignore_file_patterns(directory, include_gitignore):
    out = []
    for name in ((".gitignore",) if include_gitignore else ()) + (".rayignore",):
        f = Path(directory) / name
        if f.is_file():
            out.append(_matcher(directory, [l for l in f.read_text().splitlines() if l.strip() and not l.startswith("#")]))
    return out


def scan(root, excludes=DEFAULT_EXCLUDES, include_gitignore=True):
    """Bytes that would be uploaded: `(total, files, top_dirs)` with `files` = {relative path: bytes}
    and `top_dirs` = {first path component: bytes}. Symlinks are not followed (as Ray's zip)."""
    root = os.path.abspath(root)
    rules = [_matcher(root, excludes)]
    files, top = {}, {}

    def walk(directory, rules):
        rules = rules + _ignore_file_patterns(directory, include_gitignore)
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for e in entries:
            if any(r(e.path) for r in rules):
                continue
            if e.is_dir(follow_symlinks=False):
                walk(e.path, rules)
            elif e.is_file(follow_symlinks=False):
                size = e.stat(follow_symlinks=False).st_size
                rel = os.path.relpath(e.path, root)
                files[rel] = size
                head = rel.split(os.sep, 1)[0] + ("/" if os.sep in rel else "")
                top[head] = top.get(head, 0) + size

    walk(root, rules)
    return sum(files.values()), files, top


def _mb(n):
    return f"{n / (1 << 20):.1f} MiB"


def check_working_dir(root, excludes=DEFAULT_EXCLUDES, max_bytes=DEFAULT_MAX_MB << 20, include_gitignore=True, top=3):
    """Raise UploadTooLarge (one line, naming the largest paths) when `root` minus `excludes` is over
    `max_bytes`; returns the total bytes otherwise."""
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max upload size must be > 0 bytes; received max_bytes={max_bytes!r}")
    total, files, dirs = scan(root, excludes, include_gitignore)
    if total <= max_bytes:
        return total
    biggest_dirs = sorted(dirs.items(), key=lambda kv: -kv[1])[:top]
    biggest_files = sorted(files.items(), key=lambda kv: -kv[1])[:top]
    raise UploadTooLarge(
        f"working dir {root} is {_mb(total)} after excludes, over the {_mb(max_bytes)} upload limit; "
        f"largest: {', '.join(f'{p} ({_mb(n)})' for p, n in biggest_dirs)}; "
        f"largest files: {', '.join(f'{p} ({_mb(n)})' for p, n in biggest_files)}. "
        "Move them out, add them to .rayignore, or raise --max-upload-mb")
