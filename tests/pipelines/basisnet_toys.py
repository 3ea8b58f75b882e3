"""A BasisNet with plain layers (no BN or dropout) for tests that compute losses or accuracies by hand:
a preview (logits + per-layer coefficients) and a specialist that reads the image and the coefficients."""
from keras_layers import env  # noqa: F401
import tf_keras as keras

from keras_layers.basis import BasisCoefficients, CoefficientGroup

L = keras.layers
SHAPE = (4, 4, 1)


def toy_basisnet(groups=2, bases=3, classes=3, read_group=None):
    """`read_group=None`: the specialist reads every group's coefficients; an int: only that group's
    (through a `CoefficientGroup` and a Dense "amplify"), so the other groups are predicted but unused."""
    image = keras.Input(SHAPE, name="image")
    h = L.Dense(8, activation="tanh")(L.Flatten()(image))
    preview = keras.Model(image, {"preview_logits": L.Dense(classes)(h),
                                  "coefficients": BasisCoefficients(groups, bases)(h)}, name="preview")
    img2, coeffs = keras.Input(SHAPE, name="image"), keras.Input((groups, bases), name="coefficients")
    if read_group is None:
        z = L.Concatenate()([L.Flatten()(img2), L.Flatten()(coeffs)])
    else:
        group = CoefficientGroup(read_group, name=f"coefficients_{read_group}")(coeffs)
        z = L.Concatenate(name="mix")([L.Flatten()(img2), L.Dense(16, name="amplify")(group)])
    specialist = keras.Model([img2, coeffs], L.Dense(classes)(z), name="specialist")
    x = keras.Input(SHAPE, name="image")
    first = preview(x)
    return keras.Model(x, {"preview_logits": first["preview_logits"], "coefficients": first["coefficients"],
                           "logits": specialist([x, first["coefficients"]])}, name="toy")
