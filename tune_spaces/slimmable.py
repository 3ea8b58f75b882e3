"""Search space of the slimmable family (`slimmable_mobilenet_v1`, recipe `slimmable`).

Searched: the training rule (all widths vs sandwich), in-place distillation weight and temperature,
random widths per step, regularization, learning rate. Width lists stay fixed (they are the product).
"""
from ray import tune

SPACE = {
    "model": "slimmable_mobilenet_v1",
    "recipe": "slimmable",
    "epochs": 10,
    "learning_rate": tune.loguniform(1e-3, 1e-2),
    "model_config": {"width_multipliers": [0.25, 0.5, 0.75, 1.0], "dropout": tune.choice([0.0, 0.1])},
    "recipe_config": {
        "rule": tune.choice(["all", "sandwich"]),
        "num_random": tune.choice([1, 2]),
        "distill": tune.uniform(0.0, 1.0),
        "distill_temperature": tune.choice([1.0, 2.0]),
        "weight_decay": tune.loguniform(1e-5, 1e-3),
        "label_smoothing": tune.uniform(0.0, 0.1),
    },
}
SMOKE = {"trials": 2, "epochs": 1, "limit": 256}
