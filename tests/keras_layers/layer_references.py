"""NumPy references of the layers that are not kernel mixing (those are in kernel_mixing_reference.py).

Each function takes the (built) layer, reads its weights and computes the layer's inference output
from NumPy inputs, without TensorFlow.
"""
import numpy as np

from kernel_mixing_reference import np_conv


def np_conv_batch(x, kernel, strides=(1, 1), padding="same", depthwise=False):
    """`np_conv` over a batch: x (B, H, W, C), kernel (kh, kw, C, O) or depthwise (kh, kw, C, 1)."""
    strides = tuple(strides) if isinstance(strides, (tuple, list)) else (strides, strides)
    return np.stack([np_conv(xb.astype(np.float64), kernel, strides, padding, (1, 1), depthwise=depthwise)
                     for xb in x])


def np_hard_sigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def np_hard_swish(x):
    return x * np_hard_sigmoid(x)


def np_identity(layer, x):
    return x


def np_basis_coefficients(layer, x):
    """softmax | sigmoid over the bases of (x W + b) as (batch, groups, num_bases); one-hot argmax at inference."""
    z = (x.astype(np.float64) @ layer.kernel.numpy() + layer.bias.numpy()).reshape(len(x), layer.groups,
                                                                                    layer.num_bases)
    if layer.activation == "softmax":
        e = np.exp(z - z.max(-1, keepdims=True))
        alpha = e / e.sum(-1, keepdims=True)
    else:
        alpha = 1 / (1 + np.exp(-z))
    return np.eye(layer.num_bases)[alpha.argmax(-1)] if layer.one_hot else alpha


def np_coefficient_group(layer, c):
    return c[:, layer.index]


def np_exit_head(layer, features, previous=None):
    """GAP -> [Dense + ReLU] -> Dense (+ previous logits with inline collaboration); no dropout at inference."""
    h = features.astype(np.float64).mean(axis=(1, 2))
    if layer.hidden_units:
        h = np.maximum(h @ layer.hidden_kernel.numpy() + layer.hidden_bias.numpy(), 0)
    out = h @ layer.kernel.numpy() + layer.bias.numpy()
    return out + previous if previous is not None else out


def active_width(layer):
    """The width a slimmable layer runs at without a width argument (its active width, else the widest)."""
    return layer.width if layer.width is not None else layer.width_multipliers[-1]


def np_slimmable_conv(layer, x):
    c_in, c_out = layer.channels(active_width(layer))
    out = np_conv_batch(x, layer.kernel.numpy()[:, :, :c_in, :c_out], layer.strides, layer.padding)
    return out + layer.bias.numpy()[:c_out] if layer.use_bias else out


def np_slimmable_depthwise(layer, x):
    c, _ = layer.channels(active_width(layer))
    out = np_conv_batch(x, layer.depthwise_kernel.numpy()[:, :, :c], layer.strides, layer.padding, depthwise=True)
    return out + layer.bias.numpy()[:c] if layer.use_bias else out


def np_slimmable_dense(layer, x):
    c_in, c_out = layer.channels(active_width(layer))
    out = x.astype(np.float64) @ layer.kernel.numpy()[:c_in, :c_out]
    return out + layer.bias.numpy()[:c_out] if layer.use_bias else out


def np_switchable_bn(layer, x):
    """Inference: this width's own statistics and (unless universal) its own gamma / beta."""
    width = active_width(layer)
    i = list(layer.width_multipliers).index(width)
    c = x.shape[-1]
    gamma = (layer.gammas[0].numpy()[:c] if layer.universal else layer.gammas[i].numpy())
    beta = (layer.betas[0].numpy()[:c] if layer.universal else layer.betas[i].numpy())
    mean, var = layer.moving_means[i].numpy(), layer.moving_variances[i].numpy()
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def np_dynamic_gate(layer, x):
    """[x * (1 + tanh(h W3 + b3)), one-hot choice, scores] with h = relu(GAP(x) W1 + b1), scores = h W2 + b2.

    The choice is the argmax of the scores with width "dynamic", else the one-hot of the active width."""
    pooled = x.astype(np.float64).mean(axis=(1, 2))
    hidden = np.maximum(pooled @ layer.w1.numpy() + layer.b1.numpy(), 0)
    scores = hidden @ layer.w2.numpy() + layer.b2.numpy()
    attended = x * (1 + np.tanh(hidden @ layer.w3.numpy() + layer.b3.numpy()))[:, None, None, :] \
        if layer.attention else x
    g = len(layer.width_multipliers)
    if layer.width == "dynamic":
        index = scores.argmax(-1)
    else:
        index = np.full(len(x), list(layer.width_multipliers).index(active_width(layer)))
    return [attended, np.eye(g)[index], scores]
