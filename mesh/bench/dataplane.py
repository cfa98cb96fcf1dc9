"""What one data message costs: N upstream groups' forward parts into one group of one neuron
(the per-neuron fan-in), sent as the groups send them and handled by a real Group in a
process of its own. CPU of both processes (getrusage: zmq's I/O threads included) per
message, from the first part sent to the last output heard: send + receive + filing, and the
group's forward once per pass of N parts."""
import multiprocessing as mp
import os
import resource

import numpy as np
import zmq

from .. import sockets, wire

TOKEN = "b" * 32


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _group(fan_in, sink, conn):
    """The receiving group: layer 2, one neuron, fan-in parts of one column each."""
    from ..group import Group
    ctx = zmq.Context()
    g = Group(ctx, {"net": "n1", "gid": "n1.2.0", "layer": 1, "lo": 0, "hi": 1, "dtype": "float64",
                    "token": TOKEN, "listen": "127.0.0.1", "advertise": "127.0.0.1", "broker_inbox": sink,
                    "ipc_dir": f"@neuromesh-bench-{os.getpid()}"})
    g.setup({"function": "tanh", "index": 0, "fan_in": fan_in, "fan_out": 1, "down": [],
             "up": [["tcp://127.0.0.1:9", i, i + 1, None, 0] for i in range(fan_in)]},
            [np.ones((1, fan_in)) / fan_in, np.zeros(1)])
    conn.send(g.endpoints["ipc"])
    conn.recv()  # the senders are connected
    start = _cpu()
    g.run()  # its own loop: poll, then drain what is there
    conn.send(_cpu() - start)
    ctx.destroy(linger=0)


def message_cost(fan_in, passes, rows=1):
    """(send us, receive-and-file us) of CPU per message, and whether every pass came out right."""
    ctx = zmq.Context()
    sink = sockets.make(ctx, zmq.PULL, bind=sockets.abstract_ipc("bench-sink"))
    here, there = mp.Pipe()
    child = mp.get_context("fork").Process(target=_group, args=(fan_in, sockets.bound_endpoint(sink), there))
    child.start()
    try:
        inbox = here.recv()
        socks = [sockets.make(ctx, zmq.PUSH, connect=inbox) for _ in range(fan_in)]
        x = np.random.default_rng(0).normal(size=(rows, fan_in))
        parts = [np.ascontiguousarray(x[:, i:i + 1]) for i in range(fan_in)]
        for s in socks:  # every connection up before the clock starts
            s.poll(5000, zmq.POLLOUT)
        assert sink.poll(10_000)  # the group's READY (its HELLO and heartbeats come later, and are skipped)
        sink.recv_multipart()
        here.send("go")
        tok, fwd = wire.token_bytes(TOKEN), wire.DATA_CODE[wire.FWD]
        start = _cpu()
        for seq in range(passes):  # each part as an upstream group sends it (datapath.DataPath.forward)
            for src, (s, part) in enumerate(zip(socks, parts)):
                s.send(wire.data(fwd, 0, (tok, 1, 1, 0, 0, 0, seq, 0, 0, 0, src, 0, 0, 0.0, b"", 0, b""), part))
        sent = _cpu() - start
        outs = 0
        while outs < passes:
            assert sink.poll(60_000), f"{outs} of {passes} outputs came"
            _, h, arrays = sockets.recv(sink)
            if h["k"] == wire.OUT:
                np.testing.assert_allclose(arrays[0][:, 0], np.tanh(x.mean(axis=1)))
                outs += 1
        sockets.send(socks[0], {"k": wire.STOP, "net": "n1", "tok": TOKEN})
        received = here.recv()
        n = fan_in * passes
        return sent / n * 1e6, received / n * 1e6
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
        ctx.destroy(linger=0)


COLUMNS = ["fan-in", "messages", "send us", "receive+file us", "total us/message"]


def run(rounds=3, fan_ins=(100, 400), passes=200, log=print):
    rows = []
    for n in fan_ins:
        got = sorted((message_cost(n, passes) for _ in range(rounds)), key=sum)
        med = got[len(got) // 2]
        totals = [sum(g) for g in got]
        rows.append({"fan-in": n, "messages": n * passes, "send us": f"{med[0]:.1f}",
                     "receive+file us": f"{med[1]:.1f}",
                     "total us/message": f"{sum(med):.1f} ({min(totals):.1f}-{max(totals):.1f})"})
        log(f"  fan-in {n}: {rows[-1]['total us/message']} us of CPU per data message")
    return rows


def per_neuron(ns=(16, 64, 100), seconds=3.0, log=print):
    """The original's online test (predict one row, wait, backprop it, wait) on [n, n, 1] over
    10 inputs, one process per neuron: rows of scaling.measure."""
    from ..localmesh import LocalMesh
    from . import scaling
    rows = []
    with LocalMesh(workers=2, timeout=600, start_timeout=120) as client:
        rng = np.random.default_rng(0)
        for n in ns:
            rows += scaling.measure(client, n, 1, (1,), seconds, 100_000, rng, log)
    return rows


ONLINE_COLUMNS = ["n", "processes", "create s", "pairs/s", "the original", "cores"]


def online_table(rows):
    out = []
    for r in rows:
        out.append({"n": r["n"], "processes": r["processes"], "create s": f"{r['create_s']:.1f}",
                    "pairs/s": r.get("error") or f"{r['pairs_per_s']:.2f}",
                    "the original": r.get("original_pairs_per_s", "-"), "cores": f"{r.get('cores', 0):.2f}"})
    return out
