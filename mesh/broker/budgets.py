"""Memory and disk budgets at the broker: what is planned on each worker
(memory.py's model of the groups placed there), what it measures (its
heartbeats; the snapshot bytes its groups report), and the check that
refuses a network, a growth or an optimizer that would not fit.

A worker's record has "memory": its budget in bytes, or None (no budget), and
"pool": None when the budget was given (--memory), else the name of what it
was taken from (hostmem.py): workers of one pool share it, in equal parts.
A group's record has "planned": its bytes in the model, with the replicas it
keeps (placement.planned_bytes). Disk alike: "disk" and "disk_pool" (the
workers on one file system share its free space), "planned_disk"."""
import numpy as np

from .. import memory
from ..sizes import format_size
from .placement import Model, Refused, planned_bytes, work


def model_of(net, inputs=None, optimizer=None):
    """The model of a network's groups, at layer 1's width now (or `inputs`)."""
    widths = net.spec.fan_ins(net.inputs if inputs is None else inputs)  # a graph's layers read several
    return Model(widths, np.dtype(net.spec.dtype).itemsize, optimizer or net.plan_for, net.window)


def in_order(net):
    return [net.groups[gid] for gids in net.layers for gid in gids]


def replan(net):
    """Each group's planned bytes, after the network was placed, grew or changed optimizer."""
    for gid, n in planned_bytes(in_order(net), model_of(net)).items():
        net.groups[gid].planned = n
    for gid, n in planned_bytes(in_order(net), model_of(net), disk=True).items():
        net.groups[gid].planned_disk = n


POOLS = {"memory": "pool", "disk": "disk_pool"}


def budget_of(workers, wid, kind="memory"):
    """A worker's budget ("memory" or "disk"): its own, or its share of a pool (a host's
    or a cgroup's memory, a file system's space, that several workers found at start)."""
    w, pool = workers[wid], POOLS[kind]
    budget, shared = getattr(w, kind), getattr(w, pool)
    if budget is None or not shared:
        return budget
    return budget // sum(1 for other in workers.values() if getattr(other, pool) == shared)


def planned_on(nets, wid, disk=False):
    if disk:
        return sum(g.planned_disk for net in nets for g in net.groups.values() if g.worker == wid) + \
            resident_on(nets, wid)
    return memory.worker_bytes(g.planned for net in nets for g in net.groups.values() if g.worker == wid) + \
        resident_on(nets, wid)


def resident_on(nets, wid):
    """A resident run's rows and targets on a worker's host (broker/resident.py): one file each,
    on its disk and, mapped by its groups, once in its memory, whatever the number of groups."""
    runs = [getattr(net, "trainer", None) for net in nets]
    return sum(run.staged_bytes for run in runs if wid in getattr(run, "hosts", ()))


def measured_on(worker, nets, wid):
    """Its own resident bytes and its groups', as its last heartbeat said; None before one came."""
    own = worker.usage
    if not (isinstance(own, list) and len(own) >= 2):
        return None
    groups = [g.usage for net in nets for g in net.groups.values() if g.worker == wid]
    return int(own[1]) + sum(int(u[1]) for u in groups if isinstance(u, list) and len(u) >= 2)


def hosts(workers, nets):
    """Each worker as placement.plan sees it, in the order they joined."""
    out = []
    for wid, w in sorted(workers.items(), key=lambda kv: int(kv[1].name[1:])):
        budget = budget_of(workers, wid)
        out.append({"wid": wid, "name": w.name, "host": w.host, "slots": w.slots, "budget": budget,
                    "given": not w.pool,
                    "free": None if budget is None else budget - planned_on(nets, wid),
                    "work": sum(work(g.hi - g.lo, _fan_in(net, g)) for net in nets for g in net.groups.values()
                                if g.worker == wid)})
    return out


def roomiest(workers, nets, need):
    """The worker with a budget and the most room left that still fits `need` bytes more
    (where a lost worker's group goes), or None: no budgets, or none fits."""
    room = {wid: budget_of(workers, wid) - planned_on(nets, wid) for wid, w in workers.items()
            if w.memory is not None}
    fits = [wid for wid, left in room.items() if left >= need]
    return max(fits, key=room.get) if fits else None


def _fan_in(net, g):
    return net.spec.fan_in(g.layer, net.inputs)


def budgeted(workers, net):
    """True when a worker holding one of the network's groups has a budget."""
    return any(g.worker in workers and workers[g.worker].memory is not None for g in net.groups.values())


def check(workers, nets, net, what, inputs=None, optimizer=None, kinds=("memory", "disk")):
    """Refused, with the numbers, when the network with layer 1 `inputs` wide (or
    planned for `optimizer`) would put a worker over its memory or disk budget."""
    others = [n for n in nets if n is not net]
    stays = f"; network {net.id} stays as it was" if len(others) < len(list(nets)) else " (nothing was started)"
    for kind in kinds:
        disk = kind == "disk"
        after = planned_bytes(in_order(net), model_of(net, inputs, optimizer), disk=disk)
        for wid, w in workers.items():
            budget = budget_of(workers, wid, kind)
            if budget is None:
                continue
            need = planned_on(others, wid, disk) + sum(after[g.gid] for g in net.groups.values() if g.worker == wid)
            if need > budget:
                raise Refused(f"{what} would not fit: worker {w.name} would need {format_size(need)}"
                              f"{' of disk for snapshots' if disk else ''}, its {'disk ' if disk else ''}budget is "
                              f"{format_size(budget)}{stays}")


def status(workers, nets, wid):
    """What `mesh status` shows of a worker's memory, in bytes."""
    w = workers[wid]
    return {"budget": budget_of(workers, wid), "from": "given" if not w.pool else w.pool,
            "planned": planned_on(nets, wid), "measured": measured_on(w, nets, wid)}


def disk_status(workers, nets, wid):
    """What `mesh status` shows of a worker's disk: its budget, what is planned, and what its
    groups said their snapshot files hold at their last snapshot, in bytes."""
    kept = [g.kept_bytes for net in nets for g in net.groups.values() if g.worker == wid]
    return {"budget": budget_of(workers, wid, "disk"), "planned": planned_on(nets, wid, disk=True),
            "measured": sum(k for k in kept if isinstance(k, int))}
