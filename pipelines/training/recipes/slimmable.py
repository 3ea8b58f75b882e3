"""Slimmable-network training (Yu et al., ICLR 2019; sandwich rule and in-place distillation from
Yu & Huang, US-Nets, ICCV 2019), as one `Recipe` run by the shared `TrainingModel` step.

Every training step runs several widths of the *same* network on the same batch inside one gradient
tape and sums their losses, so the gradients of all widths are accumulated before the single optimizer
step (Algorithm 1 of the paper). Two rules:

* ``rule="all"`` - every width of ``width_multipliers``, each on the labels (the paper's Algorithm 1);
* ``rule="sandwich"`` - the widest on the labels, the slimmest and ``num_random`` widths drawn from
  the ones in between on the widest's soft predictions (in-place distillation, weight ``distill``:
  ``(1 - distill) * CE(labels) + distill * CE(softmax(widest / T))``, teacher stopped).

Widths are switched with `keras_layers.slimmable.set_width` before each call, inside the traced step
(see that module for why this is explicit and strategy-safe); a random width is drawn in-graph with
``tf.switch_case`` over the candidate widths, so each step can train a different one. Evaluation scores
every width (``val_w0_5_accuracy`` ...; ``val_accuracy`` is the widest).

``preset="paper"`` is Algorithm 1 of Yu et al. (ICLR 2019, Sec. 3.3): ``rule="all"`` with no
distillation - every width of the list, every step, on the labels, the gradients of all widths summed
in one tape and ONE optimizer step. The project's default is the sandwich rule of US-Nets (Yu & Huang,
Sec. 3.2), which trains 2 + ``num_random`` widths per step instead of all of them, on the labels
(``distill=0``; set ``distill`` > 0 for US-Nets' in-place distillation). Until session 8 the default
distilled with weight 1: on cluttered-digits (3 seeds, 10 epochs) that cost 2.4-7 points per width against
the same rule on the labels (x0.25 / 0.5 / 0.75 / 1.0: 56.4 / 64.4 / 69.7 / 71.2% vs 58.8 / 71.3 / 77.1 /
76.3%; Algorithm 1: 60.5 / 71.75 / 75.9 / 76.75%) - the widest width is a poor teacher while it is still
learning.

    python -m pipelines train --model slimmable_mobilenet_v1 --epochs 10 --recipe-config rule=sandwich
    python -m pipelines train --model slimmable_mobilenet_v1 --epochs 10 --recipe-config preset=paper
"""
from __future__ import annotations

import dataclasses

from keras_layers import env  # noqa: F401
import tensorflow as tf

from keras_layers.slimmable import model_width_multipliers, set_width
from pipelines.training.recipes import check_preset, losses, register
from pipelines.training.recipes.base import Recipe, StepOutput

RULES = ("all", "sandwich")


def width_name(width):
    """Prediction / metric name of a width: 0.25 -> "w0_25" (metrics "w0_25_accuracy")."""
    return "w" + f"{width:g}".replace(".", "_")


def logits_of(outputs):
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def run_width(net, x, width, training):
    """Logits of `net` at `width` (sets the model's active width, then calls it)."""
    set_width(net, width)
    return logits_of(net(x, training=training))


def random_width_calls(widths, fn, count):
    """`count` results of ``fn(w)`` for widths drawn uniformly (in-graph) from `widths`.

    With ``count >= len(widths)`` every width is used once (no randomness needed)."""
    widths = tuple(widths)
    if not widths or count <= 0:
        return []
    if count >= len(widths):
        return [fn(w) for w in widths]
    results = []
    for _ in range(count):
        index = tf.random.uniform([], 0, len(widths), dtype=tf.int32)
        results.append(tf.switch_case(index, [lambda w=w: fn(w) for w in widths]))
    return results


def check_int(name, value, low=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; received {name}={value!r}")


def check_float(name, value, low, high, low_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (low < value if low_open else low <= value) or value > high:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}]; received {name}={value!r}")


@register
@dataclasses.dataclass
class Slimmable(Recipe):
    """All widths per step, or the sandwich rule with in-place distillation; gradients summed, one step."""

    name = "slimmable"
    models = ("slimmable_mobilenet_v1",)
    PAPER = {"rule": "all", "distill": 0.0}  # Algorithm 1 (Yu et al., ICLR 2019, Sec. 3.3)

    rule: str = "sandwich"
    num_random: int = 2  # sandwich: random widths per step besides the widest and the slimmest
    distill: float = 0.0  # sandwich: weight of the widest's soft labels for the other widths (0 = labels only)
    distill_temperature: float = 1.0
    preset: str = "default"  # "default" | "paper" (resolved by recipes.get)

    def validate(self):
        super().validate()
        check_preset(self.preset)
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}; received rule={self.rule!r}")
        check_int("num_random", self.num_random, 0)
        check_float("distill", self.distill, 0.0, 1.0)
        check_float("distill_temperature", self.distill_temperature, 0.0, 20.0, low_open=True)

    def prediction_names(self, net):
        return ["logits"] + [width_name(w) for w in model_width_multipliers(net)]

    def log_names(self, net):
        return ["ce", "ce_slimmest", "distill"]

    def _student_loss(self, logits, y, teacher_logits):
        ce = losses.cross_entropy(y, logits, self.label_smoothing)
        if not self.distill:
            return ce, tf.constant(0.0)
        kd = losses.distillation(logits, teacher_logits, self.distill_temperature)
        return (1.0 - self.distill) * ce + self.distill * kd, kd

    def compute(self, model, x, y, training):
        net = model.net
        widths = model_width_multipliers(net)
        widest, slimmest = widths[-1], widths[0]
        if not training:
            preds = {width_name(w): run_width(net, x, w, False) for w in widths}
            preds["logits"] = preds[width_name(widest)]
            loss = losses.cross_entropy(y, preds["logits"])
            ce_s = losses.cross_entropy(y, preds[width_name(slimmest)])
            return StepOutput(loss=loss, logs={"ce": loss, "ce_slimmest": ce_s, "distill": tf.constant(0.0)},
                              predictions=preds)
        if self.rule == "all":
            preds = {width_name(w): run_width(net, x, w, True) for w in widths}
            ces = {w: losses.cross_entropy(y, preds[width_name(w)], self.label_smoothing) for w in widths}
            preds["logits"] = preds[width_name(widest)]
            return StepOutput(loss=tf.add_n(list(ces.values())),
                              logs={"ce": ces[widest], "ce_slimmest": ces[slimmest], "distill": tf.constant(0.0)},
                              predictions=preds)
        # sandwich rule: widest on labels, slimmest + random widths on the widest's soft labels
        big = run_width(net, x, widest, True)
        teacher = tf.stop_gradient(big)
        ce = losses.cross_entropy(y, big, self.label_smoothing)
        total, kds = ce, []
        preds = {"logits": big, width_name(widest): big}
        middle = widths[1:-1]
        for logits in random_width_calls(middle, lambda w: run_width(net, x, w, True), self.num_random):
            loss_r, kd_r = self._student_loss(logits, y, teacher)
            total, kds = total + loss_r, kds + [kd_r]
        if len(widths) > 1:
            small = run_width(net, x, slimmest, True)
            preds[width_name(slimmest)] = small
            loss_s, kd_s = self._student_loss(small, y, teacher)
            total, kds = total + loss_s, kds + [kd_s]
            ce_s = losses.cross_entropy(y, small)
        else:
            ce_s = ce
        distill = tf.add_n(kds) / len(kds) if kds else tf.constant(0.0)
        return StepOutput(loss=total, logs={"ce": ce, "ce_slimmest": ce_s, "distill": distill}, predictions=preds)
