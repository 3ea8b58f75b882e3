"""Search space of the DS-Net family (`ds_mobilenet_v1`, recipe `ds_net`: Stage I IEB, Stage II gate).

Searched: gumbel temperature, target MAdds (fraction of the widest path), the Stage II loss weights
(paper: cls 1, complexity 0.5, SGS 1), IEB teacher momentum and random widths, share of epochs
for Stage I, regularization and learning rate.
"""
from ray import tune

SPACE = {
    "model": "ds_mobilenet_v1",
    "recipe": "ds_net",
    "epochs": 12,
    "learning_rate": tune.loguniform(1e-3, 1e-2),
    "model_config": {"width_multipliers": [0.25, 0.5, 0.75, 1.0], "gate_hidden": tune.choice([8, 16, 32])},
    "recipe_config": {
        "temperature": tune.loguniform(0.3, 3.0),
        "target_madds": tune.uniform(0.3, 1.0),
        "cls_weight": 1.0,
        "complexity_weight": tune.uniform(0.1, 1.0),
        "sgs_weight": tune.uniform(0.5, 2.0),
        "ema_decay": tune.choice([0.9, 0.98, 0.99]),
        "num_random": tune.choice([1, 2]),
        "stage1_fraction": tune.choice([0.7, 0.8]),
        "weight_decay": tune.loguniform(1e-5, 1e-3),
    },
}
SMOKE = {"trials": 2, "epochs": 2, "limit": 256}
