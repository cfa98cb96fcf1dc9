"""The broker's records of its workers and of each network's groups: their
schema, written once.

A record's fields fall in two kinds: what a standby must hold to take over
(to_dict ships those, replication.py; from_dict rebuilds them, takeover.py),
and what only a live broker knows, rebuilt by the heartbeats that follow a
failover (when a process was last heard, what it uses, its heartbeat peer)."""
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from .. import heartbeat


@dataclass
class WorkerRecord:
    """One worker process that registered (registry.py): where it runs and what it may hold."""
    name: str                        # w1, w2... in the order they joined
    host: str                        # the address its groups are reached at
    hostname: str = ""
    key: Optional[str] = None        # its CurveZMQ public key, with keys
    slots: int = 1
    pid: Optional[int] = None
    memory: Optional[int] = None     # its memory budget in bytes, or None: no budget
    pool: Optional[str] = None       # what that budget is shared with ("host/..."): workers of one pool split it
    disk: Optional[int] = None       # likewise for the snapshots on its disk
    disk_pool: Optional[str] = None
    # live only
    peer: heartbeat.Peer = field(default_factory=heartbeat.Peer)
    groups: set = field(default_factory=set)  # gids it runs
    usage: Optional[list] = None     # its own CPU and memory, from its heartbeats (the dashboard)
    load: Optional[float] = None     # runnable tasks per core on its host (liveness.py)
    waiting: Optional[list] = None   # after a failover: what is sent to it until it comes back

    SHIPPED = ("name", "host", "hostname", "key", "slots", "pid", "memory", "pool", "disk", "disk_pool")

    def to_dict(self):
        return {k: getattr(self, k) for k in self.SHIPPED}

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in cls.SHIPPED if k in d})


@dataclass
class GroupRecord:
    """One neuron group of a network: rows [lo, hi) of a layer, and the process that holds them."""
    gid: str                         # "<net>.<layer, 1-based>.<index>"
    layer: int                       # 0-based
    lo: int
    hi: int
    worker: Optional[bytes] = None   # the identity of the worker that runs it
    host: str = ""
    index: int = 0                   # its place in its layer
    worker_name: str = ""
    key: Optional[str] = None        # its worker's public key: what a peer dials it with
    pid: Optional[int] = None        # its process, once spawned
    endpoints: dict = field(default_factory=dict)  # where it listens: "tcp", and "ipc" for its host
    alive: bool = False
    snaps: set = field(default_factory=set)   # ids of its own snapshots it holds
    holds: set = field(default_factory=set)   # (gid, snapshot id) of the replicas it keeps for others
    planned: int = 0                 # bytes of memory planned for it (budgets.py)
    planned_disk: int = 0            # bytes of disk its snapshots and replicas are planned to take
    kept_bytes: Optional[int] = None  # bytes its last snapshot took on disk, as it said (status)
    # live only
    heard: float = 0.0               # when it was last heard (monotonic)
    attached: bool = True            # said hello to this broker (after a failover, not yet)
    usage: Optional[list] = None     # [cores, bytes, state] as its worker last saw it
    usage_at: float = -1e9           # when that was
    msgs: Optional[int] = None       # messages it has sent, and steps it has applied (its heartbeats)
    applied: Optional[int] = None

    LIVE = ("heard", "attached", "usage", "usage_at", "msgs", "applied")

    @property
    def rows(self):
        return self.hi - self.lo

    def to_dict(self):
        out = {k: getattr(self, k) for k in _GROUP_SHIPPED}
        out.update(worker=self.worker.hex() if self.worker is not None else None, snaps=sorted(self.snaps),
                   holds=sorted([of, snap] for of, snap in self.holds))
        return out

    @classmethod
    def from_dict(cls, d):
        g = cls(**{k: v for k, v in d.items() if k not in cls.LIVE})
        g.worker = bytes.fromhex(d["worker"]) if d["worker"] is not None else None
        g.snaps, g.holds = set(d["snaps"]), {(of, snap) for of, snap in d["holds"]}
        return g


_GROUP_SHIPPED = tuple(f.name for f in fields(GroupRecord) if f.name not in GroupRecord.LIVE)


@dataclass
class SnapshotRecord:
    """A network's last whole snapshot: every group holds it, and its keeper a replica (snapshots.py)."""
    id: int
    step: int      # the last step it holds
    inputs: int    # layer 1's input width when it was taken

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)
