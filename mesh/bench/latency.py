"""Predict latency of one row through [2, 5, 5, 1], at one process per neuron
and one per layer, beside the raw one-hop pyzmq latency measured in the same
run: a PUSH/PULL ping-pong of 1 KiB between two processes over ipc.

Each network is asked both ways, in alternating blocks: direct (the client
holds a lease and sends layer 1 the row itself: four hops, direct.py) and
through the broker (six hops: client -> broker -> 3 layers -> broker ->
client). The ratio asked for divides by six raw hops either way."""

import numpy as np

from ..client import Client
from .common import predict_seconds
from .ring import round_trips

HOPS = 6  # client -> broker -> layer 1 -> layer 2 -> layer 3 -> broker -> client
BLOCKS = 5  # alternating blocks of calls, direct and through the broker: the machine's moods hit both


def one_hop(n=2000):
    """Median and p99 of half a round trip between two fresh processes (us)."""
    us = np.array(round_trips(2, n)) / 2 * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def predict_latency(client, group_size, n=500):
    """{way: (p50, p99) in us} for predicts direct and through the broker; the process count."""
    net = client.create([5, 5, 1], group_size=group_size, seed=0)
    other = Client(client.address, timeout=client.timeout, direct_predicts=False)
    try:
        net.predict([0.3, 0.7], remember=False)  # sizes layer 1
        ways = {"direct": net, "through the broker": other.network(net.id)}
        times = {way: [] for way in ways}
        before = dict(client.direct.counts) if client.direct else None
        for b in range(BLOCKS):
            for way, handle in ways.items():
                times[way] += predict_seconds(handle, [0.3, 0.7], max(1, n // BLOCKS), warm=10 if b else 50)
        if before is None or client.direct.counts["broker"] != before["broker"]:
            raise RuntimeError(f"the direct predicts went through the broker: {client.direct and client.direct.counts}")
        us = {way: np.array(t) * 1e6 for way, t in times.items()}
        return {way: (float(np.percentile(u, 50)), float(np.percentile(u, 99))) for way, u in us.items()}, \
            len(net.processes())
    finally:
        other.close()
        net.drop()


def run(client, n=500, log=print, hop=None):
    """hop: (p50, p99) measured earlier, by a process that held no zmq context when it forked."""
    hop50, hop99 = hop or one_hop()
    log(f"  raw pyzmq one hop: p50 {hop50:.0f} us, p99 {hop99:.0f} us")
    rows = []
    for gs, label in ((None, "whole layer"), (1, "one per neuron")):
        ways, procs = predict_latency(client, gs, n)
        for way, (p50, p99) in ways.items():
            log(f"  [2,5,5,1] {label}, {way}: p50 {p50:.0f} us, p99 {p99:.0f} us")
            rows.append({"groups": f"{label} ({procs} processes)", "way": way, "p50 us": f"{p50:.0f}",
                         "p99 us": f"{p99:.0f}", "hops x raw hop": f"{HOPS} x {hop50:.0f} = {HOPS * hop50:.0f}",
                         "p50 / (hops x hop)": f"{p50 / (HOPS * hop50):.2f}"})
    return rows


COLUMNS = ["groups", "way", "p50 us", "p99 us", "hops x raw hop", "p50 / (hops x hop)"]
