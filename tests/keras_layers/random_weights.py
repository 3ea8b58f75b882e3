"""Random weights for checks that initial weights would let pass (zero biases, identity batch norm)."""
import numpy as np


def randomize(model, seed=0):
    """Weights of a sensible scale and non-trivial batch-norm statistics, so that parity checks can fail."""
    rng = np.random.RandomState(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif "gamma" in w.name:
            w.assign((1 + 0.1 * rng.randn(*shape)).astype("float32"))
        elif len(shape) >= 2:  # kernels (conv, depthwise, dense, their bases, routers): fan-in scaling
            fan_in = np.prod(shape[-3:-1]) if len(shape) >= 4 else shape[-2]
            w.assign((rng.randn(*shape) / np.sqrt(fan_in)).astype("float32"))
        else:
            w.assign((0.1 * rng.randn(*shape)).astype("float32"))
    return model
