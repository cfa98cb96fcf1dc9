"""What the broker does when groups are lost: rebuild them and replay
(recovery.py), or, when that cannot be, fail the network and every job and
request on it. Every function takes the broker."""
import logging

from .recovery import Recover
from .states import Event, State

log = logging.getLogger("mesh.broker")


def group_lost(b, net, gids, why):
    """Groups are gone: rebuild them and replay, or, when that cannot be, fail the network."""
    net.note("lost", pids={gid: net.groups[gid].pid for gid in gids}, why=why)
    for gid in gids:
        net.groups[gid].alive = False
    log.warning("network %s: %s", net.id, why)
    if net.state in (State.FAILED, State.DROPPED):
        return
    if net.snapshot is None or not b.workers:
        return break_net(b, net, why if b.workers else f"{why}; no worker is left to restart it")
    interrupted = sorted((j for j in net.jobs if not isinstance(j, Recover)), key=lambda j: j.serial)
    if net.recovering is not None:  # a failure during recovery: start it over
        interrupted = net.recovering.interrupted
        net.recovering.end()
    for job in interrupted:
        net.jobs.discard(job)  # out of the way of the recovery's events; back when restarted
    Recover(b.ports, net, why, interrupted).begin()


def abandon_step(b, net, why):
    """A step id was handed out and its backward will never be sent whole: groups
    wait for it, and some may hold half of it. Rebuild the network's state from
    the snapshot and the log, which holds whole steps only (recovery.py)."""
    if not net.failed and b.nets.get(net.id) is net:
        group_lost(b, net, [], why)


def break_net(b, net, why):
    """The network cannot answer until it is built again: fail it, every job on it
    (those a recovery had set aside too), and every request that waited."""
    if net.life.can(Event.FAILED):
        net.life.fire(Event.FAILED, why)
    end_work(b, net, f"network {net.id} failed: {why}")


def end_work(b, net, why):
    for job in [j for j in list(b.ports.jobs) if j.net is net]:
        job.fail(why)
    while net.deferred:
        _, client, h, _ = net.deferred.popleft()
        b.reply(client, h.get("id"), ok=False, error=why)
