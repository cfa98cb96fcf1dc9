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

MAX_SLOTS = 4  # optimizer arrays beside W and b (adam: a moment of each for W and b)


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
    def from_message(cls, h, arrays, dtype, rows):
        """From a KEEP or REPLICA message of a group of `rows` neurons; the arrays are
        checked, then copied out of their frames."""
        if len(arrays) < 2 or arrays[0].ndim != 2 or arrays[0].shape[0] != rows or arrays[1].shape != (rows,):
            raise ValueError(f"a replica of shapes {[list(a.shape) for a in arrays]} for a group of {rows} neurons")
        if len(arrays) > 2 + MAX_SLOTS or any(a.shape not in (arrays[0].shape, arrays[1].shape) for a in arrays[2:]):
            raise ValueError(f"a replica's optimizer state of shapes {[list(a.shape) for a in arrays[2:]]}")
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




class Keeper:
    """What one group process keeps: its own snapshots and the replicas of its
    wards'. Two of each at most: the one the broker holds whole (a recovery would
    use it), and the newest, being taken — so a failure half-way through a
    snapshot never spoils the one before."""

    def __init__(self):
        self.own = {}       # snapshot id -> Snapshot
        self.replicas = {}  # gid -> {snapshot id: Snapshot} of a group this one keeps for

    def keep_own(self, neurons, id, step, whole):
        _keep(self.own, Snapshot.of(neurons, id, step), whole)
        return self.own[id]

    def adopt(self, snapshot):
        """A replica that came back: this process's own copy from now on (the whole one)."""
        _keep(self.own, snapshot, snapshot.id)

    def keep_replica(self, gid, snapshot, whole):
        _keep(self.replicas.setdefault(gid, {}), snapshot, whole)

    def forget_all_but(self, wards):
        """Replicas of groups it no longer keeps for go."""
        for gid in set(self.replicas) - set(wards):
            del self.replicas[gid]

    def replica(self, gid, id):
        return _find(self.replicas.get(gid, {}), id, f"replica of {gid}")

    def restore_own(self, id, function):
        return _find(self.own, id, "snapshot").neurons(function)

    def nbytes(self):
        return sum(s.nbytes() for s in self.own.values()) + sum(
            s.nbytes() for kept in self.replicas.values() for s in kept.values())


def _keep(by_id, snapshot, whole):
    """Keep snapshot, and of the others only `whole` (the broker's whole one)."""
    by_id[snapshot.id] = snapshot
    for old in [i for i in by_id if i not in (snapshot.id, whole)]:
        del by_id[old]


def _find(by_id, id, what):
    if id not in by_id:
        raise ValueError(f"no {what} number {id} here (have {sorted(by_id) or 'none'})")
    return by_id[id]
