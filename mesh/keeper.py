"""Snapshots held by the groups themselves, so the broker holds none.

On SNAP a group copies its own state (W, b, optimizer state, the step it was
read after) and pushes a replica to its keeper: another group, on another
host when there is one. A recovery restores every live group from its own
copy, and a group that died (with its host, say) from the replica its keeper
holds, fetched group to group. The broker only knows which step each
snapshot is at and who keeps whose replica."""
import numpy as np

from .neurons import Neurons
from .optim import Optimizer


class Snapshot:
    """One group's state, as plain arrays: snapshot number `id` of its network
    (the broker counts them), read after step `step`."""

    def __init__(self, id, step, W, b, optimizer_meta, slots):
        self.id, self.step, self.W, self.b, self.meta, self.slots = id, step, W, b, optimizer_meta, slots

    @classmethod
    def of(cls, neurons, id, step):
        meta, slots = neurons.optimizer.state()
        return cls(id, step, neurons.W.copy(), neurons.b.copy(), meta, [s.copy() for s in slots])

    @classmethod
    def from_message(cls, h, arrays, dtype):
        """From a KEEP or REPLICA message; the arrays are copied out of their frames."""
        W, b, *slots = (np.array(a, dtype=dtype) for a in arrays)
        return cls(int(h["snap"]), int(h["step"]), W, b, h["optimizer"], slots)

    def header(self):
        return {"snap": self.id, "step": self.step, "optimizer": self.meta}

    def arrays(self):
        return [self.W, self.b, *self.slots]

    def neurons(self, function):
        """Fresh neurons holding this state (copies: the snapshot stays as it is)."""
        optimizer = Optimizer.restore(self.meta, [s.copy() for s in self.slots], 2)
        return Neurons(self.W.copy(), self.b.copy(), function, optimizer)

    def nbytes(self):
        return sum(a.nbytes for a in self.arrays())


KEEP = 2  # snapshots kept per group: the one a recovery would use, and the one being taken


class Keeper:
    """What one group process keeps: its own last snapshots and the replicas of
    others'. Two of each, by number: while a new snapshot is being taken, the one
    before stays whole, should a failure interrupt it."""

    def __init__(self):
        self.own = {}       # snapshot id -> Snapshot
        self.replicas = {}  # gid -> {snapshot id: Snapshot} of a group this one keeps for

    def keep_own(self, neurons, id, step):
        _keep(self.own, Snapshot.of(neurons, id, step))
        return self.own[id]

    def adopt(self, snapshot):
        """A replica that came back: this process's own copy from now on."""
        _keep(self.own, snapshot)

    def keep_replica(self, gid, snapshot):
        _keep(self.replicas.setdefault(gid, {}), snapshot)

    def replica(self, gid, id):
        return _find(self.replicas.get(gid, {}), id, f"a replica of {gid}")

    def restore_own(self, id, function):
        return _find(self.own, id, "a snapshot").neurons(function)

    def nbytes(self):
        return sum(s.nbytes() for s in self.own.values()) + sum(
            s.nbytes() for kept in self.replicas.values() for s in kept.values())


def _keep(by_id, snapshot):
    by_id[snapshot.id] = snapshot
    for old in sorted(by_id)[:-KEEP]:
        del by_id[old]


def _find(by_id, id, what):
    if id not in by_id:
        raise ValueError(f"no {what} number {id} here (have {sorted(by_id) or 'none'})")
    return by_id[id]
