"""The shared-memory design of the ceiling bench (ceiling.py): per layer a board in /dev/shm
(a row of values and a sequence stamp per producer); the producer that sees its layer complete
wakes the consumers through their eventfds, and a consumer reads its whole row at once."""
import mmap
import os
import select
import threading
import time

import numpy as np

from .ceiling_shape import WAIT, check_alive, count, pair_inputs, react


# shm: name -> (producer slots, float64 per slot, consumers' layer). Row j of "h" is
# what B_j sends to every A (A_i reads column i); "r" counts rescues, not traffic.
BOARDS = {"x": (1, 10, "A"), "a": ("n", 1, "B"), "b": ("n", 1, "O"), "o": (1, 1, "D"),
          "t": (1, 1, "O"), "g": (1, 1, "B"), "h": ("n", "n", "A"), "s": ("n", 1, "D"), "r": ("2n+1", 1, "")}
SHM_FLOW = {"A": ("x", "a", "h", "s"), "B": ("a", "b", "g", "h"), "O": ("b", "o", "t", "g")}  # in, out: fwd, bwd
_FENCE = threading.Lock()


def fence():
    """A full memory barrier: the lock's atomic compare-and-swap (LOCK-prefixed on x86)
    drains this core's store buffer. x86 lets a load pass an earlier store, so without
    it the two last producers of a layer could each miss the other's stamp and neither
    would wake the consumers; with it at least one sees the layer complete."""
    _FENCE.acquire()
    _FENCE.release()


class Board:
    """One layer's values in a file under /dev/shm: per producer a row of float64 and
    its stamp (the pass the row holds). Made by the driver before it forks: the
    children inherit the mapping."""

    def __init__(self, path, slots, width):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, 8 * slots * (width + 1))
            self.map = mmap.mmap(fd, 8 * slots * (width + 1))
        finally:
            os.close(fd)
        self.stamp = np.frombuffer(self.map, np.int64, slots)
        self.val = np.frombuffer(self.map, np.float64, slots * width, 8 * slots).reshape(slots, width)

    def complete(self, p):
        return bool((self.stamp == p).all())

    def read(self, idx):
        """The whole vector a consumer needs at once (A_i: column i of B's rows)."""
        slots, width = self.val.shape
        return self.val[:, 0] if width == 1 else self.val[0] if slots == 1 else self.val[:, idx]

    def write(self, slot, vec, p):
        """The values, then the stamp (x86 keeps stores in order: whoever sees the stamp
        sees the values). True when this write may have completed the layer; two
        producers may both see it (a harmless extra wake), never neither (fence)."""
        self.val[slot] = vec
        self.stamp[slot] = p
        if len(self.stamp) == 1:
            return True
        fence()
        return self.complete(p)


def make_boards(n, tag):
    size = {"n": n, "2n+1": 2 * n + 1}
    boards = {}
    for name, (slots, width, _) in BOARDS.items():
        path = f"/dev/shm/ceil-{tag}-{name}"
        boards[name] = Board(path, size.get(slots, slots), size.get(width, width))
        boards[name].path = path
    return boards


def wake(wakes, role, n):
    for i in range(count(role, n)):
        os.eventfd_write(wakes[(role, i)], 1)


def await_board(board, p, poller, fd, alive, deadline=None):
    """Blocks until every producer's stamp on board is p, woken through this process's
    eventfd. Returns 1 if it found the board complete after a second without a wake
    (a missed wake would show here as a rescue), else 0."""
    while not board.complete(p):
        if poller.poll(1000):
            try:
                os.eventfd_read(fd)  # resets the count: extra wakes fold into one
            except BlockingIOError:
                pass
        elif board.complete(p):
            return 1
        elif not alive() or deadline and time.monotonic() > deadline:
            raise TimeoutError(f"pass {p} never completed")
    return 0


def shm_child(boards, wakes, role, idx, n, driver):
    fd = wakes[(role, idx)]
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    alive = lambda: os.getppid() == driver  # noqa: E731
    me = {"A": idx, "B": n + idx, "O": 2 * n}[role]
    p = 1
    while alive():
        src, dst = SHM_FLOW[role][:2] if p % 2 else SHM_FLOW[role][2:]
        boards["r"].val[me, 0] += await_board(boards[src], p, poller, fd, alive)
        _, vec, _ = react(role, idx, n, p, boards[src].read(idx))
        if boards[dst].write(idx, vec, p):
            wake(wakes, BOARDS[dst][2], n)
        p += 1


class ShmDriver:
    def __init__(self, boards, wakes, n, kids):
        self.boards, self.wakes, self.n, self.kids = boards, wakes, n, kids
        self.fd, self.rescued = wakes[("D", 0)], 0
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def pair(self, k):
        x, t = pair_inputs(k)
        self.send("x", x, 2 * k + 1, "A")
        o = self.wait("o", 2 * k + 1)[0]
        self.send("t", t, 2 * k + 2, "O")
        return o, self.wait("s", 2 * k + 2).copy()

    def send(self, name, vec, p, role):
        self.boards[name].write(0, vec, p)
        wake(self.wakes, role, self.n)

    def wait(self, name, p):
        deadline = time.monotonic() + WAIT
        alive = lambda: check_alive(self.kids, deadline)  # noqa: E731
        self.rescued += await_board(self.boards[name], p, self.poller, self.fd, alive, deadline)
        return self.boards[name].read(0)

    def rescues(self):
        return int(self.boards["r"].val.sum()) + self.rescued
