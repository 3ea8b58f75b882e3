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

``last_exit_only=True`` scores the last exit alone (every other weight 0; no distillation): the same
network trained as a static one, the control that tells what the early exits' losses (deep supervision) do
to the last exit (`multi-exit-eval --variants last`).

Paper options (Li et al., ICCV 2019, Sec. 3.2-3.3 and 4 "Training Details"):

* ``kd_t_squared=False``: the KL term exactly as Eq. 7-8 (``alpha * CE + (1 - alpha) * KL_T``); the
  project's default multiplies it by T^2 (Hinton et al.'s gradient-scale correction, a project addition).
* ``isc_phase="phase2"``: Inline Subnetwork Collaboration only in phase 2 (the paper adds ISC and OFA
  when fine-tuning). The network keeps its ISC connections (``exit_i = own_i + stop_gradient(exit_{i-1})``);
  in phase 1 the recipe scores ``own_i = exit_i - stop_gradient(exit_{i-1})``, which is exactly the
  network without ISC (same values, same gradients), then phase 2 trains and evaluates the ISC outputs.
  The run's best epoch is chosen among the phase-2 epochs.
* ``phase2_train="last"``: phase 2 fine-tunes only the last layer of each classifier (the paper's words;
  equal to ``"heads"`` when the heads have no hidden layer).
* ``phase_lr="step"`` / ``"cosine"``: a learning-rate restart between the phases: each phase starts at
  the run's initial learning rate; ``"step"`` divides it by 10 at 50% and 75% of each phase (the paper's
  300/150/225 and 180/90/135 epochs), ``"cosine"`` decays it as the run's cosine within each phase.
  ``"run"`` (default) keeps the run's one schedule.

``preset="paper"`` sets all four, phase 1 = 62.5% of the epochs (CIFAR: 300 of 300 + 180 epochs),
weight decay 1e-4 (L2 ``wd/2 ||w||^2`` = SGD weight decay 1e-4); alpha and T are not given in the
text, the preset keeps 0.5 and 3. The paper's optimizer (SGD, Nesterov momentum 0.9, learning rate
0.1) is the run's: ``--optimizer sgd --learning-rate 0.1``. The paper's backbone is MSDNet; here
MobileNetV2 stages stand in (`keras_layers.models.multi_exit_net`).

    python -m pipelines train --model multi_exit_net --recipe-config alpha=0.5 temperature=3 phase1_fraction=0.5
    python -m pipelines train --model multi_exit_net --optimizer sgd --learning-rate 0.1 --recipe-config preset=paper
"""
from __future__ import annotations

import dataclasses
import math

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines.training.recipes import check_preset, losses, register
from pipelines.training.recipes.base import Recipe, StageSwitch, StepOutput, check_range
from pipelines.training.recipes.schedules import InstallSchedule, initial_learning_rate


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
    PAPER = {"distill": True, "alpha": 0.5, "temperature": 3.0, "phase1_fraction": 0.625, "phase2_train": "last",
             "kd_t_squared": False, "isc_phase": "phase2", "phase_lr": "step", "weight_decay": 1e-4,
             "exit_weights": None, "last_exit_only": False}

    exit_weights: tuple | list | None = None  # one positive weight per exit; None = all 1 (MSDNet)
    last_exit_only: bool = False  # score only the last exit (the control: the same network, no deep supervision)
    distill: bool = True  # One-for-All knowledge distillation from the last exit
    alpha: float = 0.5  # weight of CE in the distilled exits' loss (1 - alpha on T^2 * KL)
    temperature: float = 3.0
    phase1_fraction: float = 0.5  # fraction of the epochs without distillation (0 = one phase, KD throughout)
    phase2_train: str = "all"  # what phase 2 trains: "all" variables, the exit "heads", or their "last" layer
    kd_t_squared: bool = True  # T^2 factor on the KL term (project addition; Eq. 8 has none)
    isc_phase: str = "both"  # Inline Subnetwork Collaboration in "both" phases or in "phase2" only (paper)
    phase_lr: str = "run"  # "run" schedule, or a restart between the phases: "cosine" / "step" per phase
    preset: str = "default"  # "default" | "paper" (resolved by recipes.get)

    PHASE2_TRAIN = ("all", "heads", "last")
    ISC_PHASES = ("both", "phase2")
    PHASE_LR = ("run", "cosine", "step")

    def validate(self):
        super().validate()
        check_preset(self.preset)
        for field, choices in (("isc_phase", self.ISC_PHASES), ("phase_lr", self.PHASE_LR)):
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {', '.join(choices)}; "
                                 f"received {field}={getattr(self, field)!r}")
        if not isinstance(self.kd_t_squared, bool):
            raise ValueError(f"kd_t_squared must be a bool; received kd_t_squared={self.kd_t_squared!r}")
        if self.exit_weights is not None:
            if not isinstance(self.exit_weights, (list, tuple)) or not self.exit_weights or any(
                    isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in self.exit_weights):
                raise ValueError(f"exit_weights must be a non-empty list of positive numbers; "
                                 f"received exit_weights={self.exit_weights!r}")
            self.exit_weights = tuple(float(w) for w in self.exit_weights)
        if not isinstance(self.distill, bool):
            raise ValueError(f"distill must be a bool; received distill={self.distill!r}")
        if not isinstance(self.last_exit_only, bool):
            raise ValueError(f"last_exit_only must be a bool; received last_exit_only={self.last_exit_only!r}")
        if self.last_exit_only and (self.distill or self.exit_weights is not None):
            field, value = ("distill", self.distill) if self.distill else ("exit_weights", list(self.exit_weights))
            raise ValueError(f"last_exit_only trains no early exit, so it takes no {field}; received "
                             f"last_exit_only=True with {field}={value!r}")
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
        if self.last_exit_only:
            return (0.0,) * (num_exits - 1) + (1.0,)
        if self.exit_weights is None:
            return (1.0,) * num_exits
        if len(self.exit_weights) != num_exits:
            raise ValueError(f"exit_weights needs one weight per exit ({num_exits}); "
                             f"received exit_weights={list(self.exit_weights)!r}")
        return self.exit_weights

    def two_phases(self):
        """Whether training has a phase 2 (distillation, or ISC added in phase 2)."""
        return self.distill or self.isc_phase == "phase2"

    def setup(self, model):
        from keras_layers import ExitHead

        self.weights_for(len(_exit_names(model.net)))
        start_on = self.two_phases() and self.phase1_fraction == 0.0
        # 1 in phase 2 (OFA distillation on when `distill`, ISC on when isc_phase="phase2"); logged as kd_on
        self.kd_on = tf.Variable(1.0 if start_on else 0.0, trainable=False, dtype=tf.float32, name="kd_on")
        self.heads_only = start_on and self.phase2_train != "all"
        self._isc_heads = {layer.name for layer in model.net.layers
                           if isinstance(layer, ExitHead) and layer.inline_collaboration}

    def trainable_variables(self, model):
        if not self.heads_only:
            return model.net.trainable_variables
        from keras_layers import ExitHead

        heads = [layer for layer in model.net.layers if isinstance(layer, ExitHead)]
        if self.phase2_train == "last":  # the last layer of each classifier (kernel, bias)
            return [v for layer in heads for v in (layer.kernel, layer.bias) if v.trainable]
        return [v for layer in heads for v in layer.trainable_variables]

    def phase2_start_epoch(self, epochs):
        """First epoch (0-based) of phase 2; `epochs` when there is no phase 2 (no distillation, ISC throughout)."""
        if not self.two_phases():
            return epochs
        return int(round(self.phase1_fraction * epochs))

    def final_stage_start(self, epochs):
        """With ISC added in phase 2 the phase-1 epochs score another network (no ISC): the best epoch is
        chosen in phase 2."""
        if self.isc_phase == "phase2" and self._isc_heads_known():
            return min(self.phase2_start_epoch(epochs), epochs - 1)
        return 0

    def _isc_heads_known(self):
        return bool(getattr(self, "_isc_heads", True))  # before setup: assume the network has ISC

    def callbacks(self, model, steps_per_epoch, epochs, train_data=None):
        recipe, start = self, self.phase2_start_epoch(epochs)
        callbacks = []
        if self.phase_lr != "run" and self.two_phases():
            callbacks.append(PhaseRestart(start * steps_per_epoch, (epochs - start) * steps_per_epoch,
                                          self.phase_lr))

        def two_phases(epoch):
            """Phase 1 (summed CE) before epoch `start`, phase 2 (with OFA distillation) from it on."""
            phase2 = epoch >= start
            recipe.kd_on.assign(1.0 if phase2 else 0.0)  # a variable: the traced step reads it, no retrace
            heads_only = phase2 and recipe.phase2_train != "all"
            if heads_only == recipe.heads_only:
                return None
            recipe.heads_only = heads_only  # other variables to train: the train step is traced again
            return ""

        return [*callbacks, StageSwitch(model, two_phases)]

    def effective_logits(self, names, logits):
        """The logits the loss scores: with ``isc_phase="phase2"``, in phase 1 each ISC exit's own logits
        ``exit_i - stop_gradient(exit_{i-1})`` (the network without ISC), in phase 2 the outputs."""
        if self.isc_phase != "phase2" or not self._isc_heads:
            return list(logits)
        off = 1.0 - tf.cast(self.kd_on, logits[0].dtype)
        out = [logits[0]]
        for name, z, previous in zip(names[1:], logits[1:], logits[:-1]):
            out.append(z - off * tf.stop_gradient(previous) if name in self._isc_heads else z)
        return out

    def loss_terms(self, logits, y, training, kd_on):
        """(total loss, weighted CE sum, mean KL term) of per-exit `logits` (list, last = teacher)."""
        weights = self.weights_for(len(logits))
        smoothing = self.label_smoothing if training else 0.0
        ce = [losses.cross_entropy(y, z, smoothing) for z in logits]
        ce_sum = tf.add_n([w * c for w, c in zip(weights, ce)])
        if not self.distill:
            return ce_sum, ce_sum, tf.constant(0.0)
        kd = [losses.distillation(z, logits[-1], self.temperature, self.kd_t_squared) for z in logits[:-1]]
        a = 1.0 - (1.0 - self.alpha) * tf.cast(kd_on, tf.float32)  # alpha in phase 2, 1 in phase 1
        total = tf.add_n([w * (a * c + (1.0 - a) * k) for w, c, k in zip(weights, ce, kd)]) + weights[-1] * ce[-1]
        return total, ce_sum, tf.add_n(kd) / len(kd)

    def compute(self, model, x, y, training):
        outputs = model.net(x, training=training)
        names = _exit_names(outputs)
        logits = self.effective_logits(names, [outputs[n] for n in names])
        total, ce_sum, kd = self.loss_terms(logits, y, training, self.kd_on)
        predictions = {n: z for n, z in zip(names[:-1], logits[:-1])}
        predictions["logits"] = logits[-1]
        return StepOutput(loss=total, logs={"ce": ce_sum, "kd": kd, "kd_on": tf.identity(self.kd_on)},
                          predictions=predictions)

    def log_names(self, net):
        return ["ce", "kd", "kd_on"]

    def prediction_names(self, net):
        return [*_exit_names(net)[:-1], "logits"]


class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that restarts at `initial` when phase 2 begins (step `phase1_steps`).

    Within each phase: ``"step"`` = `initial`, divided by 10 at 50% and by 100 at 75% of the phase (IMTA's
    schedule); ``"cosine"`` = cosine decay to ``alpha * initial`` over the phase."""

    def __init__(self, initial, phase1_steps, phase2_steps, shape="step", alpha=0.01):
        self.initial = float(initial)
        self.phase1_steps = int(phase1_steps)
        self.phase2_steps = int(phase2_steps)
        self.shape = shape
        self.alpha = float(alpha)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        p1 = float(self.phase1_steps)
        in2 = step >= p1
        local = tf.where(in2, step - p1, step)
        length = tf.where(in2, float(max(1, self.phase2_steps)), float(max(1, self.phase1_steps)))
        frac = tf.clip_by_value(local / length, 0.0, 1.0)
        if self.shape == "cosine":
            factor = self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + tf.cos(math.pi * frac))
        else:
            factor = tf.where(frac >= 0.75, 0.01, tf.where(frac >= 0.5, 0.1, 1.0))
        return self.initial * factor

    def get_config(self):
        return {"initial": self.initial, "phase1_steps": self.phase1_steps, "phase2_steps": self.phase2_steps,
                "shape": self.shape, "alpha": self.alpha}


class PhaseRestart(InstallSchedule):
    """Replaces the optimizer's schedule by a `PhaseSchedule` from the run's initial learning rate when
    training starts (a function of the optimizer's step count, so a resumed run lands in the right phase)."""

    def __init__(self, phase1_steps, phase2_steps, shape):
        super().__init__()
        self.phase1_steps, self.phase2_steps, self.shape = phase1_steps, phase2_steps, shape

    def schedule(self, optimizer):
        return PhaseSchedule(initial_learning_rate(optimizer), self.phase1_steps, self.phase2_steps, self.shape)
