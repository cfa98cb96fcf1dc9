"""The reference network: the same feed-forward maths as the mesh, in one process.

It is the oracle the mesh is tested against and the numpy baseline of the
benchmarks, so it is written to be read, not to be clever: whole-batch matrix
products, no Python loops over rows or neurons.

Definitions (the mesh implements exactly these):

    layer          a = f(a_prev @ W.T + b)     W (out, in), b (out,)
                   hidden layers use `activation`, the last one uses `output`
    mse            mean over rows of 0.5 * sum over outputs of (a - t)**2
    cross_entropy  softmax: mean over rows of -sum(t * log softmax(z))
                   sigmoid: mean over rows of -sum(t*log(a) + (1-t)*log(1-a))
                   (both computed from z, stably); dL/dz = (a - t) / rows,
                   which for softmax assumes each target row sums to 1
    sgd            p -= lr*g
    momentum       v = momentum*v + g; p -= lr*v
    adam           t += 1 (once per step); m = beta1*m + (1-beta1)*g;
                   v = beta2*v + (1-beta2)*g*g; p -= lr*mhat/(sqrt(vhat)+eps)
                   with mhat = m/(1-beta1**t), vhat = v/(1-beta2**t)
    graph          inputs={k: [sources]}: layer k's input is the concatenation of its
                   sources' outputs in that order (0 = the rows; see mesh/graph.py);
                   a source read by several layers gets the sum of their dL/da
    alpha          L2 weight decay as scikit-learn's MLP: the loss a step minimises
                   gains alpha/2 * sum ||W||^2 / rows, so g(W) += alpha*W/rows
                   (biases are not decayed; the reported loss is the data loss)
"""
import numpy as np

from . import graph

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")  # hidden layers
OUTPUTS = ("sigmoid", "linear", "softmax")           # last layer
LOSSES = ("mse", "cross_entropy")
OPTIMIZERS = ("sgd", "momentum", "adam")
DTYPES = (np.float32, np.float64)


# ---- activations: each forward sits beside its derivative --------------------

def _sigmoid(z):
    # Split by sign so exp never overflows: for z < 0 use e^z / (1 + e^z).
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _softmax(z):
    # Subtracting the row max changes nothing mathematically and keeps exp <= 1.
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _activate(name, z):
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "softmax":
        return _softmax(z)
    return z  # linear


def _derivative(name, z, a):
    """da/dz elementwise (softmax is not elementwise and is handled by the caller)."""
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (z > 0).astype(z.dtype)
    return np.ones_like(z)  # linear


def _check(name, allowed, what):
    if name not in allowed:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(allowed)}")


# ---- the network --------------------------------------------------------------

class ReferenceNet:
    def __init__(self, layers, activation="sigmoid", output="sigmoid", loss="mse",
                 optimizer="sgd", momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8,
                 dtype=np.float64, alpha=0.0, inputs=None):
        _check(activation, ACTIVATIONS, "activation")
        _check(output, OUTPUTS, "output")
        _check(loss, LOSSES, "loss")
        _check(optimizer, OPTIMIZERS, "optimizer")
        if loss == "cross_entropy" and output == "linear":
            raise ValueError("loss 'cross_entropy' needs output 'sigmoid' or 'softmax', not 'linear'")
        self.dtype = np.dtype(dtype)
        if self.dtype not in [np.dtype(d) for d in DTYPES]:
            raise ValueError(f"unsupported dtype {self.dtype}; expected float32 or float64")
        if not layers:
            raise ValueError("a network needs at least one layer")

        self.graph = graph.normalize(inputs, len(layers))
        # Copies, so the caller's arrays and ours never alias.
        self.W, self.b = [], []
        for i, (W, b) in enumerate(layers):
            W = np.array(W, dtype=self.dtype)
            b = np.array(b, dtype=self.dtype)
            if W.ndim != 2 or b.shape != (W.shape[0],):
                raise ValueError(f"layer {i}: W must be (out, in) and b (out,), got {W.shape} and {b.shape}")
            if i and W.shape[1] != sum(self._widths(i)):
                raise ValueError(f"layer {i}: takes {W.shape[1]} inputs but its sources have {sum(self._widths(i))}")
            self.W.append(W)
            self.b.append(b)

        self.activation, self.output, self.loss_name, self.optimizer = activation, output, loss, optimizer
        # Python floats are "weak" scalars in numpy: they never promote float32 arrays.
        self.momentum, self.beta1, self.beta2, self.eps = float(momentum), float(beta1), float(beta2), float(eps)
        self.alpha = float(alpha)
        # Optimizer state, one zero array per parameter array: v for momentum, m and v for adam.
        self.t = 0
        self.m = [np.zeros_like(p) for p in self._params()]
        self.v = [np.zeros_like(p) for p in self._params()]

    @property
    def layers(self):
        """The live (W, b) arrays: step() updates them in place."""
        return list(zip(self.W, self.b))

    def _widths(self, i):
        """The widths of layer i's sources, in order (0-based i; the rows: layer 0's inputs)."""
        return graph.widths(self.graph, [W.shape[0] for W in self.W], i, self.W[0].shape[1])

    def _params(self):
        """Every parameter array in a fixed order: W0, b0, W1, b1, ..."""
        return [p for Wb in zip(self.W, self.b) for p in Wb]

    def _inputs(self, X, T=None):
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.W[0].shape[1]:
            raise ValueError(f"X must be (rows, {self.W[0].shape[1]}), got {X.shape}")
        if T is None:
            return X
        T = np.asarray(T, dtype=self.dtype)
        if T.shape != (X.shape[0], self.W[-1].shape[0]):
            raise ValueError(f"T must be ({X.shape[0]}, {self.W[-1].shape[0]}), got {T.shape}")
        return X, T

    # -- forward and loss --

    def _forward(self, X):
        """Every layer's input, pre-activation z and activation a, for the backward pass."""
        passes, outs = [], [X]  # outs[k]: layer k's output, outs[0] the rows
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            src = graph.sources(self.graph, i)
            a = outs[src[0]] if len(src) == 1 else np.concatenate([outs[s] for s in src], axis=1)
            z = a @ W.T + b
            f = self.output if i == len(self.W) - 1 else self.activation
            a_next = _activate(f, z)
            passes.append((a, z, a_next))
            outs.append(a_next)
        return passes

    def forward(self, X):
        return self._forward(self._inputs(X))[-1][2]

    def _loss(self, z, a, T):
        rows = z.shape[0]
        if self.loss_name == "mse":
            return 0.5 * np.sum((a - T) ** 2) / rows
        if self.output == "softmax":
            # log softmax(z) = z - logsumexp(z), with the row max taken out first.
            zs = z - z.max(axis=1, keepdims=True)
            log_a = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))
            return -np.sum(T * log_a) / rows
        # Binary CE from z: -(t log s(z) + (1-t) log(1-s(z))) = log(1+e^z) - t*z.
        return np.sum(np.logaddexp(0, z) - T * z) / rows

    def loss(self, X, T):
        X, T = self._inputs(X, T)
        _, z, a = self._forward(X)[-1]
        return float(self._loss(z, a, T))

    # -- backward --

    def _output_delta(self, z, a, T):
        """dL/dz at the output layer."""
        rows = z.shape[0]
        if self.loss_name == "cross_entropy":
            return (a - T) / rows  # CE cancels the output nonlinearity's derivative
        g = (a - T) / rows         # dL/da for mse
        if self.output == "softmax":
            # Softmax Jacobian J = diag(a) - a a^T, applied per row without forming it.
            return a * (g - np.sum(g * a, axis=1, keepdims=True))
        return g * _derivative(self.output, z, a)

    def _loss_and_gradients(self, X, T):
        passes = self._forward(X)
        _, z, a = passes[-1]
        loss = float(self._loss(z, a, T))
        delta = self._output_delta(z, a, T)
        grads = [None] * len(passes)
        dA = [None] * (len(passes) + 1)  # dA[k]: dL/d(layer k's output), summed over its readers
        for i in reversed(range(len(passes))):
            a_in = passes[i][0]
            if i < len(passes) - 1:
                _, z_i, a_i = passes[i]
                delta = dA[i + 1] * _derivative(self.activation, z_i, a_i)
            grads[i] = (delta.T @ a_in, delta.sum(axis=0))
            dX, col = delta @ self.W[i], 0
            for s, w in zip(graph.sources(self.graph, i), self._widths(i)):
                if s:
                    part = dX[:, col:col + w]
                    dA[s] = part if dA[s] is None else dA[s] + part
                col += w
        return loss, grads

    def gradients(self, X, T):
        X, T = self._inputs(X, T)
        return self._loss_and_gradients(X, T)[1]

    # -- training --

    def step(self, X, T, learning_rate):
        X, T = self._inputs(X, T)
        loss, grads = self._loss_and_gradients(X, T)
        for dW, W in zip([dWdb[0] for dWdb in grads], self.W):
            dW += (self.alpha / X.shape[0]) * W
        lr = float(learning_rate)
        if self.optimizer == "adam":
            self.t += 1
            bias1 = 1 - self.beta1 ** self.t  # bias corrections for the zero-started m and v
            bias2 = 1 - self.beta2 ** self.t
        # In-place updates keep the arrays returned by `layers` live.
        for p, g, m, v in zip(self._params(), [g for dWdb in grads for g in dWdb], self.m, self.v):
            if self.optimizer == "sgd":
                p -= lr * g
            elif self.optimizer == "momentum":
                v *= self.momentum
                v += g
                p -= lr * v
            else:
                m *= self.beta1
                m += (1 - self.beta1) * g
                v *= self.beta2
                v += (1 - self.beta2) * g * g
                p -= lr * (m / bias1) / (np.sqrt(v / bias2) + self.eps)
        return loss

    def train(self, X, T, epochs, batch_size, learning_rate, shuffle=False, seed=0):
        X, T = self._inputs(X, T)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        rows = X.shape[0]
        rng = np.random.default_rng(seed) if shuffle else None
        history = []
        for _ in range(epochs):
            order = rng.permutation(rows) if shuffle else np.arange(rows)
            total = 0.0
            for start in range(0, rows, batch_size):
                batch = order[start:start + batch_size]
                # step() returns a mean over its rows; weight it back to a sum.
                total += self.step(X[batch], T[batch], learning_rate) * len(batch)
            history.append(total / rows)
        return history

    def grow_inputs(self, n_new):
        """Append n_new zero input columns, so existing inputs map to the same outputs."""
        if n_new < 0:
            raise ValueError(f"n_new must be non-negative, got {n_new}")

        n_rows, sizes = self.W[0].shape[1], [W.shape[0] for W in self.W]
        for i in graph.readers(self.graph, len(self.W), 0):  # every layer that reads the rows
            at = graph.rows_end(self.graph, sizes, i, n_rows)  # just after the rows in its input

            def widen(A):
                return np.concatenate([A[:, :at], np.zeros((A.shape[0], n_new), dtype=A.dtype), A[:, at:]], axis=1)

            self.W[i] = widen(self.W[i])
            self.m[2 * i] = widen(self.m[2 * i])  # W_i is entry 2i of _params()
            self.v[2 * i] = widen(self.v[2 * i])
