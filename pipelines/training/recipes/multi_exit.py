"""Multi-exit recipe (IMTA, Li et al., ICCV 2019): weighted exit losses + One-for-All distillation, two phases.

Loss of one batch, for a K-exit net with logits ``z_0 .. z_{K-1}`` (the last exit is the teacher):

    L = sum_i w_i * L_i,   L_{K-1} = CE(y, z_{K-1}),
    L_i = a * CE(y, z_i) + (1 - a) * T^2 * KL(softmax(z_{K-1}/T) || softmax(z_i/T))   (i < K-1, Eq. 7-8)

with the teacher side stopped (no gradient into the last exit from the KL terms). ``a`` is `alpha`
while distillation is on and 1 otherwise: with ``distill=True`` the first `phase1_fraction` of the
epochs are phase 1 (summed CE only) and the rest phase 2 (with OFA). The switch is a variable
flipped by the recipe's callback at the start of each epoch, so resuming mid-run lands in the right
phase. With ``phase2_train="heads"`` phase 2 fine-tunes only the `ExitHead`s (the paper's protocol;
the callback re-traces the train step with the smaller variable list). Gradient Equilibrium and Inline Subnetwork Collaboration are parts of the network
(`multi_exit_net`'s ``gradient_equilibrium`` / ``inline_collaboration``).

Logged: ``ce`` (weighted sum of the exits' CE), ``kd`` (mean KL term), ``kd_on`` (1 in phase 2),
``exit_i_accuracy`` for every exit but the last, whose accuracy is the model's ``accuracy``.

    python -m pipelines train --model multi_exit_net --recipe-config alpha=0.5 temperature=3 phase1_fraction=0.5
"""
from __future__ import annotations

import dataclasses

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines.training.recipes import losses, register
from pipelines.training.recipes.base import Recipe, StepOutput, check_range


def _exit_names(outputs_or_net):
    from keras_layers.models.multi_exit_net import exit_names

    names = exit_names(outputs_or_net)
    if len(names) < 2:
        raise ValueError(f"the multi_exit recipe needs >= 2 exit_i outputs; received {names}")
    return names


@register
@dataclasses.dataclass
class MultiExit(Recipe):
    name = "multi_exit"
    models = ("multi_exit_net",)

    exit_weights: tuple | list | None = None  # one positive weight per exit; None = all 1 (MSDNet)
    distill: bool = True  # One-for-All knowledge distillation from the last exit
    alpha: float = 0.5  # weight of CE in the distilled exits' loss (1 - alpha on T^2 * KL)
    temperature: float = 3.0
    phase1_fraction: float = 0.5  # fraction of the epochs without distillation (0 = one phase, KD throughout)
    phase2_train: str = "all"  # what phase 2 trains: "all" variables, or only the exit "heads" (as the paper)

    PHASE2_TRAIN = ("all", "heads")

    def validate(self):
        super().validate()
        if self.exit_weights is not None:
            if not isinstance(self.exit_weights, (list, tuple)) or not self.exit_weights or any(
                    isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in self.exit_weights):
                raise ValueError(f"exit_weights must be a non-empty list of positive numbers; "
                                 f"received exit_weights={self.exit_weights!r}")
            self.exit_weights = tuple(float(w) for w in self.exit_weights)
        if not isinstance(self.distill, bool):
            raise ValueError(f"distill must be a bool; received distill={self.distill!r}")
        check_range("alpha", self.alpha, 0.0, 1.0)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not 0 < self.temperature <= 100:
            raise ValueError(f"temperature must be in (0, 100]; received temperature={self.temperature!r}")
        if isinstance(self.phase1_fraction, bool) or not isinstance(self.phase1_fraction, (int, float)) \
                or not 0.0 <= self.phase1_fraction < 1.0:
            raise ValueError(f"phase1_fraction must be in [0, 1); received phase1_fraction={self.phase1_fraction!r}")
        if self.phase2_train not in self.PHASE2_TRAIN:
            raise ValueError(f"phase2_train must be one of {', '.join(self.PHASE2_TRAIN)}; "
                             f"received phase2_train={self.phase2_train!r}")

    # -- hooks -----------------------------------------------------------------
    def weights_for(self, num_exits):
        if self.exit_weights is None:
            return (1.0,) * num_exits
        if len(self.exit_weights) != num_exits:
            raise ValueError(f"exit_weights needs one weight per exit ({num_exits}); "
                             f"received exit_weights={list(self.exit_weights)!r}")
        return self.exit_weights

    def setup(self, model):
        self.weights_for(len(_exit_names(model.net)))
        start_on = self.distill and self.phase1_fraction == 0.0
        self.kd_on = tf.Variable(1.0 if start_on else 0.0, trainable=False, dtype=tf.float32, name="kd_on")
        self.heads_only = start_on and self.phase2_train == "heads"

    def trainable_variables(self, model):
        if not self.heads_only:
            return model.net.trainable_variables
        from keras_layers import ExitHead

        return [v for layer in model.net.layers if isinstance(layer, ExitHead) for v in layer.trainable_variables]

    def phase2_start_epoch(self, epochs):
        """First epoch (0-based) of phase 2; `epochs` when distillation is off."""
        if not self.distill:
            return epochs
        return int(round(self.phase1_fraction * epochs))

    def callbacks(self, model, steps_per_epoch, epochs, train_data=None):
        recipe, start = self, self.phase2_start_epoch(epochs)

        class TwoPhase(keras.callbacks.Callback):
            """Phase 1 (summed CE) before epoch `start`, phase 2 (with OFA distillation) from it on."""

            def on_epoch_begin(self, epoch, logs=None):
                phase2 = epoch >= start
                recipe.kd_on.assign(1.0 if phase2 else 0.0)
                heads_only = phase2 and recipe.phase2_train == "heads"
                if heads_only != recipe.heads_only:  # other variables to train: trace the train step again
                    recipe.heads_only = heads_only
                    self.model.make_train_function(force=True)

        return [TwoPhase()]

    def loss_terms(self, logits, y, training, kd_on):
        """(total loss, weighted CE sum, mean KL term) of per-exit `logits` (list, last = teacher)."""
        weights = self.weights_for(len(logits))
        smoothing = self.label_smoothing if training else 0.0
        ce = [losses.cross_entropy(y, z, smoothing) for z in logits]
        ce_sum = tf.add_n([w * c for w, c in zip(weights, ce)])
        if not self.distill:
            return ce_sum, ce_sum, tf.constant(0.0)
        kd = [losses.distillation(z, logits[-1], self.temperature) for z in logits[:-1]]
        a = 1.0 - (1.0 - self.alpha) * tf.cast(kd_on, tf.float32)  # alpha in phase 2, 1 in phase 1
        total = tf.add_n([w * (a * c + (1.0 - a) * k) for w, c, k in zip(weights, ce, kd)]) + weights[-1] * ce[-1]
        return total, ce_sum, tf.add_n(kd) / len(kd)

    def compute(self, model, x, y, training):
        outputs = model.net(x, training=training)
        names = _exit_names(outputs)
        logits = [outputs[n] for n in names]
        total, ce_sum, kd = self.loss_terms(logits, y, training, self.kd_on)
        predictions = {n: z for n, z in zip(names[:-1], logits[:-1])}
        predictions["logits"] = logits[-1]
        return StepOutput(loss=total, logs={"ce": ce_sum, "kd": kd, "kd_on": tf.identity(self.kd_on)},
                          predictions=predictions)

    def log_names(self, net):
        return ["ce", "kd", "kd_on"]

    def prediction_names(self, net):
        return [*_exit_names(net)[:-1], "logits"]
