"""How much memory (and disk) a group process needs: a model, pure functions.

A group holds rows lo..hi of one layer: `rows` neurons of `fan_in` inputs each,
so P = rows x (fan_in + 1) parameters of the network's dtype (itemsize bytes).
Its resident memory, at the peak of a training step:

    weights      W and b                                     P
    gradient     dW and db, formed once per step             P
    optimizer    sgd 0, momentum 1x, adam 2x the parameters  k P
    update       an update's temporary: one block            optim.BLOCK elements (momentum,
                 (optim.py does its arithmetic by blocks)      adam; sgd 0), at most P
    transit      a replica on its way in: a stream of parts  STREAM_BYTES (keeper.py: CREDIT + 1
                 written to disk as they come                  parts), at most (1 + k) P' of the
                                                               largest group it keeps for
    activations  (x, a) kept for the passes in flight        window x pass_rows x (fan_in + rows)
    messages     a pass's input parts queued, or its dL/dx   window x pass_rows x fan_in
                 on the way back (sends borrow the arrays)
    links        zmq's buffers for each connection end in    LINK_END x (2 x (groups of the
                 this process: a socket to each neighbour,     layers before and after) + FIXED_ENDS)
                 and each neighbour's connection to its inbox
    baseline     an idle group process: its own pages        GROUP_BASELINE

(activations and messages in bytes of the dtype). A worker adds its own
WORKER_BASELINE. At a step's peak a group holds 2 copies of each parameter
with sgd (W, dW: the update is in place), 3 with momentum and 4 with adam,
and a block. The window (broker/network.py window_for) is counted in bytes
for wide layers, so a layer of 8,192 float64 inputs has 4 passes in flight.

Snapshots live on disk, in the worker's state folder (keeper.py), and are
planned against its disk budget:

    snapshots    its own last two: W, b, slots              2 (1 + k) P
    replicas     the last two of each group it keeps for    2 (1 + k) P' per such group
 The broker's window bounds the passes in flight, so it, not the
sockets' high-water mark, bounds the message buffers; under a budget the HWM is
sized from the budget all the same (sockets.limit_to), against a peer that
does not keep to the window.

Memory is measured as PSS (procstat.pss_bytes): a forked group shares the
pages of Python, numpy and zmq with its spawner, and PSS, summed over a
host's processes, is what its memory cgroup is charged (RSS counts the shared
pages once per process: 36 MiB a group). Measured here (2026-12, Python 3.11,
numpy 2, `/tmp` scripts reading /proc/PID/smaps_rollup after an epoch): a
worker, its spawner and N groups of a few neurons total 30 MiB + 7.5 MiB x N
(N = 2 and 7); one zmq connection end costs 29-30 KiB in the process that
holds it, tcp or ipc alike (400 PUSH sockets dialing one PULL); a per-neuron
[64, 64, 1] network (129 groups, ~130 connection ends each) totals 1,406 MiB,
10.7 MiB a group, where this model plans 11.3. Passes are planned at PASS_ROWS
rows (a predict chunk of 256 rows kept for a backprop, or mini-batch
micro-batches wider than that, hold more than planned).
"""
import math

from .keeper import STREAM_BYTES
from .optim import BLOCK, SLOTS
from .sizes import MiB

GROUP_BASELINE = 8 * MiB    # a group's own pages (PSS), idle after a step
WORKER_BASELINE = 30 * MiB  # a worker, its spawner and the pages its groups share with the spawner
LINK_END = 30 * 1024        # zmq's buffers for one connection end
FIXED_ENDS = 6              # the broker's connection in and the socket out to it, its heartbeat
                            # socket, its keeper's and its ward's connections
PASS_ROWS = 64
SNAPSHOTS = 2          # keeper.KEEP: own snapshots, and replicas of each group kept for
PLAN_OPTIMIZER = "adam"  # what a network is planned for unless create says otherwise: the most any training needs


def parameters(rows, fan_in):
    return rows * (fan_in + 1)


def state_bytes(rows, fan_in, itemsize, optimizer):
    """What one snapshot of a group holds: W, b and the optimizer's slots."""
    return (1 + SLOTS[optimizer]) * parameters(rows, fan_in) * itemsize


def link_ends(before, after):
    """Connection ends in a group whose neighbours are `before` groups of the layer before
    and `after` of the layer after: its sockets to them and theirs to its inbox."""
    return 2 * (before + after) + FIXED_ENDS


def group_parts(rows, fan_in, itemsize, optimizer, window, pass_rows=PASS_ROWS, kept=(), ends=FIXED_ENDS):
    """{part: bytes} of one group (see the module docstring). kept: (rows, fan_in)
    of each group whose snapshots this one keeps replicas of; ends: its connection ends."""
    p = parameters(rows, fan_in) * itemsize
    k = SLOTS[optimizer]
    in_flight = window * pass_rows * itemsize
    return {"weights": p, "gradient": p, "optimizer": k * p, "update": min(p, BLOCK * itemsize) if k else 0,
            "transit": max((min(STREAM_BYTES, state_bytes(r, f, itemsize, optimizer)) for r, f in kept), default=0),
            "activations": in_flight * (fan_in + rows), "messages": in_flight * fan_in,
            "links": LINK_END * ends, "baseline": GROUP_BASELINE}


def group_bytes(*args, **kw):
    return sum(group_parts(*args, **kw).values())


def group_disk(rows, fan_in, itemsize, optimizer, kept=()):
    """Bytes of a group's snapshot files: its own two and two of each group it keeps for."""
    return SNAPSHOTS * (state_bytes(rows, fan_in, itemsize, optimizer)
                        + sum(state_bytes(r, f, itemsize, optimizer) for r, f in kept))


def worker_bytes(group_totals):
    """A worker's planned memory: its own baseline and its groups'."""
    return WORKER_BASELINE + sum(group_totals)


def pieces_for(rows, fan_in, itemsize, optimizer, window, room, pass_rows=PASS_ROWS):
    """The fewest near-equal pieces a layer must be cut into for each to fit in
    `room` bytes, counting a replica of a piece as large as itself (the
    keeper's share), or None when no cut fits (the baseline alone is too much)."""
    def fits(k):
        r = math.ceil(rows / k)
        return group_bytes(r, fan_in, itemsize, optimizer, window, pass_rows, kept=[(r, fan_in)]) <= room
    if not fits(rows):
        return None
    lo, hi = 1, rows  # fits(hi); fewer pieces are larger, so search for the first k that fits
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo
