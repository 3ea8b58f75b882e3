"""`TrainConfig`: every field of a training run, validated up front (one-line errors naming the field).

    cfg = TrainConfig(model="condconv_mobilenet_v2", data="digits", epochs=10).validate()
    cfg = TrainConfig(model="multi_exit_net", precision="bf16", jit_compile=True)   # mixed bf16, XLA

`precision`: "float32", "bf16" (Keras policy `mixed_bfloat16`: float32 variables, bfloat16 compute) or "fp16"
(`mixed_float16`, with a `LossScaleOptimizer`); the policy is set only while the net is built
(`pipelines.training.train.build_training`). `jit_compile`: the train and test steps compile with XLA,
and the train split is served in fixed batches (`drop_remainder`), the static shapes XLA (and a TPU) needs.
"""
from __future__ import annotations

import dataclasses

import pipelines  # noqa: F401

DEFAULT_OUT = "runs"


@dataclasses.dataclass
class TrainConfig:
    model: str = "mobilenet_v2"
    model_config: dict = dataclasses.field(default_factory=dict)
    data: str = "digits"
    data_dir: str | None = None
    image_size: int = 32
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    recipe: str | None = None  # None: the model's default recipe
    recipe_config: dict = dataclasses.field(default_factory=dict)
    early_stopping: int = 0  # patience in epochs on val_accuracy; 0 = off
    seed: int = 0
    out: str = DEFAULT_OUT
    run_name: str | None = None
    limit: int | None = None  # keep only N examples per split (smoke tests)
    precision: str = "float32"  # float32 | bf16 | fp16 (Keras mixed-precision policy while the net is built)
    jit_compile: bool = False  # XLA-compiled steps on fixed-size training batches
    # before each validation, recompute BatchNorm statistics from this many training batches (0 = off;
    # pipelines.training.bn_recalibration.PreciseBN): honest early-epoch metrics on short epochs
    precise_bn_batches: int = 0

    OPTIMIZERS = ("adam", "sgd", "adamw")
    PRECISIONS = ("float32", "bf16", "fp16")

    def validate(self):
        """Check every field up front; raise ValueError naming the field and the value."""
        from keras_layers import models
        from pipelines.training import recipes

        if self.model not in models.names():
            raise ValueError(f"unknown model={self.model!r}; valid choices: {', '.join(models.names())}")
        fields = models.config_fields(self.model)
        for k in self.model_config:
            if k not in fields:
                raise ValueError(f"model {self.model!r}: unknown model_config field {k}={self.model_config[k]!r}; "
                                 f"valid: {', '.join(sorted(fields))}")
        for name, low in (("epochs", 1), ("batch_size", 1), ("image_size", 8), ("precise_bn_batches", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}; received {name}={v!r}")
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < 10:
            raise ValueError(f"learning_rate must be in (0, 10); received learning_rate={self.learning_rate!r}")
        if self.optimizer not in self.OPTIMIZERS:
            raise ValueError(f"unknown optimizer={self.optimizer!r}; valid choices: {', '.join(self.OPTIMIZERS)}")
        if not isinstance(self.early_stopping, int) or self.early_stopping < 0:
            raise ValueError(f"early_stopping must be an int >= 0; received early_stopping={self.early_stopping!r}")
        if self.precision not in self.PRECISIONS:
            raise ValueError(f"unknown precision={self.precision!r}; valid choices: {', '.join(self.PRECISIONS)}")
        if not isinstance(self.jit_compile, bool):
            raise ValueError(f"jit_compile must be a bool; received jit_compile={self.jit_compile!r}")
        if self.jit_compile and isinstance(self.limit, int) and self.limit < self.batch_size:
            raise ValueError(f"jit_compile serves whole batches only: limit must be >= batch_size={self.batch_size}; "
                             f"received limit={self.limit!r}")
        self.recipe_obj()  # validates recipe name and fields
        if not (self.data == "digits" or self.data.startswith("folder:") or ":" not in self.data):
            raise ValueError(f"unknown data={self.data!r}; use 'digits', a TFDS name, or 'folder:PATH'")
        return self

    def recipe_name(self):
        from pipelines.training import recipes

        return self.recipe or recipes.for_model(self.model)

    def recipe_obj(self):
        from pipelines.training import recipes

        return recipes.get(self.recipe_name(), **self.recipe_config)

    def to_dict(self):
        """The config as written to the run's config.json: with a preset, the resolved values it stands for."""
        from keras_layers import models

        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe_name()
        try:  # an invalid config is written as given (validate() reports it)
            d["model_config"] = models.resolve_config(self.model, self.model_config)
            if self.recipe_config.get("preset", "default") != "default":
                d["recipe_config"] = self.recipe_obj().to_dict()
        except ValueError:
            pass
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown train config field {unknown[0]}={d[unknown[0]]!r}; valid: {', '.join(sorted(known))}")
        return cls(**d)
