"""The ceiling of each transport design for the per-neuron topology, with no
neural-network logic: bare processes shaped [10, n, n, 1] (n processes in
layer A, n in layer B, one output process O, and this process, the driver D,
standing in for the client).

One pair is an online step: forward D -> every A (the 10 inputs), every A ->
every B (n*n parts of one float64), every B -> O, O -> D; backward D -> O (the
target), O -> every B, every B -> every A (n*n parts), every A -> D. Each
process counts the parts of a pass (its fan-in is known), files them into a
preallocated row, does a trivial sum and sends on, as the real mesh does.

In this topology every connection carries ONE small message per pass, so a
message-per-edge design pays libzmq's whole wake path (app thread -> its I/O
thread -> kernel -> the peer's I/O thread -> the peer's app thread) about 2n^2
times a pair. The designs measured side by side:

  push         today's wiring: a PULL inbox per process, a PUSH to each neighbour
  pair-router  one ROUTER per process, ONE connection per pair of neighbours
  pub          an XPUB per process, a SUB to each neighbour's XPUB, topic = layer
  shm          per-layer boards in /dev/shm (value + sequence stamp per producer);
               the producer that sees its layer complete wakes the consumers
               through their eventfds: about 4n wakes a pair instead of 2n^2 messages

For each: pairs/s (median, min-max over rounds), CPU ms per pair of all the
processes (the driver and every child: utime+stime from /proc, which counts
libzmq's I/O threads too) and PSS per A/B process after traffic.

`python -m mesh.bench.ceiling [--n 100] [--seconds 5] [--rounds 3]`. It forks its
children before any zmq context exists in this process (as mesh.bench.ring)."""
import argparse
import ctypes
import gc
import json
import os
import resource
import signal
import statistics
import struct
import sys
import time
import traceback

import numpy as np
import zmq

from ..procstat import cpu_seconds, pss_bytes
from .ceiling_shape import WAIT, check_alive, count, expected, fan_in, pair_inputs, peers, react
from .ceiling_shm import ShmDriver, make_boards, shm_child
from .common import fmt_spread, table
from .forked import end

DESIGNS = ("push", "pair-router", "pub", "shm")
HDR = struct.Struct("<qii")  # pass number, source index, 1 when the payload holds one value per consumer
RANK = {"D": 0, "A": 1, "B": 2, "O": 3}  # of a pair of neighbours, the lower connects (pair-router)


class Inbox:
    """Files the parts of the current pass into a preallocated row by source index;
    a part of another pass while one is half gathered (a doubled message) is an error."""

    def __init__(self, role, idx, n):
        self.role, self.idx, self.n = role, idx, n
        self.row, self.p, self.got, self.done = np.zeros(n), 0, 0, 0

    def file(self, frame):
        """(pass, values) once the pass is complete, else None."""
        p, src, per = HDR.unpack_from(frame)
        v = np.frombuffer(frame, np.float64, offset=HDR.size)
        if per:
            v = v[self.idx:self.idx + 1]
        if p <= self.done or p != self.p and self.got:
            raise RuntimeError(f"{self.role}{self.idx}: a part of pass {p} after pass {self.done}, during {self.p}")
        self.p = p
        if fan_in(self.role, p, self.n) > 1:
            self.row[src] = v[0]
            self.got += 1
            if self.got < self.n:
                return None
            self.got, v = 0, self.row
        self.done = p
        return p, v


def addr(tag, role, idx):
    """An abstract unix socket (no file): tag holds the driver's pid, so two runs never collide."""
    return f"ipc://@ceil-{tag}-{role}{idx}"


def opts(sock):
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, int(WAIT * 1000))  # a send blocked that long raises: no hang
    return sock


class Push:
    """Today's wiring: one PULL inbox bound per process, one PUSH connected to each
    neighbour's inbox (an A-B pair has two connections, one each way)."""

    def __init__(self, ctx, tag, role, idx, n):
        self.n, self.src = n, idx
        self.inbox = opts(ctx.socket(zmq.PULL))
        self.inbox.bind(addr(tag, role, idx))
        self.out = {}
        for peer in peers(role, n):
            self.out[peer] = opts(ctx.socket(zmq.PUSH))
            self.out[peer].connect(addr(tag, *peer))

    def handshake(self, deadline):
        """Nothing to wait for: a PUSH queues what it sends until its connection is up."""

    def emit(self, role, p, vec, per):
        head = HDR.pack(p, self.src, 0)
        whole = head + vec.tobytes()
        for i in range(count(role, self.n)):
            self.send((role, i), head + vec[i:i + 1].tobytes() if per else whole)

    def send(self, peer, frame):
        self.out[peer].send(frame)

    def recv(self, ms):
        return self.inbox.recv() if self.inbox.poll(ms) else None


class PairRouter(Push):
    """One ROUTER per process, named by its ROUTING_ID; of each pair of neighbours the
    lower (RANK, then index) connects to the other with CONNECT_ROUTING_ID set to the
    other's name, so one connection carries both directions and both sides address
    each other by name. ROUTER_MANDATORY: a send to a peer not connected raises
    instead of being dropped silently."""

    def __init__(self, ctx, tag, role, idx, n):
        self.n, self.src = n, idx
        self.sock = s = opts(ctx.socket(zmq.ROUTER))
        s.setsockopt(zmq.ROUTING_ID, f"{role}{idx}".encode())
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.bind(addr(tag, role, idx))
        self.ids = {peer: f"{peer[0]}{peer[1]}".encode() for peer in peers(role, n)}
        self.upper = {self.ids[(r, i)] for r, i in self.ids if RANK[r] > RANK[role]}
        for r, i in self.ids:
            if self.ids[(r, i)] in self.upper:
                s.setsockopt(zmq.CONNECT_ROUTING_ID, self.ids[(r, i)])
                s.connect(addr(tag, r, i))

    def handshake(self, deadline):
        """A hello each way with every neighbour: the connecting side says hello (retried
        while the connection is not up), the bound side answers once it heard it."""
        unsent, heard = set(self.upper), set()
        while len(heard) < len(self.ids):
            for peer in list(unsent):  # every 50 ms at most: 400 processes retrying flat out starve the connects
                try:
                    self.sock.send_multipart([peer, b"hello"], flags=zmq.NOBLOCK)
                    unsent.discard(peer)
                except zmq.ZMQError as e:
                    if e.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                        raise
            ready = self.sock.poll(50)
            while ready:
                peer, _ = self.sock.recv_multipart()
                if peer not in self.upper and peer not in heard:
                    self.sock.send_multipart([peer, b"hello"])
                heard.add(peer)
                ready = self.sock.poll(0)
            if time.monotonic() > deadline:
                raise TimeoutError(f"pair-router: heard {len(heard)} of {len(self.ids)} neighbours")

    def send(self, peer, frame):
        self.sock.send_multipart([self.ids[peer], frame])

    def recv(self, ms):
        return self.sock.recv_multipart()[1] if self.sock.poll(ms) else None


class Pub(Push):
    """An XPUB bound per process and a SUB connected to every neighbour's XPUB,
    subscribed to its own layer's letter: one send reaches a whole layer (libzmq's I/O
    thread still writes one copy per connection). A part meant for one consumer each
    goes as the whole vector; each consumer takes its own element."""

    def __init__(self, ctx, tag, role, idx, n):
        self.n, self.src = n, idx
        self.pub = opts(ctx.socket(zmq.XPUB))
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription seen, not only a topic's first
        self.pub.bind(addr(tag, role, idx))
        self.sub = opts(ctx.socket(zmq.SUB))
        self.sub.setsockopt(zmq.SUBSCRIBE, role.encode())
        self.subscribers = len(peers(role, n))  # each neighbour subscribes here once
        for peer in peers(role, n):
            self.sub.connect(addr(tag, *peer))

    def handshake(self, deadline):
        """Every neighbour's subscription seen on this XPUB: from then on nothing published
        to it is dropped (a PUB drops what it sends before the subscription arrives)."""
        seen = 0
        while seen < self.subscribers:
            ready = self.pub.poll(50)
            while ready:
                seen += self.pub.recv()[:1] == b"\x01"
                ready = self.pub.poll(0)
            if time.monotonic() > deadline:
                raise TimeoutError(f"pub: {seen} of {self.subscribers} subscriptions")

    def emit(self, role, p, vec, per):
        self.pub.send(role.encode() + HDR.pack(p, self.src, int(per)) + vec.tobytes())

    def recv(self, ms):
        return self.sub.recv()[1:] if self.sub.poll(ms) else None


TRANSPORTS = {"push": Push, "pair-router": PairRouter, "pub": Pub}


def zmq_child(design, tag, role, idx, n, driver):
    """One process of the mesh: gathers each pass's parts, sums, sends on, until the driver is gone."""
    ctx = zmq.Context()
    try:
        tr = TRANSPORTS[design](ctx, tag, role, idx, n)
        tr.handshake(time.monotonic() + WAIT + n)
        ctl = opts(ctx.socket(zmq.PUSH))
        ctl.connect(addr(tag, "ctl", 0))
        ctl.send(b"ready")
        inbox = Inbox(role, idx, n)
        while os.getppid() == driver:
            frame = tr.recv(1000)
            got = frame is not None and inbox.file(frame)
            if got:
                dest, vec, per = react(role, idx, n, *got)
                tr.emit(dest, got[0], vec, per)
    finally:
        ctx.destroy(linger=0)


class ZmqDriver:
    """The driver's end of a zmq design: the client sending inputs and targets."""

    def __init__(self, ctx, design, tag, n, kids):
        self.n, self.kids = n, kids
        self.tr = TRANSPORTS[design](ctx, tag, "D", 0, n)
        self.inbox = Inbox("D", 0, n)
        ctl = opts(ctx.socket(zmq.PULL))
        ctl.bind(addr(tag, "ctl", 0))
        self.tr.handshake(time.monotonic() + WAIT + n)  # setup grows with n: n^2 connections
        for _ in kids:  # each child is ready (its handshake done) before any traffic
            if not ctl.poll(int(WAIT * 1000)):
                raise TimeoutError(f"{design}: a child never got ready")
            ctl.recv()

    def pair(self, k):
        x, t = pair_inputs(k)
        self.tr.emit("A", 2 * k + 1, x, False)
        o = self.wait(2 * k + 1)[0]
        self.tr.emit("O", 2 * k + 2, t, False)
        return o, self.wait(2 * k + 2).copy()

    def wait(self, p):
        deadline = time.monotonic() + WAIT
        while True:
            frame = self.tr.recv(1000)
            got = frame is not None and self.inbox.file(frame)
            if got:
                assert got[0] == p, (got[0], p)
                return got[1]
            if frame is None:
                check_alive(self.kids, deadline)



def fork_children(n, body):
    """Forks A0..An-1, B0..Bn-1 and O, each running body(role, idx): {(role, idx): pid}."""
    kids = {}
    libc = ctypes.CDLL(None)
    for key in [("A", i) for i in range(n)] + [("B", j) for j in range(n)] + [("O", 0)]:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the driver ends them all
                libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: gone with the driver, however it ends
                body(*key)
                code = 0
            except BaseException:
                traceback.print_exc()  # os._exit below skips the interpreter's own report
            finally:
                sys.stderr.flush()
                os._exit(code)
        kids[key] = pid
    return kids



def with_design(design, n, body):
    """body(driver, kids) on a fresh mesh of this design; every process, socket, board
    and eventfd is gone when it returns or raises."""
    me, tag = os.getpid(), f"{os.getpid()}-{design}"
    kids, ctx, boards, wakes = {}, None, {}, {}
    try:
        if design == "shm":
            boards = make_boards(n, tag)
            keys = [("A", i) for i in range(n)] + [("B", j) for j in range(n)] + [("O", 0), ("D", 0)]
            wakes = {key: os.eventfd(0, os.EFD_NONBLOCK) for key in keys}  # inherited by the children
            kids = fork_children(n, lambda r, i: shm_child(boards, wakes, r, i, n, me))
            driver = ShmDriver(boards, wakes, n, kids)
        else:
            kids = fork_children(n, lambda r, i: zmq_child(design, tag, r, i, n, me))
            ctx = zmq.Context()  # only now: the children were forked before any context
            driver = ZmqDriver(ctx, design, tag, n, kids)
        return body(driver, kids)
    finally:
        end(kids)
        if ctx is not None:
            ctx.destroy(linger=0)
        for b in boards.values():
            os.unlink(b.path)
        for fd in wakes.values():
            os.close(fd)


def verify(n, results):
    for k, o, s in results:
        want_o, want_s = expected(n, k)
        if o != want_o or not np.array_equal(s, want_s):
            raise AssertionError(f"pair {k}: O sent {o} (want {want_o}), A sent {s} (want {want_s})")


def busy_seconds():
    """CPU seconds this machine's cores have been busy (all processes, /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def measure(driver, kids, n, rounds, seconds, warm=3):
    """Pairs per second and CPU seconds per pair (driver + every child) of each round;
    median PSS (MiB) of the A and B processes after the traffic."""
    pids = [os.getpid()] + list(kids.values())
    results = [(k, *driver.pair(k)) for k in range(warm)]
    rates, cpu, others, k = [], [], [], warm
    for _ in range(rounds):
        c0, m0 = sum(map(cpu_seconds, pids)), busy_seconds()
        t0, done = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            results.append((k, *driver.pair(k)))
            k, done = k + 1, done + 1
        wall, used = time.perf_counter() - t0, sum(map(cpu_seconds, pids)) - c0
        rates.append(done / wall)
        cpu.append(used / done)
        others.append((busy_seconds() - m0 - used) / wall)  # cores other programs took meanwhile
    verify(n, results)  # after the rounds: the check costs nothing inside them
    pss = statistics.median(pss_bytes(pid) for (r, _), pid in kids.items() if r in "AB") / 2**20
    return rates, cpu, pss, getattr(driver, "rescues", lambda: None)(), statistics.median(others)


NOTES = {"push": "2n^2+4n+2 messages a pair; 2 connections per A-B pair",
         "pair-router": "same messages; 1 connection per A-B pair",
         "pub": "same deliveries (2n^2+4n+2); 4n+4 sends a pair",
         "shm": "no messages; ~4n+4 eventfd wakes a pair"}


def bench(n, rounds, seconds, designs):
    rows = []
    for design in designs:
        t = time.perf_counter()
        rates, cpu, pss, rescues, others = with_design(design, n, lambda d, kids: measure(d, kids, n, rounds, seconds))
        note = NOTES[design] + f"; setup+run {time.perf_counter() - t:.0f}s; other programs {others:.2f} cores"
        if rescues is not None:
            note += f"; rescues {rescues}"
        rows.append([design, fmt_spread(rates), f"{statistics.median(cpu) * 1e3:.1f}", f"{pss:.1f}", note])
        print(f"# {design}: {rows[-1][1]} pairs/s", file=sys.stderr, flush=True)
    return rows


def check(n, pairs, designs):
    """{design: [[o, [s...]], ...]}: what O and every A sent back in each of `pairs` pairs."""
    return {d: with_design(d, n, lambda drv, kids: [[o, s.tolist()] for o, s in map(drv.pair, range(pairs))])
            for d in designs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="processes in each hidden layer")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of a round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--check", type=int, metavar="PAIRS", help="print what came back of PAIRS pairs as JSON")
    args = ap.parse_args(argv)
    designs = args.designs.split(",")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a B's sockets and connections: ~3n fds
    gc.freeze()  # as the spawner: what is here now stays shared with every child (PSS)
    if args.check:
        print(json.dumps(check(args.n, args.check, designs)))
        return
    print(f"[10, {args.n}, {args.n}, 1]: {2 * args.n + 1} processes + the driver, "
          f"{args.rounds} rounds of {args.seconds:g}s")
    header = ["design", "pairs/s median (min-max)", "CPU ms per pair", "PSS per process MiB (median)", "notes"]
    print(table(header, bench(args.n, args.rounds, args.seconds, designs)))


if __name__ == "__main__":
    main()

