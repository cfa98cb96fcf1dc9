"""The floor of a same-host hop if a hop were a write into shared memory plus one
eventfd wake instead of a zmq message. mesh.bench.ring's ring (one message
around this process and hops - 1 relays, each trip depending on the last) is
measured side by side, in alternating rounds of one run, as

  zmq          mesh.bench.ring as it is: pyzmq PUSH/PULL over abstract unix sockets,
               every hop through libzmq's I/O threads on both ends (run apart: it forks)
  shm+eventfd  one mmap'd buffer from /dev/shm with a slot per process (a sequence
               number and the message) and an eventfd per process, made before
               forking; a hop is a copy into the next process's slot and one
               8-byte write to its eventfd, the waiter blocked in poll

An online step is such a chain (layer 1 -> 2 -> 3 -> 2 -> 1), so the ratio says
what a same-host shared-memory hop (mesh.bench.ceiling's shm design) could win
for it. No spinning: on two shared vCPUs a spinning waiter takes the core the
one sending to it needs.

`python -m mesh.bench.shmring [--hops 4] [--trips 2000] [--rounds 3] [--bytes 1024]`;
`--check TRIPS` prints, as JSON, the sequence number and payload (hex) of each
trip of the shm ring that came back (no warm-up), for the tests."""
import argparse
import ctypes
import json
import mmap
import os
import select
import signal
import statistics
import struct
import sys
import time
import traceback

from . import ring
from .common import fmt_spread, table
from .forked import end

SEQ = struct.Struct("<q")  # at the start of a slot: the trip its message belongs to
HEAD = 64  # the sequence number has a cache line of its own; the message starts aligned
WAIT = 10.0  # seconds a process waits for a wake before it gives up: never reached when all is well
SLICE_MS = 1000  # a wait polls in slices and checks its peers between them: a dead peer ends it early
WARM = 100  # untimed trips first, as mesh.bench.ring
PR_SET_PDEATHSIG = 1


def message(bank, k, size):
    """Trip k's message: bytes (k + i) % 251, so consecutive trips differ everywhere."""
    return bank[k % 251:k % 251 + size]


def message_bank(size):
    return bytes(i % 251 for i in range(size + 251))


class Ring:
    """Slot i (process i's inbox; process 0 is the driver) in one shared mapping, and
    eventfd i to wake process i. Made before forking: every relay inherits both."""

    def __init__(self, hops, size):
        self.hops, self.size = hops, size
        self.stride = HEAD + -(-size // 64) * 64  # slots on cache lines of their own: no false sharing
        self.path = f"/dev/shm/shmring-{os.getpid()}"
        self.map, self.view, self.fds = None, None, []

    def __enter__(self):
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        if not hasattr(os, "eventfd"):
            raise RuntimeError("os.eventfd needs Python 3.10+ on Linux")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.hops * self.stride)
            self.map = mmap.mmap(fd, self.hops * self.stride)
        finally:
            os.close(fd)
            # The mapping outlives the name (the children inherit the mapping, not the
            # name): the file is gone even if this process is killed a moment later.
            os.unlink(self.path)
        self.view = memoryview(self.map)
        # blocking eventfds (poll tells when a read will not block); CLOEXEC: the zmq
        # ring's subprocess must not hold them
        self.fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(self.hops)]

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if self.view is not None:
            self.view.release()  # before the mmap closes: an exported buffer would block it
        if self.map is not None:
            self.map.close()
        self.map = self.view = None
        if os.path.exists(self.path):  # open() failed between creating and unlinking
            os.unlink(self.path)

    def seq(self, i):
        return SEQ.unpack_from(self.map, i * self.stride)[0]

    def body(self, i):
        start = i * self.stride + HEAD
        return self.view[start:start + self.size]

    def put(self, i, k, data):
        """The message, then its sequence number, into slot i; then wake process i. The
        eventfd write is a syscall after both stores and the reader reads the slot after
        its own eventfd read: the kernel's lock on the eventfd orders them, no fence needed."""
        self.view[i * self.stride + HEAD:i * self.stride + HEAD + self.size] = data
        SEQ.pack_into(self.map, i * self.stride, k)
        os.eventfd_write(self.fds[i], 1)


def await_wake(fd, poller, alive):
    """Blocks until fd's counter is non-zero, then takes it. One message is in flight, so
    the count is exactly 1: more would be a doubled wake. Polls in slices, calling alive()
    (which raises if a peer is gone) between them; gives up after WAIT."""
    deadline = time.monotonic() + WAIT
    while not poller.poll(SLICE_MS):
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no wake in {WAIT:g}s")
    count = os.eventfd_read(fd)
    if count != 1:
        raise RuntimeError(f"{count} wakes for one message")


def poller_of(fd):
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller


def relay(rb, me, trips, driver):
    """Process me of the ring: trips times, wait for its slot, pass the message on."""
    poller, onward = poller_of(rb.fds[me]), (me + 1) % rb.hops

    def alive():
        if os.getppid() != driver:
            raise RuntimeError(f"relay {me}: the driver is gone")

    for k in range(trips):
        await_wake(rb.fds[me], poller, alive)
        got = rb.seq(me)
        if got != k:  # a trip skipped or doubled upstream
            raise RuntimeError(f"relay {me}: trip {got} where trip {k} was due")
        rb.put(onward, k, rb.body(me))


def drive(rb, trips, warm, kids, keep=False):
    """Seconds of each of `trips` timed trips (after `warm` untimed ones), and, if keep,
    (sequence number, payload) of every trip as it came back."""
    poller, bank = poller_of(rb.fds[0]), message_bank(rb.size)
    alive = lambda: check_alive(kids)  # noqa: E731
    times, back = [], []
    for k in range(warm + trips):
        msg = message(bank, k, rb.size)
        t = time.perf_counter()
        rb.put(1, k, msg)
        await_wake(rb.fds[0], poller, alive)
        dt = time.perf_counter() - t
        got, body = rb.seq(0), bytes(rb.body(0))  # a copy: bytes compare with memcmp, a memoryview per byte
        if got != k or body != msg:
            raise RuntimeError(f"driver: trip {got} came back where trip {k} was due, payload "
                               f"{'intact' if body == msg else 'changed'}")
        if k >= warm:
            times.append(dt)
        if keep:
            back.append((got, body))
    return times, back


def check_alive(kids):
    """Raises if a relay has ended: while a trip is out, every relay has trips left."""
    for me, pid in list(kids.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            del kids[me]  # reaped: end() must not wait for it again
            raise RuntimeError(f"relay {me} (pid {pid}) ended early, wait status {status}")


def fork_relays(rb, trips, kids):
    """Forks relays 1..hops-1 into kids {index: pid} (filled as it goes: the caller's
    finally ends whatever was forked, even if a later fork fails)."""
    driver, libc = os.getpid(), ctypes.CDLL(None)
    for me in range(1, rb.hops):
        pid = os.fork()
        if pid == 0:
            child(libc, driver, rb, me, trips)
        kids[me] = pid


def child(libc, driver, rb, me, trips):
    """A relay's whole life: never returns into the driver's code (os._exit)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the driver ends them all
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # gone with the driver, however it ends
        if os.getppid() == driver:  # else the driver died before prctl: no signal would come
            relay(rb, me, trips, driver)
            code = 0
    except BaseException:
        traceback.print_exc()  # before os._exit, which would drop it
    finally:
        sys.stderr.flush()
        os._exit(code)


def shm_round(hops, trips, size, warm=WARM, keep=False):
    """drive() on a fresh shm ring; every relay, the buffer and the eventfds are gone
    when it returns or raises."""
    kids = {}
    with Ring(hops, size) as rb:
        try:
            fork_relays(rb, warm + trips, kids)
            return drive(rb, trips, warm, kids, keep)
        finally:
            end(kids)


def shm_ring(hops, trips, size):
    """(round trips/s, us a hop) from the median trip, as mesh.bench.ring.ring."""
    med = statistics.median(shm_round(hops, trips, size)[0])
    return 1 / med, med / hops * 1e6


def bench(hops, trips, rounds, size):
    """{design: ([round trips/s], [us a hop])}, the designs alternating round by round
    so that a change in the machine's load falls on both."""
    runs = {"zmq": lambda: ring.apart(hops, trips, size), "shm+eventfd": lambda: shm_ring(hops, trips, size)}
    got = {design: ([], []) for design in runs}
    for r in range(rounds):
        for design, run in runs.items():
            rate, hop = run()
            got[design][0].append(rate)
            got[design][1].append(hop)
            print(f"# round {r + 1} {design}: {rate:,.0f} round trips/s, {hop:.1f} us a hop",
                  file=sys.stderr, flush=True)
    return got


NOTES = {"zmq": "mesh.bench.ring: PUSH/PULL, ipc://@ abstract unix sockets, in a subprocess",
         "shm+eventfd": "copy into the next slot + eventfd_write; wait: poll + eventfd_read"}


def report(got, hops, trips, rounds, size):
    rows = [[d, fmt_spread(rates), fmt_spread(hop_us, 1), NOTES[d]] for d, (rates, hop_us) in got.items()]
    ratio = statistics.median(got["shm+eventfd"][0]) / statistics.median(got["zmq"][0])
    return "\n".join([
        f"ring of {hops} processes (this one + {hops - 1} relays), a {size} B message, {trips} timed trips "
        f"a round after {WARM} warm, {rounds} rounds alternating; load average {os.getloadavg()[0]:.2f}",
        table(["design", "round trips/s median (min-max)", "us a hop median (min-max)", "notes"], rows),
        f"shm+eventfd / zmq: {ratio:.1f}x round trips/s (of the medians)"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hops", type=int, default=4, help="processes in the ring, this one included (2 or more)")
    ap.add_argument("--trips", type=int, default=2000, help="timed round trips a round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=1024, dest="size", help="size of the message")
    ap.add_argument("--check", type=int, metavar="TRIPS", help="print what came back of TRIPS trips (shm) as JSON")
    args = ap.parse_args(argv)
    if args.hops < 2 or args.size < 1:
        ap.error("--hops must be 2 or more and --bytes 1 or more")
    if args.check:
        _, back = shm_round(args.hops, args.check, args.size, warm=0, keep=True)
        print(json.dumps([[k, body.hex()] for k, body in back]))
        return
    print(report(bench(args.hops, args.trips, args.rounds, args.size), args.hops, args.trips, args.rounds, args.size))


if __name__ == "__main__":
    main()
