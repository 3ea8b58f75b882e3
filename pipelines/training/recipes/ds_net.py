"""DS-Net's two-stage training (Li et al., "Dynamic Slimmable Network", CVPR 2021, Sec. 3), one `Recipe`.

Stage I - supernet with In-place Ensemble Bootstrapping (Eq. 3-5). An EMA copy of the network
(``theta' = a * theta' + (1 - a) * theta`` after every step, ``a = ema_decay``,
warmed up as ``min(a, (1 + t) / (10 + t))`` so the teacher is useful in short runs) is the teacher. Each step:
the widest width learns the labels; ``num_random`` widths drawn from the middle widths learn the
teacher's widest soft predictions; the slimmest learns the average of the teacher's widest and
random-width probabilities (the ensemble). The gate's attention head trains with the supernet, its
slimming head is off (every example runs the width being trained).

Stage II - gate training with the supernet frozen (all layers but the gate switch to inference mode):
``cls_weight * CE(dynamic logits) + complexity_weight * mean((MAdds(x) / T)^2) + sgs_weight * L_SGS``
(Eq. 10-12, paper weights 1, 0.5, 1). MAdds(x) is the gate's straight-through gumbel one-hot times the
MAdds of each choice; ``T = target_madds * MAdds(widest)``. Sandwich Gate Sparsification: examples the
slimmest width classifies correctly are "easy" (gate target: slimmest), all others (dependent and
hard, the "try best" strategy) target the widest. Only the slimming head trains unless
``train_shared_fc`` (the first FC is shared with the attention head, which Stage I fitted).

``stage1_fraction`` splits the epochs of one ``fit`` (a callback switches stages and re-traces the step);
1.0 runs Stage I only, 0.0 Stage II only (on a supernet loaded into the net beforehand). At the switch the
BN statistics of every width are recalibrated on ``recal_batches`` training batches
(`pipelines.training.bn_recalibration`), as between the two `fit`s of the DS-Net experiment. The run's best
epoch (saved model, reported metrics) is chosen among the Stage II epochs (`final_stage_start`).

    python -m pipelines train --model ds_mobilenet_v1 --epochs 12 --recipe-config target_madds=0.5
"""
from __future__ import annotations

import dataclasses

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers.models.ds_mobilenet_v1 import choice_madds, gate_layer
from keras_layers.slimmable import DYNAMIC, model_width_multipliers, set_width
from pipelines.training.recipes import losses, register
from pipelines.training.recipes.base import Recipe, StepOutput
from pipelines.training.recipes.slimmable import (check_float, check_int, random_width_calls, run_width,
                                         width_name)


def ema_update(targets, sources, decay, step=None):
    """``t = d * t + (1 - d) * s`` for paired variables; cross-replica safe (one merge_call).

    With a `step` counter (a variable, incremented here) the decay warms up as in
    `tf.train.ExponentialMovingAverage(num_updates=...)`: ``d = min(decay, (1 + step) / (10 + step))``,
    so the teacher follows the network closely while it changes fast at the start of training."""

    def apply(_strategy=None):
        d = tf.constant(decay, tf.float32)
        if step is not None:
            n = tf.cast(step, tf.float32)
            d = tf.minimum(d, (1.0 + n) / (10.0 + n))
            step.assign_add(1)
        for t, s in zip(targets, sources):
            t.assign(tf.cast(d, t.dtype) * t + tf.cast(1.0 - d, t.dtype) * tf.cast(s, t.dtype))

    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        apply()
    else:
        ctx.merge_call(apply)


def complexity_loss(choice, madds_table, target):
    """``mean_b ((choice_b . madds_table) / target)^2`` (Eq. 11)."""
    madds = tf.linalg.matvec(tf.cast(choice, tf.float32), tf.constant(madds_table, tf.float32))
    return tf.reduce_mean(tf.square(madds / float(target))), madds


def sgs_loss(gate_scores, slimmest_logits, labels):
    """Sandwich Gate Sparsification (Eq. 10, "try best"): easy -> slimmest choice, the rest -> widest."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    easy = tf.equal(tf.argmax(slimmest_logits, axis=-1), labels)
    g = tf.shape(gate_scores)[-1]
    target = tf.where(easy, tf.zeros_like(labels), tf.cast(g - 1, tf.int64) + tf.zeros_like(labels))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(target, tf.cast(gate_scores, tf.float32))
    return tf.reduce_mean(ce), tf.reduce_mean(tf.cast(easy, tf.float32))


@register
@dataclasses.dataclass
class DSNet(Recipe):
    name = "ds_net"
    models = ("ds_mobilenet_v1",)

    stage1_fraction: float = 0.75  # share of the epochs for Stage I (1 = supernet only, 0 = gate only)
    num_random: int = 1  # IEB: random middle widths per step
    ema_decay: float = 0.98  # IEB teacher momentum (alpha of Eq. 3), warmed up from 0.1
    temperature: float = 1.0  # gumbel-softmax temperature of the slimming head
    target_madds: float = 1.0  # T of Eq. 11 as a fraction of the widest path's MAdds (paper: 1.0)
    cls_weight: float = 1.0  # lambda_1
    complexity_weight: float = 0.5  # lambda_2
    sgs_weight: float = 1.0  # lambda_3
    train_shared_fc: bool = False  # Stage II also trains the gate's first FC (shared with attention)
    recal_batches: int = 20  # BN recalibration batches per width at the Stage I -> II switch (0 = none)

    def validate(self):
        super().validate()
        check_float("stage1_fraction", self.stage1_fraction, 0.0, 1.0)
        check_int("num_random", self.num_random, 0)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0)
        if self.ema_decay >= 1.0:
            raise ValueError(f"ema_decay must be < 1; received ema_decay={self.ema_decay!r}")
        check_float("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_float("target_madds", self.target_madds, 0.0, 10.0, low_open=True)
        for name in ("cls_weight", "complexity_weight", "sgs_weight"):
            check_float(name, getattr(self, name), 0.0, 100.0)
        check_int("recal_batches", self.recal_batches, 0)
        if not isinstance(self.train_shared_fc, bool):
            raise ValueError(f"train_shared_fc must be a bool; received train_shared_fc={self.train_shared_fc!r}")

    # -- state -------------------------------------------------------------------
    def setup(self, model):
        net = model.net
        gate = gate_layer(net)
        gate.temperature = float(self.temperature)
        self._madds = choice_madds(net, tuple(net.input_shape[1:]))
        self.stage = 1
        if self.stage1_fraction > 0:
            teacher = keras.models.clone_model(net)
            teacher.set_weights(net.get_weights())
            teacher.trainable = False
            model.ema_teacher = teacher  # tracked by the TrainingModel (checkpoints)
            model.ema_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_step",
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        if self.stage1_fraction == 0:
            self.enter_stage2(model)

    def enter_stage2(self, model):
        """Freeze the supernet (inference-mode BN, no weight updates) and let the gate choose."""
        net = model.net
        gate = gate_layer(net)
        for layer in net.layers:
            if layer is not gate:
                layer.trainable = False
        set_width(net, DYNAMIC)
        self.stage = 2

    def trainable_variables(self, model):
        if self.stage == 1:
            return model.net.trainable_variables
        gate = gate_layer(model.net)
        return [gate.w1, gate.b1, gate.w2, gate.b2] if self.train_shared_fc else [gate.w2, gate.b2]

    def after_step(self, model):
        if self.stage == 1:
            ema_update(model.ema_teacher.weights, model.net.weights, self.ema_decay, model.ema_step)

    def switch_epoch(self, epochs):
        """First epoch (0-based) of Stage II when one `fit` runs both stages, else None."""
        if not 0 < self.stage1_fraction < 1:
            return None
        return min(epochs - 1, max(1, int(round(self.stage1_fraction * epochs))))

    def final_stage_start(self, epochs):
        switch = self.switch_epoch(epochs)
        return 0 if switch is None else switch

    def recalibrate(self, model, train_data):
        """BN recalibration of every width (the step between Stage I and II, as the DS-Net experiment does):
        the running statistics collected while the supernet changed are recomputed on `recal_batches`
        training batches. Returns the widths recalibrated."""
        from pipelines.training import bn_recalibration

        widths = model_width_multipliers(model.net)
        if self.recal_batches:
            for w in widths:
                bn_recalibration.recalibrate_bn(model.net, train_data, w, num_batches=self.recal_batches)
        return widths if self.recal_batches else ()

    def callbacks(self, model, steps_per_epoch, epochs, train_data=None):
        switch = self.switch_epoch(epochs)
        if switch is None:
            return []
        if train_data is None and self.recal_batches:
            raise ValueError("ds_net: the Stage I -> II switch recalibrates BN on training batches; pass "
                             "train_data=... to callbacks() (or recal_batches=0)")
        recipe = self

        class _StageSwitch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch >= switch and recipe.stage == 1:
                    recipe.recalibrate(model, train_data)
                    recipe.enter_stage2(model)
                    model.train_function = None
                    model.test_function = None
                    model.make_train_function(force=True)
                    print(f"ds_net: Stage II (gate training) from epoch {epoch + 1}", flush=True)

        return [_StageSwitch()]

    # -- losses --------------------------------------------------------------------
    def prediction_names(self, net):
        return ["logits"] + [width_name(w) for w in model_width_multipliers(net)]

    def log_names(self, net):
        return ["ce", "ieb_random", "ieb_slimmest", "cls", "cplx", "sgs", "easy", "madds_fraction"]

    def compute(self, model, x, y, training):
        if self.stage == 1:
            return self._stage1(model, x, y, training)
        return self._stage2(model, x, y, training)

    def _eval_widths(self, net, x):
        return {width_name(w): run_width(net, x, w, False) for w in model_width_multipliers(net)}

    def _stage1(self, model, x, y, training):
        net = model.net
        widths = model_width_multipliers(net)
        zero = tf.constant(0.0)
        if not training:
            preds = self._eval_widths(net, x)
            preds["logits"] = preds[width_name(widths[-1])]
            loss = losses.cross_entropy(y, preds["logits"])
            return StepOutput(loss=loss, logs={"ce": loss}, predictions=preds)
        teacher = model.ema_teacher
        set_width(net, widths[-1])
        out = net(x, training=True)
        big = out["logits"]
        loss_l = losses.cross_entropy(y, big, self.label_smoothing)
        # keeps the slimming head in the optimizer from the first step (zero gradient, no update)
        loss_l += 0.0 * tf.reduce_sum(out["gate_scores"])
        t_big = tf.nn.softmax(tf.stop_gradient(run_width(teacher, x, widths[-1], False)))
        ensemble, loss_r = [t_big], []

        def student_and_teacher(w):
            return run_width(net, x, w, True), tf.nn.softmax(run_width(teacher, x, w, False))

        for logits, t_probs in random_width_calls(widths[1:-1], student_and_teacher, self.num_random):
            loss_r.append(losses.soft_cross_entropy(logits, t_big))
            ensemble.append(tf.stop_gradient(t_probs))
        small = run_width(net, x, widths[0], True)
        loss_s = losses.soft_cross_entropy(small, tf.add_n(ensemble) / len(ensemble))
        total = loss_l + loss_s + (tf.add_n(loss_r) if loss_r else 0.0)
        logs = {"ce": loss_l, "ieb_random": tf.add_n(loss_r) / len(loss_r) if loss_r else zero, "ieb_slimmest": loss_s}
        return StepOutput(loss=total, logs=logs,
                          predictions={"logits": big, width_name(widths[-1]): big, width_name(widths[0]): small})

    def _stage2(self, model, x, y, training):
        net = model.net
        widths = model_width_multipliers(net)
        target = self.target_madds * float(self._madds[-1])
        if not training:
            preds = self._eval_widths(net, x)
            set_width(net, DYNAMIC)
            out = net(x, training=False)
            preds["logits"] = out["logits"]
            ce = losses.cross_entropy(y, out["logits"])
            cplx, madds = complexity_loss(out["gate_choice"], self._madds, target)
            sgs, easy = sgs_loss(out["gate_scores"], preds[width_name(widths[0])], y)
            logs = {"ce": ce, "cls": ce, "cplx": cplx, "sgs": sgs, "easy": easy,
                    "madds_fraction": tf.reduce_mean(madds) / float(self._madds[-1])}
            return StepOutput(loss=ce, logs=logs, predictions=preds)
        slim_logits = tf.stop_gradient(run_width(net, x, widths[0], False))
        set_width(net, DYNAMIC)
        out = net(x, training=True)
        cls = losses.cross_entropy(y, out["logits"], self.label_smoothing)
        cplx, madds = complexity_loss(out["gate_choice"], self._madds, target)
        sgs, easy = sgs_loss(out["gate_scores"], slim_logits, y)
        total = self.cls_weight * cls + self.complexity_weight * cplx + self.sgs_weight * sgs
        logs = {"ce": cls, "cls": cls, "cplx": cplx, "sgs": sgs, "easy": easy,
                "madds_fraction": tf.reduce_mean(madds) / float(self._madds[-1])}
        return StepOutput(loss=total, logs=logs, predictions={"logits": out["logits"],
                                                              width_name(widths[0]): slim_logits})


__all__ = ["DSNet", "complexity_loss", "sgs_loss", "ema_update"]
