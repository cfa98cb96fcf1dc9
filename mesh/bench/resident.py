"""Resident training data against the broker-fed run, side by side in one run: group
mode (create's defaults) [10 in, 100, 100, 1] trained one row a step
(`train(batch_size=1)`), pairs per second with the rows resident on the hosts
(broker/resident.py: the groups make each step, the broker sends no message per step)
and sent by the broker step by step, each against a bare ring of four relaying processes
measured in the same round (ring.py): the issue asks resident / ring >= 0.75."""
import time

import numpy as np

from .common import fmt_spread, main_table
from .ring import apart
from .scaling import INPUTS

COLUMNS = ["data", "pairs/s", "4-hop ring/s", "pairs/s / ring", "target"]


def run(client, n=100, rounds=3, rows=1024, log=print):
    rng = np.random.default_rng(0)
    X = rng.random((rows, INPUTS))
    T = rng.integers(0, 2, size=(rows, 1)).astype(np.float64)
    net = client.create([n, n, 1], seed=0)
    rates = {True: [], False: []}
    rings = []
    try:
        net.train(X[:64], T[:64], batch_size=1, shuffle=False, progress=False)  # sizes layer 1, warms up
        for r in range(rounds):
            ring, _ = apart(4)
            rings.append(ring)
            for resident in ((True, False) if r % 2 == 0 else (False, True)):  # alternate who goes first
                t = time.perf_counter()  # the whole call: the data's staging included
                net.train(X, T, batch_size=1, shuffle=False, progress=False, resident=resident)
                assert net.last_resident is resident
                rates[resident].append(rows / (time.perf_counter() - t))
                log(f"  round {r + 1}: {'resident' if resident else 'broker-fed'} {rates[resident][-1]:,.0f} "
                    f"pairs/s; ring {ring:,.0f} round trips/s")
    finally:
        net.drop()
    return [{"data": "resident" if resident else "broker-fed", "pairs/s": fmt_spread(rates[resident]),
             "4-hop ring/s": fmt_spread(rings),
             "pairs/s / ring": fmt_spread([a / b for a, b in zip(rates[resident], rings)]),
             "target": "0.75" if resident else ""} for resident in (True, False)]


def main():
    """python -m mesh.bench.resident: this table alone."""
    main_table(run, COLUMNS)


if __name__ == "__main__":
    main()
