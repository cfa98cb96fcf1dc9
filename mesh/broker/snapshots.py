"""Snapshots: every group copies its own weights and optimizer state, read
after a known step, and sends a replica to its keeper (keeper.py); the broker
keeps only which snapshot is whole (its number, step and input width). While
one is taken the network's requests wait (Network.snapshotting); once every
group has its copy and every replica is kept, the log keeps only the steps
after it."""
from .. import wire
from .jobs import Job
from .records import SnapshotRecord

SNAPSHOT_TIMEOUT = 600.0


class Snapshot(Job):
    def __init__(self, ports, net, then):
        super().__init__(ports, net, None, None, SNAPSHOT_TIMEOUT)
        self.then = then

    hears_control_faults = True  # a group that refuses a SNAP or KEEP fails this

    def run(self):
        net = self.net
        net.snapshotting = True  # again, when a recovery restarts it
        net.snapshots_taken += 1
        self.id = net.snapshots_taken
        self.copying = set(net.groups)
        self.keeping = set(net.groups)  # replicas to be kept (by a keeper, or the broker for one group)
        self.late = False
        # a SNAP lets the groups forget every snapshot but the whole one: a standby must know which that is
        self.ports.when_shipped(self.send)

    def send(self):
        net = self.net
        if self.finished:
            return
        self.after = net.sent.done  # what to_group puts in each SNAP: the groups copy after those steps
        self.inputs = net.layer1_width  # what they hold then: a GROW sent later reaches them after the SNAP
        self.mark = len(net.log)  # likewise what is logged from now on is not in their copies
        whole = net.snapshot.id if net.snapshot else None  # groups keep it until this one is whole
        for gid in net.groups:
            self.flow.to_group(net, gid, {"k": wire.SNAP, "snap": self.id, "whole": whole})
        self.ports.fault("snap", self.id)

    restart = run

    def waiting_for(self):
        missing = sorted(self.copying)[:3] or [f"the keeper of {g}" for g in sorted(self.keeping)[:3]]
        return f"snapshot {self.id} of network {self.net.id}: {', '.join(missing)}"

    def on_snapped(self, gid, h):
        if h.get("snap") != self.id or gid not in self.copying:
            return
        self.copying.discard(gid)
        self.late |= (h.get("step"), h.get("ahead")) != (self.after, 0)
        self.progress()
        self.maybe_done()

    def on_kept(self, of, h):
        if h.get("snap") == self.id:
            self.keeping.discard(of)
            self.progress()
            self.maybe_done()

    def maybe_done(self):
        if self.copying or self.keeping:
            return
        if self.late:  # a group applied a later step before it copied its state: again
            return self.run()
        net = self.net
        net.snapshot = SnapshotRecord(id=self.id, step=self.after, inputs=self.inputs)
        # what the copies hold goes from the log; steps beyond them and all logged since stay
        net.log = [e for e in net.log[:self.mark] if e[0] == "step" and e[1] > self.after] + net.log[self.mark:]
        net.snapshotting = False
        self.end()
        self.then()
        self.ports.run_deferred(net)

    def fail(self, error, **fields):
        if not self.finished:
            super().fail(error, **fields)
            self.net.snapshotting = False
            self.ports.run_deferred(self.net)


def take_snapshot(ports, net, then):
    """Pause the network's requests, have every group copy its state, then then()."""
    net.snapshotting = True
    Snapshot(ports, net, then).begin()


def snapshot_due(ports, net, every):
    """Take a snapshot if the log has grown long enough (only between steps)."""
    if len(net.log) >= every and not net.waits():
        take_snapshot(ports, net, lambda: None)


class StateLost(RuntimeError):
    """A group's snapshot survives neither in its own process nor with its keeper."""


def restore_plan(net, groups):
    """({gid: the SETUP's restore field}, {gid: keeper gid}): each group restores the
    last whole snapshot from its own copy, or, if its process is new, is sent the
    replica by the group that holds it (made its keeper for this wiring) or, for a
    network of one group, by the broker. StateLost when no copy survived."""
    snap = net.snapshot.id
    plan, holders = {}, {}
    for g in groups:
        if snap in g.snaps:
            plan[g.gid] = {"snap": snap}
        elif snap in net.broker_replica:
            plan[g.gid] = {"snap": snap, "from": "broker"}
        else:
            holder = next((k for k in groups if (g.gid, snap) in k.holds), None)
            if holder is None:
                raise StateLost(f"the state of {net.describe(g.gid)} was lost: its process and the replica of "
                                f"snapshot {snap} are both gone")
            plan[g.gid] = {"snap": snap, "from": "keeper"}
            holders[g.gid] = holder.gid
    return plan, holders
