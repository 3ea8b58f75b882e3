"""BasisNet's training recipe (Zhang et al., Sec. 3.3): both stages trained end to end in one step.

    L = CE(specialist) + lambda * CE(preview) + L2                                    (Eq. 6)

Between the stages, in training only, the predicted coefficients are transformed:

* epsilon mixing ``alpha' = eps * uniform + (1 - eps) * alpha`` (Eq. 5), eps decaying linearly from
  1 to 0 over the first ``epsilon_fraction`` of the training steps (`EpsilonSchedule`; the
  `EpsilonMixing` callback tells it the length of training), then 0;
* basis-model dropout: DropConnect on the coefficients, each basis of each layer of each example
  dropped with probability ``basis_dropout``; the kept ones are rescaled to the original total so a
  convex combination stays convex (`drop_bases`).

Knowledge distillation (``teacher`` = a saved ``.keras`` file, a run directory holding
``model.keras``, or an MLflow ``models:/NAME@alias`` URI): each cross-entropy term becomes
``(1 - kd_weight) * CE + kd_weight * T^2 KL(teacher_T || student_T)``; the teacher runs in inference
mode, is never trained and gets no gradient. Label smoothing, weight decay and augmentation come from
the base `Recipe`.

One-hot model selection (Sec. 4.7, "Model selection instead of model synthesis"), two ways:

* the paper's procedure, ``selection_fraction=f``: the last ``f`` of the epochs are a second stage in
  which the preview is frozen (no updates, inference-mode BN) and its coefficients are turned into one-hot
  vectors (argmax per layer: the `BasisCoefficients` layer's ``one_hot`` is switched on, so the saved and
  exported model selects too); the bases (the specialist) are fine-tuned with them. Epsilon mixing and
  basis dropout are off in that stage; the run's best epoch is chosen in it.
* the project's variant, ``--model-config one_hot=true``: one-hot coefficients from the start, trained
  end to end with a straight-through gradient into the preview.

Default ``epsilon_fraction=0.5`` (was 0.2 before session 8; the paper says only "the early phase"): with
0.2 the specialist of 1 seed in 3 (4 bases, cluttered-digits, 10 epochs; 3 of 3 with the paper's 16 Large
bases) never learned features of its own - it read the preview's decision through the coefficients (mean
coefficients: chance) and ended at the preview's accuracy (67.7%). Mixing for the first half, the same seed
reaches 78.4% and every seed gains (67.70 / 84.95 / 85.95 -> 78.40 / 87.00 / 86.55%; docs/results.md).

``preset="paper"`` (Sec. 3.3 and 4.3): preview weight lambda = 1, epsilon decaying over the first 20%
of training, basis-model dropout 0.1, L2 weight decay 4e-5 and knowledge distillation (kd_weight 0.5 at the
recipe's ``kd_temperature``; the text gives no weight or temperature) when a ``teacher`` is given. The paper's teacher (EfficientNet-B2 with
noisy-student training, trained on extra data) cannot be shipped: without ``teacher=`` the preset has
no distillation (kd_weight 0). The text gives no dropout rate or weight decay; 0.1 and 4e-5 (the
MobileNet papers' value) are this project's choices. The MobileNetV3-Large-shaped specialist is the
model preset (``--model-config preset=paper``: `keras_layers.models.basisnet_mobilenet_v3`).

    python -m pipelines train --model basisnet_mobilenet_v3 --recipe-config preview_weight=1.0 basis_dropout=0.1
    python -m pipelines train --model basisnet_mobilenet_v3 --recipe-config preset=paper selection_fraction=0.25
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines.training.recipes import check_preset, losses, register
from pipelines.training.recipes.base import Recipe, StageSwitch, StepOutput, check_range


class EpsilonSchedule:
    """eps(step) = max(0, 1 - step / decay_steps): linear from 1 to 0, then 0 (0 throughout if decay_steps <= 0).

    `decay_steps` may be a number or a variable (the recipe keeps it in a variable so the compiled
    train step reads the length set at the start of `fit`).
    """

    def __init__(self, decay_steps):
        self.decay_steps = decay_steps

    def __call__(self, step):
        steps = tf.cast(self.decay_steps, tf.float32)
        step = tf.cast(step, tf.float32)
        return tf.where(steps > 0, tf.maximum(0.0, 1.0 - step / tf.maximum(steps, 1.0)), 0.0)


class EpsilonMixing(keras.callbacks.Callback):
    """Sets the epsilon schedule's length when training starts: `fraction` of all training steps."""

    def __init__(self, decay_steps_variable, fraction, steps_per_epoch, epochs):
        super().__init__()
        self.variable = decay_steps_variable
        self.decay_steps = int(round(fraction * steps_per_epoch * epochs))

    def on_train_begin(self, logs=None):
        self.variable.assign(float(self.decay_steps))


def mix_uniform(alpha, epsilon):
    """Eq. 5: ``eps * 1/N + (1 - eps) * alpha`` over the last (bases) axis."""
    n = tf.cast(tf.shape(alpha)[-1], alpha.dtype)
    epsilon = tf.cast(epsilon, alpha.dtype)
    return epsilon / n + (1.0 - epsilon) * alpha


def drop_bases(alpha, keep):
    """DropConnect on coefficients with a given 0/1 `keep` mask (same shape as `alpha`).

    Kept coefficients are rescaled so each (example, layer) keeps its original total; where nothing
    (or only zero weight) would be kept, the coefficients pass unchanged.
    """
    keep = tf.cast(keep, alpha.dtype)
    kept = alpha * keep
    total = tf.reduce_sum(alpha, axis=-1, keepdims=True)
    kept_total = tf.reduce_sum(kept, axis=-1, keepdims=True)
    ok = kept_total > 1e-6 * tf.maximum(total, 1e-12)
    return tf.where(ok, kept * (total / tf.where(ok, kept_total, 1.0)), alpha)


def random_drop_bases(alpha, rate, seed=None):
    """`drop_bases` with each basis kept with probability 1 - rate."""
    if not rate:
        return alpha
    keep = tf.random.uniform(tf.shape(alpha), seed=seed) >= rate
    return drop_bases(alpha, keep)


def load_teacher(teacher):
    """A frozen teacher from a `keras.Model`, a `.keras` file, a run directory or `models:/NAME@alias`
    (files are read with `pipelines.training.saving.load_model`: zip `.keras` only, safe_mode)."""
    from pipelines.training.saving import load_model

    if isinstance(teacher, keras.Model):
        model = teacher
    else:
        source = str(teacher)
        if source.startswith("models:/"):
            import mlflow

            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
        else:
            path = Path(source).expanduser()
        if path.is_dir():
            found = sorted(path.rglob("*.keras"))
            if not found:
                raise ValueError(f"teacher={teacher!r}: no .keras model found in {path}")
            path = found[0]
        if not path.exists():
            raise ValueError(f"teacher={teacher!r}: file not found")
        model = load_model(path)
    model.trainable = False
    return model


def teacher_logits(teacher, x):
    out = teacher(x, training=False)
    return tf.stop_gradient(out["logits"] if isinstance(out, dict) else out)


def paper_config(explicit):
    """The paper's recipe (Sec. 3.3): basis dropout, weight decay, distillation when a teacher is given."""
    return {"preview_weight": 1.0, "epsilon_fraction": 0.2, "basis_dropout": 0.1, "weight_decay": 4e-5,
            "kd_weight": 0.5 if explicit.get("teacher") else 0.0}


def coefficients_layer(preview):
    """The preview's `BasisCoefficients` layer (named "coefficients")."""
    return preview.get_layer("coefficients")


@register
@dataclasses.dataclass
class BasisNetRecipe(Recipe):
    name = "basisnet"
    models = ("basisnet_mobilenet_v3",)
    PAPER = staticmethod(paper_config)

    preview_weight: float = 1.0  # lambda of Eq. 6 (1 in the paper)
    basis_dropout: float = 0.0  # DropConnect rate on the coefficients
    epsilon_fraction: float = 0.5  # eps decays 1 -> 0 over this fraction of training; 0 = off (see below)
    teacher: str = ""  # .keras file, run dir or models:/NAME@alias; "" = no distillation
    kd_weight: float = 0.0  # weight of the distillation term (needs a teacher)
    kd_temperature: float = 4.0
    selection_fraction: float = 0.0  # last fraction of the epochs: frozen preview, one-hot coefficients (Sec. 4.7)
    preset: str = "default"  # "default" | "paper" (resolved by recipes.get)

    def validate(self):
        super().validate()
        check_preset(self.preset)
        if isinstance(self.selection_fraction, bool) or not isinstance(self.selection_fraction, (int, float)) \
                or not 0.0 <= self.selection_fraction < 1.0:
            raise ValueError(f"selection_fraction must be in [0, 1); received selection_fraction="
                             f"{self.selection_fraction!r}")
        check_range("preview_weight", self.preview_weight, 0.0, 10.0)
        check_range("basis_dropout", self.basis_dropout, 0.0, 0.9)
        check_range("epsilon_fraction", self.epsilon_fraction, 0.0, 1.0)
        check_range("kd_weight", self.kd_weight, 0.0, 1.0)
        check_range("kd_temperature", self.kd_temperature, 0.1, 100.0)
        if not isinstance(self.teacher, (str, keras.Model)):
            raise ValueError(f"teacher must be a path or models:/ URI; received teacher={self.teacher!r}")
        if self.kd_weight > 0 and not self.teacher:
            raise ValueError(f"kd_weight={self.kd_weight!r} needs a teacher; received teacher={self.teacher!r}")

    def to_dict(self):
        d = super().to_dict()
        if isinstance(d.get("teacher"), keras.Model):
            d["teacher"] = d["teacher"].name
        return d

    # -- hooks -----------------------------------------------------------------
    def setup(self, model):
        from keras_layers.models.basisnet_mobilenet_v3 import stages

        stages(model.net)  # fail early on a model without the two stages
        self._decay_steps = tf.Variable(0.0, trainable=False, name="epsilon_decay_steps")
        self.schedule = EpsilonSchedule(self._decay_steps)
        self._teacher = load_teacher(self.teacher) if self.teacher and self.kd_weight > 0 else None
        self.selecting = False

    def selection_epoch(self, epochs):
        """First epoch (0-based) of the one-hot model-selection stage, or None without one."""
        if not self.selection_fraction or epochs < 2:
            return None
        return min(epochs - 1, max(1, int(round((1.0 - self.selection_fraction) * epochs))))

    def final_stage_start(self, epochs):
        start = self.selection_epoch(epochs)
        return 0 if start is None else start

    def enter_selection(self, model):
        """Freeze the preview and make its coefficients one-hot (model selection); re-trace the steps."""
        from keras_layers.models.basisnet_mobilenet_v3 import stages

        preview, _ = stages(model.net)
        preview.trainable = False
        coefficients_layer(preview).one_hot = True
        self.selecting = True
        model.train_function = None
        model.test_function = None
        model.predict_function = None

    def callbacks(self, model, steps_per_epoch, epochs, train_data=None):
        callbacks = [EpsilonMixing(self._decay_steps, self.epsilon_fraction, steps_per_epoch, epochs)]
        start = self.selection_epoch(epochs)
        if start is not None:
            def switch(epoch):
                if epoch >= start and not self.selecting:
                    self.enter_selection(model)
                    return f"basisnet: one-hot model selection (preview frozen) from epoch {epoch + 1}"
                return None

            callbacks.append(StageSwitch(model, switch))
        return callbacks

    def log_names(self, net):
        return ["ce", "preview_ce", "kd", "epsilon"]

    def prediction_names(self, net):
        return ["logits", "preview_logits"]

    def _term(self, y, logits, soft, smoothing):
        ce = losses.cross_entropy(y, logits, smoothing)
        if soft is None:
            return ce, ce, tf.constant(0.0)
        kd = losses.distillation(logits, soft, self.kd_temperature)
        return (1.0 - self.kd_weight) * ce + self.kd_weight * kd, ce, kd

    def coefficients_for_training(self, alpha, step):
        """Eq. 5 mixing then basis dropout (training only); returns (alpha', epsilon)."""
        eps = self.schedule(step)
        alpha = mix_uniform(alpha, eps)
        return random_drop_bases(alpha, self.basis_dropout), eps

    def compute(self, model, x, y, training):
        from keras_layers.models.basisnet_mobilenet_v3 import stages

        preview, specialist = stages(model.net)
        first = preview(x, training=training and not self.selecting)
        alpha = first["coefficients"]
        eps = tf.constant(0.0)
        if training and not self.selecting:
            optimizer = getattr(model, "optimizer", None)
            step = optimizer.iterations if optimizer is not None else 0
            alpha, eps = self.coefficients_for_training(alpha, step)
        logits = specialist([x, alpha], training=training)
        smoothing = self.label_smoothing if training else 0.0
        soft = teacher_logits(self._teacher, x) if (self._teacher is not None and training) else None
        main, ce, kd = self._term(y, logits, soft, smoothing)
        prev, preview_ce, preview_kd = self._term(y, first["preview_logits"], soft, smoothing)
        loss = main + self.preview_weight * prev
        logs = {"ce": ce, "preview_ce": preview_ce, "kd": kd + self.preview_weight * preview_kd, "epsilon": eps}
        return StepOutput(loss=loss, logs=logs,
                          predictions={"logits": logits, "preview_logits": first["preview_logits"]})
