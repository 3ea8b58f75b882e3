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

Paper options (Li et al., CVPR 2021) beside the project's defaults:

* ``ema_warmup``: the warm-up of the IEB momentum above is the project's addition (short runs); the
  paper's Eq. 3 has a constant ``a`` (``ema_warmup=False``).
* ``ieb``: ``"ieb"`` (Eq. 3-5, default), or the two other rows of the paper's Table 5 ablation:
  ``"ema_target"`` (every slimmer width learns the EMA teacher's widest soft labels, no ensemble) and
  ``"inplace"`` (no EMA teacher: the online network's own widest prediction, stopped, is the target of the
  slimmer widths - US-Nets' in-place distillation); and the project's ``"labels"``: no distillation at all,
  every width of the step learns the labels (the sandwich rule on the labels, the slimmable family's default:
  in-place distillation cost slimmable MobileNetV1 4-7 points, docs/results.md session 8).
* ``sgs_strategy``: ``"try_best"`` (default and the paper's choice) or ``"give_up"`` (Sec. 4.4, Table 6:
  hard examples - the widest is wrong too - target the slimmest; dependent ones - only the widest is
  right - the widest).
* ``max_width``: MAdds targeting as the paper does it (Appendix A: "we set rho in
  [0.35 : 0.05 : 0.5] to prevent routing to heavier sub-networks"): in Stage II the gate may only choose
  widths ``<= max_width``; the excluded choices' slimming-head biases are set to -1e4 when Stage II starts,
  so neither training nor the deployed gate (the same weights in the exported front) can pick them, and
  SGS's "widest" target is the widest allowed width. ``target_madds`` (scaling T) stays the other way.

BN recalibration between the stages covers every path: each width of ``width_multipliers`` (the paper
recalibrates all 18 paths of DS-MBNet; with one gate a path is a width).

``gate_lr_decay``: the paper's gate schedule (Sec. 4: 0.9x per epoch): Stage II restarts at the run's
initial learning rate and multiplies it by ``gate_lr_decay`` every epoch (`GateDecay`); None (default)
keeps the run's cosine schedule.

``preset="paper"``: no EMA warm-up, full IEB, try-best SGS, lambdas 1 / 0.5 / 1, T = the widest path's
MAdds, gate learning rate x0.9 per epoch. The paper's width space (0.35 to 1.0 in steps of 0.05 where
channels allow) is the model preset, ``--model-config preset=paper`` (`keras_layers.models.ds_mobilenet_v1`).

    python -m pipelines train --model ds_mobilenet_v1 --epochs 12 --recipe-config target_madds=0.5
    python -m pipelines train --model ds_mobilenet_v1 --epochs 12 --model-config preset=paper \
        --recipe-config preset=paper max_width=0.5
"""
from __future__ import annotations

import dataclasses

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers.models.ds_mobilenet_v1 import choice_madds, gate_layer
from keras_layers.slimmable import DYNAMIC, model_width_multipliers, set_width
from pipelines.training.recipes import check_preset, losses, register
from pipelines.training.recipes.schedules import EpochDecay, InstallSchedule, initial_learning_rate
from pipelines.training.recipes.base import Recipe, StageSwitch, StepOutput
from pipelines.training.recipes.slimmable import (check_float, check_int, random_width_calls, run_width,
                                         width_name)


def ema_update(targets, sources, decay, step=None, warmup=True):
    """``t = d * t + (1 - d) * s`` for paired variables; cross-replica safe (one merge_call).

    With a `step` counter (a variable, incremented here) the decay warms up as in
    `tf.train.ExponentialMovingAverage(num_updates=...)`: ``d = min(decay, (1 + step) / (10 + step))``,
    so the teacher follows the network closely while it changes fast at the start of training."""

    def apply(_strategy=None):
        d = tf.constant(decay, tf.float32)
        if step is not None:
            n = tf.cast(step, tf.float32)
            if warmup:
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


SGS_STRATEGIES = ("try_best", "give_up")
IEB_MODES = ("ieb", "ema_target", "inplace", "labels")
EMA_TEACHER = ("ieb", "ema_target")  # the Stage I targets that need the EMA teacher


def sgs_targets(slimmest_logits, labels, widest_index, widest_logits=None, strategy="try_best"):
    """Gate target index per example (Eq. 10). Easy (the slimmest is right) -> 0 (the slimmest choice).
    ``"try_best"``: every other example -> `widest_index`. ``"give_up"``: dependent examples (the widest is
    right, the slimmest wrong) -> `widest_index`, hard ones (both wrong) -> 0; needs `widest_logits`."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    easy = tf.equal(tf.argmax(slimmest_logits, axis=-1), labels)
    widest = tf.cast(widest_index, tf.int64) + tf.zeros_like(labels)
    slimmest = tf.zeros_like(labels)
    if strategy == "give_up":
        if widest_logits is None:
            raise ValueError("sgs_strategy='give_up' needs the widest width's logits")
        dependent = tf.logical_and(tf.logical_not(easy), tf.equal(tf.argmax(widest_logits, axis=-1), labels))
        return tf.where(dependent, widest, slimmest), easy
    return tf.where(easy, slimmest, widest), easy


def sgs_loss(gate_scores, slimmest_logits, labels, widest_logits=None, strategy="try_best", widest_index=None):
    """Sandwich Gate Sparsification (Eq. 10): cross-entropy of the slimming head's scores against
    `sgs_targets` (the widest choice is the last one unless `widest_index`). Returns (loss, easy fraction)."""
    if widest_index is None:
        widest_index = tf.shape(gate_scores)[-1] - 1
    target, easy = sgs_targets(slimmest_logits, losses.hard_labels(labels), widest_index, widest_logits, strategy)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(target, tf.cast(gate_scores, tf.float32))
    return tf.reduce_mean(ce), tf.reduce_mean(tf.cast(easy, tf.float32))


EXCLUDED_BIAS = -1e4  # slimming-head bias of a choice the gate may not take (max_width)


def restrict_gate(gate, max_width):
    """Exclude the gate's choices wider than `max_width` (bias -1e4: argmax and gumbel-softmax never take
    them, and their gradients vanish). Returns the index of the widest allowed choice."""
    widths = list(gate.width_multipliers)
    allowed = [i for i, w in enumerate(widths) if w <= max_width + 1e-9]
    if not allowed:
        raise ValueError(f"max_width={max_width!r} is below every width of the gate {tuple(widths)}")
    if len(allowed) < len(widths):
        bias = gate.b2.numpy()
        bias[allowed[-1] + 1:] = EXCLUDED_BIAS
        gate.b2.assign(bias)
    return allowed[-1]


def widest_allowed(gate):
    """Index of the widest choice `gate` may take (`restrict_gate` excludes the wider ones)."""
    bias = gate.b2.numpy()
    return max(i for i, b in enumerate(bias) if b > EXCLUDED_BIAS / 2)


def try_best_shares(correct, widest):
    """What SGS's try-best rule (`sgs_targets`) makes of a set of images, from ``correct`` (N x choices,
    bool: does the network at each choice classify the image right): the share of images whose target is
    the slimmest choice (it is right), the share that *needs* the widest (slimmest wrong, widest right: the
    only images a gate gains on) and the oracle accuracy (the slimmest when it is right, else the widest)."""
    import numpy as np

    correct = np.asarray(correct, bool)
    slim, wide = correct[:, 0], correct[:, widest]
    return {"slimmest_target": float(slim.mean()), "needs_widest": float((~slim & wide).mean()),
            "oracle_accuracy": float((slim | wide).mean())}


def widest_offset(scores, correct, madds, widest, tolerance=0.005):
    """The offset on the widest choice's gate score that deploys the gate at the widest width's accuracy for
    the fewest MAdds, chosen on held-out images (the validation split): a post-hoc calibration of the gate's
    argmax, as multi-exit's thresholds are of its exits (DS-Net itself sets the trade-off only through the
    complexity loss's target while the gate trains).

    ``scores`` (N x choices) are the slimming head's scores, ``correct`` (N x choices, bool) whether the network
    at each choice classifies the image right, ``madds`` the MAdds of each choice. Adding ``offset`` to the
    widest score sends an image there when ``offset > max(other scores) - widest score``; every distinct
    policy of that family is tried (the images sorted by that margin). Picks the cheapest policy within
    ``tolerance`` of the widest choice's accuracy, else the most accurate one (``reached`` False). Returns
    {offset, accuracy, madds, fractions, reached, target}."""
    import numpy as np

    scores = np.asarray(scores, np.float64)
    correct = np.asarray(correct, bool)
    madds = np.asarray(madds, np.float64)
    n, g = scores.shape
    others = scores.copy()
    others[:, widest] = -np.inf
    other_choice = np.argmax(others, axis=1)
    margin = others[np.arange(n), other_choice] - scores[:, widest]
    order = np.argsort(margin, kind="stable")
    m = margin[order]
    rows = np.arange(n)[order]
    # k images (the k smallest margins) go to the widest choice, the rest to their best other choice
    gain = np.concatenate([[0.0], np.cumsum(correct[rows, widest].astype(float) - correct[rows, other_choice[rows]])])
    accuracy = (correct[np.arange(n), other_choice].sum() + gain) / n
    cost = np.concatenate([[0.0], np.cumsum(madds[widest] - madds[other_choice[rows]])])
    avg_madds = (madds[other_choice].sum() + cost) / n
    k = np.arange(n + 1)
    realizable = np.ones(n + 1, bool)  # k is a policy only if the k-th and (k+1)-th margins differ
    realizable[1:n] = m[:-1] < m[1:]
    target = float(correct[:, widest].mean()) - tolerance
    ok = realizable & (accuracy >= target - 1e-12)
    if ok.any():
        best = int(k[ok][np.lexsort((-accuracy[ok], avg_madds[ok]))[0]])
    else:
        cand = k[realizable]
        best = int(cand[np.lexsort((avg_madds[cand], -accuracy[cand]))[0]])
    if best == 0:
        offset = float(m[0]) - 1.0
    elif best == n:
        offset = float(m[-1]) + 1.0
    else:
        offset = float((m[best - 1] + m[best]) / 2)
    choice = np.where(margin < offset, widest, other_choice)
    fractions = np.bincount(choice, minlength=g) / n
    return {"offset": offset, "accuracy": float(accuracy[best]), "madds": float(avg_madds[best]),
            "fractions": [round(float(f), 3) for f in fractions], "reached": bool(ok.any()), "target": target}


def apply_widest_offset(gate, offset):
    """Add `offset` to the slimming head's bias of the widest allowed choice (exported with the gate)."""
    bias = gate.b2.numpy()
    bias[widest_allowed(gate)] += offset
    gate.b2.assign(bias)


class GateDecay(InstallSchedule):
    """The paper's gate schedule (Li et al., CVPR 2021, Sec. 4 "Training details": "The learning rate decays
    to 0.9x of its value in every epoch"): when training starts, the optimizer's schedule becomes
    `schedules.EpochDecay` - the run's schedule during Stage I, then from Stage II's first step the run's
    initial rate times ``decay ** k`` in its k-th epoch (a function of the optimizer's step count, so a
    resumed run lands on the right rate)."""

    def __init__(self, start_step, steps_per_epoch, decay):
        super().__init__()
        self.start_step, self.steps_per_epoch, self.decay = start_step, steps_per_epoch, decay

    def schedule(self, optimizer):
        return EpochDecay(optimizer._learning_rate, initial_learning_rate(optimizer), self.start_step,
                          self.steps_per_epoch, self.decay)


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
    ema_warmup: bool = True  # warm the IEB momentum up from 0.1 (project addition; the paper: constant)
    ieb: str = "ieb"  # Stage I targets: "ieb" (Eq. 3-5), "ema_target" / "inplace" (Table 5), "labels" (none)
    sgs_strategy: str = "try_best"  # hard examples' gate target: "try_best" (widest) or "give_up" (slimmest)
    max_width: float = 1.0  # Stage II: the gate may choose only widths <= max_width (MAdds targeting)
    gate_lr_decay: float | None = None  # Stage II learning rate: None = the run's schedule; a factor = restart
    #                                     at the run's initial rate, times this factor every epoch (paper: 0.9)
    preset: str = "default"  # "default" | "paper" (resolved by recipes.get)

    PAPER = {"ema_warmup": False, "ieb": "ieb", "sgs_strategy": "try_best", "cls_weight": 1.0,
             "complexity_weight": 0.5, "sgs_weight": 1.0, "target_madds": 1.0, "max_width": 1.0,
             "gate_lr_decay": 0.9}

    def validate(self):
        super().validate()
        check_preset(self.preset)
        if not isinstance(self.ema_warmup, bool):
            raise ValueError(f"ema_warmup must be a bool; received ema_warmup={self.ema_warmup!r}")
        for field, choices in (("ieb", IEB_MODES), ("sgs_strategy", SGS_STRATEGIES)):
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {', '.join(choices)}; "
                                 f"received {field}={getattr(self, field)!r}")
        check_float("max_width", self.max_width, 0.0, 1.0, low_open=True)
        if self.gate_lr_decay is not None:
            check_float("gate_lr_decay", self.gate_lr_decay, 0.0, 1.0, low_open=True)
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
        self._widest_choice = len(gate.width_multipliers) - 1
        if self.stage1_fraction > 0 and self.ieb in EMA_TEACHER:
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
        self._widest_choice = restrict_gate(gate, self.max_width)
        self.stage = 2
        model.test_function = None  # the forward pass changed (the gate chooses): traced again at evaluation

    def trainable_variables(self, model):
        if self.stage == 1:
            return model.net.trainable_variables
        gate = gate_layer(model.net)
        return [gate.w1, gate.b1, gate.w2, gate.b2] if self.train_shared_fc else [gate.w2, gate.b2]

    def after_step(self, model):
        if self.stage == 1 and self.ieb in EMA_TEACHER:
            ema_update(model.ema_teacher.weights, model.net.weights, self.ema_decay, model.ema_step, self.ema_warmup)

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
        decay = []
        if self.gate_lr_decay is not None and self.stage1_fraction < 1:
            start = 0 if switch is None else switch * steps_per_epoch
            decay = [GateDecay(start, steps_per_epoch, self.gate_lr_decay)]
        if switch is None:
            return decay
        if train_data is None and self.recal_batches:
            raise ValueError("ds_net: the Stage I -> II switch recalibrates BN on training batches; pass "
                             "train_data=... to callbacks() (or recal_batches=0)")

        def stage2(epoch):
            if epoch >= switch and self.stage == 1:
                self.recalibrate(model, train_data)
                self.enter_stage2(model)
                return f"ds_net: Stage II (gate training) from epoch {epoch + 1}"
            return None

        return [StageSwitch(model, stage2), *decay]

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
        set_width(net, widths[-1])
        out = net(x, training=True)
        big = out["logits"]
        loss_l = losses.cross_entropy(y, big, self.label_smoothing)
        # keeps the slimming head in the optimizer from the first step (zero gradient, no update)
        loss_l += 0.0 * tf.reduce_sum(out["gate_scores"])
        if self.ieb == "labels":  # no distillation: every width of the sandwich learns the labels
            return self._stage1_labels(net, x, y, widths, big, loss_l)
        if self.ieb == "inplace":  # no EMA teacher: the online widest prediction, stopped (Table 5, row 1)
            t_big = tf.nn.softmax(tf.stop_gradient(big))
        else:
            t_big = tf.nn.softmax(tf.stop_gradient(run_width(model.ema_teacher, x, widths[-1], False)))
        ensemble, loss_r = [t_big], []

        def student_and_teacher(w):
            student = run_width(net, x, w, True)
            if self.ieb != "ieb":  # the ensemble is IEB's alone
                return student, t_big
            return student, tf.nn.softmax(run_width(model.ema_teacher, x, w, False))

        for logits, t_probs in random_width_calls(widths[1:-1], student_and_teacher, self.num_random):
            loss_r.append(losses.soft_cross_entropy(logits, t_big))
            ensemble.append(tf.stop_gradient(t_probs))
        small = run_width(net, x, widths[0], True)
        target_s = tf.add_n(ensemble) / len(ensemble) if self.ieb == "ieb" else t_big
        loss_s = losses.soft_cross_entropy(small, target_s)
        total = loss_l + loss_s + (tf.add_n(loss_r) if loss_r else 0.0)
        logs = {"ce": loss_l, "ieb_random": tf.add_n(loss_r) / len(loss_r) if loss_r else zero, "ieb_slimmest": loss_s}
        return StepOutput(loss=total, logs=logs,
                          predictions={"logits": big, width_name(widths[-1]): big, width_name(widths[0]): small})

    def _stage1_labels(self, net, x, y, widths, big, loss_l):
        """Stage I with ``ieb="labels"``: the widest, `num_random` random middle widths and the slimmest, each
        on the labels' cross-entropy (the same widths as IEB's step, no teacher)."""
        loss_r = random_width_calls(
            widths[1:-1], lambda w: losses.cross_entropy(y, run_width(net, x, w, True), self.label_smoothing),
            self.num_random)
        small = run_width(net, x, widths[0], True)
        loss_s = losses.cross_entropy(y, small, self.label_smoothing)
        total = loss_l + loss_s + (tf.add_n(loss_r) if loss_r else 0.0)
        logs = {"ce": loss_l, "ieb_random": tf.add_n(loss_r) / len(loss_r) if loss_r else tf.constant(0.0),
                "ieb_slimmest": loss_s}
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
            sgs, easy = sgs_loss(out["gate_scores"], preds[width_name(widths[0])], y,
                                 preds[width_name(widths[self._widest_choice])], self.sgs_strategy,
                                 self._widest_choice)
            logs = {"ce": ce, "cls": ce, "cplx": cplx, "sgs": sgs, "easy": easy,
                    "madds_fraction": tf.reduce_mean(madds) / float(self._madds[-1])}
            return StepOutput(loss=ce, logs=logs, predictions=preds)
        slim_logits = tf.stop_gradient(run_width(net, x, widths[0], False))
        wide_logits = None
        if self.sgs_strategy == "give_up":  # dependent vs hard needs the widest allowed width's answer
            wide_logits = tf.stop_gradient(run_width(net, x, widths[self._widest_choice], False))
        set_width(net, DYNAMIC)
        out = net(x, training=True)
        cls = losses.cross_entropy(y, out["logits"], self.label_smoothing)
        cplx, madds = complexity_loss(out["gate_choice"], self._madds, target)
        sgs, easy = sgs_loss(out["gate_scores"], slim_logits, y, wide_logits, self.sgs_strategy, self._widest_choice)
        total = self.cls_weight * cls + self.complexity_weight * cplx + self.sgs_weight * sgs
        logs = {"ce": cls, "cls": cls, "cplx": cplx, "sgs": sgs, "easy": easy,
                "madds_fraction": tf.reduce_mean(madds) / float(self._madds[-1])}
        return StepOutput(loss=total, logs=logs, predictions={"logits": out["logits"],
                                                              width_name(widths[0]): slim_logits})


__all__ = ["DSNet", "complexity_loss", "sgs_loss", "sgs_targets", "restrict_gate", "ema_update"]
