"""A group's custody of snapshots: its own, and the replicas it keeps for its wards.

On SNAP a group keeps its state (keeper.py, files in its worker's state folder) and sends a
replica to its keeper, another group (the broker, for a network of one group). A group it
keeps for (a ward) that is rebuilt in a new process asks it for its replica (FETCH), and gets
it back on the socket this group's own setup names for that ward, never anywhere else. A
fetch that comes before the setup that names its ward waits for it, kept small and bounded.
What it sends, it hands its group as records (groupstate.Send, or its group's tell_broker)."""
from . import wire
from .bounded import Bounded
from .keeper import Keeper
from .outbox import Send

MAX_FETCHES = 64  # fetches kept until this group's own setup of their generation comes


class Custody:
    def __init__(self, group, folder):
        self.g = group
        self.keeper = Keeper(folder)
        self.keeper_at = None          # where its replica goes: its keeper's endpoint
        self.to_broker_keeper = False  # the broker keeps it instead (a network of one group)
        self.ward_at = {}              # gid -> endpoint, of the groups whose replicas it keeps
        self.ward_rows = {}            # gid -> its neurons: the rows of a replica it may keep
        self.restoring = None          # (snapshot id, function) while it waits for its replica
        self.fetches = Bounded(f"group {group.gid}: fetches", MAX_FETCHES, MAX_FETCHES * 1024)
        self.handlers = {wire.SNAP: self.snap, wire.KEEP: self.keep, wire.FETCH: self.fetch,
                         wire.REPLICA: self.replica}

    def wire(self, h):
        """Where this group's replica goes (its keeper), and whose replicas it keeps (its
        wards): it sends replicas back to its wards' endpoints only, and forgets others'.
        The peers to dial, {endpoint: key}."""
        self.restoring = None
        keeper = h.get("keeper")  # [endpoint, key]
        self.keeper_at = keeper[0] if keeper else None
        self.to_broker_keeper = keeper is None and bool(h.get("broker_keeps"))
        wards = h.get("wards", ())
        self.ward_at = {w[0]: w[1] for w in wards}
        self.ward_rows = {w[0]: w[3] for w in wards}  # [gid, endpoint, key, neurons]
        self.keeper.forget_all_but(self.ward_at)
        return {ep: key for ep, key in [keeper or (None, None), *((w[1], w[2]) for w in wards)] if ep}

    def restore(self, restore, function):
        """A setup's state from a snapshot: its own copy (True: ready now), or, in a new
        process, the replica its keeper (or the broker) sends (False: ready once it is here)."""
        g = self.g
        if restore.get("from") is None:
            g.neurons = self.keeper.restore_own(int(restore["snap"]), function)
            return True
        self.restoring = (int(restore["snap"]), function)
        if restore["from"] != "broker":
            g.emit(Send(self.keeper_at, {"k": wire.FETCH, "net": g.net, "tok": g.token, "gen": g.gen,
                                         "of": g.gid, "snap": self.restoring[0]}))
        return False

    def ready(self):
        """Set up: the wards that asked before this setup told of them get their replicas."""
        early = self.fetches.values()
        self.fetches.clear()
        for fetch in early:
            try:
                self.fetch(fetch, ())
            except Exception as e:
                self.g.refuse(fetch, e)

    def snap(self, h, arrays):
        """Keep a copy of this state; send a replica to the keeper (or the broker, for a
        network of one group)."""
        g = self.g
        whole = h.get("whole")
        snap = self.keeper.keep_own(g.neurons, int(h["snap"]), g.applied.done, whole)
        keep = {"k": wire.KEEP, "net": g.net, "tok": g.token, "of": g.gid, "whole": whole, **snap.header()}
        if self.keeper_at is not None:
            g.emit(Send(self.keeper_at, keep, snap.arrays()))
        elif self.to_broker_keeper:
            g.tell_broker(keep, snap.arrays())
        g.tell_broker({"k": wire.SNAPPED, "snap": snap.id, "whole": whole, "step": snap.step,
                       "ahead": len(g.applied.ahead), "bytes": self.keeper.nbytes()})

    def keep(self, h, arrays):
        """A replica of a ward's snapshot, to hand back if that ward is rebuilt."""
        of = str(h["of"])
        if of not in self.ward_at:
            raise ValueError(f"a replica of {of}, which this group does not keep for")
        self.keeper.keep_message(of, h, arrays, self.g.dtype, self.ward_rows[of], h.get("whole"))
        self.g.tell_broker({"k": wire.KEPT, "of": of, "snap": int(h["snap"]), "whole": h.get("whole")})

    def fetch(self, h, arrays):
        """A ward rebuilt in a new process asks for its replica: sent to its endpoint, as
        this group's own setup names it (a fetch ahead of that setup waits for it)."""
        g = self.g
        gen = h.get("gen", 0)
        if type(gen) is not int:
            raise ValueError(f"a fetch of generation {gen!r}")
        if gen > g.gen:  # kept small: the fields it needs, not whatever else came with it
            early = {"k": wire.FETCH, "of": str(h["of"])[:200], "snap": int(h["snap"]), "gen": gen}
            self.fetches.put((early["of"], early["snap"], gen), early, len(early["of"]) + 64)
            return
        of = str(h["of"])
        if of not in self.ward_at:
            raise ValueError(f"{of} asks for a replica this group does not keep")
        snap = self.keeper.replica(of, int(h["snap"]))
        g.emit(Send(self.ward_at[of], {"k": wire.REPLICA, "net": g.net, "tok": g.token, "of": of,
                                       **snap.header()}, snap.arrays()))

    def replica(self, h, arrays):
        """Its own replica, back from its keeper: the state of a new process."""
        g = self.g
        if self.restoring is None and int(h["snap"]) in self.keeper.own:
            return  # the same replica twice (a fetch repeated by a second recovery)
        if self.restoring is None or (h["of"], int(h["snap"])) != (g.gid, self.restoring[0]):
            raise ValueError(f"a replica of {h.get('of')} number {h.get('snap')} that nobody asked for")
        # its own copy again, should it be needed before the next snapshot
        snap = self.keeper.adopt_message(h, arrays, g.dtype, g.cfg["hi"] - g.cfg["lo"])
        g.neurons = snap.neurons(self.restoring[1])
        g.tell_broker({"k": wire.READY, "restored": self.restoring[0]})
        self.restoring = None
