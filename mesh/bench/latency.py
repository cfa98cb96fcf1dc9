"""Predict latency of one row through [2, 5, 5, 1], at one process per neuron
and one per layer, beside the raw one-hop pyzmq latency measured in the same
run: a PUSH/PULL ping-pong of 1 KiB between two processes over ipc.

Each network is asked both ways, in alternating blocks: direct (the client
holds a lease and sends layer 1 the row itself: four hops, direct.py) and
through the broker (six hops: client -> broker -> 3 layers -> broker ->
client). The ratio asked for divides by six raw hops either way."""
import os
import time

import numpy as np
import zmq

from ..client import Client
from ..sockets import abstract_ipc
from .common import predict_seconds

HOPS = 6  # client -> broker -> layer 1 -> layer 2 -> layer 3 -> broker -> client
BLOCKS = 5  # alternating blocks of calls, direct and through the broker: the machine's moods hit both


def one_hop(n=2000):
    """Median and p99 of half a round trip between two fresh processes (us)."""
    a, b = abstract_ipc("hop-a"), abstract_ipc("hop-b")  # no file anywhere: nothing left behind
    pid = os.fork()
    if pid == 0:  # the echo: no zmq context existed before the fork
        try:
            ctx = zmq.Context()
            pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
            for s in (pull, push):
                s.setsockopt(zmq.LINGER, 0)
            pull.bind(b)
            push.connect(a)
            for _ in range(n + 100):
                if not pull.poll(10_000):
                    break
                push.send_multipart(pull.recv_multipart())
            ctx.destroy(linger=0)
        finally:
            os._exit(0)
    ctx = zmq.Context()
    try:
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        for s in (pull, push):
            s.setsockopt(zmq.LINGER, 0)
        pull.bind(a)
        push.connect(b)
        msg, ts = [b"x" * 1024], []
        for i in range(n + 100):
            t = time.perf_counter()
            push.send_multipart(msg)
            if not pull.poll(10_000):
                raise TimeoutError("the echo process did not answer")
            pull.recv_multipart()
            if i >= 100:
                ts.append((time.perf_counter() - t) / 2)
    finally:
        ctx.destroy(linger=0)
        os.waitpid(pid, 0)
    us = np.array(ts) * 1e6
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
