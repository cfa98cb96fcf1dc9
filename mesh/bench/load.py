"""Load: C concurrent clients x N predicts each against one network; every
answer checked against the reference; errors counted; latency p50/p99."""
import threading
import time

import numpy as np

from ..client import Client, Network
from ..localmesh import LocalMesh
from ..reference import ReferenceNet


def run(clients=8, n=500, group_size=2, log=print):
    with LocalMesh(workers=2, timeout=120) as client:
        net = client.create([6, 4, 2], group_size=group_size, seed=3, dtype="float64")
        X = np.random.default_rng(0).normal(size=(64, 3))
        net.predict(X[:1], remember=False)
        ref = ReferenceNet(net.weights(), dtype=np.float64).forward(X)
        results, errors = {}, []

        def one(i):
            try:
                with Client(client.address, timeout=120) as c:
                    me, rng, lat, wrong = Network(c, net.id, None), np.random.default_rng(i), [], 0
                    for _ in range(n):
                        j = int(rng.integers(0, len(X)))
                        t = time.perf_counter()
                        out = me.predict(X[j], remember=False)
                        lat.append(time.perf_counter() - t)
                        wrong += not np.allclose(out, ref[j], rtol=1e-9)
                    results[i] = (lat, wrong)
            except Exception as e:
                errors.append(repr(e))
        t = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
    lat = np.array([x for lat, _ in results.values() for x in lat]) * 1e6
    wrong = sum(w for _, w in results.values())
    row = {"clients": clients, "predicts": len(lat), "errors": len(errors), "wrong answers": wrong,
           "p50 us": f"{np.percentile(lat, 50):.0f}", "p99 us": f"{np.percentile(lat, 99):.0f}",
           "predicts/s": f"{len(lat) / wall:,.0f}"}
    log(row)
    return row


if __name__ == "__main__":
    run()
