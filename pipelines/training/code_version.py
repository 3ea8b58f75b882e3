"""Which code trained a run: a fingerprint of the sources that decide training, kept as `code.json` in the run folder.

    code_version.fingerprint()           # "3f2a9c0d1e4b5a6f": sha256 of keras_layers/, pipelines/training/, data.py
    code_version.write(run_dir)          # at the end of training, beside config.json
    code_version.stale(run_dir)          # None when this checkout's code trained it, else one line saying why not

The experiment commands reuse a finished run of the same config in their `--out`
(`pipelines.experiments.deployed.finished_run`). A run trained before a change to a layer, a recipe or the
data pipeline has the same config but is not the same experiment; it is still reused (retraining every run
after any edit of these files, a comment included, would make reuse useless), but `stale` lets the command
say so in one line naming the folder, so a stale number does not pass unnoticed. A run from before this
file existed has no `code.json` and reads as stale ("not recorded").
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

FILE = "code.json"
ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("keras_layers", "pipelines/training", "pipelines/data.py")  # what decides how a run trains


def source_files(root=ROOT, sources=SOURCES):
    files = []
    for s in sources:
        p = Path(root) / s
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.is_file() else []
    return files


def fingerprint(root=ROOT, sources=SOURCES):
    """16 hex digits of the sha256 of `sources` (path and bytes of every .py file, in path order)."""
    return _fingerprint(str(root), tuple(sources))


@functools.lru_cache(maxsize=None)
def _fingerprint(root, sources):
    h = hashlib.sha256()
    for f in source_files(root, sources):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def write(run_dir):
    Path(run_dir, FILE).write_text(json.dumps({"fingerprint": fingerprint(), "sources": list(SOURCES)}, indent=2))


def recorded(run_dir):
    """The fingerprint a run folder records, or None (no or unreadable `code.json`)."""
    try:
        value = json.loads(Path(run_dir, FILE).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def stale(run_dir):
    """None when `run_dir` was trained by this checkout's code, else one line naming the folder and the difference."""
    saved, now = recorded(run_dir), fingerprint()
    if saved == now:
        return None
    sources = ", ".join(SOURCES)
    if saved is None:
        return (f"note: reusing {run_dir}, trained before runs recorded their code: it may differ from this "
                f"checkout's {sources} ({now}); delete it or use another --out to retrain")
    return (f"note: reusing {run_dir}, trained by other code ({saved}) than this checkout's {sources} ({now}); "
            f"delete it or use another --out to retrain")
