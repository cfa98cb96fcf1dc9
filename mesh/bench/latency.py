"""Predict latency of one row through [2, 5, 5, 1], at one process per neuron
and one per layer, beside the raw one-hop pyzmq latency measured in the same
run: a PUSH/PULL ping-pong of 1 KiB between two processes over ipc."""
import os
import time

import numpy as np
import zmq

from ..sockets import abstract_ipc
from .common import predict_seconds

HOPS = 6  # client -> broker -> layer 1 -> layer 2 -> layer 3 -> broker -> client


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
    net = client.create([5, 5, 1], group_size=group_size, seed=0)
    try:
        us = np.array(predict_seconds(net, [0.3, 0.7], n, warm=50)) * 1e6
        return float(np.percentile(us, 50)), float(np.percentile(us, 99)), len(net.processes())
    finally:
        net.drop()


def run(client, n=500, log=print, hop=None):
    """hop: (p50, p99) measured earlier, by a process that held no zmq context when it forked."""
    hop50, hop99 = hop or one_hop()
    log(f"  raw pyzmq one hop: p50 {hop50:.0f} us, p99 {hop99:.0f} us")
    rows = []
    for gs, label in ((None, "whole layer"), (1, "one per neuron")):
        p50, p99, procs = predict_latency(client, gs, n)
        log(f"  [2,5,5,1] {label}: p50 {p50:.0f} us, p99 {p99:.0f} us")
        rows.append({"groups": f"{label} ({procs} processes)", "p50 us": f"{p50:.0f}", "p99 us": f"{p99:.0f}",
                     "hops x raw hop": f"{HOPS} x {hop50:.0f} = {HOPS * hop50:.0f}",
                     "p50 / (hops x hop)": f"{p50 / (HOPS * hop50):.2f}"})
    return rows


COLUMNS = ["groups", "p50 us", "p99 us", "hops x raw hop", "p50 / (hops x hop)"]
