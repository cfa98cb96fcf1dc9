"""Where groups run and how they are wired: pure functions, no sockets.

Without budgets, place() spreads groups over workers by slots, as it always
did. When a worker has a memory budget (or group_size is "balanced"),
plan() cuts layers and places them: each group must fit its worker's budget
(memory.py's model, the replicas it keeps counted), the most work on any
worker per slot (work ~ rows x fan-in) is made as small as it can be, and
among equal choices the fewest links cross hosts.
"""
import math

import numpy as np

from .. import memory
from ..graph import sources as graph_sources, widths as graph_widths
from ..sizes import format_size, unit_of
from .records import GroupRecord


def place(groups, workers):
    """Assign groups (in network order) to workers in contiguous runs sized by
    capacity, so consecutive slices of a layer, and adjacent layers, share a
    host where they can. workers: [(worker_id, slots)]. -> [worker_id per group]."""
    if not workers:
        raise RuntimeError("no workers have joined the broker; start one with `mesh worker --broker ADDR`")
    total = sum(slots for _, slots in workers)
    out, start, acc = [], 0, 0
    for wid, slots in workers:
        acc += slots
        end = round(len(groups) * acc / total)
        out += [wid] * (end - start)
        start = end
    return out


def place_pinned(groups, workers, pins):
    """Like place(), but the groups of a pinned layer go only to the workers on
    its host. workers: [(worker_id, slots, host, name)]; pins: {layer (1-based): host or worker name}."""
    out = [None] * len(groups)
    free = [i for i, (layer, _, _) in enumerate(groups) if str(layer + 1) not in pins]
    for layer_key, where in pins.items():
        on_host = [(w, s) for w, s, host, name in workers if where in (host, name)]
        if not on_host:
            known = ", ".join(sorted({h for _, _, h, _ in workers}))
            raise ValueError(f"layer {layer_key} is pinned to {where!r}, but no worker is there (hosts: {known})")
        idx = [i for i, (layer, _, _) in enumerate(groups) if str(layer + 1) == str(layer_key)]
        for i, w in zip(idx, place([groups[i] for i in idx], on_host)):
            out[i] = w
    for i, w in zip(free, place([groups[i] for i in free], [(w, s) for w, s, _, _ in workers]) if free else []):
        out[i] = w
    return out


def link(src_host, dst):
    """The endpoint src should dial to reach group dst: ipc on the same host."""
    if dst.host == src_host and "ipc" in dst.endpoints:
        return dst.endpoints["ipc"]
    return dst.endpoints["tcp"]


def keepers(groups, fixed=None):
    """Who keeps whose snapshot replica: for each group (in network order), the next
    group on another host, so that a lost host is still recoverable; failing that,
    on another worker; failing that, the next group; with one group, nobody (the
    broker keeps it). fixed: {gid: keeper gid} already decided (the group that holds
    the replica a new process must fetch). -> {gid: keeper record or None}"""
    by_gid = {g.gid: g for g in groups}
    out = {gid: by_gid[k] for gid, k in (fixed or {}).items()}
    n = len(groups)
    other_host, other_worker = _next_other(groups, "host"), _next_other(groups, "worker")
    for i, g in enumerate(groups):
        if g.gid in out:
            continue
        j = other_host[i] if other_host[i] is not None else other_worker[i]
        out[g.gid] = groups[j] if j is not None else (groups[(i + 1) % n] if n > 1 else None)
    return out


def _next_other(groups, field):
    """For each group, the index of the next one around the ring whose `field` differs from its
    own, or None: O(groups), where a search from every group would be O(groups²)."""
    n = len(groups)
    values = [getattr(g, field) for g in groups] * 2
    after = [None] * (2 * n)  # the first index past i, in the doubled list, whose value differs
    for i in range(2 * n - 2, -1, -1):
        after[i] = i + 1 if values[i + 1] != values[i] else after[i + 1]
    return [after[i] % n if after[i] is not None and after[i] < i + n else None for i in range(n)]


def wiring(layers, fixed_keepers=None, graph=None, rows=0):
    """Per group, in network order: (its record, the setup fields for its neighbours, its
    keeper and its wards). A generator that makes each group's setup only when asked for
    it, so that the broker sends a slice of a wiring each round of its loop and planning
    hundreds of groups, O(links), never holds it (building.py).

    layers: [[group record, ...] per layer]; a record has gid, lo, hi, host,
    endpoints. graph: which layers each layer reads (mesh/graph.py; None, the
    chain); rows: the input width now. "up" lists the parts of a group's input
    in column order: [endpoint, lo, hi, key, as] with [lo, hi) its columns and
    `as` the index this group has among that group's "down" (the index its
    dL/dx goes back as); the rows' part has no endpoint (the broker sends them).
    "down" lists every group of every layer that reads this one, in network order:
    [endpoint, lo, hi, key, src], src the index of this group's part there."""
    groups = [g for layer in layers for g in layer]
    keeper = keepers(groups, fixed_keepers)
    wards = {g.gid: [] for g in groups}
    for g in groups:
        if keeper[g.gid] is not None:
            k = keeper[g.gid]
            wards[k.gid].append([g.gid, link(k.host, g), g.key, g.hi - g.lo])
    sizes = [layer[-1].hi for layer in layers]
    sources = [graph_sources(graph, l) for l in range(len(layers))]
    # a layer reads every group of each of its sources, once: so a reader's index among a source
    # group's "down" is the groups of the layers before it that read that source, plus its own index
    before = {(s, l): sum(len(layers[r]) for r in range(l) if s in sources[r])
              for l in range(len(layers)) for s in sources[l]}
    first = [[sum(1 if t == 0 else len(layers[t - 1]) for t in sources[l][:k]) for k in range(len(sources[l]))]
             for l in range(len(layers))]  # per layer, the index of each source's first part
    for l, layer in enumerate(layers):
        widths = graph_widths(graph, sizes, l, rows)
        readers = [(r, first[r][sources[r].index(l + 1)]) for r in range(len(layers)) if l + 1 in sources[r]]
        for index, g in enumerate(layer):
            ups, col = [], 0
            for s, width in zip(sources[l], widths):
                ups += ([[None, col, col + width, None, None]] if s == 0 else
                        [[link(g.host, u), col + u.lo, col + u.hi, u.key, before[s, l] + index] for u in layers[s - 1]])
                col += width
            down = [[link(g.host, d), d.lo, d.hi, d.key, part + index] for r, part in readers for d in layers[r]]
            yield g, {
                "index": index,
                "fan_in": len(ups),         # parts of its input, the rows' counted (the broker's)
                "fan_out": len(down) or 1,  # the last layer hears from the broker alone
                "down": down,
                "up": ups,
                "keeper": keeper[g.gid] and [link(g.host, keeper[g.gid]), keeper[g.gid].key],
                "wards": wards[g.gid],
                "broker_keeps": len(groups) == 1,  # no other process to keep its replica
            }


class Refused(ValueError):
    """A network that cannot be placed; the message has the numbers."""


def plan(spec, inputs, window, optimizer, hosts, pins):
    """[(layer, lo, hi, worker id)] for a new network, or Refused.

    spec: its Spec (group_size None, an int, or "balanced"); inputs: layer 1's
    width as known now (0 for a new network: growth re-checks it); hosts: a dict
    per worker: wid, name, host, slots, budget (bytes or None), free (what its
    budget leaves after what is placed on it), work (already placed on it);
    pins: {layer number (str): host or worker name}."""
    if not hosts:
        raise RuntimeError("no workers have joined the broker; start one with `mesh worker --broker ADDR`")
    widths = spec.fan_ins(inputs)
    model = Model(widths, np.dtype(spec.dtype).itemsize, optimizer, window)
    if spec.group_size != "balanced" and not any(h["budget"] is not None and h.get("given", True) for h in hosts):
        # no budget given: by slots, as without budgets, while that fits what the hosts have
        groups = spec.groups()
        where = place_pinned(groups, [(h["wid"], h["slots"], h["host"], h["name"]) for h in hosts], pins)
        if all(h["budget"] is None for h in hosts) or not _over_budget(groups, where, model, hosts):
            return [(*g, w) for g, w in zip(groups, where)]
    allowed = [_allowed(hosts, pins.get(str(layer + 1)), layer) for layer in range(len(spec.sizes))]
    _refuse_beyond_sum(spec, model, hosts)
    counts = _first_counts(spec, model, allowed, widths)
    while True:
        model.counts = counts
        groups = [(layer, lo, hi) for layer, n in enumerate(spec.sizes) for lo, hi in cut(n, counts[layer])]
        where, failing = _assign(groups, model, allowed)
        if where is not None:
            if not _over_budget(groups, where, model, hosts):
                return [(*g, w) for g, w in zip(groups, where)]
        if failing is None or _fits_somewhere(model, allowed, failing, counts[failing], spec.sizes[failing]):
            # the layer whose pieces hold the most data (not links: more pieces only add links)
            failing = max(range(len(counts)), key=lambda l: model.reserved(l, math.ceil(spec.sizes[l] / counts[l]),
                                                                           links=False))
        if isinstance(spec.group_size, int) or counts[failing] >= spec.sizes[failing]:
            raise Refused(_cannot_cut(spec, model, allowed, failing, counts[failing]))
        counts[failing] = min(spec.sizes[failing], max(counts[failing] + 1, math.ceil(counts[failing] * 1.25)))


class Model:
    """memory.py's model for the groups of one network; counts: its groups per layer
    (their links cost memory too), or None while they are not known (one each)."""

    def __init__(self, widths, itemsize, optimizer, window, counts=None):
        self.widths, self.itemsize, self.optimizer, self.window = widths, itemsize, optimizer, window
        self.counts = counts

    def ends(self, layer):
        counts = self.counts or [1] * len(self.widths)
        return memory.link_ends(counts[layer - 1] if layer > 0 else 0,
                                counts[layer + 1] if layer + 1 < len(counts) else 0)

    def bytes(self, layer, rows, kept=(), links=True):
        return memory.group_bytes(rows, self.widths[layer], self.itemsize, self.optimizer, self.window,
                                  kept=[(r, self.widths[k]) for k, r in kept], ends=self.ends(layer) if links else 0)

    def disk(self, layer, rows, kept=()):
        return memory.group_disk(rows, self.widths[layer], self.itemsize, self.optimizer,
                                 kept=[(r, self.widths[k]) for k, r in kept])

    def reserved(self, layer, rows, links=True):
        """What placing a group takes from its worker: itself and, for the replicas it will
        keep, as much as its own (the groups of a worker keep about what they hand out)."""
        return self.bytes(layer, rows, kept=[(layer, rows)], links=links)


def cut(n, k):
    """[(lo, hi)]: n neurons in k near-equal pieces (sizes differ by one at most)."""
    edges = [n * i // k for i in range(k + 1)]
    return list(zip(edges, edges[1:]))


def work(rows, fan_in):
    return rows * max(fan_in, 1)


def _allowed(hosts, where, layer):
    if where is None:
        return hosts
    on = [h for h in hosts if where in (h["host"], h["name"])]
    if not on:
        known = ", ".join(sorted({h["host"] for h in hosts}))
        raise ValueError(f"layer {layer + 1} is pinned to {where!r}, but no worker is there (hosts: {known})")
    return on


def _first_counts(spec, model, allowed, widths):
    """Pieces per layer to start from: the explicit group size, equal work per
    process ("balanced"), or one per layer; then as many as the budgets force."""
    sizes = spec.sizes
    if isinstance(spec.group_size, int):
        return [math.ceil(n / spec.group_size) for n in sizes]
    counts = [1] * len(sizes)
    if spec.group_size == "balanced":
        works = [work(n, f) for n, f in zip(sizes, widths)]
        processes = max(sum(h["slots"] for h in {h["wid"]: h for a in allowed for h in a}.values()), len(sizes))
        each = sum(works) / processes
        counts = [min(n, max(1, round(w / each))) for n, w in zip(sizes, works)]
    for layer, n in enumerate(sizes):
        rooms = [h["free"] for h in allowed[layer]]
        if None not in rooms:
            need = memory.pieces_for(n, widths[layer], model.itemsize, model.optimizer, model.window, max(rooms))
            counts[layer] = max(counts[layer], need or n)
    return counts


def _assign(groups, model, allowed):
    """Largest work first, each to the worker where the most loaded worker (work per
    slot) ends up least loaded, then with the fewest new cross-host links.
    -> ([worker id per group], None), or (None, the layer of a group that fits nowhere)."""
    hosts = {h["wid"]: h for a in allowed for h in a}
    load = {w: h["work"] for w, h in hosts.items()}
    free = {w: h["free"] for w, h in hosts.items()}
    where = [None] * len(groups)
    order = sorted(range(len(groups)), key=lambda i: -work(groups[i][2] - groups[i][1], model.widths[groups[i][0]]))
    for i in order:
        layer, lo, hi = groups[i]
        g_work, need = work(hi - lo, model.widths[layer]), model.reserved(layer, hi - lo)
        fits = [h for h in allowed[layer] if free[h["wid"]] is None or free[h["wid"]] >= need]
        if not fits:
            return None, layer
        top = max(load[w] / hosts[w]["slots"] for w in load)

        def cost(h):
            after = (load[h["wid"]] + g_work) / h["slots"]
            crossing = sum(1 for j, w in enumerate(where) if w is not None and abs(groups[j][0] - layer) == 1
                           and hosts[w]["host"] != h["host"])
            return max(top, after), crossing, after
        best = min(fits, key=cost)["wid"]
        where[i] = best
        load[best] += g_work
        if free[best] is not None:
            free[best] -= need
    return where, None


def _fits_somewhere(model, allowed, layer, pieces, n):
    """A piece of the layer alone fits the roomiest worker it may go to: when it was
    still left without a place, the pieces of some layer are too coarse to pack."""
    rooms = [h["free"] for h in allowed[layer]]
    return None in rooms or model.reserved(layer, math.ceil(n / pieces)) <= max(rooms)


def _over_budget(groups, where, model, hosts):
    """True when, with the replicas each group really keeps (keepers()), a worker is over its budget."""
    by_wid = {h["wid"]: h for h in hosts}
    planned = planned_bytes([GroupRecord(gid=i, layer=g[0], lo=g[1], hi=g[2], worker=w, host=by_wid[w]["host"])
                             for i, (g, w) in enumerate(zip(groups, where))], model)
    return any(h["free"] is not None and sum(planned[i] for i, w in enumerate(where) if w == wid) > h["free"]
               for wid, h in by_wid.items())


def planned_bytes(records, model, disk=False):
    """{gid: planned bytes} of a network's groups (records in network order: gid,
    layer, lo, hi, worker, host), each with the replicas it keeps; disk: the bytes
    of their snapshot files instead."""
    keeper = keepers(records)
    layers = max(g.layer for g in records) + 1 if records else 0
    model = Model(model.widths, model.itemsize, model.optimizer, model.window,
                  [sum(1 for g in records if g.layer == l) for l in range(layers)])
    kept = {g.gid: [] for g in records}
    for g in records:
        k = keeper[g.gid]
        if k is not None:
            kept[k.gid].append((g.layer, g.hi - g.lo))
    of = model.disk if disk else model.bytes
    return {g.gid: of(g.layer, g.hi - g.lo, kept[g.gid]) for g in records}


def _refuse_beyond_sum(spec, model, hosts):
    """When every worker has a budget: refused if the network needs more than they all offer."""
    if any(h["budget"] is None for h in hosts):
        return
    need = len(hosts) * memory.WORKER_BASELINE + sum(h["budget"] - h["free"] - memory.WORKER_BASELINE
                                                     for h in hosts if h["free"] < h["budget"])
    if isinstance(spec.group_size, int):  # its groups, each with its links, as they will be cut
        model.counts = [math.ceil(n / spec.group_size) for n in spec.sizes]
        need += sum(model.reserved(layer, r) * count for layer, (n, count) in enumerate(zip(spec.sizes, model.counts))
                    for r in [math.ceil(n / count)])
    else:
        need += sum(model.reserved(layer, n) for layer, n in enumerate(spec.sizes))
    offer = sum(h["budget"] for h in hosts)
    if need > offer:
        _, size = unit_of(offer)
        each = ", ".join(f"{h['name']} {h['budget'] / size:.3g}" for h in hosts)
        raise Refused(f"needs {format_size(need)}, the workers offer {format_size(offer)} ({each})")


def _cannot_cut(spec, model, allowed, layer, pieces):
    n, fan_in = spec.sizes[layer], model.widths[layer]
    rows = math.ceil(n / pieces)
    free = [(h["name"], h["free"]) for h in allowed[layer] if h["free"] is not None]
    need = model.reserved(layer, rows)
    why = (f"the most any worker has free is {format_size(max(f for _, f in free))}" if need > max(f for _, f in free)
           else "together with the other layers they do not fit the workers' budgets (free: "
           + ", ".join(f"{name} {format_size(f)}" for name, f in free) + ")")
    return (f"layer {layer + 1} ({n} neurons x {fan_in} inputs) cannot be cut to fit: in {pieces} groups of up to "
            f"{rows} neurons each needs {format_size(need)} with its replicas, and {why} "
            f"(planned for {model.optimizer}, {spec.dtype})")
