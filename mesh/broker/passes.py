"""A pass: one batch of rows on its way through the mesh, named by its
sequence number; and the fair queue passes wait in before they enter."""
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass(eq=False)  # passes are told apart by identity (they sit in sets)
class Pass:
    seq: int
    job: Any                       # the job that hears its output and done; None while held for a backprop
    X: np.ndarray                  # its input rows, encoded
    keep: bool = False             # groups keep (x, a) for a backward
    drop: list = field(default_factory=list)   # seqs the groups may forget (an older predict's passes)
    after: Optional[int] = None    # the step whose weights it must see (groups keep the order); None: the latest
    rows_from: Any = None          # (rows as they came, lo, hi) of a remembered predict: values it left out
    #                                (predict adds no inputs) are encoded again if a backprop trains on it
    # on its way
    parts: dict = field(default_factory=dict)  # output group index -> its slice of z
    z: Optional[np.ndarray] = None  # the whole last layer, once every slice is in
    answered: bool = False         # its predict has its output (sent again, z goes; this stays)
    dones: int = 0                 # layer-1 groups finished with its backward
    in_flight: bool = False
    entered: int = 0               # the network's count of passes sent into the mesh when this one went
    done_first: bool = False       # its DONE overtook its OUT (they travel on different sockets)
    # a training pass
    step: Optional[int] = None     # the step its backward belongs to
    T: Optional[np.ndarray] = None  # its targets
    of: int = 1                    # passes of that step
    lr: float = 0.0
    batch_rows: int = 0            # rows of the whole mini-batch (the loss is a mean over them)
    head: bool = False             # the output groups compute its loss (they get its targets)
    ack: bool = True               # layer 1 reports DONE for it
    loss: float = 0.0              # with head: the loss the output groups reported

    @property
    def rows(self):
        return len(self.X)

    def train(self, T, step, of, lr, batch_rows):
        """Make it a training pass of `step`."""
        self.T, self.step, self.of, self.lr, self.batch_rows = T, step, of, lr, batch_rows

    def reset(self, seq, after):
        """Ready to be sent again under a new sequence number."""
        self.seq, self.after = seq, after
        self.parts, self.z, self.dones, self.in_flight, self.loss, self.done_first = {}, None, 0, False, 0.0, False


class FairQueue:
    """Passes waiting to enter the mesh, one line per client, served in turn:
    a client that sends a flood of rows cannot starve the others."""

    def __init__(self):
        self.lines = {}  # client -> deque of passes; dicts keep the turn order

    def append(self, p, first=False):
        """At the back of its client's line; first: at the front (work its client's later
        passes wait for, so it must not queue behind them)."""
        owner = getattr(p.job, "client", None)
        line = self.lines.setdefault(owner, deque())
        if first:
            line.appendleft(p)
        else:
            line.append(p)

    def pop_ready(self, ready):
        """The first pass, in turn order, that ready(pass) allows; None if every line waits."""
        for owner, line in self.lines.items():
            if ready(line[0]):
                break
        else:
            return None
        del self.lines[owner]
        p = line.popleft()
        if line:
            self.lines[owner] = line  # back of the turn order
        return p

    def clear(self):
        self.lines.clear()

    def __len__(self):
        return sum(len(line) for line in self.lines.values())

    def __bool__(self):
        return bool(self.lines)
