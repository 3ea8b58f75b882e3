"""Search spaces as data: one module per model family, each holding one literal dict `SPACE`
over the family's *recipe* fields (and `SMOKE`, the size of a `--smoke-test` search).

Format of a family module (`tune_spaces/<family>.py`)::

    from ray import tune
    SPACE = {                       # keys are `pipelines.train.TrainConfig` fields
        "model": "condconv_mobilenet_v2",
        "epochs": 8,
        "learning_rate": tune.loguniform(1e-3, 1e-2),
        "model_config": {"num_experts": tune.choice([4, 8])},
        "recipe_config": {"weight_decay": tune.loguniform(1e-5, 1e-3), "label_smoothing": tune.uniform(0.0, 0.2)},
    }
    SMOKE = {"trials": 2, "epochs": 1, "limit": 256}   # overrides for --smoke-test

    from tune_spaces import get
    space = get("basisnet")           # dict of ray.tune domains / constants
    space = get("basisnet", smoke=True)   # SMOKE's constants merged in (nested dicts merged key by key)
    validate("basisnet")              # every choice and both ends of every range pass TrainConfig.validate()

Domains must be ones Optuna can search: `tune.choice`, `tune.uniform`, `tune.loguniform`,
`tune.randint`, `tune.quniform` (no `grid_search` or `sample_from`). `SMOKE` keys are `trials` plus
`TrainConfig` fields (constants or smaller domains). `validate` runs before any trial starts (`pipelines.tune` calls it).
"""
from __future__ import annotations

import copy
import importlib
import pkgutil

SMOKE_KEYS = ("trials",)


def names():
    return sorted(i.name for i in pkgutil.iter_modules(__path__) if not i.name.startswith("_"))


def module(name):
    if name not in names():
        raise ValueError(f"unknown family={name!r}; valid choices: {', '.join(names()) or '(none yet)'}")
    return importlib.import_module(f"{__name__}.{name}")


def merge(base, overrides):
    """`base` with `overrides` applied; nested dicts (model_config, recipe_config) merged key by key."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def smoke(name):
    """The `--smoke-test` settings of family `name`: `{"trials": N, <TrainConfig field>: value, ...}`."""
    return dict(getattr(module(name), "SMOKE", {"trials": 2, "epochs": 1, "limit": 256}))


_smoke_settings = smoke  # `get` and `validate` take a `smoke` flag that shadows the function


def get(name, smoke=False):
    """The search space dict of family `name` (with its SMOKE constants merged in when `smoke`)."""
    space = copy.deepcopy(module(name).SPACE)
    if smoke:
        space = merge(space, {k: v for k, v in _smoke_settings(name).items() if k not in SMOKE_KEYS})
    return space


# ----------------------------------------------------------------------------- validation

def _is_domain(v):
    from ray.tune.search.sample import Domain

    return isinstance(v, Domain)


def _domains(space, prefix=()):
    for k, v in space.items():
        if isinstance(v, dict):
            yield from _domains(v, prefix + (k,))
        elif _is_domain(v):
            yield prefix + (k,), v


def _set(cfg, path, value):
    for k in path[:-1]:
        cfg = cfg[k]
    cfg[path[-1]] = value


def sample(space, seed=0):
    """One concrete config drawn from `space` (constants kept)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = copy.deepcopy(space)
    for path, dom in _domains(space):
        value = dom.sample(random_state=rng)
        _set(out, path, value.item() if hasattr(value, "item") else value)
    return out


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
    from pipelines.train import TrainConfig

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
    for path, dom in _domains(space):
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

    base = sample(space)
    check(base, "a sampled config")
    for path, dom in _domains(space):
        for value in _candidates(dom):
            cfg = copy.deepcopy(base)
            _set(cfg, path, value)
            check(cfg, f"{'.'.join(path)}={value!r}")
    return space


def validate(name, smoke=False):
    """Validate family `name`'s space (and its SMOKE settings); returns the space ready to search."""
    settings = _smoke_settings(name)
    space = get(name, smoke=smoke)
    return check_space(space, where=f"tune_spaces.{name}", smoke_settings=settings)
