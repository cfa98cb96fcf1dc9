"""Snapshots: every group's weights and optimizer state, read after a known
step, kept by the broker as the state a recovery restores. While one is
taken the network's requests wait (Network.snapshotting); the log then keeps
only the steps after it."""
from .jobs import Collect

SNAPSHOT_TIMEOUT = 600.0


class Snapshot(Collect):
    """Collect every group's state for the network's own keeping; a failure unpauses it."""

    def __init__(self, ports, net, then):
        super().__init__(ports, net, None, None, SNAPSHOT_TIMEOUT, self.keep)
        self.after_kept = then

    def keep(self, job, layers, optim):
        net = self.net
        if {(h.get("applied"), h.get("ahead")) for h, _ in self.states.values()} != {(self.after, 0)}:
            return self.run()  # a group applied a later step before it read its state: ask again
        net.snapshot = {"layers": layers, "optim": optim, "inputs": net.layer1_width}
        net.log = [e for e in net.log if e[0] == "step" and e[1] > self.after]
        net.snapshotting = False
        self.end()
        self.after_kept()
        self.ports.run_deferred(net)

    def fail(self, error, **fields):
        if not self.finished:
            super().fail(error, **fields)
            self.net.snapshotting = False
            self.ports.run_deferred(self.net)


def take_snapshot(ports, net, then):
    """Pause the network's requests, collect every group's state, keep it, then then().
    Groups answer once they have applied every step sent before the request."""
    net.snapshotting = True
    Snapshot(ports, net, then).begin()


def snapshot_due(ports, net, every):
    """Take a snapshot if the log has grown long enough (only between steps)."""
    if len(net.log) >= every and not net.waits():
        take_snapshot(ports, net, lambda: None)
