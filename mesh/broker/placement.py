"""Where groups run and how they are wired: pure functions, no sockets."""


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


def cross_host_links(layers):
    """(links, links whose ends are on different hosts) between adjacent layers."""
    total = crossing = 0
    for prev, nxt in zip(layers, layers[1:]):
        for a in prev:
            for b in nxt:
                total += 1
                crossing += a["host"] != b["host"]
    return total, crossing


def link(src_host, dst):
    """The endpoint src should dial to reach group dst: ipc on the same host."""
    if dst["host"] == src_host and "ipc" in dst["endpoints"]:
        return dst["endpoints"]["ipc"]
    return dst["endpoints"]["tcp"]


def keepers(groups, fixed=None):
    """Who keeps whose snapshot replica: for each group (in network order), the next
    group on another host, so that a lost host is still recoverable; failing that,
    on another worker; failing that, the next group; with one group, nobody (the
    broker keeps it). fixed: {gid: keeper gid} already decided (the group that holds
    the replica a new process must fetch). -> {gid: keeper record or None}"""
    by_gid = {g["gid"]: g for g in groups}
    out = {gid: by_gid[k] for gid, k in (fixed or {}).items()}
    for i, g in enumerate(groups):
        if g["gid"] in out:
            continue
        ring = groups[i + 1:] + groups[:i]
        out[g["gid"]] = (next((k for k in ring if k["host"] != g["host"]), None)
                         or next((k for k in ring if k.get("worker") != g.get("worker")), None)
                         or (ring[0] if ring else None))
    return out


def wiring(layers, fixed_keepers=None):
    """Per group: the setup fields for its neighbours, its keeper and its wards.

    layers: [[group record, ...] per layer]; a record has gid, lo, hi, host,
    endpoints. Forward goes to every group of the next layer; backward sends
    each group of the previous layer its columns [lo, hi) of dL/dx."""
    groups = [g for layer in layers for g in layer]
    keeper = keepers(groups, fixed_keepers)
    wards = {g["gid"]: [] for g in groups}
    for g in groups:
        if keeper[g["gid"]] is not None:
            k = keeper[g["gid"]]
            wards[k["gid"]].append([g["gid"], link(k["host"], g), g.get("key")])
    setups = {}
    for l, layer in enumerate(layers):
        prev = layers[l - 1] if l > 0 else []
        nxt = layers[l + 1] if l + 1 < len(layers) else []
        for index, g in enumerate(layer):
            setups[g["gid"]] = {
                "index": index,
                "fan_in": len(prev) or 1,   # layer 1 hears from the broker alone
                "fan_out": len(nxt) or 1,   # the last layer hears from the broker alone
                "down": [[link(g["host"], d), d["lo"], d["hi"], d.get("key")] for d in nxt],
                "up": [[link(g["host"], u), u["lo"], u["hi"], u.get("key")] for u in prev],
                "keeper": keeper[g["gid"]] and [link(g["host"], keeper[g["gid"]]), keeper[g["gid"]].get("key")],
                "wards": wards[g["gid"]],
                "broker_keeps": len(groups) == 1,  # no other process to keep its replica
            }
    return setups
