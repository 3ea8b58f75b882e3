"""`code.json`: the fingerprint of the code that trained a run, and the line an experiment prints when it
reuses a run that other code trained."""
import json

from pipelines.training import code_version


def _tree(root, text="x = 1\n"):
    (root / "keras_layers").mkdir(parents=True)
    (root / "keras_layers" / "a.py").write_text(text)
    (root / "keras_layers" / "notes.txt").write_text("not code")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "data.py").write_text("y = 2\n")
    return root


def test_fingerprint_follows_the_sources_and_only_them(tmp_path):
    sources = ("keras_layers", "pipelines/data.py", "pipelines/training")  # the last is absent here
    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "b")
    fa = code_version.fingerprint(a, sources)
    assert len(fa) == 16 and fa == code_version.fingerprint(b, sources)  # same files elsewhere: same code
    (b / "keras_layers" / "notes.txt").write_text("edited")  # not a .py file: not training code
    assert code_version.fingerprint(b, sources) == fa
    c = _tree(tmp_path / "c", text="x = 2\n")
    assert code_version.fingerprint(c, sources) != fa
    d = _tree(tmp_path / "d")
    (d / "keras_layers" / "b.py").write_text("")  # a new module counts
    assert code_version.fingerprint(d, sources) != fa
    assert [f.name for f in code_version.source_files(a, sources)] == ["a.py", "data.py"]


def test_stale_names_the_folder_unless_this_code_trained_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    line = code_version.stale(run)
    assert str(run) in line and "before runs recorded their code" in line and "\n" not in line
    code_version.write(run)
    assert code_version.recorded(run) == code_version.fingerprint() and code_version.stale(run) is None
    (run / "code.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}))
    line = code_version.stale(run)
    assert "other code (0123456789abcdef)" in line and code_version.fingerprint() in line and "--out" in line
    for bad in ("[1, 2]", "{not json", json.dumps({"fingerprint": 7})):
        (run / "code.json").write_text(bad)
        assert code_version.recorded(run) is None and "before runs recorded their code" in code_version.stale(run)
