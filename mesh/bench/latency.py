"""Predict latency of one row through [2, 5, 5, 1], at one process per neuron
and one per layer, beside the raw one-hop pyzmq latency: a PUSH/PULL
ping-pong of 1 KiB between two processes over ipc (ring.py).

Each network is asked both ways in alternating blocks: direct (the client
holds a lease and sends layer 1 the row itself: four hops, direct.py) and
through the broker (six hops: client -> broker -> 3 layers -> broker ->
client). Each block starts with its own raw hop, so every ratio divides
numbers measured minutes apart at most, never across the machine's moods;
the ratio asked for divides by six raw hops either way."""
import statistics

import numpy as np

from ..client import Client
from .common import fmt_spread, predict_seconds
from .ring import apart

HOPS = 6  # client -> broker -> layer 1 -> layer 2 -> layer 3 -> broker -> client
BLOCKS = 5  # alternating blocks of calls, direct and through the broker: the machine's moods hit both


def predict_latency(client, group_size, n=500):
    """{way: (p50 us, p99 us, [p50 / (HOPS x raw hop) of each block])} for predicts direct and
    through the broker; the raw hops (us) of the blocks; the process count."""
    net = client.create([5, 5, 1], group_size=group_size, seed=0)
    other = None
    try:
        other = Client(client.address, timeout=client.timeout, direct_predicts=False)
        net.predict([0.3, 0.7], remember=False)  # sizes layer 1
        ways = {"through the broker": other.network(net.id)}
        if client.direct is not None:  # none with keys (MESH_KEYS): predicts then all go through the broker
            ways = {"direct": net, **ways}
        times, ratios, hops = {way: [] for way in ways}, {way: [] for way in ways}, []
        before = dict(client.direct.counts) if client.direct else None
        for b in range(BLOCKS):
            hops.append(apart(2, 500)[1])
            for way, handle in ways.items():
                t = predict_seconds(handle, [0.3, 0.7], max(1, n // BLOCKS), warm=10 if b else 50)
                times[way] += t
                ratios[way].append(statistics.median(t) * 1e6 / (HOPS * hops[-1]))
        if before is not None and client.direct.counts["broker"] != before["broker"]:
            raise RuntimeError(f"the direct predicts went through the broker: {client.direct.counts}")
        us = {way: np.array(t) * 1e6 for way, t in times.items()}
        return {way: (float(np.percentile(u, 50)), float(np.percentile(u, 99)), ratios[way]) for way, u in us.items()}, \
            hops, len(net.processes())
    finally:
        if other is not None:
            other.close()
        net.drop()


def run(client, n=500, log=print):
    rows = []
    for gs, label in ((None, "whole layer"), (1, "one per neuron")):
        ways, hops, procs = predict_latency(client, gs, n)
        log(f"  raw pyzmq hop, one per block: {', '.join(f'{h:.0f}' for h in hops)} us")
        for way, (p50, p99, ratios) in ways.items():
            log(f"  [2,5,5,1] {label}, {way}: p50 {p50:.0f} us, p99 {p99:.0f} us")
            rows.append({"groups": f"{label} ({procs} processes)", "way": way, "p50 us": f"{p50:.0f}",
                         "p99 us": f"{p99:.0f}", "raw hop us": fmt_spread(hops, 0),
                         "p50 / (6 x hop)": fmt_spread(ratios)})
    return rows


COLUMNS = ["groups", "way", "p50 us", "p99 us", "raw hop us", "p50 / (6 x hop)"]
