"""Analytic multiply-adds (MAdds) per example, the accounting of the MobileNet/CondConv papers.

`count_madds(model, input_shape, **state)` walks the functional graph of `model` and sums, for every
layer call, the multiply-adds of one example:

* `Conv2D`: ``H_out * W_out * kh * kw * (C_in / groups) * C_out``
* `DepthwiseConv2D`: ``H_out * W_out * kh * kw * C_in * depth_multiplier``
* `SeparableConv2D`: depthwise part + pointwise part
* `Dense`: ``prod(leading dims) * C_in * C_out``
* everything else (BN, activations, pooling, adds) counts 0, as in the papers.

Protocol for our own layers: a layer that defines ``madds(input_shape, output_shape, **state)``
reports its own count (shapes include the batch axis as ``None``; ``input_shape`` is the shape of the
first call argument). ``state`` carries the setting asked for (``width=0.5``, ...): a layer uses the
keys it understands and ignores the others. Two keys are handled here, on the graph:

* ``output="NAME"`` (or a list of names) counts only the layers the named model outputs depend on, each once;
* ``exit=k`` (multi-exit models) counts the layers that outputs ``exit_0`` .. ``exit_k`` depend on:
  the cumulative cost of an early-exit run that stops at exit k, which evaluated every earlier
  exit's head on the way (IMTA / MSDNet budgeted inference).

A nested functional model used as a layer is counted recursively with the same state.
"""
from __future__ import annotations

import math

from keras_layers import env  # noqa: F401
import tf_keras as keras


def _dims(shape):
    """Per-example dims (drops the batch axis) as a tuple of ints."""
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(f"count_madds needs static shapes. Received: shape={tuple(shape)}")
    return tuple(int(d) for d in dims)


def _builtin_madds(layer, input_shape, output_shape):
    L = keras.layers
    if isinstance(layer, L.DepthwiseConv2D):
        h, w, c_in = _dims(input_shape)[:2] + _dims(input_shape)[2:]
        oh, ow, _ = _dims(output_shape)
        kh, kw = layer.kernel_size
        return oh * ow * kh * kw * c_in * layer.depth_multiplier
    if isinstance(layer, L.SeparableConv2D):
        c_in = _dims(input_shape)[-1]
        oh, ow, c_out = _dims(output_shape)
        kh, kw = layer.kernel_size
        return oh * ow * (kh * kw * c_in * layer.depth_multiplier + c_in * layer.depth_multiplier * c_out)
    if isinstance(layer, L.Conv2D):
        c_in = _dims(input_shape)[-1]
        oh, ow, c_out = _dims(output_shape)
        kh, kw = layer.kernel_size
        return oh * ow * kh * kw * (c_in // layer.groups) * c_out
    if isinstance(layer, L.Dense):
        dims = _dims(input_shape)
        return math.prod(dims[:-1]) * dims[-1] * layer.units
    return 0


def layer_madds(layer, input_shape, output_shape, **state) -> int:
    """MAdds of one call of `layer` for one example (see module docstring)."""
    own = getattr(layer, "madds", None)
    if callable(own):
        return int(own(input_shape, output_shape, **state))
    if isinstance(layer, keras.Model):
        return count_madds(layer, _dims(input_shape), **state)
    inner = getattr(layer, "layer", None)  # wrappers (QAT, TimeDistributed-like)
    if isinstance(inner, keras.layers.Layer):
        return layer_madds(inner, input_shape, output_shape, **state)
    return _builtin_madds(layer, input_shape, output_shape)


def _first_shape(shapes):
    while isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple)):
        shapes = shapes[0]
    if isinstance(shapes, dict):
        shapes = next(iter(shapes.values()))
    return shapes


def _named_outputs(model):
    nested = getattr(model, "_nested_outputs", None)
    if isinstance(nested, dict):
        return dict(nested)
    return dict(zip(model.output_names, model.outputs))


def _with_input_shape(model, input_shape):
    shapes = model.input_shape
    # Several inputs (e.g. [image, coefficients]): `input_shape` is the first one's, and it must match.
    current = tuple((shapes[0] if isinstance(shapes, list) else shapes)[1:])
    if current == tuple(input_shape):
        return model
    if isinstance(shapes, list):
        raise ValueError(f"count_madds cannot rebuild multi-input model {model.name} for "
                         f"input_shape={tuple(input_shape)}; build it at that shape")
    try:
        return keras.models.clone_model(model, input_tensors=keras.Input(shape=tuple(input_shape)))
    except Exception as err:  # pragma: no cover - depends on the architecture
        raise ValueError(
            f"count_madds could not rebuild {model.name} for input_shape={tuple(input_shape)}: {err}"
        ) from err


def count_madds(model, input_shape=None, **state) -> int:
    """Multiply-adds per example of `model` at `input_shape` (H, W, C) in the setting `state`."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"count_madds needs a functional keras model. Received: model={type(model).__name__}"
        )
    if input_shape is not None:
        model = _with_input_shape(model, input_shape)
    output = state.pop("output", None)
    outputs = _named_outputs(model)
    if "exit" in state:
        k = int(state.pop("exit"))
        if f"exit_{k}" not in outputs:
            raise ValueError(f"count_madds: unknown output='exit_{k}' (exit={k}); model outputs: {sorted(outputs)}")
        targets = [outputs[f"exit_{j}"] for j in range(k + 1) if f"exit_{j}" in outputs]
    elif output is not None:  # one output's name, or a list of names (the layers they share count once)
        names = [output] if isinstance(output, str) else list(output)
        unknown = [n for n in names if n not in outputs]
        if unknown or not names:
            raise ValueError(f"count_madds: unknown output={output!r}; model outputs: {sorted(outputs)}")
        targets = [outputs[n] for n in names]
    else:
        targets = list(outputs.values())

    seen, total = set(), 0
    stack = [t._keras_history for t in targets]
    while stack:
        layer, node_index, _ = stack.pop()
        key = (id(layer), node_index)
        if key in seen:
            continue
        seen.add(key)
        node = layer._inbound_nodes[node_index]
        if node.is_input:
            continue
        total += layer_madds(layer, _first_shape(node.input_shapes), _first_shape(node.output_shapes), **state)
        for t in node.keras_inputs:
            stack.append(t._keras_history)
    return int(total)
