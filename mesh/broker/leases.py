"""Leases for predicts that skip the broker (the client's side is direct.py).

A predict that goes client -> layer 1 -> ... -> last layer -> client takes four
hops instead of six, and none of the broker's Python. The broker still governs:
it hands out a lease only while the network is idle, and only when every group
is on this host, where the client can reach layer 1's unix sockets and any
group the client's (each may answer STALE). A lease names
the generation and the step whose weights it sees; a group refuses a pass whose
lease no longer holds there (a step, a recovery, a new input column), the
client hears STALE and asks the broker, as every predict did before.

Not on a mesh with keys: the groups' inboxes admit mesh keys only, and a lease
must not become a way around CurveZMQ."""
from .. import wire
from .states import State

NEVER = 3600.0  # seconds a client need not ask again: what refused the lease lasts


class NoLease(ValueError):
    """Why a network's predicts go through the broker, and in how many seconds to ask again."""

    def __init__(self, why, retry):
        super().__init__(why)
        self.retry = retry


def lease(b, net):
    """What a client needs to send a network predicts itself; NoLease says why not."""
    if b.keys is not None:
        raise NoLease("predicts go through the broker on a mesh with keys", NEVER)
    if net.state is not State.READY or net.waits():
        raise NoLease(f"network {net.id} is {net.state.value}: predicts go through the broker until it is idle", 1.0)
    if net.inputs == 0:
        raise NoLease(f"network {net.id} has not seen its first rows", 0.0)
    if net.sent.done != net.step:
        raise NoLease(f"network {net.id} has a step on its way", 0.0)
    if any(g.host != b.host or not g.endpoints.get("ipc") for g in net.groups.values()):
        raise NoLease(f"network {net.id} has groups on another host", NEVER)
    return {"gen": net.gen, "at": net.sent.done, "ptok": wire.predict_token(net.token), "width": net.layer1_width,
            "encoder": net.encoder.to_dict(), "dtype": net.spec.dtype, "output": net.spec.output,
            "first": [net.groups[gid].endpoints["ipc"] for gid, _ in net.row_readers()],
            "srcs": [src for _, src in net.row_readers()], "last": len(net.last())}
