"""Search spaces as data: one module per model family, each holding one literal dict `SPACE`
over the family's *recipe* fields (and `SMOKE`, the size of a `--smoke-test` search).

Format of a family module (`tune_spaces/<family>.py`)::

    from ray import tune
    SPACE = {                       # keys are `TrainConfig` fields (pipelines.training.config)
        "model": "condconv_mobilenet_v2",
        "epochs": 8,
        "learning_rate": tune.loguniform(1e-3, 1e-2),
        "model_config": {"num_experts": tune.choice([4, 8])},
        "recipe_config": {"weight_decay": tune.loguniform(1e-5, 1e-3), "label_smoothing": tune.uniform(0.0, 0.2)},
    }
    SMOKE = {"trials": 2, "epochs": 1, "limit": 256}   # overrides for --smoke-test

    from tune_spaces import get
    space = get("basisnet")           # dict of ray.tune domains / constants (COMMON's entries included)
    space = get("basisnet", smoke=True)   # SMOKE's constants merged in (nested dicts merged key by key)

Domains must be ones Optuna can search: `tune.choice`, `tune.uniform`, `tune.loguniform`,
`tune.randint`, `tune.quniform` (no `grid_search` or `sample_from`). `SMOKE` keys are `trials` plus
`TrainConfig` fields (constants or smaller domains). `pipelines.tuning.spaces.validate` checks a space against `TrainConfig` before any trial starts.
"""
from __future__ import annotations

import copy
import importlib
import pkgutil

SMOKE_KEYS = ("trials",)
# Entries every family's space starts from (its own SPACE wins): ASHA stops trials on the validation accuracy
# of their first epochs, which on short epochs Keras' lagging BatchNorm statistics leave at chance whatever the
# weights (pipelines.training.bn_recalibration.PreciseBN); recomputing them from 8 training batches before each
# validation makes those epochs rank the trials.
COMMON = {"precise_bn_batches": 8}


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
    space = merge(COMMON, module(name).SPACE)
    if smoke:
        space = merge(space, {k: v for k, v in _smoke_settings(name).items() if k not in SMOKE_KEYS})
    return space


# ----------------------------------------------------------------------------- validation

def _is_domain(v):
    from ray.tune.search.sample import Domain

    return isinstance(v, Domain)


def domains(space, prefix=()):
    for k, v in space.items():
        if isinstance(v, dict):
            yield from domains(v, prefix + (k,))
        elif _is_domain(v):
            yield prefix + (k,), v


def set_path(cfg, path, value):
    for k in path[:-1]:
        cfg = cfg[k]
    cfg[path[-1]] = value


def sample(space, seed=0):
    """One concrete config drawn from `space` (constants kept)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = copy.deepcopy(space)
    for path, dom in domains(space):
        value = dom.sample(random_state=rng)
        set_path(out, path, value.item() if hasattr(value, "item") else value)
    return out
