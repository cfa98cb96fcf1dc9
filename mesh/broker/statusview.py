"""The broker's state as plain data, described once: what `mesh status` and
`mesh status --json` print, and what the dashboard's /api/state and page
show (dashboard/snapshot.py adds what it measures between two reads:
message rates, CPU, heartbeat ages, the training run's curve), with the
same names everywhere.

    broker    address, pid, pair, longest_loop_ms
    workers   [{name, host, hostname, pid, slots, groups (how many), memory, disk}]
    networks  [{net, state, failure, sizes, inputs, graph, group_size, groups (how many),
                alive, links: {total, cross_host, by_host}, training, steps, restarts, ...,
                processes: [{gid, layer (1-based), neurons: [lo, hi], pid, host, worker,
                             endpoints, alive}]}]"""
import os
from collections import Counter

from .registry import budgets_of


def status_of(b):
    """Workers and networks as they are: each network's state is its state machine's."""
    return {"broker": broker_view(b), "workers": [worker_view(b, wid) for wid in b.workers],
            "networks": [network_view(n) for n in b.nets.values()]}


def broker_view(b):
    return {"address": b.address, "pid": os.getpid(), "pair": b.paired.status() if b.paired is not None else None,
            "longest_loop_ms": round(b.longest_loop * 1000, 1)}


def worker_view(b, wid):
    w = b.workers[wid]
    return {"name": w.name, "host": w.host, "hostname": w.hostname, "slots": w.slots, "pid": w.pid,
            "groups": len(w.groups), **budgets_of(b, wid)}


def network_view(n):
    training = dict(n.progress) if n.trainer is not None else None
    return {"net": n.id, "state": n.state.value, "failure": n.life.failure, "sizes": list(n.spec.sizes),
            "output": n.spec.output, "loss": n.spec.loss, "target": n.encoder.target,
            "inputs": n.inputs, "graph": graph(n), "group_size": n.spec.group_size, "groups": len(n.groups),
            "alive": sum(g.alive for g in n.groups.values()), "links": links(n),
            "training": training, "last_training": dict(n.progress) or None, "snapshotting": n.snapshotting,
            "steps": n.steps_applied, "restarts": n.restarts, "last_failure": n.last_failure,
            "queued": len(n.queue), "in_flight": n.in_flight, "entered": n.entered, "processes": processes(n)}


def group_view(g):
    return {"gid": g.gid, "layer": g.layer + 1, "neurons": [g.lo, g.hi], "pid": g.pid, "host": g.host,
            "worker": g.worker_name, "endpoints": g.endpoints, "alive": g.alive}


def processes(n):
    return [group_view(g) for g in n.groups.values()]


def graph(n):
    """The layers each layer reads, 0 the rows (mesh/graph.py): [[0], [1], ...] for a chain."""
    return [n.spec.sources(layer) for layer in range(len(n.spec.sizes))]


def links(n):
    """The PUSH links along every edge of the network's graph (every group of a layer sends to
    every group of each layer that reads it): how many, how many cross hosts, and "by_host",
    counted by host pair: O(hosts²) per edge, where the links themselves are O(groups²).
    There "layer" is the layer they leave, "to_layer" the one they reach."""
    by_host = []
    for reader, gids in enumerate(n.layers, start=1):
        for layer in n.spec.sources(reader - 1):
            if layer == 0:
                continue  # the rows come from the broker
            ha = Counter(n.groups[g].host for g in n.layers[layer - 1])
            hb = Counter(n.groups[g].host for g in gids)
            by_host += [{"layer": layer, "to_layer": reader, "from": src, "to": dst, "count": i * j,
                         "cross_host": src != dst} for src, i in sorted(ha.items()) for dst, j in sorted(hb.items())]
    return {"total": sum(e["count"] for e in by_host),
            "cross_host": sum(e["count"] for e in by_host if e["cross_host"]), "by_host": by_host}
