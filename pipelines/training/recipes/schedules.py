"""Learning-rate schedules the recipes install over the run's cosine schedule (`training.train.make_optimizer`):
IMTA's restart between phases lives in `recipes.multi_exit` (`PhaseSchedule`); DS-Net's gate decay here;
`InstallSchedule`, the one callback that puts a recipe's schedule on the optimizer when training starts.

    schedule = EpochDecay(before=optimizer.learning_rate, initial=0.05, start_step=600, steps_per_epoch=100,
                          decay=0.9)   # from step 600: 0.05, 0.045, 0.0405, ... one factor per epoch
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras


def initial_learning_rate(optimizer):
    """The learning rate a run starts with (a schedule's initial rate, or the optimizer's constant rate)."""
    lr = optimizer._learning_rate
    if hasattr(lr, "initial"):
        return float(lr.initial)
    if hasattr(lr, "initial_learning_rate"):
        return float(lr.initial_learning_rate)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(lr(0))
    return float(keras.backend.get_value(lr))


class EpochDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`before` (a schedule or a rate) until step `start_step`; from it ``initial * decay ** k`` in the k-th
    epoch (of `steps_per_epoch` steps) after it: a restart at `initial`, then one factor per epoch."""

    def __init__(self, before, initial, start_step, steps_per_epoch, decay):
        self.before = before
        self.initial = float(initial)
        self.start_step = int(start_step)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.decay = float(decay)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        epochs = tf.floor(tf.maximum(step - self.start_step, 0.0) / self.steps_per_epoch)
        after = self.initial * tf.pow(self.decay, epochs)
        before = self.before(step) if callable(self.before) else self.before
        return tf.where(step >= self.start_step, after, tf.cast(before, tf.float32))

    def get_config(self):
        before = self.before
        if isinstance(before, keras.optimizers.schedules.LearningRateSchedule):
            before = keras.optimizers.schedules.serialize(before)
        return {"before": before, "initial": self.initial, "start_step": self.start_step,
                "steps_per_epoch": self.steps_per_epoch, "decay": self.decay}


class InstallSchedule(keras.callbacks.Callback):
    """When training starts, the optimizer's learning rate becomes `self.schedule(optimizer)` (a subclass's
    method: IMTA's `PhaseRestart`, DS-Net's `GateDecay`) and the train step is retraced to read it. The
    schedules are functions of the optimizer's step count, so a resumed run lands on the right rate."""

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        optimizer.learning_rate = self.schedule(optimizer)
        self.model.make_train_function(force=True)
