"""Search space of the CondConv family (`condconv_mobilenet_v2`).

The paper's lesson is that extra experts add capacity that overfits without regularization (it uses
dropout, AutoAugment/mixup at larger expert counts); so the space is over regularization strength
and the number of experts, with the learning rate; and over the router warm-up (project addition,
`pipelines/training/recipes/condconv.py`: without it the routed network stayed at chance on cluttered-digits).
"""
from ray import tune

SPACE = {
    "model": "condconv_mobilenet_v2",
    "epochs": 8,
    "learning_rate": tune.loguniform(1e-3, 1e-2),
    "model_config": {
        "num_experts": tune.choice([4, 8]),
        "dropout": tune.uniform(0.0, 0.4),
    },
    "recipe_config": {
        "weight_decay": tune.loguniform(1e-5, 1e-3),
        "label_smoothing": tune.uniform(0.0, 0.2),
        "augment": tune.uniform(0.0, 1.0),
        "router_warmup": tune.choice([0.1, 0.2, 0.3]),
    },
}

SMOKE = {"trials": 2, "epochs": 1, "limit": 256}
