"""The original's online test, the issue's way: [n, n, 1] on 10 inputs trained
one row at a time (`train(batch_size=1, shuffle=False)`, one request, the same
steps as predict + backprop per row), as pairs per second at n = 100 and 400,
against the original and the target. Each step is a chain of dependent hops
(layer 1 -> 2 -> 3 -> 2 -> 1), so this measures the cost of a hop; each round
is paired with a ring of four processes that only relay one message (ring.py):
the most pairs per second any chain of four hops reaches on this machine then."""
import numpy as np

from .common import CpuMeter, fmt_spread, main_table, mesh_pids
from .ring import apart
from .scaling import INPUTS, ORIGINAL

TARGETS = {100: 1500, 400: 900}  # pairs/s asked for (issue 14)


def pairs_per_second(client, n, rounds=3, rows=1024, log=print):
    rng = np.random.default_rng(0)
    X = rng.random((rows, INPUTS))
    T = rng.integers(0, 2, size=(rows, 1)).astype(np.float64)
    net = client.create([n, n, 1], seed=0)
    try:
        net.train(X[:64], T[:64], batch_size=1, shuffle=False, progress=False)  # sizes layer 1, warms up
        pids = mesh_pids(client, net)
        rates, cores, rings, hops = [], [], [], []
        for r in range(rounds):
            ring, hop = apart(4)
            with CpuMeter(pids) as cpu:
                net.train(X, T, batch_size=1, shuffle=False, progress=False)
            rates.append(rows / cpu.wall)
            cores.append(cpu.cores)
            rings.append(ring)
            hops.append(hop)
            log(f"  n={n} round {r + 1}: {rates[-1]:,.0f} pairs/s, {cores[-1]:.2f} cores busy; a ring of 4 bare hops "
                f"{ring:,.0f} round trips/s ({hop:.0f} us a hop)")
    finally:
        net.drop()
    return {"n": n, "pairs/s": fmt_spread(rates), "ms per step": fmt_spread([1e3 / r for r in rates]),
            "4-hop ring/s": fmt_spread(rings), "pairs/s / ring": fmt_spread([a / b for a, b in zip(rates, rings)]),
            "cores busy": fmt_spread(cores), "original": f"{ORIGINAL[n]:,}", "target": f"{TARGETS[n]:,}"}


def run(client, rounds=3, rows=1024, log=print):
    return [pairs_per_second(client, n, rounds, rows, log) for n in TARGETS]


COLUMNS = ["n", "pairs/s", "ms per step", "4-hop ring/s", "pairs/s / ring", "cores busy", "original", "target"]


def main():
    """python -m mesh.bench.online: this table alone."""
    main_table(run, COLUMNS)


if __name__ == "__main__":
    main()
