"""BasisNet on MobileNetV3 (Zhang et al., "BasisNet: Two-stage Model Synthesis for Efficient Inference").

Two stages, each a functional sub-model reachable by name:

* ``preview`` (image -> {"preview_logits", "coefficients"}): a small MobileNetV3 on a down-sampled
  image (f(x) = DownSampling(x), Eq. 1). From its penultimate features one dense layer predicts the
  combination coefficients of *every* synthesized layer at once, shape (batch, groups, num_bases),
  softmax over the bases by default (sigmoid selectable); ``one_hot=True`` turns synthesis into
  model selection (straight-through gradient in training).
* ``specialist`` ([image, coefficients] -> logits): a MobileNetV3 whose chosen layers are Basis
  layers, kernel ``sum_n alpha_n W_n`` (Eq. 3); everything else (BN, SE, unsynthesized layers) is
  shared by the bases. ``per_layer=True`` gives each synthesized layer its own coefficient group,
  ``per_layer=False`` one vector for the whole model (per-model synthesis, Sec. 4.7).

The registered net calls both: ``{"preview_logits", "coefficients", "logits"}`` (logits of the
specialist). Recipes reach ``net.get_layer("preview")`` / ``net.get_layer("specialist")`` to transform
the coefficients between the stages (epsilon mixing, basis dropout); the TFLite exporter turns them
into the two signatures an app runs, stopping after ``preview`` when it is confident (early termination).

``preset="paper"`` (`PAPER`): the headline BasisNet-MV3 shape - 16 MobileNetV3-Large bases
(``spec="large"``), a full MobileNetV3-Small preview - at the registry's widths.

Specialist layer numbering (the paper's L0, L1, ...; used by ``synthesized``): 0 = stem conv,
1..B = the B inverted-residual blocks ``block0`` .. ``block{B-1}`` (their expand and project 1x1
convs, and the depthwise conv with ``synthesize_depthwise=True``), B+1 = last 1x1 conv, B+2 = pooled
hidden dense, B+3 = classifier. Default: the second half of the blocks, the last conv and the
classifier (the paper shares the early layers and synthesizes the late ones).

Why the depthwise convs stay shared by default: training a per-example depthwise kernel on this CPU
costs 7-20x its static twin at the small spatial sizes of 32x32 inputs (5x5, 4x4x288, batch 64:
0.44 s forward+backward with the batch folded into channels), while the 1x1 convs, which hold most
MAdds and parameters, cost ~1x with the einsum path.
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.activations import HardSwish
from keras_layers.basis import COEFFICIENT_ACTIVATIONS, BasisCoefficients, CoefficientGroup
from keras_layers.channels import make_divisible
from keras_layers.checks import check_bool, check_choice, check_int, check_positive, fail
from keras_layers.models import register
from keras_layers.models.blocks import conv_bn, dense, stem_stride
from keras_layers.models.mobilenet_v3 import block_plan, check_common, check_spec, inverted_residual

L = keras.layers


def stages(net):
    """The two stages of a BasisNet: `(preview, specialist)` sub-models; ValueError for other models."""
    names = {layer.name for layer in net.layers}
    if not {"preview", "specialist"} <= names:
        raise ValueError(f"model={net.name!r} is not a BasisNet: it needs sub-models named 'preview' and "
                         f"'specialist' (build it with keras_layers.models.build('basisnet_mobilenet_v3'))")
    return net.get_layer("preview"), net.get_layer("specialist")


def default_synthesized(num_blocks):
    """Second half of the blocks, the last conv and the classifier (indices as in the module docstring)."""
    first = math.ceil(num_blocks / 2) + 1
    return list(range(first, num_blocks + 2)) + [num_blocks + 3]


def check_synthesized(synthesized, num_blocks):
    top = num_blocks + 3
    if synthesized is None:
        return default_synthesized(num_blocks)
    if synthesized == "all":
        return list(range(top + 1))
    ok = isinstance(synthesized, (list, tuple)) and synthesized and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= top for i in synthesized)
    if not ok:
        fail("synthesized", f"'all' or a non-empty list of layer indices in [0, {top}] (0 = stem, "
                            f"1..{num_blocks} = blocks, {num_blocks + 1} = last conv, {num_blocks + 2} = hidden, "
                            f"{top} = classifier)", synthesized)
    return sorted(set(synthesized))


def build_preview(input_shape, num_classes, groups, *, num_bases, coefficient_activation, one_hot, width,
                  spec, blocks, downsample, channels, name="preview"):
    """The lightweight model: image -> {"preview_logits", "coefficients"}."""
    image = keras.Input(shape=input_shape, name="image")
    x = image
    if downsample > 1:
        x = L.AveragePooling2D(downsample, padding="same", name="downsample")(x)
    small_shape = tuple(x.shape[1:])
    x = conv_bn(x, make_divisible(16 * width), 3, strides=stem_stride(small_shape), activation="hswish", name="stem")
    for i, (k, e, c, se, act, s) in enumerate(block_plan(small_shape, spec[:blocks], width)):
        x = inverted_residual(x, k, e, c, se, act, s, name=f"block{i}")
    x = L.GlobalAveragePooling2D(name="pool")(x)
    features = HardSwish(name="features_act")(L.Dense(make_divisible(channels * width), name="features")(x))
    logits = L.Dense(num_classes, name="logits")(features)
    coefficients = BasisCoefficients(groups, num_bases, coefficient_activation, one_hot,
                                     name="coefficients")(features)
    return keras.Model(image, {"preview_logits": logits, "coefficients": coefficients}, name=name)


def build_specialist(input_shape, num_classes, groups, synthesized, *, num_bases, width, spec, dropout,
                     last_channels, head_channels, per_layer, synthesize_depthwise, name="specialist"):
    """The synthesized model: [image, coefficients (batch, groups, num_bases)] -> logits."""
    image = keras.Input(shape=input_shape, name="image")
    coeffs = keras.Input(shape=(groups, num_bases), name="coefficients")
    slot = {layer: (i if per_layer else 0) for i, layer in enumerate(synthesized)}
    cache = {}

    def coef(layer):
        if layer not in slot:
            return None
        g = slot[layer]
        if g not in cache:
            cache[g] = CoefficientGroup(g, name=f"coefficients_{g}")(coeffs)
        return cache[g]

    plan = list(block_plan(input_shape, spec, width))
    B = len(plan)
    x = conv_bn(image, make_divisible(16 * width), 3, strides=stem_stride(input_shape), activation="hswish",
                name="stem", coefficients=coef(0))
    for i, (k, e, c, se, act, s) in enumerate(plan):
        x = inverted_residual(x, k, e, c, se, act, s, name=f"block{i}", coefficients=coef(i + 1),
                              synthesize_depthwise=synthesize_depthwise)
    x = conv_bn(x, make_divisible(last_channels * width), 1, activation="hswish", name="last",
                coefficients=coef(B + 1))
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    x = HardSwish(name="head_act")(dense(x, make_divisible(head_channels * width), "head_hidden", coef(B + 2)))
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    logits = dense(x, num_classes, "head_logits", coef(B + 3))
    return keras.Model([image, coeffs], logits, name=name)


# The paper's headline model (Table 1, Sec. 4.4): 16 MobileNetV3-Large-shaped bases (last conv 960, pooled
# hidden 1280) synthesized from coefficients a MobileNetV3-Small preview predicts. Widths, input
# down-sampling and the synthesized layers stay the registry's (CPU-sized); explicit fields win.
PAPER = {"spec": "large", "last_channels": 960, "head_channels": 1280, "num_bases": 16,
         "coefficient_activation": "softmax", "per_layer": True, "preview_spec": "small", "preview_blocks": 11}


@register("basisnet_mobilenet_v3", paper=PAPER)
def build_basisnet_mobilenet_v3(input_shape, num_classes, *, num_bases=4, coefficient_activation="softmax",
                                per_layer=True, one_hot=False, synthesized=None, synthesize_depthwise=False,
                                width_multiplier=0.5, spec="tiny", dropout=0.2, last_channels=576, head_channels=1024,
                                preview_width=0.35, preview_spec="tiny", preview_blocks=4, preview_downsample=2,
                                preview_channels=256):
    """BasisNet-MV3: preview (small MV3 on a down-sampled image) + specialist with `num_bases` bases."""
    check_int("num_bases", num_bases)
    check_choice("coefficient_activation", coefficient_activation, COEFFICIENT_ACTIVATIONS)
    for field, value in (("per_layer", per_layer), ("one_hot", one_hot),
                         ("synthesize_depthwise", synthesize_depthwise)):
        check_bool(field, value)
    check_common(width_multiplier, dropout, last_channels, head_channels)
    check_int("head_channels", head_channels)  # the specialist synthesizes its hidden layer: it needs one
    rows = check_spec(spec)
    check_positive("preview_width", preview_width)
    preview_rows = check_spec(preview_spec, "preview_spec")
    check_int("preview_blocks", preview_blocks, 1, len(preview_rows))
    check_int("preview_downsample", preview_downsample)
    check_int("preview_channels", preview_channels)

    layers = check_synthesized(synthesized, len(rows))
    groups = len(layers) if per_layer else 1
    preview = build_preview(input_shape, num_classes, groups, num_bases=num_bases,
                            coefficient_activation=coefficient_activation, one_hot=one_hot, width=preview_width,
                            spec=preview_rows, blocks=preview_blocks, downsample=preview_downsample,
                            channels=preview_channels)
    specialist = build_specialist(input_shape, num_classes, groups, layers, num_bases=num_bases,
                                  width=width_multiplier, spec=rows, dropout=dropout, last_channels=last_channels,
                                  head_channels=head_channels, per_layer=per_layer,
                                  synthesize_depthwise=synthesize_depthwise)
    image = keras.Input(shape=input_shape, name="image")
    first = preview(image)
    logits = specialist([image, first["coefficients"]])
    return keras.Model(image, {"preview_logits": first["preview_logits"], "coefficients": first["coefficients"],
                               "logits": logits}, name="basisnet_mobilenet_v3")
