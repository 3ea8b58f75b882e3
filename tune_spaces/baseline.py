"""Search space of the plain `mobilenet_v2` baseline and its `standard` recipe (regularisation only).

    python -m pipelines tune --family baseline --smoke-test

Width changes the MAdds, so the accuracy / MAdds Pareto front has more than one point.
"""
from ray import tune

SPACE = {
    "model": "mobilenet_v2",
    "epochs": 8,
    "batch_size": 64,
    "learning_rate": tune.loguniform(1e-3, 1e-2),
    "model_config": {
        "width_multiplier": tune.choice([0.35, 0.5, 0.75, 1.0]),
        "dropout": tune.uniform(0.0, 0.3),
    },
    "recipe_config": {
        "weight_decay": tune.loguniform(1e-6, 1e-3),
        "label_smoothing": tune.uniform(0.0, 0.2),
        "augment": tune.uniform(0.0, 0.5),
    },
}

SMOKE = {
    "trials": 2,
    "epochs": 2,
    "limit": 256,
    "batch_size": 32,
    "model_config": {"width_multiplier": tune.choice([0.25, 0.5]), "depth_multiplier": 0.25},
}
