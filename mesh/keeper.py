"""Snapshots held by the groups themselves, so the broker holds none.

On SNAP a group copies its own state (W, b, optimizer state, the step it was
read after) and pushes a replica to its keeper: another group, on another
host when there is one. A recovery restores every live group from its own
copy, and a group that died (with its host, say) from the replica its keeper
holds, fetched group to group. The broker only knows which step each
snapshot is at and who keeps whose replica.

Given a folder (its worker's state folder: mesh worker --state-dir), a
Keeper holds every snapshot in files there, not in memory: its own are
written straight from the live arrays (no copy in memory), a replica
straight from the message's frames, and both are read memory-mapped (a
replica is sent from the page cache, a restore copies into fresh arrays).

Between groups a replica travels as a stream (Outgoing, Incoming): messages of
at most CHUNK_BYTES of its arrays each, each appended to its file as it comes
and acknowledged (GOT), with at most CREDIT parts unacknowledged; so neither
end ever holds a replica whole in memory (zmq holds a multipart message's
frames all at once), only CREDIT + 1 parts.
Each snapshot is a folder of .npy files, written under a temporary name and
renamed when whole; the folder goes when the snapshot is superseded, and
the Keeper's whole folder when the group ends (close) or, after a kill, when
its worker hears of the exit. Without a folder, snapshots are copies in memory."""
import os
import shutil

import numpy as np

from . import sockets
from .neurons import Neurons
from .optim import Optimizer

MAX_SLOTS = 4  # optimizer arrays beside W and b (adam: a moment of each for W and b)
CHUNK_BYTES = int(os.environ.get("MESH_REPLICA_CHUNK", 8 << 20))  # the most of a replica's arrays one message of its stream carries
CREDIT = 2             # parts of a stream sent ahead of the receiver's acknowledgement
STREAM_BYTES = (CREDIT + 1) * CHUNK_BYTES  # a stream's most in a receiver's memory: the parts queued and the one in hand


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
        cls.check(arrays, rows)
        W, b, *slots = (np.array(a, dtype=dtype) for a in arrays)
        return cls(int(h["snap"]), int(h["step"]), W, b, h["optimizer"], slots)

    def header(self):
        return {"snap": self.id, "step": self.step, "optimizer": self.meta}

    def arrays(self):
        return [self.W, self.b, *self.slots]

    def neurons(self, function):
        """Fresh neurons holding this state (copies: the snapshot stays as it is; Neurons and
        Optimizer.restore copy what they are given, once)."""
        return Neurons(self.W, self.b, function, Optimizer.restore(self.meta, self.slots, 2))

    def nbytes(self):
        return sum(a.nbytes for a in self.arrays())

    @staticmethod
    def check(arrays, rows):
        """A KEEP or REPLICA message's arrays are a state of a group of `rows` neurons."""
        check_shapes([a.shape for a in arrays], rows)


def check_shapes(shapes, rows):
    """The arrays of a replica (W, b, slots) are a state of a group of `rows` neurons."""
    if len(shapes) < 2 or len(shapes[0]) != 2 or shapes[0][0] != rows or tuple(shapes[1]) != (rows,):
        raise ValueError(f"a replica of shapes {[list(s) for s in shapes]} for a group of {rows} neurons")
    if len(shapes) > 2 + MAX_SLOTS or any(tuple(s) not in (tuple(shapes[0]), tuple(shapes[1])) for s in shapes[2:]):
        raise ValueError(f"a replica's optimizer state of shapes {[list(s) for s in shapes[2:]]}")


class Stored(Snapshot):
    """A snapshot in files: folder/0.npy (W), 1.npy (b), 2.npy... (slots), read memory-mapped."""

    def __init__(self, folder, id, step, optimizer_meta, count):
        self.folder, self.count = folder, count
        self.id, self.step, self.meta = id, step, optimizer_meta

    @classmethod
    def write(cls, folder, id, step, meta, arrays, dtype=None):
        """Each array to a file, from where it is (a live array or a frame: no copy in memory)."""
        tmp = folder + ".part"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o700)
        for i, a in enumerate(arrays):
            if dtype is not None and a.dtype != dtype:
                a = a.astype(dtype)
            np.save(os.path.join(tmp, f"{i}.npy"), a, allow_pickle=False)
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(tmp, folder)  # whole, or not there: a snapshot is never seen half-written
        return cls(folder, id, step, meta, len(arrays))

    def arrays(self):
        return [np.load(os.path.join(self.folder, f"{i}.npy"), mmap_mode="r", allow_pickle=False)
                for i in range(self.count)]

    def neurons(self, function):
        """Fresh arrays in memory, each read once from its file (Neurons and Optimizer.restore
        copy the memory-mapped arrays they are given); the files stay."""
        W, b, *slots = self.arrays()
        return Neurons(W, b, function, Optimizer.restore(self.meta, slots, 2))

    def nbytes(self):
        return sum(os.path.getsize(os.path.join(self.folder, f"{i}.npy")) for i in range(self.count))

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def parts_of(arrays, chunk_bytes=None):
    """[(array index, lo, hi)]: the element ranges of a stream's parts, in order (none of an empty array)."""
    chunk_bytes, out = chunk_bytes or CHUNK_BYTES, []
    for i, a in enumerate(arrays):
        each = max(1, chunk_bytes // a.itemsize)
        out += [(i, lo, min(a.size, lo + each)) for lo in range(0, a.size, each)]
    return out


class Outgoing:
    """A snapshot on its way to another group, part by part, read from its files (the page
    cache, not the heap): send(header, [chunk]) sends one part; more(k) once part k is
    acknowledged sends those that keep CREDIT parts unacknowledged."""

    def __init__(self, send, header, snapshot):
        self.send, self.header, self.id = send, header, snapshot.id
        self.arrays = snapshot.arrays()
        self.parts = parts_of(self.arrays)
        self.sent = 0
        self.more(-1)

    def more(self, acked):
        while self.sent < len(self.parts) and self.sent <= acked + CREDIT:
            i, lo, hi = self.parts[self.sent]
            h = dict(self.header, part=self.sent, parts=len(self.parts))
            if self.sent == 0:
                h["shapes"] = [list(a.shape) for a in self.arrays]
            self.send(h, [self.arrays[i].reshape(-1)[lo:hi]])
            self.sent += 1

    @property
    def done(self):
        return self.sent == len(self.parts)


class Incoming:
    """A snapshot arriving part by part (its first part's header: snap, step, optimizer,
    shapes, parts), each part written where it goes: into files under `folder` (a
    temporary name until the last part), or arrays in memory when folder is None."""

    def __init__(self, folder, h, dtype, rows):
        shapes = h.get("shapes")
        if not isinstance(shapes, list) or not all(isinstance(s, list) and all(type(n) is int and n >= 0 for n in s)
                                                   for s in shapes):
            raise ValueError(f"a replica's first part with shapes {str(shapes)[:200]}")
        check_shapes(shapes, rows)
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dtype = np.dtype(dtype)
        self.id, self.step, self.meta, self.parts = int(h["snap"]), int(h["step"]), h["optimizer"], int(h["parts"])
        self.whole = h.get("whole")
        self.next, self.at, self.filled = 0, 0, 0  # the part expected, the array being filled, its elements so far
        self.folder = folder
        if folder is None:
            if sum(self.sizes) * self.dtype.itemsize > sockets.memory_bound():
                raise ValueError(f"a replica of shapes {shapes}: more than this process may hold")
            self.arrays, self.files = [np.empty(s, self.dtype) for s in self.shapes], None
            return
        self.tmp = folder + ".part"
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp, mode=0o700)
        self.files = []
        for i, shape in enumerate(self.shapes):
            f = open(os.path.join(self.tmp, f"{i}.npy"), "wb")
            self.files.append(f)
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                     "fortran_order": False, "shape": shape})

    def add(self, h, arrays):
        """Part h["part"] (the next one, or ValueError); True once it was the last."""
        if h.get("part") != self.next:
            raise ValueError(f"part {h.get('part')!r} of replica {self.id}, expected part {self.next}")
        if len(arrays) != 1 or arrays[0].ndim != 1 or arrays[0].dtype != self.dtype:
            raise ValueError(f"a replica's part of {[(a.dtype.str, list(a.shape)) for a in arrays]}")
        chunk = arrays[0]
        while self.at < len(self.sizes) and self.filled == self.sizes[self.at]:
            self.at, self.filled = self.at + 1, 0
        if self.at == len(self.sizes) or self.filled + chunk.size > self.sizes[self.at]:
            raise ValueError(f"part {self.next} of replica {self.id} goes beyond its arrays")
        if self.files is None:
            self.arrays[self.at].reshape(-1)[self.filled:self.filled + chunk.size] = chunk
        else:
            self.files[self.at].write(chunk.data)
        self.filled += chunk.size
        self.next += 1
        if self.next < self.parts:
            return False
        while self.at < len(self.sizes) and self.filled == self.sizes[self.at]:
            self.at, self.filled = self.at + 1, 0
        if self.at != len(self.sizes):
            raise ValueError(f"replica {self.id} ended at part {self.next - 1} before its arrays were whole")
        return True

    def finish(self):
        """The snapshot, whole: files renamed to their place (or the arrays in memory)."""
        if self.files is None:
            W, b, *slots = self.arrays
            return Snapshot(self.id, self.step, W, b, self.meta, slots)
        for f in self.files:
            f.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        os.rename(self.tmp, self.folder)
        return Stored(self.folder, self.id, self.step, self.meta, len(self.shapes))

    def abandon(self):
        if self.files is not None:
            for f in self.files:
                f.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


class Keeper:
    """What one group process keeps: its own snapshots and the replicas of its
    wards'. Two of each at most: the one the broker holds whole (a recovery would
    use it), and the newest, being taken — so a failure half-way through a
    snapshot never spoils the one before. folder: where they are written (None:
    in memory)."""

    def __init__(self, folder=None):
        self.folder = folder
        if folder is not None:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        self.own = {}       # snapshot id -> Snapshot
        self.replicas = {}  # gid -> {snapshot id: Snapshot} of a group this one keeps for

    def _path(self, kind, id):
        return os.path.join(self.folder, f"{kind}-{id}")

    def keep_own(self, neurons, id, step, whole):
        if self.folder is None:
            snap = Snapshot.of(neurons, id, step)
        else:
            meta, slots = neurons.optimizer.state()
            snap = Stored.write(self._path("own", id), id, step, meta, [neurons.W, neurons.b, *slots])
        _keep(self.own, snap, whole)
        return snap

    def adopt(self, snapshot):
        """A replica that came back: this process's own copy from now on (the whole one)."""
        _keep(self.own, snapshot, snapshot.id)

    def adopt_message(self, h, arrays, dtype, rows):
        """A REPLICA message of this group's state: kept as its own (the whole one), and returned."""
        snap = self._from_message("own", h, arrays, dtype, rows)
        self.adopt(snap)
        return snap

    def keep_message(self, gid, h, arrays, dtype, rows, whole):
        """A KEEP message of ward gid's state, kept as its replica."""
        _keep(self.replicas.setdefault(gid, {}), self._from_message(f"of-{gid}", h, arrays, dtype, rows), whole)

    def _from_message(self, kind, h, arrays, dtype, rows):
        if self.folder is None:
            return Snapshot.from_message(h, arrays, dtype, rows)
        Snapshot.check(arrays, rows)
        id = int(h["snap"])
        return Stored.write(self._path(kind, id), id, int(h["step"]), h["optimizer"], arrays, np.dtype(dtype))

    def receive(self, kind, h, dtype, rows):
        """An Incoming for the first part of a stream: of a ward's ("of-GID") or its own ("own")."""
        return Incoming(None if self.folder is None else self._path(kind, int(h["snap"])), h, dtype, rows)

    def keep_replica(self, gid, snapshot, whole):
        _keep(self.replicas.setdefault(gid, {}), snapshot, whole)

    def forget_all_but(self, wards):
        """Replicas of groups it no longer keeps for go."""
        for gid in set(self.replicas) - set(wards):
            for snap in self.replicas.pop(gid).values():
                _drop(snap)

    def close(self):
        """The group ends: every file it wrote goes."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

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
        _drop(by_id.pop(old))


def _drop(snapshot):
    if isinstance(snapshot, Stored):
        snapshot.remove()


def _find(by_id, id, what):
    if id not in by_id:
        raise ValueError(f"no {what} number {id} here (have {sorted(by_id) or 'none'})")
    return by_id[id]
