"""Many clients at once against one network: every answer right, none lost,
and a flood from one client does not starve another."""
import threading
import time

import numpy as np

from mesh.client import Client, Network
from mesh.reference import ReferenceNet


def hammer(address, net_id, X, n, results, i):
    with Client(address, timeout=60) as c:
        net = Network(c, net_id, None)
        rng = np.random.default_rng(i)
        got, lat = [], []
        for _ in range(n):
            j = int(rng.integers(0, len(X)))
            t = time.perf_counter()
            got.append((j, net.predict(X[j], remember=False)))
            lat.append(time.perf_counter() - t)
        results[i] = (got, lat)


def run_clients(address, net_id, X, clients, n):
    results = {}
    threads = [threading.Thread(target=hammer, args=(address, net_id, X, n, results, i)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def test_eight_clients_at_once(mesh2):
    net = mesh2.remember(mesh2.client.create([6, 4, 2], group_size=2, seed=3, dtype="float64"))
    try:
        X = np.random.default_rng(0).normal(size=(50, 3))
        net.predict(X[:1], remember=False)
        ref = ReferenceNet(net.weights(), dtype=np.float64).forward(X)
        results = run_clients(mesh2.mesh.address, net.id, X, clients=8, n=60)
        assert len(results) == 8  # no client raised
        for got, _ in results.values():
            assert len(got) == 60
            for j, out in got:
                np.testing.assert_allclose(out, ref[j], rtol=1e-9)
    finally:
        net.drop()


def test_a_flood_does_not_starve_a_single_row(mesh2):
    net = mesh2.remember(mesh2.client.create([32, 2], seed=3))
    try:
        big = np.random.default_rng(0).normal(size=(20000, 3))
        net.predict(big[:1], remember=False)
        def flood_it():
            with Client(mesh2.mesh.address) as c:
                Network(c, net.id, None).predict(big, remember=False, chunk=16)
        flood = threading.Thread(target=flood_it)
        flood.start()
        time.sleep(0.2)  # the flood's 1,250 passes are queued
        with Client(mesh2.mesh.address) as c:
            Network(c, net.id, None).predict(big[0], remember=False)
            served_during_flood = flood.is_alive()
        flood.join(120)
        assert served_during_flood  # served in turn, not after the whole flood
    finally:
        net.drop()
