"""Multi-exit MobileNetV2 (IMTA, Li et al., ICCV 2019, on a MobileNetV2 backbone instead of MSDNet).

The backbone is the `mobilenet_v2` spec table (inverted residual blocks, CIFAR-style stride for
small inputs), or with ``backbone="mobilenet_v3"`` the `mobilenet_v3` blocks of `spec` (the registered
static `mobilenet_v3`'s stem and blocks, layer for layer); its blocks are cut into `num_exits` consecutive
stages and an `ExitHead` is attached after each stage (the last one after a 1x1 `last` conv). Outputs are a dict
``{"exit_0": logits, ..., "exit_{K-1}": logits}``.

IMTA switches (model_config):
* ``gradient_equilibrium``: a pair of `GradientEquilibrium` ops at each branch point (into exit i:
  ``1/(K-i)``, into stage i+1: ``(K-i-1)/(K-i)``).
* ``inline_collaboration``: exit i > 0 adds exit i-1's detached logits to its own.

Backbone: the paper trains MSDNet (multi-scale dense connections, Huang et al. 2018); MobileNetV2 stages
stand in here because the platform's target is a phone (MobileNetV2's blocks delegate to XNNPACK and
share the conv factory, the export path and the MAdds counter with the other families), and IMTA's
three techniques are backbone-agnostic (Sec. 3: they act on the exits' losses and gradients). MSDNet's
dense multi-scale features, which shield early exits' features from later ones, are not reproduced:
Gradient Equilibrium is the part of IMTA that addresses that interference here. ``preset="paper"``
keeps the registry's defaults (GE and ISC on, as the paper's full model).

Cost: `count_madds(net, shape, exit=k)` is the cumulative cost of an early-exit run that stops at
exit k (backbone up to stage k plus heads 0..k); `exit_madds(net, shape)` lists it for every exit.
`exit_prefix(net, k)` is the sub-network up to exit k (shared weights), e.g. for export;
`stage_outputs(net)` the backbone tensors at the branch points (for exporting per-stage segments).
"""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.channels import make_divisible
from keras_layers.checks import check_bool, check_choice, check_int, check_number, check_positive
from keras_layers.madds import count_madds
from keras_layers.models import register
from keras_layers.models.blocks import conv_bn, stem_stride
from keras_layers.models.mobilenet_v2 import inverted_residual, stage_plan
from keras_layers.multi_exit import ExitHead, GradientEquilibrium

L = keras.layers


def exit_names(net):
    """The `exit_i` output names of a multi-exit model (or of its outputs dict), in exit order."""
    shapes = net if isinstance(net, dict) else net.output_shape
    if not isinstance(shapes, dict):
        raise ValueError(f"model {net.name!r} is not a multi-exit model (outputs are not a dict of exit_i)")
    names = [k for k in shapes if k.startswith("exit_")]
    if not names:
        raise ValueError(f"model has no exit_i outputs; outputs: {sorted(shapes)}")
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def num_exits(net):
    return len(exit_names(net))


def _check_exit(net, exit):
    check_int("exit", exit, 0, num_exits(net) - 1)


def exit_prefix(net, exit):
    """The network up to exit `exit`, output ``{"exit_<exit>": logits}``, sharing `net`'s weights."""
    _check_exit(net, exit)
    name = f"exit_{exit}"
    return keras.Model(net.inputs, {name: net._nested_outputs[name]}, name=f"{net.name}_{name}")


def stage_outputs(net):
    """Keras tensors of the backbone after each stage (what exit i's head and stage i+1 both read)."""
    tensors = []
    for name in exit_names(net):
        head = net.get_layer(name)
        features = head._inbound_nodes[0].keras_inputs[0]
        layer = features._keras_history.layer
        if isinstance(layer, GradientEquilibrium):  # step back over the exit branch's rescaling op
            features = layer._inbound_nodes[features._keras_history.node_index].keras_inputs[0]
        tensors.append(features)
    return tensors


def exit_madds(net, input_shape=None, exits=None):
    """Cumulative MAdds per example to reach each exit: `[count_madds(net, shape, exit=k) for k]`.

    `exits` (exit indices, increasing): the cost when only those exits' heads run (an exported policy that
    drops an exit no image leaves at skips its head, unless a later exit reads its logits): one number per
    listed exit, each counting the backbone up to it and the listed heads up to it."""
    if exits is None:
        return [count_madds(net, input_shape, exit=k) for k in range(num_exits(net))]
    exits = [int(k) for k in exits]
    if not exits or any(b <= a for a, b in zip(exits, exits[1:])):
        raise ValueError(f"exits must be increasing exit indices; received exits={exits!r}")
    for k in exits:
        _check_exit(net, k)
    return [count_madds(net, input_shape, output=[f"exit_{j}" for j in exits[:i + 1]])
            for i in range(len(exits))]


def split_blocks(num_blocks, num_exits_):
    """End index (exclusive) of each of the `num_exits_` stages over `num_blocks` blocks, evenly."""
    return [round(num_blocks * (i + 1) / num_exits_) for i in range(num_exits_)]


BACKBONES = ("mobilenet_v2", "mobilenet_v3")


def _backbone(inputs, input_shape, backbone, width_multiplier, depth_multiplier, spec, last_channels):
    """(stem output, [block functions x -> x], last conv function) of `backbone`: MobileNetV2's spec table
    (depth_multiplier) or MobileNetV3's (spec), at `width_multiplier`."""
    if backbone == "mobilenet_v2":
        x = conv_bn(inputs, make_divisible(32 * width_multiplier), 3, strides=stem_stride(input_shape), name="stem")
        blocks = [lambda h, row=row: inverted_residual(h, row[1], row[2], row[3], name=f"block{row[0]}")
                  for row in stage_plan(input_shape, width_multiplier, depth_multiplier)]
        last = lambda h: conv_bn(h, make_divisible(last_channels * max(1.0, width_multiplier)), 1,  # noqa: E731
                                 name="last")
        return x, blocks, last
    from keras_layers.models import mobilenet_v3 as v3

    x = v3.stem(inputs, width_multiplier)
    blocks = [lambda h, i=i, row=row: v3.inverted_residual(h, *row, name=f"block{i}")
              for i, row in enumerate(v3.block_plan(input_shape, v3.check_spec(spec), width_multiplier))]
    last = lambda h: conv_bn(h, make_divisible(last_channels * max(1.0, width_multiplier)), 1,  # noqa: E731
                             activation="hswish", name="last")
    return x, blocks, last


@register("multi_exit_net")
def build_multi_exit_net(input_shape, num_classes, *, num_exits=4, width_multiplier=0.5, depth_multiplier=0.5,
                         head_units=0, dropout=0.0, last_channels=256, gradient_equilibrium=True,
                         inline_collaboration=True, backbone="mobilenet_v2", spec="tiny"):
    """`backbone` "mobilenet_v2" (blocks of the `mobilenet_v2` table at `depth_multiplier`) or "mobilenet_v3"
    (the `mobilenet_v3` blocks of `spec`: "tiny" as the registered `mobilenet_v3`, "small", "large"; hswish last
    conv); the other backbone's depth field is ignored."""
    check_int("num_exits", num_exits, 2)
    check_positive("width_multiplier", width_multiplier)
    check_positive("depth_multiplier", depth_multiplier)
    check_number("dropout", dropout, 0.0, 0.99)
    check_int("last_channels", last_channels)
    check_int("head_units", head_units, 0)
    check_bool("gradient_equilibrium", gradient_equilibrium)
    check_bool("inline_collaboration", inline_collaboration)
    check_choice("backbone", backbone, BACKBONES)
    from keras_layers.models.mobilenet_v3 import check_spec

    check_spec(spec)

    inputs = keras.Input(shape=input_shape, name="image")
    x, blocks, last_conv = _backbone(inputs, input_shape, backbone, width_multiplier, depth_multiplier, spec,
                                     last_channels)
    if num_exits > len(blocks):
        depth = f"depth_multiplier={depth_multiplier}" if backbone == "mobilenet_v2" else f"spec={spec!r}"
        raise ValueError(f"num_exits must be <= the number of blocks ({len(blocks)} at {depth}). "
                         f"Received: num_exits={num_exits!r}")
    ends = split_blocks(len(blocks), num_exits)

    outputs, previous, start = {}, None, 0
    for i, end in enumerate(ends):
        for block in blocks[start:end]:
            x = block(x)
        start = end
        last = i == num_exits - 1
        if last:
            x = last_conv(x)
        to_exit = x
        if gradient_equilibrium and not last:
            to_exit_scale, to_next_scale = GradientEquilibrium.branch_scales(i, num_exits)
            to_exit = GradientEquilibrium(to_exit_scale, name=f"ge_exit_{i}")(x)
            x = GradientEquilibrium(to_next_scale, name=f"ge_next_{i}")(x)
        head = ExitHead(num_classes, hidden_units=head_units, dropout=dropout,
                        inline_collaboration=inline_collaboration and previous is not None, name=f"exit_{i}")
        logits = head([to_exit, previous] if head.inline_collaboration else to_exit)
        outputs[f"exit_{i}"] = logits
        previous = logits
    return keras.Model(inputs, outputs, name="multi_exit_net")
