"""Checks of a search space (`tune_spaces/<family>.py`) against the training config, before any trial.

    space = validate("basisnet", smoke=True)   # every choice and both ends of every range pass TrainConfig.validate()
"""
from __future__ import annotations

import copy

import tune_spaces


def _candidates(dom):
    """The values of a domain worth validating: every category, both ends of a range."""
    from ray.tune.search import sample as s

    if isinstance(dom, s.Categorical):
        return list(dom.categories)
    if isinstance(dom, s.Integer):
        return [dom.lower, dom.upper - 1]
    if isinstance(dom, s.Float):
        return [dom.lower, dom.upper]
    return []


def check_space(space, where="space", smoke_settings=None):
    """Raise ValueError naming the field and value if `space` cannot run; returns `space`.

    Checks: a dict of TrainConfig fields; every domain searchable by Optuna; one sample and every
    choice / both range ends pass `TrainConfig.validate()` (model, model_config, recipe, recipe_config).
    """
    from ray.tune.search import sample as s
    from pipelines.training.config import TrainConfig

    if not isinstance(space, dict) or not space:
        raise ValueError(f"{where}: SPACE must be a non-empty dict of TrainConfig fields; received {space!r}")
    def grids(d, prefix=()):
        for k, v in d.items():
            if isinstance(v, dict):
                if "grid_search" in v:
                    raise ValueError(f"{where}: {'.'.join(prefix + (k,))} uses a domain Optuna cannot search "
                                     "(grid_search); use tune.choice / uniform / loguniform / randint")
                grids(v, prefix + (k,))

    grids(space)
    for path, dom in tune_spaces.domains(space):
        sampler = dom.get_sampler()
        if isinstance(sampler, s.Grid) or isinstance(dom, s.Function) or not isinstance(
                dom, (s.Categorical, s.Integer, s.Float)):
            raise ValueError(f"{where}: {'.'.join(path)} uses a domain Optuna cannot search "
                             f"({type(dom).__name__}); use tune.choice / uniform / loguniform / randint")
    for k, v in (smoke_settings or {}).items():
        if k == "trials":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}: SMOKE trials must be an int >= 1; received trials={v!r}")

    def check(cfg, what):
        try:
            TrainConfig.from_dict(cfg).validate()
        except ValueError as err:
            raise ValueError(f"{where}: {what}: {err}") from None

    base = tune_spaces.sample(space)
    check(base, "a sampled config")
    for path, dom in tune_spaces.domains(space):
        for value in _candidates(dom):
            cfg = copy.deepcopy(base)
            tune_spaces.set_path(cfg, path, value)
            check(cfg, f"{'.'.join(path)}={value!r}")
    return space


def validate(name, smoke=False):
    """Validate family `name`'s space (and its SMOKE settings); returns the space ready to search."""
    settings = tune_spaces.smoke(name)
    space = tune_spaces.get(name, smoke=smoke)
    return check_space(space, where=f"tune_spaces.{name}", smoke_settings=settings)
