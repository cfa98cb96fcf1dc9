"""What a network is: its layer sizes and functions, how it is cut into groups,
and its initial weights, drawn in one place so that the same seed gives the
same network whatever the group size or placement."""
from dataclasses import asdict, dataclass

import numpy as np

from . import graph

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")
OUTPUTS = ("sigmoid", "linear", "softmax")
LOSSES = ("mse", "cross_entropy")
DTYPES = ("float32", "float64")
INITS = ("auto", "glorot")
MAX_NEURONS = 1 << 31  # in one layer; memory budgets refuse far smaller networks (broker/budgets.py)


@dataclass
class Spec:
    sizes: list               # hidden sizes then output size; the input width comes from the data
    activation: str = "sigmoid"
    output: str = "sigmoid"
    loss: str = "mse"
    dtype: str = "float32"
    group_size: int = None    # None: one process per layer (unless budgets force cuts); "balanced": equal work
    seed: int = 0
    init: str = "auto"        # initial weights: see initial_layer
    inputs: object = None     # which layers each layer reads (graph.py); None: the chain

    def __post_init__(self):
        if isinstance(self.sizes, (int, np.integer)):
            self.sizes = [self.sizes]
        if not isinstance(self.sizes, (list, tuple)) or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in self.sizes):
            raise ValueError(f"layer sizes must be integers, got {self.sizes!r}")  # not 2.5, not True
        self.sizes = [int(n) for n in self.sizes]
        if not self.sizes or any(n < 1 or n > MAX_NEURONS for n in self.sizes):
            raise ValueError(f"layer sizes must be one or more positive integers (at most {MAX_NEURONS}), got {self.sizes}")
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("output", self.output, OUTPUTS)
        _choice("loss", self.loss, LOSSES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("init", self.init, INITS)
        if self.loss == "cross_entropy" and self.output == "linear":
            raise ValueError("cross_entropy needs a softmax or sigmoid output, not linear")
        if self.group_size is not None and self.group_size != "balanced":  # balanced: broker/placement.py cuts
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, (int, np.integer)) or self.group_size < 1:
                raise ValueError(f"group_size must be a positive integer, 'balanced' or None, got {self.group_size!r}")
            self.group_size = int(self.group_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.seed = int(self.seed)
        self.inputs = graph.normalize(self.inputs, len(self.sizes))

    def to_dict(self):
        return asdict(self)

    def slices(self, layer):
        """[(lo, hi), ...]: the neuron ranges of one layer's groups."""
        n = self.sizes[layer]
        k = self.group_size or n
        return [(lo, min(lo + k, n)) for lo in range(0, n, k)]

    def groups(self):
        """[(layer, lo, hi), ...] for the whole network, layer by layer."""
        return [(layer, lo, hi) for layer in range(len(self.sizes)) for lo, hi in self.slices(layer)]

    def sources(self, layer):
        """What layer index `layer` reads, in order: 0 the rows, k layer k (numbered from 1)."""
        return graph.sources(self.inputs, layer)

    def source_widths(self, layer, rows):
        """The width of each of its sources, the rows being `rows` wide."""
        return graph.widths(self.inputs, self.sizes, layer, rows)

    def fan_in(self, layer, rows):
        return sum(self.source_widths(layer, rows))

    def fan_ins(self, rows):
        """Every layer's input width, the rows being `rows` wide."""
        return [self.fan_in(layer, rows) for layer in range(len(self.sizes))]

    def row_readers(self):
        """The layer indices that read the input rows (layer 1 always does)."""
        return graph.readers(self.inputs, len(self.sizes), 0)

    def hidden_function(self, layer):
        """What a group of this layer applies; the output function is the broker's."""
        return self.activation if layer < len(self.sizes) - 1 else "linear"


ROWS_PER_STREAM = 256  # neurons drawn from one random stream: any group draws its own rows alone


def initial_layer(spec, layer, fan_in):
    """(W, b) of one whole layer (see initial_rows)."""
    return initial_rows(spec, layer, fan_in, 0, spec.sizes[layer])


def initial_rows(spec, layer, fan_in, lo, hi):
    """(W, b) of neurons lo..hi of one layer, W (rows, in) uniform in +-limit.

    init "auto": limit sqrt(6 / (in + out)) (Glorot), sqrt(6 / in) for relu
    hidden layers (He); b zero. "glorot": scikit-learn's MLP, b drawn too
    (but layer 1's, made before its inputs are known, which starts at zero):
    sqrt(6 / (in + out)) for every layer, sqrt(2 / (in + out)) with sigmoid
    hidden layers. He's wider start slows adam at scikit-learn's rate on small
    data (the regressor's R2 then depended on the seed), so the estimators use
    "glorot".

    Every block of ROWS_PER_STREAM neurons draws from its own stream (seed,
    layer, block): a group draws its own rows without the rest of the layer,
    so the same seed gives the same network whatever the group size, and the
    broker never holds a layer it did not need. Growing the input layer later
    never changes the other layers.
    """
    fan_out = spec.sizes[layer]
    glorot = spec.init == "glorot"
    if glorot:
        limit = np.sqrt((2.0 if spec.activation == "sigmoid" else 6.0) / (fan_in + fan_out))
    elif spec.activation == "relu" and layer < len(spec.sizes) - 1:
        limit = np.sqrt(6.0 / max(fan_in, 1))
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
    W = np.empty((hi - lo, fan_in), dtype=spec.dtype)
    b = np.zeros(hi - lo, dtype=spec.dtype)
    for block in range(lo // ROWS_PER_STREAM, -(-hi // ROWS_PER_STREAM)):
        first, last = block * ROWS_PER_STREAM, min((block + 1) * ROWS_PER_STREAM, fan_out)
        rng = np.random.default_rng([spec.seed, layer, block])
        Wb = rng.uniform(-limit, limit, size=(last - first, fan_in))
        bb = rng.uniform(-limit, limit, size=last - first) if glorot and layer > 0 else None  # layer 1's b: 0
        a, z = max(lo, first), min(hi, last)  # the rows of this block the caller wants
        W[a - lo:z - lo] = Wb[a - first:z - first]
        if bb is not None:
            b[a - lo:z - lo] = bb[a - first:z - first]
    return W, b


def _choice(what, value, allowed):
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
