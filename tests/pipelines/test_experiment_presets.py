"""`--preset paper|default` of the experiment commands: one resolver (`pipelines.experiments.resolve_preset`)."""
import pytest

from pipelines import cli
from pipelines.experiments import recipe_label, report_name, resolve_preset, run_tag


def test_the_flag_sets_both_presets_and_the_old_recipe_config_spelling_still_works():
    model, recipe, preset = resolve_preset("paper", {"num_bases": 2}, {"basis_dropout": 0.2})
    assert (model, recipe, preset) == ({"num_bases": 2, "preset": "paper"},
                                       {"basis_dropout": 0.2, "preset": "paper"}, "paper")
    # no flag: the recipe config's own preset decides, the model config stays as given
    assert resolve_preset(None, {}, {"preset": "paper"}) == ({}, {"preset": "paper"}, "paper")
    assert resolve_preset(None, None, None) == ({}, {}, "default")
    assert resolve_preset("paper", {"preset": "paper"}, {})[2] == "paper"  # agreeing spellings are fine
    assert recipe_label("basisnet", "paper") == "basisnet (paper)"
    # an ablation's row names what it changed, not only the preset
    assert recipe_label("ds_net", "default", {"ieb": "labels", "preset": "default"}) == "ds_net (default, ieb=labels)"
    assert recipe_label("basisnet", "paper", {"preset": "paper", "num_bases": 2, "basis_dropout": 0.2}) == (
        "basisnet (paper, basis_dropout=0.2, num_bases=2)")
    assert run_tag("paper") == "-paper" and run_tag("default") == ""
    # the reports of the two presets live side by side in one --out, the default's under its old name
    assert [report_name("condconv-eval", p) for p in (None, "default", "paper")] == [
        "condconv-eval.json", "condconv-eval.json", "condconv-eval-paper.json"]


@pytest.mark.parametrize("preset, model, recipe, message", [
    ("paper", {}, {"preset": "default"}, "recipe_config preset='default'"),
    ("default", {"preset": "paper"}, {}, "model_config preset='paper'"),
    ("fast", {}, {}, "preset='fast'"),
    (None, {}, {"preset": "fast"}, "preset='fast'"),
])
def test_conflicting_or_unknown_presets_are_one_line_errors(preset, model, recipe, message):
    with pytest.raises(ValueError, match=message):
        resolve_preset(preset, model, recipe)


@pytest.mark.parametrize("command", [
    ["basisnet-eval", "--recipe-config", "preset=default"],
    ["multi-exit-eval", "--recipe-config", "preset=default"],
    ["condconv-eval", "--model-config", "preset=default"],
])
def test_every_experiment_command_refuses_a_conflict_before_training(command, capsys):
    assert cli.main([*command, "--preset", "paper", "--limit", "8", "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    assert "conflicts" in err and "preset" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("command", [["basisnet-eval"], ["multi-exit-eval"], ["condconv-eval"],
                                     ["slimmable-eval", "widths"], ["slimmable-eval", "dsnet"]])
def test_every_experiment_command_takes_the_flag(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([*command, "--preset", "fast"])
    assert "argument --preset: invalid choice: 'fast'" in capsys.readouterr().err


def test_a_second_report_in_one_out_keeps_the_first(tmp_path):
    """Two invocations with other seeds in one --out: the newest report takes the plain name, the earlier ones
    stay as .1, .2; a report that cannot be written leaves every earlier one as it was."""
    import json

    from pipelines.experiments import write_report

    lines = []
    for seeds in ([0], [1, 2], [3]):
        path = write_report(tmp_path, "condconv-eval.json", {"seeds": seeds}, log=lines.append)
    assert path == tmp_path / "condconv-eval.json"
    assert [json.loads((tmp_path / n).read_text())["seeds"] for n in
            ("condconv-eval.1.json", "condconv-eval.2.json", "condconv-eval.json")] == [[0], [1, 2], [3]]
    assert lines == ["kept the earlier report condconv-eval.json as condconv-eval.1.json",
                     "kept the earlier report condconv-eval.json as condconv-eval.2.json"]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises((TypeError, ValueError)):
        write_report(tmp_path, "condconv-eval.json", {"bad": object()}, log=lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert json.loads((tmp_path / "condconv-eval.json").read_text())["seeds"] == [3]
    write_report(tmp_path, "dsnet.md", "| table |\n", log=lines.append)  # text reports (Markdown) as they are
    assert (tmp_path / "dsnet.md").read_text() == "| table |\n"
