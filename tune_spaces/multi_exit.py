"""Search space of the multi-exit family (IMTA): `multi_exit_net` with the `multi_exit` recipe.

Searches the paper's switches and recipe: One-for-All distillation (alpha, temperature, phase split),
Gradient Equilibrium and Inline Subnetwork Collaboration on/off, exit loss weights, regularisation.
"""
from ray import tune

SPACE = {
    "model": "multi_exit_net",
    "epochs": 12,
    "learning_rate": tune.loguniform(1e-3, 1e-2),
    "model_config": {
        "num_exits": 4,
        "gradient_equilibrium": tune.choice([True, False]),
        "inline_collaboration": tune.choice([True, False]),
        "dropout": tune.choice([0.0, 0.1]),
    },
    "recipe": "multi_exit",
    "recipe_config": {
        "distill": tune.choice([True, False]),
        "alpha": tune.uniform(0.2, 0.9),
        "temperature": tune.choice([1.0, 2.0, 3.0, 4.0]),
        "phase1_fraction": tune.choice([0.0, 0.25, 0.5]),
        "exit_weights": tune.choice([None, [0.5, 0.75, 1.0, 1.5], [1.5, 1.0, 1.0, 1.0]]),
        "weight_decay": tune.loguniform(1e-5, 1e-3),
        "label_smoothing": tune.uniform(0.0, 0.1),
        "augment": tune.choice([0.0, 0.3]),
    },
}
SMOKE = {"trials": 2, "epochs": 1, "limit": 256}
