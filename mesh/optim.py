"""Optimizers, held by each group for its own weights. Same definitions as the
reference network: sgd, momentum (v = mu v + g; p -= lr v) and adam (bias
corrected, one step counter shared by a group's arrays).

alpha is L2 weight decay as scikit-learn's MLP defines it: the loss gains
alpha/2 * ||W||^2 / rows (rows: those of the step), so each weight matrix's
gradient gains alpha * W / rows before the optimizer sees it. Biases are not
decayed. Each group decays its own rows of W, which is the whole network's
penalty split by rows."""
import numpy as np

OPTIMIZERS = ("sgd", "momentum", "adam")
SLOTS = {"sgd": 0, "momentum": 1, "adam": 2}  # state arrays kept per parameter
BLOCK = 1 << 16  # elements: the most a step's temporary holds (512 KiB of float64)


def _blocks(*arrays):
    """Matching flat views of BLOCK elements of same-shaped C-contiguous arrays (the
    same element-wise arithmetic as on the whole arrays, so the same bits)."""
    if not all(a.flags.c_contiguous for a in arrays):
        yield arrays  # (a view would be a copy): whole, as before
        return
    flat = [a.reshape(-1) for a in arrays]
    for lo in range(0, flat[0].size, BLOCK):
        yield [f[lo:lo + BLOCK] for f in flat]


class Optimizer:
    def __init__(self, name="sgd", momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8, alpha=0.0):
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
        alpha = float(alpha)
        if not alpha >= 0 or alpha == float("inf"):
            raise ValueError(f"invalid alpha (L2 weight decay): {alpha}")
        self.name, self.momentum, self.beta1, self.beta2, self.eps = name, momentum, beta1, beta2, eps
        self.alpha = alpha
        self.t = 0
        self.slots = None  # per parameter: a list of arrays shaped like it

    def settings(self):
        return {"name": self.name, "momentum": self.momentum, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "alpha": self.alpha}

    def step(self, params, grads, lr):
        """Update params in place from grads (which are consumed). Nothing W-sized is
        allocated: an expression that needs a temporary is done a block at a time, so
        the temporary is a block (BLOCK elements), whatever the layer's size."""
        if self.slots is None:
            self.slots = [[np.zeros_like(p) for _ in range(SLOTS[self.name])] for p in params]
        self.t += 1
        for p, g, slot in zip(params, grads, self.slots):
            if self.name == "sgd":
                g *= lr
                p -= g
            elif self.name == "momentum":
                v, = slot
                v *= self.momentum
                v += g
                for pb, vb in _blocks(p, v):
                    pb -= lr * vb
            else:  # g is the scratch
                m, v = slot
                m *= self.beta1
                for mb, gb in _blocks(m, g):
                    mb += (1 - self.beta1) * gb
                np.multiply(g, g, out=g)
                g *= 1 - self.beta2
                v *= self.beta2
                v += g
                np.divide(v, 1 - self.beta2 ** self.t, out=g)  # vhat
                np.sqrt(g, out=g)
                g += self.eps
                np.divide(m, g, out=g)
                g *= lr / (1 - self.beta1 ** self.t)             # lr mhat / (sqrt(vhat) + eps)
                p -= g

    def grow(self, index, new_cols, tail=0):
        """Zero state for columns added to parameter `index` (a weight matrix), before its last `tail`."""
        if self.slots is not None:
            self.slots[index] = [np.concatenate([s[:, :s.shape[1] - tail], np.zeros((s.shape[0], new_cols), s.dtype),
                                                 s[:, s.shape[1] - tail:]], axis=1) for s in self.slots[index]]

    def state(self):
        """(plain header data, arrays) for a snapshot."""
        arrays = [s for slot in (self.slots or []) for s in slot]
        return {"t": self.t, "has_slots": self.slots is not None, **self.settings()}, arrays

    @classmethod
    def restore(cls, meta, arrays, n_params):
        opt = cls(meta["name"], meta["momentum"], meta["beta1"], meta["beta2"], meta["eps"], meta.get("alpha", 0.0))
        opt.t = int(meta["t"])
        if meta["has_slots"]:
            k = SLOTS[opt.name]
            opt.slots = [[np.array(a) for a in arrays[i * k:(i + 1) * k]] for i in range(n_params)]
        return opt
