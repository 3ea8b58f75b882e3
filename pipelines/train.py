"""Train any registered model on any dataset with its recipe, in-process (`model.fit`).

    python -m pipelines train --model mobilenet_v2 --data digits --epochs 10

Writes `runs/<name>/`: `model.keras` (the plain net, best validation epoch), `checkpoints/` (weights +
optimizer + epoch, one per epoch, to resume), `history.json`, `metrics.json`, `config.json`.
The same `build_training` / `fit_epochs` functions run inside Ray Train workers (`pipelines.distributed`).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import time
from pathlib import Path

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

    OPTIMIZERS = ("adam", "sgd", "adamw")

    def validate(self):
        """Check every field up front; raise ValueError naming the field and the value."""
        from keras_layers import models
        from pipelines import recipes

        if self.model not in models.names():
            raise ValueError(f"unknown model={self.model!r}; valid choices: {', '.join(models.names())}")
        fields = models.config_fields(self.model)
        for k in self.model_config:
            if k not in fields:
                raise ValueError(f"model {self.model!r}: unknown model_config field {k}={self.model_config[k]!r}; "
                                 f"valid: {', '.join(sorted(fields))}")
        for name, low in (("epochs", 1), ("batch_size", 1), ("image_size", 8)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}; received {name}={v!r}")
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < 10:
            raise ValueError(f"learning_rate must be in (0, 10); received learning_rate={self.learning_rate!r}")
        if self.optimizer not in self.OPTIMIZERS:
            raise ValueError(f"unknown optimizer={self.optimizer!r}; valid choices: {', '.join(self.OPTIMIZERS)}")
        if not isinstance(self.early_stopping, int) or self.early_stopping < 0:
            raise ValueError(f"early_stopping must be an int >= 0; received early_stopping={self.early_stopping!r}")
        self.recipe_obj()  # validates recipe name and fields
        if not (self.data == "digits" or self.data.startswith("folder:") or ":" not in self.data):
            raise ValueError(f"unknown data={self.data!r}; use 'digits', a TFDS name, or 'folder:PATH'")
        return self

    def recipe_name(self):
        from pipelines import recipes

        return self.recipe or recipes.for_model(self.model)

    def recipe_obj(self):
        from pipelines import recipes

        return recipes.get(self.recipe_name(), **self.recipe_config)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe_name()
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown train config field {unknown[0]}={d[unknown[0]]!r}; valid: {', '.join(sorted(known))}")
        return cls(**d)


def load_data(cfg: TrainConfig, split, batch_size=None, shuffle=None):
    from pipelines import data

    recipe = cfg.recipe_obj()
    return data.load(cfg.data, split, image_size=cfg.image_size, batch_size=batch_size or cfg.batch_size,
                     augment=recipe.augment if split == "train" else False, data_dir=cfg.data_dir,
                     shuffle=shuffle, limit=cfg.limit)


def steps_per_epoch(info, batch_size, num_workers=1):
    """Batches per epoch of the train split (100 when the size is unknown)."""
    n = info.num_examples.get("train")
    return max(1, math.ceil(n / (batch_size * num_workers))) if n else 100


def make_optimizer(cfg: TrainConfig, steps_per_epoch):
    import tf_keras as keras

    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=max(1, cfg.epochs * steps_per_epoch), alpha=0.01)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule)
    return keras.optimizers.Adam(schedule)


def build_training(cfg: TrainConfig, info, steps_per_epoch):
    """Build net + recipe + compiled `TrainingModel` (call inside a strategy scope when distributed)."""
    from keras_layers import models
    from pipelines.recipes.base import TrainingModel

    net = models.build(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes, **cfg.model_config)
    recipe = cfg.recipe_obj()
    model = TrainingModel(net, recipe)
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch))
    return model


def _unique_dir(root: Path, name: str) -> Path:
    path = root / name
    i = 1
    while path.exists():
        path = root / f"{name}-{i}"
        i += 1
    path.mkdir(parents=True)
    return path


class EpochCheckpoint:
    """Saves weights + optimizer + epoch after every epoch under `directory` (keeps the last 2)."""

    def __init__(self, model, directory):
        import tensorflow as tf

        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.ckpt, str(directory), max_to_keep=2)

    def restore(self):
        """Restore the latest checkpoint; returns the number of epochs already done (0 if none)."""
        if self.manager.latest_checkpoint:
            self.ckpt.restore(self.manager.latest_checkpoint)
            return int(self.epoch.numpy())
        return 0

    def callback(self):
        import tf_keras as keras

        outer = self

        class _Save(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.epoch.assign(epoch + 1)
                outer.manager.save(checkpoint_number=epoch + 1)

        return _Save()


def summarize(net, info, history: dict, seconds: float, state=None):
    """Final metrics: best validation accuracy, MAdds, params, time."""
    from keras_layers import count_madds

    val = history.get("val_accuracy") or [float("nan")]
    best = int(max(range(len(val)), key=lambda i: val[i])) if val else 0
    out = {
        "val_accuracy": float(val[best]),
        "val_loss": float(history.get("val_loss", [math.nan] * (best + 1))[best]),
        "accuracy": float(history.get("accuracy", [math.nan] * (best + 1))[best]),
        "best_epoch": best + 1,
        "epochs_run": len(val),
        "madds": count_madds(net, info.input_shape, **(state or {})),
        "params": int(net.count_params()),
        "train_seconds": round(seconds, 2),
    }
    return out


def train(cfg: TrainConfig, callbacks=(), verbose="auto", resume_dir=None):
    """Train in-process; returns `(metrics dict, run_dir, net)`. Validates the config before any work."""
    import sys

    cfg.validate()
    import tf_keras as keras

    keras.utils.set_random_seed(cfg.seed)
    train_ds, info = load_data(cfg, "train")
    val_ds, _ = load_data(cfg, "validation", shuffle=False)
    steps = steps_per_epoch(info, cfg.batch_size)
    model = build_training(cfg, info, steps)

    if resume_dir:
        run_dir = Path(resume_dir)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = _unique_dir(Path(cfg.out), cfg.run_name or f"{cfg.model}-{stamp}")
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    ckpt = EpochCheckpoint(model, run_dir / "checkpoints")
    initial_epoch = ckpt.restore()

    cbs = [ckpt.callback(), *model.recipe.callbacks(model, steps, cfg.epochs), *callbacks]
    if cfg.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping("val_accuracy", patience=cfg.early_stopping, mode="max",
                                                 restore_best_weights=True))
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.time()
    hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
                     callbacks=cbs, verbose=verbose)
    seconds = time.time() - start
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    net = model.net
    net.save(run_dir / "model.keras")
    metrics = summarize(net, info, history, seconds)
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "dataset.json").write_text(json.dumps(info.to_dict(), indent=2))
    return metrics, run_dir, net
