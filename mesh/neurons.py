"""The maths of one neuron group: rows lo..hi of a layer. Pure numpy, no
sockets, so it can be checked on its own. Each backward sits beside its forward."""
import numpy as np

from .optim import Optimizer


def activate(name, z, out=None):
    if name == "sigmoid":
        z = np.multiply(z, 0.5, out=out)
        np.tanh(z, out=z)
        z += 1.0
        z *= 0.5
        return z  # = 1/(1+e^-z), without overflow warnings
    if name == "tanh":
        return np.tanh(z, out=out)
    if name == "relu":
        return np.maximum(z, 0, out=out)
    return z


def slope(name, a):
    """f'(z), written in terms of a = f(z)."""
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return a > 0
    return None  # linear: 1


class Neurons:
    """A group's weights W (rows, inputs), bias b, optimizer, and the
    micro-batches of the step in progress: their gradient is formed in one
    matrix product when the step is applied (fewer, larger products)."""

    def __init__(self, W, b, function, optimizer=None):
        self.W = np.array(W)
        self.b = np.array(b)
        self.function = function
        self.optimizer = optimizer or Optimizer()
        self.pending = []  # (x, delta) of each micro-batch since the last step
        self.tail = 0      # input columns after those that grow (the rows'): other layers' outputs

    def forward(self, x):
        z = x @ self.W.T
        z += self.b
        return activate(self.function, z, out=z)

    def backward(self, x, a, dA, need_dx=True):
        """Keep this pass's share of the gradient; return dL/dx (rows, inputs) or None.
        dA may be overwritten."""
        s = slope(self.function, a)
        delta = dA if s is None else np.multiply(dA, s, out=dA)
        self.pending.append((x, delta))
        return delta @ self.W if need_dx else None  # with W before any update

    def gradients(self):
        """(dW, db) summed over the pending micro-batches, with the L2 term of W (optim.py)."""
        width = self.W.shape[1]
        xs = [x if x.shape[1] == width else _widen(x, width, self.tail) for x, _ in self.pending]  # kept from before a grow
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        d = self.pending[0][1] if len(xs) == 1 else np.concatenate([d for _, d in self.pending])
        gW = d.T @ x
        if self.optimizer.alpha:
            gW += (self.optimizer.alpha / len(x)) * self.W
        return gW, d.sum(axis=0)

    def apply(self, lr):
        gW, gb = self.gradients()
        self.pending = []
        self.optimizer.step([self.W, self.b], [gW, gb], lr)

    def grow(self, new_cols, tail=0):
        """new_cols zero input columns, inserted before the last `tail` ones."""
        self.tail = tail
        self.W = _widen(self.W, self.W.shape[1] + new_cols, tail)
        self.optimizer.grow(0, new_cols, tail)


def _widen(x, width, tail=0):
    """x with zero columns inserted before its last `tail`, to `width` columns."""
    at = x.shape[1] - tail
    return np.concatenate([x[:, :at], np.zeros((x.shape[0], width - x.shape[1]), x.dtype), x[:, at:]], axis=1)
