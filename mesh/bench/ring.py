"""The floor of a chain of dependent hops: one message around a ring of
processes that only relay it (pyzmq PUSH/PULL over abstract unix sockets, the
frames received and sent on, no JSON, no numpy). An online step is such a
chain (layer 1 -> 2 -> 3 -> 2 -> 1: four hops), so round trips per second of a
ring of four bound the pairs per second any mesh of three layer processes can
reach on this machine.

Run in its own process (`python -m mesh.bench.ring HOPS N [BYTES]`): it forks, which is
safe only before a zmq context exists."""
import os
import subprocess
import sys
import time

import numpy as np
import zmq

from ..sockets import abstract_ipc


def ends(ctx, inbox, onward):
    """A bare PULL bound at inbox and PUSH to onward: none of mesh.sockets' options."""
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for s in (pull, push):
        s.setsockopt(zmq.LINGER, 0)
    pull.bind(inbox)
    push.connect(onward)
    return pull, push


def relay(inbox, onward, n):
    ctx = zmq.Context()
    try:
        pull, push = ends(ctx, inbox, onward)
        for _ in range(n):
            if not pull.poll(10_000):
                break
            push.send_multipart(pull.recv_multipart())
    finally:
        # not linger=0: the last message may still be queued in this process when the
        # loop ends, and linger=0 drops it (the driver then waited 10 s for its last trip)
        ctx.destroy(linger=1000)


def apart(hops=4, n=2000, size=1024):
    """ring(hops, n, size=size) in a process of its own: callable where a zmq context exists."""
    out = subprocess.run([sys.executable, "-m", "mesh.bench.ring", str(hops), str(n), str(size)], capture_output=True,
                         text=True, timeout=300, check=True, stdin=subprocess.DEVNULL)
    rate, hop = out.stdout.split()
    return float(rate), float(hop)


def ring(hops=4, n=2000, warm=100, size=1024):
    """Median round trips per second (and the median hop in us) of one message of `size`
    bytes around `hops` processes: this one and hops - 1 relays."""
    med = float(np.median(round_trips(hops, n, warm, size)))
    return 1 / med, med / hops * 1e6


def round_trips(hops, n, warm=100, size=1024):
    """Seconds of each of n trips of one message (1 KiB unless told) around this process and hops - 1 relays."""
    names = [abstract_ipc(f"ring{i}") for i in range(hops)]
    kids = []
    for i in range(1, hops):
        pid = os.fork()
        if pid == 0:
            try:
                relay(names[i], names[(i + 1) % hops], n + warm)
            finally:
                os._exit(0)
        kids.append(pid)
    ctx = zmq.Context()
    try:
        pull, push = ends(ctx, names[0], names[1])
        times = []
        for i in range(n + warm):
            t = time.perf_counter()
            push.send_multipart([b"x" * size])
            if not pull.poll(10_000):
                raise TimeoutError("a relay of the ring did not pass the message on")
            pull.recv_multipart()
            if i >= warm:
                times.append(time.perf_counter() - t)
    finally:
        ctx.destroy(linger=0)
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    return times


if __name__ == "__main__":
    rate, hop = ring(int(sys.argv[1]), int(sys.argv[2]), size=int(sys.argv[3]) if len(sys.argv) > 3 else 1024)
    print(f"{rate:.1f} {hop:.1f}")
