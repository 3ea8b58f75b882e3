"""The one training-step mechanism: `TrainingModel` runs any `Recipe`'s losses in `train_step`.

A recipe says *what* to minimise (`compute` returns the total loss, named scalars to log, and named
logits to score); `TrainingModel` does the rest the same way for every family: gradient tape,
L2, loss scaling for distribution strategies, one optimizer step, metrics, and the recipe's
`after_step` hook (EMA teachers, schedules). Only `net` (the plain model) is saved or exported.

Mixed precision: the losses are float32 (`losses` casts logits); with a `LossScaleOptimizer` (precision
"fp16") the step differentiates the scaled loss and unscales the gradients before the one optimizer step,
which skips the update and lowers the scale when a gradient is not finite - for every recipe, however many
losses it sums. Under `compile(jit_compile=True)` this step is what XLA compiles: no Python branch here
depends on a tensor's value or a dynamic shape.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines.training.recipes import losses


@dataclasses.dataclass(frozen=True)
class StepOutput:
    loss: tf.Tensor
    logs: dict = dataclasses.field(default_factory=dict)  # name -> scalar tensor (averaged per epoch)
    predictions: dict = dataclasses.field(default_factory=dict)  # name -> logits (accuracy metrics)


def check_range(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; received {name}={value!r}")


class StageSwitch(keras.callbacks.Callback):
    """The one way a recipe changes stage between epochs (DS-Net's Stage II, BasisNet's one-hot selection,
    CondConv's router warm-up, IMTA's phase II): `switch(epoch)` runs at the start of every epoch and
    changes the recipe's state; it returns None when nothing the compiled train step depends on changed,
    else a message (``""``: none to print). Then the train step is traced again (other variables train, the
    loss has other terms) before the epoch's first step, and the message is printed. A switch that changes
    the network's forward pass too resets the compiled test step itself (`DSNet.enter_stage2`,
    `BasisNetRecipe.enter_selection`)."""

    def __init__(self, model: "TrainingModel", switch):
        super().__init__()
        self._target, self._switch = model, switch

    def on_epoch_begin(self, epoch, logs=None):
        message = self._switch(epoch)
        if message is None:
            return
        self._target.make_train_function(force=True)
        if message:
            print(message, flush=True)


@dataclasses.dataclass
class Recipe:
    """Base recipe: cross-entropy on the model's logits, label smoothing, L2 weight decay, augmentation, Mixup.

    ``mixup=alpha`` (every recipe): the training batches come mixed from the data path
    (`pipelines.data.mixup_batch`: ``lam ~ Beta(alpha, alpha)`` per batch, each image mixed with another of
    the batch) with soft labels; `losses.cross_entropy` takes them as they are, so every label term of every
    recipe is Mixup's ``lam CE(y_a) + (1 - lam) CE(y_b)``; accuracies and label-based choices (DS-Net's SGS)
    read the larger share (`losses.hard_labels`).

    Subclasses add fields (validated in `validate`) and override `compute`; `main_output` names the
    output that is "the prediction" of the model (its accuracy is logged as `accuracy`).
    """

    name: ClassVar[str] = "base"
    models: ClassVar[tuple] = ()
    main_output: ClassVar[str] = "logits"

    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    augment: float = 0.0  # augmentation strength in [0, 1] (random crop + brightness), 0 = off
    mixup: float = 0.0  # Mixup's Beta(alpha, alpha) on the training batches (`pipelines.data`), 0 = off

    def __post_init__(self):
        self.validate()

    def validate(self):
        check_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        check_range("weight_decay", self.weight_decay, 0.0, 0.1)
        check_range("augment", self.augment, 0.0, 1.0)
        check_range("mixup", self.mixup, 0.0, 10.0)

    def to_dict(self):
        return dataclasses.asdict(self)

    # -- hooks -----------------------------------------------------------------
    def setup(self, model: "TrainingModel"):
        """Create extra state (teachers, EMA copies, step counters) once the net is built."""

    def compute(self, model: "TrainingModel", x, y, training: bool) -> StepOutput:
        outputs = model.net(x, training=training)
        logits = outputs[self.main_output] if isinstance(outputs, dict) else outputs
        loss = losses.cross_entropy(y, logits, self.label_smoothing if training else 0.0)
        return StepOutput(loss=loss, logs={"ce": loss}, predictions={"logits": logits})

    def log_names(self, net):
        """Names of the scalars `compute` returns in `logs` (metrics are created up front)."""
        return ["ce"]

    def prediction_names(self, net):
        return ["logits"]

    def trainable_variables(self, model: "TrainingModel"):
        return model.net.trainable_variables

    def optimizer_variables(self, model: "TrainingModel"):
        """Every variable the recipe trains at some stage: the optimizer makes its slots for these when the
        model is compiled (a built optimizer takes no new variable later; default: `trainable_variables`)."""
        return self.trainable_variables(model)

    def after_step(self, model: "TrainingModel"):
        """Runs after each optimizer step inside the compiled train step."""
        return None  # a body besides the docstring: AutoGraph cannot convert a docstring-only method

    def callbacks(self, model: "TrainingModel", steps_per_epoch: int, epochs: int, train_data=None):
        """Keras callbacks the recipe needs (schedules, stage switches), given the length of training and
        the training batches (`train_data`, for recipes that recompute statistics between stages)."""
        return []

    def final_stage_start(self, epochs: int) -> int:
        """First epoch (0-based) of the recipe's last stage: the run's best epoch (the saved model and the
        reported metrics) is chosen from these epochs on, where the validation metric measures the model
        that training ends with (DS-Net's Stage I accuracy is not that of the gated network)."""
        return 0


class TrainingModel(keras.Model):
    """Wraps the plain `net` and runs `recipe.compute` in `train_step` / `test_step`."""

    def __init__(self, net: keras.Model, recipe: Recipe, **kwargs):
        super().__init__(name=f"train_{net.name}", **kwargs)
        self.net = net
        self.recipe = recipe
        self._log_metrics = {n: keras.metrics.Mean(name=n) for n in recipe.log_names(net)}
        self._loss_metric = keras.metrics.Mean(name="loss")
        self._acc_metrics = {}
        for n in recipe.prediction_names(net):
            metric_name = "accuracy" if n == recipe.main_output or n == "logits" else f"{n}_accuracy"
            self._acc_metrics[n] = keras.metrics.SparseCategoricalAccuracy(name=metric_name)
        recipe.setup(self)

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # The optimizer's slots (Adam's moments, ...) are made now for the variables the first step trains,
        # as its first apply_gradients would: a tf.function that creates variables on its first call is
        # traced twice, and the train step's trace is most of a short run's time.
        variables = self.recipe.optimizer_variables(self)
        if variables and self.optimizer is not None:
            self.optimizer.build(variables)

    def call(self, inputs, training=False):
        return self.net(inputs, training=training)

    @property
    def metrics(self):
        return [self._loss_metric, *self._log_metrics.values(), *self._acc_metrics.values()]

    def _update(self, y, out: StepOutput, total, size=None):
        # Each batch counts by its size, so an epoch's value is the mean over its examples (a short last
        # batch does not weigh as much as a full one), and an empty batch counts for nothing: on Ray Train
        # a last global batch smaller than the number of workers leaves a worker with 0 examples, whose
        # mean loss is 0/0 = NaN, which made the whole epoch's val_loss NaN and stopped the run.
        # `size`: the batch's real size when `y` carries a stand-in example (`_stand_in`).
        size = tf.shape(y)[0] if size is None else size
        weight = tf.cast(size, tf.float32)
        counted = tf.fill([tf.shape(y)[0]], tf.cast(size > 0, tf.float32))  # 0 for a stand-in example

        def add(metric, value):
            value = tf.cast(value, tf.float32)
            metric.update_state(tf.where(size > 0, value, tf.zeros_like(value)), sample_weight=weight)

        add(self._loss_metric, total)
        for n, v in out.logs.items():
            if n in self._log_metrics:
                add(self._log_metrics[n], v)
        for n, logits in out.predictions.items():
            if n in self._acc_metrics:
                self._acc_metrics[n].update_state(losses.hard_labels(y), logits, sample_weight=counted)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data[0], data[1]
        variables = self.recipe.trainable_variables(self)
        loss_scaling = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            out = self.recipe.compute(self, x, y, training=True)
            total = tf.cast(out.loss, tf.float32) + losses.l2(variables, self.recipe.weight_decay)
            if self.net.losses:
                total += tf.add_n([tf.cast(l, tf.float32) for l in self.net.losses])
            # Gradients are summed across replicas by the optimizer: scale so the step matches one device.
            scaled = total / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, total.dtype)
            if loss_scaling:  # fp16: keep small gradients representable
                scaled = self.optimizer.get_scaled_loss(scaled)
        grads = tape.gradient(scaled, variables)
        if loss_scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        self.recipe.after_step(self)
        return self._update(y, out, total)

    def _stand_in(self, x, y):
        """(x, y, size): an empty batch replaced by one all-zero example, which `_update` then counts for
        nothing. TF's oneDNN convolution returns its *input* for an empty batch on some CPUs (AVX-512 ones:
        (0, 16, 16, 1) in, (0, 16, 16, 1) out instead of (0, 16, 16, 8)), so the next layer's shape check
        failed on a Ray worker's empty last batch. Not under XLA, whose kernels are not oneDNN's and which
        wants one shape per branch."""
        size = tf.shape(tf.nest.flatten(y)[0])[0]
        if self._jit_compile:
            return x, y, size

        def one_zero(t):
            return tf.zeros(tf.concat([[1], tf.shape(t)[1:]], 0), t.dtype)

        def pick(t):
            return tf.cond(size > 0, lambda: t, lambda: one_zero(t))

        return tf.nest.map_structure(pick, x), tf.nest.map_structure(pick, y), size

    def test_step(self, data):
        x, y, size = self._stand_in(data[0], data[1])
        out = self.recipe.compute(self, x, y, training=False)
        return self._update(y, out, out.loss, size)
