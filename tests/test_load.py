"""Many clients at once against one network: every answer right, none lost,
and a flood from one client does not starve another."""
import threading
import time

import numpy as np

from mesh import wire
from mesh.client import Client, Network
from mesh.reference import ReferenceNet

from conftest import held, wait_until


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


def network_status(client, net_id):
    return next(n for n in client.status()["networks"] if n["net"] == net_id)


def test_a_flood_does_not_starve_a_single_row(mesh2):
    """Layer 1 is held while a client floods 1,250 passes and another asks for one
    row; once released, the broker's own count of passes sent into the mesh says
    how many flood passes went before the single row: one turn, not the flood."""
    net = mesh2.remember(mesh2.client.create([32, 2], seed=3))
    big = np.random.default_rng(0).normal(size=(20000, 3))
    passes = len(big) // 16
    try:
        net.predict(big[:1], remember=False)
        layer1 = [p for p in net.processes() if p["layer"] == 1][0]
        with Client(mesh2.mesh.address) as flooder, Client(mesh2.mesh.address) as single:
            with held(layer1["pid"]):
                flood = flooder.send(wire.PREDICT, [big], net=net.id, keep=False, chunk=16, patience=300)
                wait_until(lambda: sum_passes(mesh2.client, net.id) == passes, "the flood is queued")
                before = network_status(mesh2.client, net.id)
                assert before["queued"] > 1000  # the window is full, the rest waits at the broker
                one = single.send(wire.PREDICT, [big[:1]], net=net.id, keep=False, patience=300)
                wait_until(lambda: sum_passes(mesh2.client, net.id) == passes + 1, "the single row is queued")
            entered = single.wait(one)[0]["entered"]
            flooder.wait(flood)
        flood_first = entered - before["entered"] - 1
        assert 0 <= flood_first <= 1, flood_first  # served in turn, not after the whole flood
    finally:
        net.drop()


def sum_passes(client, net_id):
    s = network_status(client, net_id)
    return s["queued"] + s["in_flight"]
