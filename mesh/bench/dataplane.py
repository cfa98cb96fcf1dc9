"""What one data message costs: N upstream groups' forward parts into one group of one neuron
(the per-neuron fan-in), sent as the groups send them and handled by a real Group in a
process of its own. CPU of both processes (getrusage: zmq's I/O threads included) per
message, from the first part sent to the last output heard: send + receive + filing, and the
group's forward once per pass of N parts.

Measured side by side in one run, rounds alternating: the group's loop compiled
(mesh/_fastpath.pyx) and pure Python (mesh/fastpath.py), and a bare pyzmq PUSH -> PULL of
messages of the same size (no parsing, no filing: the transport's floor). `breakdown` says
where a message's microseconds go inside the processes, in one process with no I/O thread:
building it, sending it, receiving it, and handling it on each path."""
import multiprocessing as mp
import os
import resource
import time

import numpy as np
import zmq

from .. import fastpath, sockets, wire

TOKEN = "b" * 32
TARGET_US = 5.0  # issue 23: CPU per data message in bulk, send + receive + filing
PATHS = ("compiled", "pure Python") if fastpath.compiled is not None else ("pure Python",)


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _parts(fan_in, rows=1):
    x = np.random.default_rng(0).normal(size=(rows, fan_in))
    return x, [np.ascontiguousarray(x[:, i:i + 1]) for i in range(fan_in)]


def _message(seq, src, part):
    """A forward part as an upstream group builds it (datapath.DataPath.forward)."""
    return fastpath.data(_FWD, 0, (_TOK, 1, 1, 0, 0, 0, seq, 0, 0, 0, src, 0, 0, 0.0, b"", 0, b""), part)


_FWD, _TOK = wire.DATA_CODE[wire.FWD], wire.token_bytes(TOKEN)


def _make_group(ctx, fan_in, sink):
    """The receiving group: layer 2, one neuron, fan-in parts of one column each."""
    from ..group import Group
    g = Group(ctx, {"net": "n1", "gid": "n1.2.0", "layer": 1, "lo": 0, "hi": 1, "dtype": "float64",
                    "token": TOKEN, "listen": "127.0.0.1", "advertise": "127.0.0.1", "broker_inbox": sink,
                    "ipc_dir": f"@neuromesh-bench-{os.getpid()}-{os.urandom(4).hex()}"})
    g.setup({"function": "tanh", "index": 0, "fan_in": fan_in, "fan_out": 1, "down": [],
             "up": [["tcp://127.0.0.1:9", i, i + 1, None, 0] for i in range(fan_in)]},
            [np.ones((1, fan_in)) / fan_in, np.zeros(1)])
    return g


def _group(fan_in, sink, conn, path):
    fastpath.use(path)
    ctx = zmq.Context()
    g = _make_group(ctx, fan_in, sink)
    conn.send(g.endpoints["ipc"])
    conn.recv()  # the senders are connected
    start = _cpu()
    g.run()  # its own loop: poll, then drain what is there
    conn.send(_cpu() - start)
    ctx.destroy(linger=0)


def message_cost(fan_in, passes, rows=1, path=fastpath.KIND):
    """(send us, receive-and-file us) of CPU per message, on `path` (the group's loop and the
    senders' send); every pass's output is checked."""
    fastpath.use(path)
    ctx = zmq.Context()
    sink = sockets.make(ctx, zmq.PULL, bind=sockets.abstract_ipc("bench-sink"))
    here, there = mp.Pipe()
    child = mp.get_context("fork").Process(target=_group, args=(fan_in, sockets.bound_endpoint(sink), there, path))
    child.start()
    try:
        inbox = here.recv()
        socks = [sockets.make(ctx, zmq.PUSH, connect=inbox) for _ in range(fan_in)]
        x, parts = _parts(fan_in, rows)
        send_each = fastpath.send_each
        for s in socks:  # every connection up before the clock starts
            s.poll(5000, zmq.POLLOUT)
        assert sink.poll(10_000)  # the group's READY (its HELLO and heartbeats come later, and are skipped)
        sink.recv_multipart()
        here.send("go")
        ones = [[s] for s in socks]
        start = _cpu()
        for seq in range(passes):  # each part as an upstream group sends it (datapath.DataPath.forward)
            for src, (s, part) in enumerate(zip(ones, parts)):
                send_each(s, _message(seq, src, part))
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
        _end(child, ctx)


def _bare_receiver(endpoint, total, conn):
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 0)
    pull.bind(endpoint)
    conn.send("ready")
    conn.recv()
    start, recv = _cpu(), pull.recv
    for _ in range(total):
        recv()
    conn.send(_cpu() - start)
    ctx.destroy(linger=0)


def bare_cost(fan_in, passes):
    """(send us, receive us) of a bare pyzmq PUSH -> PULL, N sockets into one, of messages of
    the same size, received as bytes and not looked at: the floor under any data path."""
    ctx = zmq.Context()
    endpoint = sockets.abstract_ipc("bench-bare")
    here, there = mp.Pipe()
    child = mp.get_context("fork").Process(target=_bare_receiver, args=(endpoint, fan_in * passes, there))
    child.start()
    try:
        here.recv()
        socks = [ctx.socket(zmq.PUSH) for _ in range(fan_in)]
        for s in socks:
            s.setsockopt(zmq.SNDHWM, 0)
            s.connect(endpoint)
        for s in socks:
            s.poll(5000, zmq.POLLOUT)
        msg = _message(0, 0, np.zeros((1, 1)))
        here.send("go")
        start = _cpu()
        for _ in range(passes):
            for s in socks:
                s.send(msg)
        sent = _cpu() - start
        received = here.recv()
        n = fan_in * passes
        return sent / n * 1e6, received / n * 1e6
    finally:
        _end(child, ctx)


def breakdown(fan_in=100, passes=200):
    """Where a message's microseconds go inside the processes (one process, inproc, no I/O
    thread, each step timed over every message): {step: us per message}."""
    ctx = zmq.Context()
    out = {}
    try:
        sink = sockets.make(ctx, zmq.PULL, bind=sockets.abstract_ipc("bench-sink"))
        _, parts = _parts(fan_in)
        n = fan_in * passes

        def timed(name, f, *args):
            start = time.process_time()
            f(*args)
            out[name] = (time.process_time() - start) / n * 1e6

        msgs = []
        for path in PATHS:
            fastpath.use(path)
            msgs.clear()
            timed(f"build, {path} ({'the compiled twin of ' if path == 'compiled' else ''}wire.data)",
                  lambda: msgs.extend(_message(seq, src, parts[src]) for seq in range(passes) for src in range(fan_in)))
        for path in PATHS:
            fastpath.use(path)
            g = _make_group(ctx, fan_in, sockets.bound_endpoint(sink))
            feed = ctx.socket(zmq.PUSH)
            feed.setsockopt(zmq.SNDHWM, 0)
            endpoint = f"inproc://bench-{os.getpid()}-{path.replace(' ', '-')}"
            g.inbox.setsockopt(zmq.RCVHWM, 0)
            g.inbox.bind(endpoint)
            feed.connect(endpoint)
            one = [feed]

            def send():
                for m in msgs:
                    fastpath.send_each(one, m)

            def serve():  # the group's loop, until the STOP after the messages
                g.serve()
                g.state.running = True

            def recv():
                for _ in range(n + 1):
                    g.inbox.recv()
            stop = wire.pack({"k": wire.STOP, "net": "n1", "tok": TOKEN})
            timed(f"send, {path} (send_each, inproc)", send)
            feed.send_multipart(stop)
            timed(f"receive as bytes (recv), {path} run", recv)
            send()
            feed.send_multipart(stop)
            timed(f"receive and handle, {path} (Group.serve)", serve)
            while sink.poll(0):  # the outputs
                sink.recv_multipart()
            feed.close(0)
            g.inbox.close(0)
            g.broker.close(0)
        return out
    finally:
        fastpath.use(PATHS[0])
        ctx.destroy(linger=0)


def _end(child, ctx):
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
    ctx.destroy(linger=0)


COLUMNS = ["fan-in", "path", "messages", "send us", "receive+file us", "total us/message", "target"]


def _summary(got):
    """(median, min, max) of a list of (send, receive) pairs, by their sum; the median pair."""
    got = sorted(got, key=sum)
    totals = [sum(g) for g in got]
    return got[len(got) // 2], min(totals), max(totals)


def run(rounds=3, fan_ins=(100, 400), passes=200, log=print):
    """Each path and the bare baseline, alternating within each round; medians (min-max)."""
    rows = []
    for n in fan_ins:
        got = {path: [] for path in (*PATHS, "bare pyzmq")}
        for _ in range(rounds):
            for path in got:
                got[path].append(bare_cost(n, passes) if path == "bare pyzmq" else message_cost(n, passes, path=path))
        for path, costs in got.items():
            med, lo, hi = _summary(costs)
            rows.append({"fan-in": n, "path": path, "messages": n * passes, "send us": f"{med[0]:.1f}",
                         "receive+file us": f"{med[1]:.1f}", "total us/message": f"{sum(med):.1f} ({lo:.1f}-{hi:.1f})",
                         "target": "-" if path == "bare pyzmq" else
                         f"{'met' if round(sum(med), 1) <= TARGET_US else 'not met'} (<= {TARGET_US:g})"})
            log(f"  fan-in {n}, {path}: {rows[-1]['total us/message']} us of CPU per data message")
    fastpath.use(PATHS[0])
    return rows


BREAKDOWN_COLUMNS = ["step", "us per message"]


def breakdown_table(fan_in=100, passes=200):
    return [{"step": k, "us per message": f"{v:.2f}"} for k, v in breakdown(fan_in, passes).items()]
