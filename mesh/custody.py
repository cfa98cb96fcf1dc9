"""A group's custody of snapshots: its own, and the replicas it keeps for its wards.

On SNAP a group keeps its state (keeper.py, files in its worker's state folder) and sends a
replica to its keeper, another group (the broker, for a network of one group). A group it
keeps for (a ward) that is rebuilt in a new process asks it for its replica (FETCH), and gets
it back on the socket this group's own setup names for that ward, never anywhere else. A
fetch that comes before the setup that names its ward waits for it, kept small and bounded.
What it sends, it hands its group as records (outbox.Send, or its group's tell_broker).

Group to group, a replica is a stream (keeper.Outgoing, keeper.Incoming): KEEP or REPLICA
messages of one part each, every part written to its file as it comes and acknowledged
(GOT) to the endpoint that leads back, so no group holds a neighbour's state whole in memory.
The broker's copy (a network of one group) travels whole, as one message."""
from . import wire
from .bounded import Bounded
from .keeper import Keeper, Outgoing
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
        self.sending = {}              # ("keep", its gid) or ("replica", a ward's gid) -> Outgoing
        self.receiving = {}            # a ward's gid (its replica) or its own (its restore) -> Incoming
        self.fetches = Bounded(f"group {group.gid}: fetches", MAX_FETCHES, MAX_FETCHES * 1024)
        self.handlers = {wire.SNAP: self.snap, wire.KEEP: self.keep, wire.FETCH: self.fetch,
                         wire.REPLICA: self.replica, wire.GOT: self.got}

    def wire(self, h):
        """Where this group's replica goes (its keeper), and whose replicas it keeps (its
        wards): it sends replicas back to its wards' endpoints only, and forgets others'.
        The peers to dial, {endpoint: key}."""
        self.restoring = None
        for stream in self.receiving.values():
            stream.abandon()
        self.sending, self.receiving = {}, {}
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
            old, g.neurons = g.neurons, None  # its live arrays go before the snapshot's are read: one W at a time
            try:
                g.neurons = self.keeper.restore_own(int(restore["snap"]), function)
            except Exception:
                g.neurons = old
                raise
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
            self.sending["keep", g.gid] = Outgoing(self._sender(self.keeper_at), keep, snap)
        elif self.to_broker_keeper:
            g.tell_broker(keep, snap.arrays())
        g.tell_broker({"k": wire.SNAPPED, "snap": snap.id, "whole": whole, "step": snap.step,
                       "ahead": len(g.applied.ahead), "bytes": self.keeper.nbytes()})

    def keep(self, h, arrays):
        """A replica of a ward's snapshot, to hand back if that ward is rebuilt."""
        of = str(h["of"])
        if of not in self.ward_at:
            raise ValueError(f"a replica of {of}, which this group does not keep for")
        if "part" in h:  # a part of a stream
            stream = self._part(of, f"of-{of}", h, arrays, self.ward_rows[of], self.ward_at[of], "keep")
            if stream is None:
                return
            self.keeper.keep_replica(of, stream.finish(), stream.whole)
        else:
            self.keeper.keep_message(of, h, arrays, self.g.dtype, self.ward_rows[of], h.get("whole"))
        self.g.tell_broker({"k": wire.KEPT, "of": of, "snap": int(h["snap"]), "whole": h.get("whole")})

    def _sender(self, endpoint):
        """How an Outgoing stream sends a part: a record for the group's loop to send."""
        return lambda header, arrays: self.g.emit(Send(endpoint, header, arrays))

    def _part(self, of, kind, h, arrays, rows, back, way):
        """One part of a stream of `of`'s state: written, acknowledged to endpoint `back`; the
        Incoming once its last part is in (None before, and for a part of a stream this
        group gave up: a newer one began, or it was rewired)."""
        snap, part = int(h["snap"]), h.get("part")
        if part == 0:
            old = self.receiving.pop(of, None)
            if old is not None:
                old.abandon()
            self.receiving[of] = self.keeper.receive(kind, h, self.g.dtype, rows)
        stream = self.receiving.get(of)
        if stream is None or stream.id != snap:
            if stream is not None and snap > stream.id:
                raise ValueError(f"part {part!r} of snapshot {snap} of {of} before its first")
            return None  # the rest of a stream given up
        try:
            last = stream.add(h, arrays)
        except Exception:
            self.receiving.pop(of).abandon()
            raise
        self.g.emit(Send(back, {"k": wire.GOT, "net": self.g.net, "tok": self.g.token, "of": of, "snap": snap,
                                "part": part, "way": way}))
        if not last:
            return None
        return self.receiving.pop(of)

    def got(self, h, arrays):
        """A part of a stream this group sends was written: the next ones go."""
        key = ("keep" if h.get("way") == "keep" else "replica", str(h.get("of")))
        stream = self.sending.get(key)
        if stream is None or stream.id != h.get("snap") or type(h.get("part")) is not int:
            return  # of a stream that was replaced, or done
        stream.more(h["part"])
        if stream.done:
            del self.sending[key]

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
        self.sending["replica", of] = Outgoing(self._sender(self.ward_at[of]),
                                               {"k": wire.REPLICA, "net": g.net, "tok": g.token, "of": of,
                                                **snap.header()}, snap)

    def replica(self, h, arrays):
        """Its own replica, back from its keeper: the state of a new process."""
        g = self.g
        if self.restoring is None and int(h["snap"]) in self.keeper.own:
            return  # the same replica twice (a fetch repeated by a second recovery)
        if self.restoring is None or (h["of"], int(h["snap"])) != (g.gid, self.restoring[0]):
            raise ValueError(f"a replica of {h.get('of')} number {h.get('snap')} that nobody asked for")
        rows = g.cfg["hi"] - g.cfg["lo"]
        if "part" in h:  # a part of a stream from its keeper
            stream = self._part(g.gid, "own", h, arrays, rows, self.keeper_at, "replica")
            if stream is None:
                return
            snap = stream.finish()
            self.keeper.adopt(snap)
        else:  # its own copy again, should it be needed before the next snapshot
            snap = self.keeper.adopt_message(h, arrays, g.dtype, rows)
        g.neurons = snap.neurons(self.restoring[1])
        g.tell_broker({"k": wire.READY, "restored": self.restoring[0]})
        self.restoring = None
