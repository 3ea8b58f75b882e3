"""Keras (tf_keras, Keras 2 API) layers for input-dependent networks on phones.

Families: CondConv and BasisNet kernel mixing, slimmable / dynamically sliced convolutions,
multi-exit heads. `keras_layers.models` holds the registry of architectures; `count_madds` gives
analytic multiply-adds per example. No I/O, Ray or MLflow here.

Importing the package registers every serializable layer (they all live in the layer modules below,
never under `models/`), so a saved `.keras` model loads after a plain `import keras_layers`; the
architectures register themselves the first time `keras_layers.models` is asked for one.
"""
from keras_layers import env  # noqa: F401  (must run before TensorFlow is imported)
from keras_layers.madds import count_madds, layer_madds
from keras_layers import models
from keras_layers.activations import HardSigmoid, HardSwish
from keras_layers.basis import BasisCoefficients, BasisConv2D, BasisDense, BasisDepthwiseConv2D, CoefficientGroup
from keras_layers.condconv import CondConv2D, CondDense, CondDepthwiseConv2D, CondRouting
from keras_layers.multi_exit import ExitHead, GradientEquilibrium
from keras_layers.slimmable import (SlimmableConv2D, SlimmableDense, SlimmableDepthwiseConv2D,
                                    SwitchableBatchNormalization)
from keras_layers.ds_net import DynamicGate

__all__ = ["count_madds", "layer_madds", "models",
           "HardSigmoid", "HardSwish",
           "BasisConv2D", "BasisDepthwiseConv2D", "BasisDense", "BasisCoefficients", "CoefficientGroup",
           "CondConv2D", "CondDepthwiseConv2D", "CondDense", "CondRouting",
           "ExitHead", "GradientEquilibrium",
           "SlimmableConv2D", "SlimmableDepthwiseConv2D", "SlimmableDense", "SwitchableBatchNormalization",
           "DynamicGate"]
