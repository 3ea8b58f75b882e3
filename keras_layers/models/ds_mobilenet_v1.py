"""Dynamic Slimmable MobileNetV1, DS-MBNet (Li et al., "Dynamic Slimmable Network", CVPR 2021, Sec. 4).

As in the paper, a fixed-width front (stem + the first ``gate_after`` depthwise-separable blocks at
``front_width`` of the supernet, paper: 5 blocks at 0.5) feeds one double-headed `DynamicGate`;
the rest of the network is slimmable over ``width_multipliers`` (the gate's candidate widths) and
is wired with the gate's per-example ``choice``. Outputs (a dict):

* ``logits`` - the classifier;
* ``gate_scores`` - the slimming head's scores (SGS loss);
* ``gate_choice`` - the one-hot width choice (complexity loss, expected MAdds).

Width space: ``width_multipliers`` is a list, or ``"paper"``: the paper's candidate ratios 0.35 to 1.0 in
steps of 0.05 (DS-MBNet, Sec. 4: ``[0.35 : 0.05 : 1.25]`` of a 1.25x supernet; here relative to the
supernet, so up to 1.0) where channels allow: widths whose gated layers would get the same channel
counts (multiples of 8) are merged, keeping the largest, so every choice is a distinct path (at the
registry's small channel counts fewer than 14 remain). ``preset="paper"`` selects it, with the paper's
front (5 blocks at 0.5).

``set_width(net, w)`` runs every example at width ``w`` (Stage I, BN recalibration, export);
``set_width(net, "dynamic")`` lets the gate choose (Stage II and deployment; the default after
building). For deployment `export_front` gives the front + gate as one small model (features and
gate scores; the app takes the argmax) and `export_choice(net, w)` the rest of the network at each
width as an ordinary narrow model, so the phone runs ``back[argmax(scores)](features)``; `export_width(net, w)`
is the whole supernet at one fixed width as one ordinary model (the static peer of the gate).
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import numpy as np
import tf_keras as keras

from keras_layers.checks import check_int
from keras_layers.ds_net import DynamicGate
from keras_layers.madds import count_madds
from keras_layers.models import register
from keras_layers.models.blocks import BN_MOMENTUM
from keras_layers.models.slimmable_mobilenet_v1 import check_config, export_chain, plain_blocks, plan
from keras_layers.slimmable import (DYNAMIC, SlimmableConv2D, SlimmableDense, SlimmableDepthwiseConv2D,
                                    SwitchableBatchNormalization, check_width, check_width_multipliers,
                                    set_width, slim_channels)

L = keras.layers


PAPER_WIDTHS = tuple(round(0.35 + 0.05 * i, 2) for i in range(14))  # 0.35 .. 1.0


def paper_widths(gated_filters, candidates=PAPER_WIDTHS):
    """The `candidates` that give distinct channel counts to layers of `gated_filters` full channels,
    keeping the largest width of each group of equal paths (so 1.0 stays)."""
    by_channels = {}
    for w in candidates:
        by_channels[tuple(slim_channels(f, w) for f in gated_filters)] = w
    return tuple(sorted(by_channels.values()))


@register("ds_mobilenet_v1", paper={"width_multipliers": "paper", "front_width": 0.5, "gate_after": 5})
def build_ds_mobilenet_v1(input_shape, num_classes, *, width_multipliers=(0.25, 0.5, 0.75, 1.0), base_width=0.25,
                          depth_multiplier=0.2, front_width=0.5, gate_after=5, gate_hidden=16, temperature=1.0,
                          dropout=0.0):
    check_config(base_width, depth_multiplier, dropout)
    check_width(front_width, (front_width,))
    check_int("gate_hidden", gate_hidden)
    stem, stride, blocks = plan(input_shape, base_width, depth_multiplier)
    check_int("gate_after", gate_after, 1, len(blocks) - 1)
    if width_multipliers == "paper":
        width_multipliers = paper_widths([f for f, _ in blocks[gate_after:]])
    widths = check_width_multipliers(width_multipliers)

    inputs = keras.Input(shape=input_shape, name="image")
    x = plain_blocks(inputs, stem, stride, blocks[:gate_after], front_width)  # the static front

    x, choice, scores = DynamicGate(widths, hidden_units=gate_hidden, temperature=temperature, name="gate")(x)
    kw = dict(width_multipliers=widths)

    def sbn(name, t):
        return SwitchableBatchNormalization(widths, momentum=BN_MOMENTUM, name=name)(t, choice=choice)

    for j, (filters, s) in enumerate(blocks[gate_after:]):
        i = gate_after + j
        if j == 0:  # depthwise over the front's fixed channels
            x = L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=f"block{i}_dw")(x)
            x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_dwbn")(x)
        else:
            x = SlimmableDepthwiseConv2D(3, strides=s, use_bias=False, name=f"block{i}_dw", **kw)(x, choice=choice)
            x = sbn(f"block{i}_dwbn", x)
        x = L.Activation("relu6", name=f"block{i}_dwact")(x)
        x = SlimmableConv2D(filters, 1, use_bias=False, slim_input=j > 0, name=f"block{i}_pw", **kw)(x, choice=choice)
        x = sbn(f"block{i}_pwbn", x)
        x = L.Activation("relu6", name=f"block{i}_pwact")(x)
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    logits = SlimmableDense(num_classes, slim_output=False, name="head_logits", **kw)(x, choice=choice)
    net = keras.Model(inputs, {"logits": logits, "gate_scores": scores, "gate_choice": choice},
                      name="ds_mobilenet_v1")
    set_width(net, DYNAMIC)
    return net


# ------------------------------------------------------------------ parts, MAdds, export

def gate_layer(net):
    gates = [l for l in net.layers if isinstance(l, DynamicGate)]
    if len(gates) != 1:
        raise ValueError(f"expected one DynamicGate in model {net.name!r}; found {len(gates)}")
    return gates[0]


def _split(net):
    layers = [l for l in net.layers if not isinstance(l, L.InputLayer)]
    g = layers.index(gate_layer(net))
    return layers[:g], layers[g + 1:]


def choice_madds(net, input_shape):
    """MAdds per example of each gate choice (front + gate + back at that width), in choice order."""
    widths = gate_layer(net).width_multipliers
    return np.array([count_madds(net, input_shape, width=w) for w in widths], dtype=np.float64)


def expected_madds(net, batches, input_shape=None):
    """Average MAdds per example of the gated `net` (width "dynamic") over an iterable of image batches.

    Returns ``(mean_madds, choice_fractions)``; the choices are the gate's argmax at inference."""
    input_shape = tuple(input_shape or net.input_shape[1:])
    table = choice_madds(net, input_shape)
    counts = np.zeros(len(table))
    set_width(net, DYNAMIC)
    for x in batches:
        if isinstance(x, (tuple, list)):
            x = x[0]
        choice = net(x, training=False)["gate_choice"].numpy()
        counts += choice.sum(axis=0)
    fractions = counts / max(1.0, counts.sum())
    return float(fractions @ table), fractions


def _export_front_chain(net, inputs):
    """The fixed-width front + gate applied to `inputs` with plain layers (weights set): (the attended
    features, the slimming head's scores)."""
    front, _ = _split(net)
    gate = gate_layer(net)
    x = export_chain(front, inputs, 1.0)
    pooled = L.GlobalAveragePooling2D(name="gate_pool")(x)
    fc1 = L.Dense(gate.hidden_units, activation="relu", name="gate_fc1")
    slim = L.Dense(len(gate.width_multipliers), name="gate_scores")
    hidden = fc1(pooled)
    scores = slim(hidden)
    fc1.set_weights([gate.w1.numpy(), gate.b1.numpy()])
    slim.set_weights([gate.w2.numpy(), gate.b2.numpy()])
    if gate.attention:
        att_fc = L.Dense(gate.channels_in, activation="tanh", name="gate_attention")
        att = L.Rescaling(1.0, offset=1.0, name="gate_attention_1p")(att_fc(hidden))
        att_fc.set_weights([gate.w3.numpy(), gate.b3.numpy()])
        att = L.Reshape((1, 1, gate.channels_in), name="gate_attention_map")(att)
        x = L.Multiply(name="gate_attend")([x, att])
    return x, scores


def export_front(net):
    """The fixed-width front + gate as an ordinary Keras model: image -> {"features", "gate_scores"}.

    The app picks the width ``width_multipliers[argmax(gate_scores)]`` and runs `export_choice` of it."""
    inputs = keras.Input(shape=net.input_shape[1:], name="image")
    x, scores = _export_front_chain(net, inputs)
    return keras.Model(inputs, {"features": x, "gate_scores": scores}, name=f"{net.name}_front")


def export_choice(net, width):
    """The network after the gate at `width` as an ordinary narrow Keras model: features -> logits."""
    gate = gate_layer(net)
    width = check_width(width, gate.width_multipliers)
    _, back = _split(net)
    inputs = keras.Input(shape=gate.output_shape[0][1:], name="features")
    outputs = export_chain(back, inputs, width)
    return keras.Model(inputs, outputs, name=f"{net.name}_back_{width:g}x")


def export_width(net, width):
    """The supernet at one fixed `width` (what ``set_width(net, width)`` computes: the front, the gate's channel
    attention, the rest of the network at `width`) as one ordinary narrow Keras model: image -> logits. The
    static peer of the gated network; the slimming head is left out (nothing reads its scores), so its MAdds
    are those of `choice_madds` less the head's ``hidden_units * len(width_multipliers)``."""
    gate = gate_layer(net)
    width = check_width(width, gate.width_multipliers)
    _, back = _split(net)
    inputs = keras.Input(shape=net.input_shape[1:], name="image")
    x, _ = _export_front_chain(net, inputs)
    outputs = export_chain(back, x, width)
    return keras.Model(inputs, outputs, name=f"{net.name}_{width:g}x")
