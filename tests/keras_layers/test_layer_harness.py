"""One harness over every public layer (in the spirit of Keras' `layer_test`).

For each case of `CASES` (a constructor with small arguments, the per-example input shapes and a NumPy
reference) it checks: the layer builds and its output shape is `compute_output_shape`; the
`get_config` -> `from_config` round trip (through `keras.layers.serialize`) gives the same config and,
with the same weights, the same outputs; a model holding the layer saved to `.keras` and loaded back
with ``safe_mode=True`` gives the same outputs; the output equals the NumPy reference at inference.
Weights are randomized first (zero biases or identity attention would hide bugs).

`test_every_public_layer_is_in_the_table` fails when a layer exported by `keras_layers` or registered
under the ``keras_layers`` package has no case: a new layer must be added here. Behaviour beyond
this contract (gradients, widths, routing, training-mode statistics, bad arguments) is tested beside
each layer family.
"""
from dataclasses import dataclass

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

import keras_layers
from keras_layers import (BasisCoefficients, BasisConv2D, BasisDense, BasisDepthwiseConv2D, CoefficientGroup,
                          CondConv2D, CondDense, CondDepthwiseConv2D, CondRouting, DynamicGate, ExitHead,
                          GradientEquilibrium, HardSigmoid, HardSwish, SlimmableConv2D, SlimmableDense,
                          SlimmableDepthwiseConv2D, SwitchableBatchNormalization, models)

from kernel_mixing_reference import np_reference, np_routing
from layer_references import (np_basis_coefficients, np_coefficient_group, np_dynamic_gate, np_exit_head,
                              np_hard_sigmoid, np_hard_swish, np_identity, np_slimmable_conv, np_slimmable_dense,
                              np_slimmable_depthwise, np_switchable_bn)

BATCH = 3


def np_activation(layer, y):
    name = keras.activations.serialize(layer.activation)
    assert name in ("linear", "relu"), f"no NumPy reference for activation={name!r}"
    return np.maximum(y, 0) if name == "relu" else y


def basis_reference(layer, x, coefficients):
    return np_activation(layer, np_reference(layer, x, coefficients))


def cond_reference(layer, x):
    """A CondConv layer with its own router: the Basis op mixed by the NumPy routing weights."""
    return basis_reference(layer, x, np_routing(layer.router, x).astype("float32"))


@dataclass
class Case:
    make: object                 # () -> layer, small constructor arguments
    shapes: tuple                # per-example shapes of the call's inputs (the first is the main input)
    reference: object            # (layer, *numpy inputs) -> numpy output(s) at inference
    build: tuple = None          # build at this per-example shape first (a slimmable layer run narrower)
    list_input: bool = False     # call `layer([a, b])` instead of `layer(a, b)`
    scale: float = 1.0           # of the random inputs

    def data(self, seed=0):
        rng = np.random.RandomState(seed)
        return [(self.scale * rng.randn(BATCH, *shape)).astype("float32") for shape in self.shapes]

    def call(self, layer, inputs):
        return layer(list(inputs)) if self.list_input else layer(*inputs)

    def built_layer(self):
        """The layer, built (on the case's data), with random weights; and that data."""
        layer = self.make()
        if self.build:
            layer.build((None, *self.build))
        inputs = self.data()
        self.call(layer, inputs)
        randomize(layer)
        return layer, inputs

    def expected_shape(self, layer):
        shapes = [(BATCH, *shape) for shape in self.shapes]
        return layer.compute_output_shape(shapes if self.list_input else shapes[0])


def randomize(layer, seed=1):
    rng = np.random.RandomState(seed)
    for w in layer.weights:
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def as_shapes(shape):
    """A `compute_output_shape` result as a list of tuples (one per output)."""
    several = isinstance(shape, (list, tuple)) and all(isinstance(s, (tf.TensorShape, list, tuple)) for s in shape)
    return [tuple(tf.TensorShape(s).as_list()) for s in (shape if several else [shape])]


CASES = [
    Case(lambda: HardSwish(), [(5, 4)], lambda layer, x: np_hard_swish(x), scale=3.0),
    Case(lambda: HardSigmoid(name="hs"), [(2, 2, 3)], lambda layer, x: np_hard_sigmoid(x), scale=3.0),
    # kernel mixing with coefficients from outside (BasisNet)
    Case(lambda: BasisConv2D(5, 3, num_bases=4), [(6, 7, 3), (4,)], basis_reference),
    Case(lambda: BasisConv2D(8, (3, 1), num_bases=3, strides=(2, 1), padding="valid", use_bias=False,
                             activation="relu", kernel_regularizer="l2", method="map_fn"),
         [(7, 6, 2), (3,)], basis_reference),
    Case(lambda: BasisDepthwiseConv2D(5, num_bases=2, dilation_rate=2, kernel_initializer="he_normal"),
         [(9, 9, 3), (2,)], basis_reference),
    Case(lambda: BasisDense(4, num_bases=6, bias_initializer="ones", method="experts"), [(5,), (6,)],
         basis_reference),
    Case(lambda: BasisCoefficients(2, 3), [(4,)], np_basis_coefficients),
    Case(lambda: BasisCoefficients(2, 3, "sigmoid", one_hot=True, name="c"), [(4,)], np_basis_coefficients),
    Case(lambda: CoefficientGroup(1), [(3, 4)], np_coefficient_group),
    # CondConv: own router, or routing weights shared by a block (second input)
    Case(lambda: CondConv2D(8, (3, 1), num_experts=3, strides=(2, 1), padding="valid", routing_activation="softmax",
                            use_bias=False, kernel_regularizer="l2"), [(7, 6, 2)], cond_reference),
    Case(lambda: CondConv2D(4, 1, num_experts=3, strides=2), [(5, 5, 3), (3,)], basis_reference),
    Case(lambda: CondDepthwiseConv2D(5, num_experts=2, dilation_rate=2, method="experts"), [(9, 9, 3)],
         cond_reference),
    Case(lambda: CondDense(4, num_experts=6, activation="relu"), [(5,)], cond_reference),
    Case(lambda: CondRouting(4, routing_activation="softmax"), [(5, 5, 3)], lambda layer, x: np_routing(layer, x)),
    Case(lambda: CondRouting(3), [(6,)], lambda layer, x: np_routing(layer, x)),
    # multi-exit
    Case(lambda: ExitHead(5), [(3, 3, 6)], np_exit_head),
    Case(lambda: ExitHead(7, hidden_units=3, dropout=0.2, inline_collaboration=True, name="h"), [(4, 4, 8), (7,)],
         np_exit_head, list_input=True),
    Case(lambda: GradientEquilibrium(0.5, name="ge"), [(3, 4)], np_identity),
    # slimmable (a layer built at full width and run at a narrower active width uses `build`)
    Case(lambda: SlimmableConv2D(8, 3), [(5, 5, 4)], np_slimmable_conv),
    Case(lambda: SlimmableConv2D(16, 3, strides=2, width=0.5, universal=True, slim_output=False), [(6, 6, 8)],
         np_slimmable_conv, build=(6, 6, 16)),
    Case(lambda: SlimmableDepthwiseConv2D(3, width_multipliers=(0.5, 1.0), width=0.5), [(6, 6, 8)],
         np_slimmable_depthwise, build=(6, 6, 16)),
    Case(lambda: SlimmableDense(12, width_multipliers=(0.5, 1.0), slim_input=False), [(8,)], np_slimmable_dense),
    Case(lambda: SwitchableBatchNormalization((0.5, 1.0), momentum=0.7, width=1.0), [(4, 4, 16)], np_switchable_bn),
    Case(lambda: SwitchableBatchNormalization((0.5, 1.0), universal=True, width=0.5), [(4, 4, 8)], np_switchable_bn,
         build=(4, 4, 16)),
    Case(lambda: DynamicGate((0.5, 1.0), hidden_units=4, temperature=2.0, width=0.5), [(4, 4, 16)], np_dynamic_gate),
    Case(lambda: DynamicGate(hidden_units=4, width="dynamic"), [(3, 3, 8)], np_dynamic_gate),
]


def case_id(case):
    layer = case.make()
    return f"{type(layer).__name__}-{CASES.index(case)}"


IDS = [case_id(c) for c in CASES]


def public_layer_classes():
    """(exported by `keras_layers`, registered under the "keras_layers" package) layer classes."""
    models.names()  # import every architecture module too, so a layer registered there is seen
    is_layer = lambda obj: isinstance(obj, type) and issubclass(obj, keras.layers.Layer)  # noqa: E731
    exported = {getattr(keras_layers, n) for n in keras_layers.__all__ if is_layer(getattr(keras_layers, n))}
    registered = {cls for key, cls in keras.utils.get_custom_objects().items()
                  if key.startswith("keras_layers>") and is_layer(cls)}
    return exported, registered


def test_every_public_layer_is_in_the_table():
    exported, registered = public_layer_classes()
    tested = {type(case.make()) for case in CASES}
    missing = sorted(cls.__name__ for cls in exported | registered if cls not in tested)
    assert not missing, f"public layers without a case in test_layer_harness.CASES: {missing}"
    assert exported == registered, (f"exported but not serializable: {sorted(c.__name__ for c in exported - registered)}; "
                                    f"serializable but not exported: {sorted(c.__name__ for c in registered - exported)}")
    in_models = sorted(cls.__name__ for cls in registered if cls.__module__.startswith("keras_layers.models"))
    assert not in_models, f"layers belong in layer files, not under keras_layers/models/: {in_models}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_builds_with_the_computed_output_shape(case):
    layer, inputs = case.built_layer()
    assert layer.built and (layer.weights or isinstance(layer, (HardSwish, HardSigmoid, GradientEquilibrium,
                                                                CoefficientGroup)))
    outputs = as_list(case.call(layer, inputs))
    assert [tuple(o.shape) for o in outputs] == as_shapes(case.expected_shape(layer))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_round_trip_gives_the_same_layer(case):
    layer, inputs = case.built_layer()
    config = layer.get_config()
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is type(layer) and clone.get_config() == config
    assert type(layer).from_config(config).get_config() == config
    if case.build and not clone.built:  # (deserialize builds from the saved build config)
        clone.build((None, *case.build))
    case.call(clone, inputs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(as_list(case.call(layer, inputs)), as_list(case.call(clone, inputs))):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_saved_keras_model_loads_with_safe_mode(case, tmp_path):
    layer, inputs = case.built_layer()
    tensors = [keras.Input(shape, name=f"input_{i}") for i, shape in enumerate(case.shapes)]
    model = keras.Model(tensors, case.call(layer, tensors))
    before = as_list(model(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded.get_layer(layer.name)) is type(layer)
    for a, b in zip(before, as_list(loaded(inputs))):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_the_numpy_reference(case):
    layer, inputs = case.built_layer()
    outputs = as_list(case.call(layer, inputs))
    references = as_list(case.reference(layer, *inputs))
    assert len(outputs) == len(references)
    for out, ref in zip(outputs, references):
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)
