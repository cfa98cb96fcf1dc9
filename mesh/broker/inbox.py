"""What groups tell the broker on its inbox, besides the data path
(dataflow.py): hello (its process is up, here are its endpoints),
heartbeats, ready (wired), snapped and kept (its snapshot, and the replicas
it keeps), keep (the broker keeps the replica of a network of one group),
state (an answer to GET); and the broker's own socket to each group.

Each handler takes the broker, the network, the header and the arrays; the
loop (loop.py) has checked the network's token and generation."""
import time

import zmq

from .. import sockets, wire
from . import liveness
from .registry import send_worker
from .losses import group_lost


def hello(b, net, h, arrays):
    g = net.groups[h["gid"]]
    if g.pid is not None and g.pid != h["pid"] and g.alive:
        return  # not the process we started for this group
    g.pid, g.endpoints, g.alive, g.heard, g.attached = h["pid"], h["endpoints"], True, time.monotonic(), True
    dial_group(b, net, h["gid"])
    for job in list(net.jobs):
        job.on_hello(h["gid"])


def group_beat(b, net, h, arrays):
    g = net.groups[h["gid"]]
    if g.pid == h.get("pid"):
        g.heard = time.monotonic()
        g.msgs, g.applied = h.get("msgs"), h.get("applied")  # for the dashboard
        waits = h.get("waits")
        if type(waits) is int and waits > net.step:  # for a step never handed out: nothing will free it
            b.flow.to_group(net, h["gid"], {"k": wire.PURGE, "beyond": net.step, "gen": net.gen})


def ready(b, net, h, arrays):
    if h.get("restored") is not None:  # it holds that snapshot as its own copy again
        net.groups[h["gid"]].snaps.add(h["restored"])
    for job in list(net.jobs):
        job.on_ready(h["gid"])


def snapped(b, net, h, arrays):
    """A group copied its state as snapshot h["snap"]; it keeps that and the whole one only."""
    g = net.groups[h["gid"]]
    g.snaps = {i for i in g.snaps if i == h.get("whole")} | {h["snap"]}
    g.kept_bytes = h.get("bytes")  # on its worker's disk: status shows the disk measured
    for job in list(net.jobs):
        job.on_snapped(h["gid"], h)


def kept(b, net, h, arrays):
    """Group h["gid"] keeps the replica of group h["of"]'s snapshot h["snap"] (and the whole one)."""
    if h.get("of") not in net.groups:
        return
    g = net.groups[h["gid"]]
    g.holds = {(of, i) for of, i in g.holds if of != h["of"] or i == h.get("whole")} | {(h["of"], h["snap"])}
    for job in list(net.jobs):
        job.on_kept(h["of"], h)


def keep(b, net, h, arrays):
    """The replica of a network of one group, which has no other process to keep it."""
    if len(net.groups) != 1 or h.get("of") != h["gid"]:
        return
    net.broker_replica = {i: r for i, r in net.broker_replica.items() if i == h.get("whole")}
    net.broker_replica[int(h["snap"])] = ({"of": h["of"], "snap": int(h["snap"]), "step": h["step"],
                                           "optimizer": h["optimizer"]}, [a.copy() for a in arrays])
    for job in list(net.jobs):
        job.on_kept(h["of"], h)


def state(b, net, h, arrays):
    for job in list(net.jobs):
        job.on_state(h["gid"], h, arrays)


# the group messages handled here; OUT, DONE and FAULT are the data path's (dataflow.Flow)
def losses(b, net, h, arrays):
    """An output group's losses of a resident run's steps (broker/resident.py)."""
    trainer = net.trainer
    if trainer is not None and hasattr(trainer, "on_losses"):
        trainer.on_losses(net.groups[h["gid"]], h, arrays)


def cut(b, net, h, arrays):
    """How far a row reader got when a cancel cut a resident run's grant short."""
    trainer = net.trainer
    if trainer is not None and hasattr(trainer, "on_cut"):
        trainer.on_cut(net.groups[h["gid"]], h)


OPS = {wire.HELLO: hello, wire.HEARTBEAT: group_beat, wire.READY: ready, wire.STATE: state,
       wire.SNAPPED: snapped, wire.KEPT: kept, wire.KEEP: keep, wire.LOSSES: losses, wire.CUT: cut}


def expire_groups(b, now):
    """Groups silent past their expiry and stuck (stopped, wedged): end them, then rebuild;
    a busy one is left be (liveness.py). Not while the inbox holds unread heartbeats."""
    if b.inbox.poll(0):
        return
    for net in list(b.nets.values()):
        dead = {gid: why for gid, g in net.groups.items() if g.alive and g.pid and now - g.heard > b.expiry
                for why in [liveness.verdict(g, b.workers.get(g.worker), now, b.expiry)] if why}
        for gid in dead:
            send_worker(b, net.groups[gid].worker, {"k": wire.KILL, "gid": gid, "pid": net.groups[gid].pid, "sig": 9})
        if dead and not net.failed:
            first = next(iter(dead))
            group_lost(b, net, list(dead), f"{net.describe(first)} {dead[first]}")


def dial_group(b, net, gid):
    """(Re)connect the broker's socket to group gid, at the endpoints it said hello with."""
    g = net.groups[gid]
    close_push(net, gid)
    net.push[gid] = sockets.make(b.ctx, zmq.PUSH, keys=b.keys, dial=g.key,
                                 connect=sockets.nearest(g.endpoints["tcp"], g.endpoints.get("ipc"), g.host == b.host))


def close_push(net, gid):
    old = net.push.pop(gid, None)
    if old is not None:
        old.close()


def rebroker(b, net, gid):
    """After a failover: tell live group gid where this broker's inbox is; it says hello there."""
    if gid not in net.push:
        dial_group(b, net, gid)
    host = b.host
    seen_as = b.paired.pair.seen_as
    if host in ("0.0.0.0", "*", "::") and seen_as:  # bound to every interface: the name the peer uses
        host = sockets.host_of(seen_as)
    b.flow.to_group(net, gid, {"k": wire.REBROKER, "tcp": f"tcp://{host}:{b.inbox_port}",
                               "ipc": b.inbox_ipc, "host": b.host})
