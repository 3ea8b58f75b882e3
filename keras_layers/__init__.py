"""Keras (tf_keras, Keras 2 API) layers for input-dependent networks on phones.

Families: CondConv and BasisNet kernel mixing, slimmable / dynamically sliced convolutions,
multi-exit heads. `keras_layers.models` holds the registry of architectures; `count_madds` gives
analytic multiply-adds per example. No I/O, Ray or MLflow here.
"""
from keras_layers import _env  # noqa: F401  (must run before TensorFlow is imported)
from keras_layers.madds import count_madds, layer_madds
from keras_layers import models
from keras_layers.slimmable import (SlimmableConv2D, SlimmableDense, SlimmableDepthwiseConv2D,  # noqa: E402
                                    SwitchableBatchNormalization)
from keras_layers.ds_net import DynamicGate  # noqa: E402

__all__ = ["count_madds", "layer_madds", "models"]
__all__ += ["SlimmableConv2D", "SlimmableDepthwiseConv2D", "SlimmableDense", "SwitchableBatchNormalization",
            "DynamicGate"]
