"""Train any registered model on any dataset with its recipe, in-process (`model.fit`).

    python -m pipelines train --model mobilenet_v2 --data digits --epochs 10

Writes `runs/<name>/`: `model.keras` (the plain net with the weights of the best validation epoch: the
epoch `metrics.json` reports), `checkpoints/` (weights + optimizer + epoch of the last epoch, to resume),
`history.json`, `metrics.json`, `config.json`, `tensorboard/` (Keras' TensorBoard callback: per-epoch
scalars; `tensorboard --logdir runs/<name>/tensorboard`). `train(cfg, resume_dir=RUN_DIR)` continues a
run folder from its last checkpoint and refuses a config that differs from its `config.json`. The same
`build_training` / `load_data` functions run inside Ray Train workers (`pipelines.training.distributed`).
The one entry for both, tracked in MLflow or not, is `pipelines.training.run` (`pipelines.training.entry`).

Accelerators (`TrainConfig.precision`, `TrainConfig.jit_compile`; `pipelines.training.devices`):
* precision "bf16" / "fp16": the Keras mixed-precision policy (`mixed_bfloat16` / `mixed_float16`) is set
  only while `build_training` builds the net (`precision_policy`), then restored, so it never leaks into
  another run of the process; variables (EMA teachers and recipe state included) stay float32, the losses
  cast logits to float32, and "fp16" wraps the optimizer in a `LossScaleOptimizer` that the one
  `TrainingModel.train_step` uses (scaled loss, unscaled gradients). The saved `model.keras` (and the
  net `train` returns) is a float32 copy (`float32_net`): the phone runs float32.
* jit_compile: `compile(jit_compile=True)` (XLA) and a train split of full batches only
  (`drop_remainder`): every layer then traces with a static batch.
* In-process, several visible GPUs train under `MirroredStrategy` (`devices.in_process_strategy`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import time
from pathlib import Path

import pipelines  # noqa: F401

from pipelines.training import code_version
from pipelines.training.config import DEFAULT_OUT, TrainConfig  # noqa: F401  (re-exported)


def load_data(cfg: TrainConfig, split, batch_size=None, shuffle=None):
    """`split` of the run's dataset; under `jit_compile` the train split is whole batches only."""
    from pipelines import data

    recipe = cfg.recipe_obj()
    return data.load(cfg.data, split, image_size=cfg.image_size, batch_size=batch_size or cfg.batch_size,
                     augment=recipe.augment if split == "train" else False, data_dir=cfg.data_dir,
                     mixup=recipe.mixup if split == "train" else 0.0,
                     shuffle=shuffle, limit=cfg.limit, drop_remainder=bool(cfg.jit_compile and split == "train"))


def planned_steps(cfg, info):
    """Optimizer steps in one epoch of `cfg`'s train split as `load_data` serves it (whole batches only under
    `jit_compile`): what the learning-rate and epsilon schedules plan on, in-process and on Ray alike."""
    return steps_per_epoch(info, cfg.batch_size, drop_remainder=bool(cfg.jit_compile))


def recipe_callbacks(cfg, model, steps, train_ds):
    """The callbacks every `fit` of `cfg` needs, in-process and on Ray Train workers alike: the recipe's
    (schedules, stage switches), then precise BatchNorm statistics before each validation when
    `cfg.precise_bn_batches` asks for them (after the recipe's, so a stage switch comes first)."""
    from pipelines.training.bn_recalibration import PreciseBN

    cbs = list(model.recipe.callbacks(model, steps, cfg.epochs, train_data=train_ds))
    if cfg.precise_bn_batches:
        cbs.append(PreciseBN(train_ds, cfg.precise_bn_batches))
    return cbs


def steps_per_epoch(info, batch_size, num_workers=1, drop_remainder=False):
    """Batches per epoch of the train split (100 when the size is unknown); whole batches only with
    `drop_remainder`."""
    n = info.num_examples.get("train")
    if not n:
        return 100
    return max(1, (math.floor if drop_remainder else math.ceil)(n / (batch_size * num_workers)))


POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


@contextlib.contextmanager
def precision_policy(precision):
    """The Keras global dtype policy of `precision` (a `TrainConfig.PRECISIONS` name) inside the block, the
    previous policy after it (also when the block raises)."""
    from tf_keras import mixed_precision

    if precision not in POLICIES:
        raise ValueError(f"unknown precision={precision!r}; valid choices: {', '.join(POLICIES)}")
    previous = mixed_precision.global_policy()
    mixed_precision.set_global_policy(POLICIES[precision])
    try:
        yield
    finally:
        mixed_precision.set_global_policy(previous)


def _float32_policies(config):
    """`config` (a serialized model) with every mixed dtype policy (a layer's "dtype" entry, a string or a
    serialized `Policy`) replaced by "float32"; nothing else changes (a layer named "mixed_..." keeps its name)."""
    if isinstance(config, list):
        return [_float32_policies(v) for v in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "dtype" and _is_mixed_policy(value):
            out[key] = "float32"
        else:
            out[key] = _float32_policies(value)
    return out


def _is_mixed_policy(value):
    if isinstance(value, dict):
        value = value.get("config", {}).get("name", "") if value.get("class_name") in ("Policy", "DTypePolicy") else ""
    return isinstance(value, str) and value.startswith("mixed_")


def float32_net(net):
    """`net` itself when it computes in float32, else a float32 copy with its weights (its layers' configs,
    active widths included, with the float32 policy): what is saved and exported after mixed-precision
    training."""
    import tf_keras as keras

    layers = [m for m in (net, *net.submodules) if isinstance(m, keras.layers.Layer)]
    if not any(layer.dtype_policy.name.startswith("mixed_") for layer in layers):
        return net
    with precision_policy("float32"):
        plain = keras.saving.deserialize_keras_object(_float32_policies(keras.saving.serialize_keras_object(net)))
    plain.set_weights(net.get_weights())
    return plain


def make_optimizer(cfg: TrainConfig, steps_per_epoch):
    """The run's optimizer on a cosine schedule; with precision "fp16" inside a dynamic `LossScaleOptimizer`."""
    import tf_keras as keras

    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=max(1, cfg.epochs * steps_per_epoch), alpha=0.01)
    if cfg.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    elif cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    if cfg.precision == "fp16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def build_training(cfg: TrainConfig, info, steps_per_epoch):
    """Build net + recipe + compiled `TrainingModel` (call inside a strategy scope when distributed): the
    net under the `precision` policy (restored after), the steps XLA-compiled with `jit_compile`."""
    from keras_layers import models
    from pipelines.training.recipes.base import TrainingModel

    with precision_policy(cfg.precision):
        net = models.build(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes,
                           **cfg.model_config)
    recipe = cfg.recipe_obj()
    model = TrainingModel(net, recipe)
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), jit_compile=cfg.jit_compile)
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


# ---------------------------------------------------------------- TensorBoard (Keras' own callback)

TENSORBOARD_DIR = "tensorboard"  # inside a run folder: `tensorboard --logdir runs/<name>/tensorboard`


def tensorboard_callback(log_dir):
    """Keras' TensorBoard callback writing each epoch's scalars (losses, accuracies, learning rate) under
    `log_dir` (`train/` and `validation/` event files); no graph, histograms or profiling (cheap)."""
    import tf_keras as keras

    return keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=0, write_graph=False,
                                       write_images=False, update_freq="epoch", profile_batch=0)


class TensorBoardOnRankZero:
    """A callback factory (Ray Train workers take factories): the TensorBoard callback on rank 0 only, into
    `log_dir` (an absolute path: workers run in their own working directory)."""

    def __init__(self, log_dir):
        self.log_dir = str(Path(log_dir).resolve())

    def __call__(self, ctx):
        return tensorboard_callback(self.log_dir) if ctx.world_rank == 0 else None


# ---------------------------------------------------------------- resuming a run folder

RESUME_IGNORED = ("out", "run_name")  # where the run folder is, not how it trains


def check_resumable(run_dir, cfg: TrainConfig):
    """Refuse (one-line ValueError) to resume `run_dir` with `cfg` when the folder has no checkpoint or
    when `cfg` differs from the run's `config.json` in any field that changes training (the first field
    is named); `out` and `run_name` are not compared."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {str(run_dir)!r}: no config.json there (not a run folder)")
    if not (run_dir / "checkpoints").is_dir():
        raise ValueError(f"cannot resume {str(run_dir)!r}: no checkpoints/ there (an in-process run folder has "
                         "them; a Ray Train run resumes by its name)")
    saved = json.loads(path.read_text())
    saved.pop("workers", None)
    old = TrainConfig.from_dict(saved).to_dict()  # fields added since the run was written: their defaults
    new = json.loads(json.dumps(cfg.to_dict(), default=str))
    old = json.loads(json.dumps(old, default=str))
    for field in new:
        if field not in RESUME_IGNORED and old.get(field) != new[field]:
            raise ValueError(f"cannot resume {str(run_dir)!r} with a changed config: {field}={new[field]!r}, the run "
                             f"has {field}={old.get(field)!r} (start a new run with --config {path})")


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """What a callback factory knows where it runs (a Ray Train worker, or this process: rank 0 of 1)."""

    config: TrainConfig
    world_rank: int
    world_size: int
    initial_epoch: int
    extra: dict


def best_index(values, first=0):
    """Index of the best epoch: the first highest finite value from index `first` on (of all epochs when
    none from `first` on is finite); the last epoch when no value is finite. In-process and Ray runs
    choose with this one rule."""
    def pick(indices):
        finite = [i for i in indices if isinstance(values[i], (int, float)) and math.isfinite(values[i])]
        return max(finite, key=lambda i: (values[i], -i)) if finite else None

    if not values:
        return 0
    best = pick(range(min(first, len(values)), len(values)))
    if best is None:
        best = pick(range(len(values)))
    return len(values) - 1 if best is None else best


class BestEpoch:
    """Keeps the plain net's weights (BN statistics included) of the best validation epoch, chosen by
    `best_index` over `val_accuracy` from epoch `first` (0-based, counted from the start of this fit) on,
    so that `model.keras` is the model `metrics.json` reports."""

    def __init__(self, net, first=0):
        self.net, self.first = net, first
        self.values, self.weights, self.index = [], None, None

    def callback(self):
        import tf_keras as keras

        outer = self

        class _Keep(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                value = (logs or {}).get("val_accuracy", math.nan)
                outer.values.append(float(value) if value is not None else math.nan)
                i = len(outer.values) - 1
                if best_index(outer.values, outer.first) == i:
                    outer.weights, outer.index = outer.net.get_weights(), i

        return _Keep()

    def restore(self):
        """Put the best epoch's weights back into the net; returns its index (None: nothing to restore)."""
        if self.weights is not None and self.index != len(self.values) - 1:
            self.net.set_weights(self.weights)
        return self.index


def resolve_callbacks(callbacks, ctx: WorkerContext):
    """Keras callbacks from `callbacks`: each is a Keras callback, or a factory `factory(ctx)` returning
    one (or None), as Ray Train workers take them."""
    import tf_keras as keras

    out = []
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.Callback):
            out.append(cb)
        elif callable(cb):
            made = cb(ctx)
            if made is not None:
                out.append(made)
        else:
            raise ValueError(f"callbacks: expected a Keras callback or a factory ctx -> callback; received {cb!r}")
    return out


def summarize(net, info, history: dict, seconds: float, state=None, best=None):
    """Final metrics: the best epoch's validation accuracy (`best`, default `best_index` over the
    history), MAdds, params, time."""
    from keras_layers import count_madds

    val = history.get("val_accuracy") or [float("nan")]
    best = best_index(val) if best is None else best
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


def train(cfg: TrainConfig, callbacks=(), verbose="auto", resume_dir=None, accelerator=None):
    """Train in-process; returns `(metrics dict, run_dir, net)`. Validates the config before any work.
    `accelerator="tpu"` trains under `TPUStrategy` on this TPU VM; otherwise several visible GPUs train
    under `MirroredStrategy` (`devices.strategy_for`; the device itself is checked by `pipelines.training.run`)."""
    import sys

    cfg.validate()
    if resume_dir:
        check_resumable(resume_dir, cfg)  # before any data is read
    import tf_keras as keras

    from pipelines.training import devices

    keras.utils.set_random_seed(cfg.seed)
    train_ds, info = load_data(cfg, "train")
    val_ds, _ = load_data(cfg, "validation", shuffle=False)
    n_train = info.num_examples.get("train")
    if cfg.jit_compile and n_train is not None and n_train < cfg.batch_size:
        raise ValueError(f"jit_compile serves whole batches only: the train split has {n_train} examples, "
                         f"fewer than batch_size={cfg.batch_size}")
    steps = planned_steps(cfg, info)
    with devices.strategy_for(accelerator).scope():
        model = build_training(cfg, info, steps)

    if resume_dir:
        run_dir = Path(resume_dir)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = _unique_dir(Path(cfg.out), cfg.run_name or f"{cfg.model}-{stamp}")
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    ckpt = EpochCheckpoint(model, run_dir / "checkpoints")
    initial_epoch = ckpt.restore()
    best = BestEpoch(model.net, first=max(0, model.recipe.final_stage_start(cfg.epochs) - initial_epoch))

    ctx = WorkerContext(cfg, world_rank=0, world_size=1, initial_epoch=initial_epoch, extra={})
    cbs = [ckpt.callback(), *recipe_callbacks(cfg, model, steps, train_ds), best.callback(),
           *resolve_callbacks(callbacks, ctx)]
    cbs.append(tensorboard_callback(run_dir / TENSORBOARD_DIR))  # TensorBoard: events in the run folder
    if cfg.early_stopping:  # BestEpoch restores the best weights (of the recipe's last stage)
        cbs.append(keras.callbacks.EarlyStopping("val_accuracy", patience=cfg.early_stopping, mode="max"))
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.time()
    hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
                     callbacks=cbs, verbose=verbose)
    seconds = time.time() - start
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    best.restore()
    net = float32_net(model.net)
    net.save(run_dir / "model.keras")
    metrics = summarize(net, info, history, seconds, best=best.index)
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "dataset.json").write_text(json.dumps(info.to_dict(), indent=2))
    code_version.write(run_dir)
    return metrics, run_dir, net


def train_tracked(cfg, tracking_uri=None, experiment=None, parent_run_id=None, tags=None, callbacks=(),
                  verbose="auto", after_train=None, resume_dir=None, accelerator=None):
    """`train(cfg)` inside an MLflow run; returns `(metrics, run_dir, net, run_id)`. The in-process half of
    `pipelines.training.run(cfg, tracking=TrackingOptions(...))`, which is the entry to call.

    `after_train(net, run_dir, run_id)` runs inside the run after training (families log their
    heatmaps/curves there). The config and the options are validated before MLflow is touched.
    `resume_dir` continues that run folder (`train`) in a new MLflow run tagged `resumed_from`.
    """
    from pipelines import tracking
    from pipelines.training.tracked import TrackingOptions, finish, tracked_run

    cfg.validate()
    if resume_dir:
        check_resumable(resume_dir, cfg)  # before an MLflow run is opened
        tags = {**(tags or {}), "resumed_from": str(Path(resume_dir).resolve())}
    options = TrackingOptions(tracking_uri, experiment or tracking.DEFAULT_EXPERIMENT, parent_run_id, tags).validate()
    with tracked_run(cfg, options) as run_id:
        metrics, run_dir, net = train(cfg, callbacks=[tracking.epoch_metrics(run_id), *callbacks], verbose=verbose,
                                      resume_dir=resume_dir, accelerator=accelerator)
        finish(run_id, run_dir, metrics, net, after_train)
    return metrics, run_dir, net, run_id
