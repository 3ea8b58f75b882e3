"""Search space of the BasisNet family: `basisnet_mobilenet_v3` with the `basisnet` recipe.

    python -m pipelines tune --family basisnet --smoke-test
    BASISNET_TEACHER=runs/mobilenet_v3-teacher python -m pipelines tune --family basisnet   # + distillation

Searches the paper's recipe (Sec. 3.3): preview loss weight lambda, basis-model dropout, the length of
the epsilon-mixing warm-up, knowledge distillation (weight and temperature, only with a teacher:
a `.keras` file, run directory or `models:/NAME@alias` in $BASISNET_TEACHER), label smoothing, weight
decay, augmentation; and the model's number of bases and coefficient activation.

`SPACE` is the space without a teacher. $BASISNET_TEACHER is read when a search asks for the space
(`from_environment`, called by `pipelines.tuning.tune.TuneOptions.space`), never when this module is imported.
"""
from ray import tune

TEACHER_ENV = "BASISNET_TEACHER"

SPACE = {
    "model": "basisnet_mobilenet_v3",
    "epochs": 10,
    "learning_rate": tune.loguniform(1e-3, 1e-2),
    "model_config": {
        "num_bases": tune.choice([4, 8]),
        "coefficient_activation": tune.choice(["softmax", "sigmoid"]),
        "per_layer": tune.choice([True, False]),
    },
    "recipe": "basisnet",
    "recipe_config": {
        "preview_weight": tune.uniform(0.3, 1.5),
        "basis_dropout": tune.uniform(0.0, 0.3),
        "epsilon_fraction": tune.choice([0.0, 0.2, 0.5, 0.8]),
        "teacher": "",
        "kd_weight": 0.0,
        "kd_temperature": tune.choice([1.0, 2.0, 4.0]),
        "label_smoothing": tune.uniform(0.0, 0.1),
        "weight_decay": tune.loguniform(1e-6, 1e-3),
        "augment": tune.choice([0.0, 0.3]),
    },
}
SMOKE = {"trials": 2, "epochs": 1, "limit": 256}
# With a teacher the distillation weight is searched too.
WITH_TEACHER = {"recipe_config": {"kd_weight": tune.uniform(0.2, 0.8)}}


def from_environment(environ):
    """The entries of the space that come from the environment: the teacher of $BASISNET_TEACHER (and a
    searched `kd_weight`), or nothing when it is unset or empty."""
    teacher = environ.get(TEACHER_ENV, "")
    if not teacher:
        return {}
    return {"recipe_config": {**WITH_TEACHER["recipe_config"], "teacher": teacher}}
