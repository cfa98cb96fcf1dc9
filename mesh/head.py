"""The output end of a network: the output function (which, for softmax, needs the
whole last layer at once), the loss, and dL/dz handed back to the last layer's groups.
The output groups compute them for a training pass whose output is elementwise or held
by one group (datapath.DataPath.head); the broker, for the rest (broker/steplog.py)."""
import numpy as np

from .neurons import activate


def whole(parts):
    """The whole last layer from its groups' slices ({group index: slice})."""
    return parts[0] if len(parts) == 1 else np.concatenate([parts[i] for i in range(len(parts))], axis=1)


def output(name, z):
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return activate(name, z)


def _softplus(x):
    return np.logaddexp(0, x)


def loss_and_grad(output_name, loss, z, t, batch_rows):
    """(sum over rows of the per-row loss, dL/dz) where L is the mean over the
    `batch_rows` rows of the whole mini-batch, of which z is a part."""
    a = output(output_name, z)
    if loss == "mse":
        g = a - t
        per_row = 0.5 * (g * g).sum(axis=1)
        if output_name == "sigmoid":
            dz = g * a * (1 - a)
        elif output_name == "softmax":
            dz = a * (g - (g * a).sum(axis=1, keepdims=True))
        else:
            dz = g
    elif output_name == "softmax":
        log_a = z - z.max(axis=1, keepdims=True)
        log_a = log_a - np.log(np.exp(log_a).sum(axis=1, keepdims=True))
        per_row = -(t * log_a).sum(axis=1)
        dz = a * t.sum(axis=1, keepdims=True) - t
    else:  # binary cross-entropy per sigmoid output
        per_row = (t * _softplus(-z) + (1 - t) * _softplus(z)).sum(axis=1)
        dz = a - t
    return float(per_row.sum()), (dz / batch_rows).astype(z.dtype, copy=False)
