"""Job submission safety: default excludes and a size check that refuses an oversized working dir,
naming the largest paths, before anything is uploaded or the cluster is contacted."""
import os

import pytest

from pipelines import cli
from pipelines.cluster import jobs, upload_check
from pipelines.cluster.upload_check import UploadTooLarge

MIB = 1 << 20


def write(root, rel, size):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return size


@pytest.fixture
def workdir(tmp_path):
    kept = write(tmp_path, "pipelines/train.py", 2000) + write(tmp_path, "README.md", 500)
    kept += write(tmp_path, "notebooks/big_table.csv", 3 * MIB) + write(tmp_path, "notebooks/small.csv", MIB // 2)
    kept += write(tmp_path, "weights.npz", 2 * MIB)
    for rel in (".git/objects/pack/p.pack", ".venv/lib/x.so", "runs/r1/model.keras", "mlruns/0/a.bin",
                "mlartifacts/1/b.bin", "data/digits/cache.bin", "bundle/model.tflite", "export.tflite",
                "scratch/tmp.bin", "ignored_by_git.log"):
        write(tmp_path, rel, 4 * MIB)
    (tmp_path / ".rayignore").write_text("scratch/\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    kept += len("scratch/\n") + len("*.log\n")
    return tmp_path, kept


def test_scan_applies_default_excludes_and_ignore_files(workdir):
    root, kept = workdir
    total, files, top = upload_check.scan(root, upload_check.default_excludes())
    assert total == kept
    assert not {p.split("/")[0] for p in files} & {".git", ".venv", "runs", "mlruns", "mlartifacts", "data",
                                                    "bundle", "scratch"}
    assert "export.tflite" not in files and "ignored_by_git.log" not in files
    assert top["notebooks/"] == 3 * MIB + MIB // 2
    assert upload_check.check_working_dir(root, upload_check.default_excludes(), max_bytes=10 * MIB) == kept


def test_oversized_dir_is_refused_naming_largest_paths(workdir):
    root, _ = workdir
    with pytest.raises(UploadTooLarge) as err:
        upload_check.check_working_dir(root, upload_check.default_excludes(), max_bytes=4 * MIB)
    msg = str(err.value)
    assert "\n" not in msg and "over the 4.0 MiB upload limit" in msg
    # largest folder first, then files, biggest first
    assert msg.index("notebooks/ (3.5 MiB)") < msg.index("weights.npz (2.0 MiB)")
    assert "largest files: notebooks/big_table.csv (3.0 MiB), weights.npz (2.0 MiB)" in msg
    assert ".git" not in msg and "scratch" not in msg


def test_bad_budget_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"max_bytes=0"):
        upload_check.check_working_dir(tmp_path, max_bytes=0)


def test_submit_refuses_before_any_upload(workdir, monkeypatch, capsys):
    root, _ = workdir
    contacted = []

    class NoCluster:
        def __init__(self, *a, **k):
            contacted.append("client")

        def submit_job(self, **k):
            contacted.append("upload")
            return "job-1"

        def get_job_status(self, job_id):
            return "PENDING"

    monkeypatch.setattr(jobs, "ROOT", root)
    monkeypatch.setattr("ray.job_submission.JobSubmissionClient", NoCluster)
    rc = cli.main(["submit", "--address", "http://127.0.0.1:8265", "--max-upload-mb", "4", "--", "models"])
    err = capsys.readouterr().err
    assert rc == 2 and contacted == []
    assert err.startswith("error: working dir") and "notebooks/big_table.csv (3.0 MiB)" in err
    # under the limit the same call goes on to the cluster (which this fake records)
    rc = cli.main(["submit", "--address", "http://127.0.0.1:8265", "--max-upload-mb", "20", "--no-wait", "--", "models"])
    assert contacted[:2] == ["client", "upload"]
    env = jobs.runtime_env("http://127.0.0.1:8265")
    assert {".git/", ".venv", "runs/", "mlruns/", "data/", "bundle/"} <= set(env["excludes"])
