"""The maths of one neuron group: rows lo..hi of a layer. Pure numpy, no
sockets, so it can be checked on its own. Each backward sits beside its forward."""
import numpy as np

from .optim import Optimizer


def activate(name, z):
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+e^-z), without overflow warnings
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    return z


def slope(name, a):
    """f'(z), written in terms of a = f(z)."""
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (a > 0).astype(a.dtype)
    return None  # linear: 1


class Neurons:
    def __init__(self, W, b, function, optimizer=None):
        self.W = np.array(W)
        self.b = np.array(b)
        self.function = function
        self.optimizer = optimizer or Optimizer()
        self.zero_grads()

    def zero_grads(self):
        self.gW = np.zeros_like(self.W)
        self.gb = np.zeros_like(self.b)

    def forward(self, x):
        return activate(self.function, x @ self.W.T + self.b)

    def backward(self, x, a, dA, need_dx=True):
        """Accumulate dW, db for this pass; return dL/dx (rows, inputs) or None."""
        s = slope(self.function, a)
        delta = dA if s is None else dA * s
        dX = delta @ self.W if need_dx else None  # with W before any update
        self.gW += delta.T @ x
        self.gb += delta.sum(axis=0)
        return dX

    def apply(self, lr):
        self.optimizer.step([self.W, self.b], [self.gW, self.gb], lr)
        self.zero_grads()

    def grow(self, new_cols):
        rows = self.W.shape[0]
        self.W = np.concatenate([self.W, np.zeros((rows, new_cols), self.W.dtype)], axis=1)
        self.gW = np.concatenate([self.gW, np.zeros((rows, new_cols), self.W.dtype)], axis=1)
        self.optimizer.grow(0, new_cols)
