"""The broker's registry of workers: who joined, what they run, when they
were last heard, and what is sent to them.

A worker registers (and again after a failover or a lost connection), beats
with its own and its groups' CPU and memory, and says when a group it
started spawned or exited. A worker silent for heartbeat.EXPIRY is lost, and
every group it ran with it (losses.py). Every function takes the broker."""
import logging
import time

import zmq

from .. import sockets, wire
from . import budgets
from .losses import group_lost
from .records import WorkerRecord

log = logging.getLogger("mesh.broker")


def _budget(value):
    """A worker's memory budget from its REGISTER: positive bytes, or None (no budget)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _group(b, wid, gid):
    """The record of group gid if worker wid runs it, else None."""
    net = b.nets.get(str(gid).split(".")[0])
    g = net.groups.get(gid) if net else None
    return (net, g) if g is not None and g.worker == wid else (net, None)


def register(b, wid, h):
    if wid not in b.workers:
        b.made["worker"] += 1
        name = f"w{b.made['worker']}"
        b.workers[wid] = WorkerRecord(
            name=name, host=str(h["host"]), hostname=str(h.get("hostname", "")), key=h.get("key"),
            slots=max(1, int(h.get("slots") or 1)), pid=h.get("pid"), memory=_budget(h.get("memory")),
            pool=str(h["pool"])[:300] if h.get("pool") else None, disk=_budget(h.get("disk")),
            disk_pool=str(h["disk_pool"])[:300] if h.get("disk_pool") else None)
        log.info("worker %s joined from %s (%s slots, memory %s)", name, h["host"], h.get("slots"),
                 h.get("memory") or "unlimited")
    w = b.workers[wid]
    waiting, w.waiting = w.waiting or [], None
    send_worker(b, wid, {"k": wire.WELCOME, "inbox_port": b.inbox_port, "inbox_ipc": b.inbox_ipc})
    for header, arrays in waiting:  # sent to it after a failover, before it came back
        send_worker(b, wid, header, arrays)
    runs = dict(h.get("groups") or {})
    for gid, pid in runs.items():  # back after we gave it up: end what it still runs
        _, g = _group(b, wid, gid)
        if g is None or g.pid != pid:
            send_worker(b, wid, {"k": wire.KILL, "gid": gid, "pid": pid})
    for net in list(b.nets.values()):  # ours on it that it no longer runs (died while it was away)
        gone = [gid for gid, g in net.groups.items()
                if g.worker == wid and g.alive and g.pid is not None and gid not in runs]
        if gone:
            group_lost(b, net, gone, f"{net.describe(gone[0])} is no longer run by its worker")


def worker_beat(b, wid, h):
    """Its own and its groups' CPU and memory, kept for the dashboard."""
    now = time.monotonic()
    w = b.workers[wid]
    w.usage = h.get("usage")
    load = h.get("load")
    w.load = float(load) if isinstance(load, (int, float)) and 0 <= load < 1e6 else None
    for gid, use in dict(h.get("groups") or {}).items():
        _, g = _group(b, wid, gid)
        if g is not None:
            g.usage, g.usage_at = use, now


def spawned(b, wid, h):
    _, g = _group(b, wid, h["gid"])
    if g is not None:
        g.pid = h["pid"]


def exited(b, wid, h):
    b.workers[wid].groups.discard(h["gid"])
    net, g = _group(b, wid, h["gid"])
    if g is not None and g.pid == h["pid"]:  # only the worker that runs it
        group_lost(b, net, [h["gid"]], f"{net.describe(h['gid'])} exited with code {h['code']}")


def staged(b, wid, h):
    """A resident run's file is whole on that worker's host (broker/resident.py)."""
    net = b.nets.get(h.get("net"))
    trainer = net.trainer if net is not None else None
    if trainer is not None and hasattr(trainer, "on_staged"):
        trainer.on_staged(wid, h["name"], h["part"])


OPS = {wire.REGISTER: register, wire.HEARTBEAT: worker_beat, wire.SPAWNED: spawned, wire.EXITED: exited,
       wire.STAGED: staged}


def lose_worker(b, wid, why):
    b.workers.pop(wid)
    log.warning("%s", why)
    for net in list(b.nets.values()):
        gone = [gid for gid, g in net.groups.items() if g.worker == wid]
        if gone:
            group_lost(b, net, gone, why)


def expire_workers(b):
    """Lose the workers silent for their expiry; unless the client socket holds unread messages,
    which may be the heartbeats that keep them alive. Not stretched by the load, as a group's
    is: nothing but the worker speaks for its host, and a cut link is silent too (a worker
    keeps its heartbeat cheap instead: worker.py reads its groups' usage a slice a beat)."""
    if b.front.poll(0):
        return
    for wid, w in list(b.workers.items()):
        if w.peer.expired():
            lose_worker(b, wid, f"worker {w.name} on {w.host} stopped answering heartbeats")


def forgive(b):
    """Count every worker and group as heard now (after this broker's own loop stalled: they were not silent)."""
    now = time.monotonic()
    for w in b.workers.values():
        w.peer.heard_now()
    for net in b.nets.values():
        for g in net.groups.values():
            g.heard = now


def heartbeat_workers(b):
    """Due heartbeats out; also called inside long work, so workers never think us gone."""
    for wid, w in b.workers.items():
        if w.peer.due():
            send_worker(b, wid, {"k": wire.HEARTBEAT})


def send_worker(b, wid, header, arrays=()):
    if b.paired is not None:
        header["ep"] = b.paired.epoch
        w = b.workers.get(wid)
        if w is not None and w.waiting is not None:  # after a failover, until it comes back (register)
            return w.waiting.append((header, arrays))
    try:
        sockets.send(b.front, header, arrays, identity=wid, flags=zmq.NOBLOCK)
    except zmq.ZMQError:
        pass


def budgets_of(b, wid):
    """A worker's memory and disk: budget, planned and measured (status, the dashboard)."""
    return {"memory": budgets.status(b.workers, b.nets.values(), wid),
            "disk": budgets.disk_status(b.workers, b.nets.values(), wid)}
