"""The papers' experiments, each a `python -m pipelines` command: `basisnet` (basisnet-eval),
`multi_exit` (multi-exit-eval), `slimmable` (slimmable-eval), `condconv` (condconv-eval). They compose
training and the family policies; nothing below them imports them.

`resolve_preset` is the one place the experiment commands' ``--preset paper|default`` becomes the
recipe's and the model's ``preset`` field (`pipelines.training.recipes.resolve`,
`keras_layers.models.resolve_config` then fill in the paper's values); `recipe_label` is how every table
row names the recipe and preset it trained with."""


def resolve_preset(preset, model_config=None, recipe_config=None):
    """`(model_config, recipe_config, preset)` with ``--preset`` applied to both configs.

    ``preset=None`` (flag not given): the recipe's own ``preset`` field decides (``--recipe-config
    preset=paper`` keeps working; the model config is left as given). ``preset="paper"|"default"`` sets
    the field in both configs; a config that names another preset is a one-line ValueError naming it."""
    from pipelines.training.recipes import check_preset

    model_config, recipe_config = dict(model_config or {}), dict(recipe_config or {})
    if preset is None:
        return model_config, recipe_config, check_preset(recipe_config.get("preset", "default"))
    check_preset(preset)
    for field, config in (("recipe_config", recipe_config), ("model_config", model_config)):
        if config.get("preset", preset) != preset:
            raise ValueError(f"preset={preset!r} conflicts with {field} preset={config['preset']!r}; "
                             f"give one of them")
        config["preset"] = preset
    return model_config, recipe_config, preset


def recipe_label(recipe, preset, config=None):
    """How a table row names its training recipe: ``"basisnet (paper)"``, and the fields `config` (the
    recipe config the row trained with) sets beyond the preset: ``"ds_net (default, ieb=labels)"``, so that
    a row of an ablation does not read as the preset's recipe."""
    extra = [f"{k}={v}" for k, v in sorted((config or {}).items()) if k != "preset"]
    return f"{recipe} ({', '.join([str(preset)] + extra)})"


def run_tag(preset):
    """What a run folder's name adds for a preset (``"-paper"``), so the runs of both presets live side by
    side in one `--out` (and finished ones are reused) instead of overwriting each other."""
    return "" if preset in (None, "default") else f"-{preset}"


def report_name(stem, preset):
    """The file name of an experiment's report for a preset (``condconv-eval.json``,
    ``condconv-eval-paper.json``): the paper preset's report does not overwrite the default's in one `--out`."""
    return f"{stem}{run_tag(preset)}.json"


def write_report(out, name, report, log=print):
    """Write an experiment's report as ``<out>/<name>`` (JSON; a str is written as it is: the Markdown
    table) and return its path.

    A report already there (an earlier invocation with other seeds, experts or widths in the same `--out`)
    is kept, renamed to the first free ``<stem>.<n>.json`` (n = 1, 2, ...), and one line says so: the
    newest report keeps the plain name, no earlier one is lost. The new file is written beside it first
    and moved into place, so a failure while writing leaves the earlier report where it was."""
    import json
    import os
    from pathlib import Path

    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = report if isinstance(report, str) else json.dumps(report, indent=2, default=float)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    if path.exists():
        n = 1
        while (kept := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
            n += 1
        os.replace(path, kept)
        log(f"kept the earlier report {path.name} as {kept.name}")
    os.replace(tmp, path)
    return path
