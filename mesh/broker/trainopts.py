"""A training run's options, checked, and how many micro-batches each mini-batch is cut into."""
from dataclasses import asdict, dataclass, field

import numpy as np

from ..optim import Optimizer

MODES = ("exact", "async")
RESIDENT = True  # the default: resident data where it applies (broker/resident.py)


@dataclass(frozen=True)
class TrainOptions:
    """A training run's options, checked (options()). to_dict() is what a standby rebuilds
    the run from (replication.py): options(opts.to_dict(), rows) == opts."""
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    micro_batches: object = None   # as asked (None: micro_count chooses)
    mode: str = "exact"            # one of MODES
    shuffle: bool = True
    seed: object = 0
    checkpoint_every: int = 0      # steps between checkpoints (0: none)
    checkpoint_path: object = None  # the file's name, as asked (the broker puts it in its folder)
    tol: float = 0.0
    n_iter_no_change: object = None
    optimizer: dict = field(default_factory=dict)  # the optimizer's settings
    resident: bool = False         # exact mode: the data goes to the hosts once, groups make the steps

    def to_dict(self):
        return asdict(self)


def options(o, rows):
    """Checked training options with defaults (TrainOptions); ValueError names the bad one."""
    out = {"epochs": int(o.get("epochs", 1)), "batch_size": int(32 if o.get("batch_size") is None else o["batch_size"]),
           "learning_rate": float(o.get("learning_rate", 0.1)), "micro_batches": o.get("micro_batches"),
           "mode": o.get("mode", "exact"), "shuffle": bool(o.get("shuffle", True)), "seed": o.get("seed", 0),
           "checkpoint_every": int(o.get("checkpoint_every") or 0), "checkpoint_path": o.get("checkpoint_path"),
           "tol": float(o.get("tol") or 0.0), "n_iter_no_change": o.get("n_iter_no_change"),
           "resident": bool(o.get("resident", RESIDENT))}
    if out["n_iter_no_change"] is not None:
        if isinstance(out["n_iter_no_change"], bool) or not isinstance(out["n_iter_no_change"], int) \
                or out["n_iter_no_change"] < 1:
            raise ValueError(f"n_iter_no_change must be a whole number, 1 or more, got {out['n_iter_no_change']!r}")
    if not np.isfinite(out["tol"]):
        raise ValueError(f"invalid tol: {o.get('tol')}")
    if out["checkpoint_every"] and not out["checkpoint_path"]:
        raise ValueError("checkpoint_every needs a checkpoint_path (a file on the broker's host)")
    if out["epochs"] < 1:
        raise ValueError(f"epochs must be at least 1, got {out['epochs']}")
    if out["batch_size"] < 1:
        raise ValueError(f"batch_size must be at least 1, got {out['batch_size']}")
    if not np.isfinite(out["learning_rate"]) or out["learning_rate"] < 0:
        raise ValueError(f"invalid learning rate: {o.get('learning_rate')}")
    if out["mode"] not in MODES:
        raise ValueError(f"unknown mode {out['mode']!r}; choose exact or async")
    if out["micro_batches"] is not None and int(out["micro_batches"]) < 1:
        raise ValueError(f"micro_batches must be at least 1, got {out['micro_batches']}")
    opt = o.get("optimizer", "sgd")
    settings = opt if isinstance(opt, dict) else {"name": opt}
    out["optimizer"] = Optimizer(**settings).settings()  # validates the name
    if rows < 1:
        raise ValueError("no rows to train on")
    return TrainOptions(**out)


# Rows x weights of one layer whose forward and backward (~6 flops each) cost
# about one hop of a message (~200 us of Python and zmq, at ~50 GFLOP/s on one core).
HOP_WORK = 1_600_000


def micro_count(batch_size, widths, asked):
    """Micro-batches per mini-batch: one per stage after the first, so that every
    stage has work, unless a micro-batch would then cost less than its messages."""
    if asked is not None:
        return max(1, min(int(asked), batch_size))
    widest = max(a * b for a, b in zip(widths, widths[1:]))
    min_rows = -(-HOP_WORK // max(widest, 1))
    return max(1, min(batch_size // min_rows, len(widths) - 2))


def converged(history, tol, n_iter_no_change):
    """Whether the epochs' losses say stop, as scikit-learn's MLP does: the loss has not
    improved on the best so far by tol for n_iter_no_change epochs in a row."""
    if n_iter_no_change is None:
        return False
    best, stale = np.inf, 0
    for loss in history:
        stale = stale + 1 if loss > best - tol else 0
        best = min(best, loss)
    return stale >= n_iter_no_change
