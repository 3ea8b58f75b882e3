"""NumPy reference for the kernel-mixing layers: a per-example loop over the folded kernel."""
import numpy as np

from keras_layers.basis import BasisDense, BasisDepthwiseConv2D

RNG = np.random.RandomState(0)


def _pad_and_size(x, k, s, padding, d):
    size, eff = x.shape[0], (k - 1) * d + 1
    if padding == "same":
        out = -(-size // s)
        total = max((out - 1) * s + eff - size, 0)
        return (total // 2, total - total // 2), out
    return (0, 0), -(-(size - eff + 1) // s)


def np_conv(x, k, strides, padding, dilation, depthwise=False):
    """One example: x (H, W, C), k (kh, kw, C, O) or depthwise (kh, kw, C, 1)."""
    kh, kw = k.shape[:2]
    (pt, pb), oh = _pad_and_size(x, kh, strides[0], padding, dilation[0])
    (pl, pr), ow = _pad_and_size(x.transpose(1, 0, 2), kw, strides[1], padding, dilation[1])
    xp = np.pad(x, [(pt, pb), (pl, pr), (0, 0)])
    out = np.zeros((oh, ow, x.shape[-1] if depthwise else k.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            for a in range(oh):
                for b in range(ow):
                    v = xp[a * strides[0] + i * dilation[0], b * strides[1] + j * dilation[1]]
                    out[a, b] += v * k[i, j, :, 0] if depthwise else v @ k[i, j]
    return out


def np_reference(layer, x, c):
    """Per-example loop over the folded kernel sum_n c[b, n] W[n], then bias."""
    w = layer.kernel.numpy().astype(np.float64)
    outs = []
    for b in range(x.shape[0]):
        folded = np.tensordot(c[b].astype(np.float64), w, axes=1)
        if isinstance(layer, BasisDense):
            y = x[b] @ folded
        else:
            y = np_conv(x[b].astype(np.float64), folded, layer.strides, layer.padding, layer.dilation_rate,
                        depthwise=isinstance(layer, BasisDepthwiseConv2D))
        outs.append(y)
    out = np.stack(outs)
    return out + layer.bias.numpy() if layer.use_bias else out


def data(batch, shape, num_bases, softmax=False):
    x = RNG.randn(batch, *shape).astype("float32")
    logits = RNG.randn(batch, num_bases).astype("float32")
    c = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) if softmax else 1 / (1 + np.exp(-logits))
    return x, c.astype("float32")



def np_routing(router, x):
    """GAP -> FC -> sigmoid | softmax of a `CondRouting` layer, in NumPy."""
    pooled = x.mean(axis=(1, 2)) if x.ndim == 4 else x
    logits = pooled.astype(np.float64) @ router.kernel.numpy() + router.bias.numpy()
    if router.routing_activation == "sigmoid":
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
