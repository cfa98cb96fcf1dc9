"""The client side of the multi-host test, run inside the broker's namespace:
    multihost_client.py train BROKER OUT.npz   -> trains a spread network, saves weights and placement
    multihost_client.py cut BROKER NET         -> predicts until the broker reports the lost host
    multihost_client.py after BROKERS NET OUT.npz -> after a failover: the weights, and one more epoch"""
import json
import sys
import time

import numpy as np

import mesh
from mesh.client import Network, RemoteError


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5))
    return X, np.eye(2)[(X[:, 0] * X[:, 1] > 0).astype(int)]


def train(client, out):
    X, Y = data()
    net = client.create([6, 4, 2], group_size=2, seed=3, dtype="float64", activation="tanh", output="softmax",
                        loss="cross_entropy")
    net.train(X, Y, epochs=3, batch_size=16, learning_rate=0.1, shuffle=False, progress=False)
    layers = net.weights()
    np.savez(out, **{f"W{i}": W for i, (W, _) in enumerate(layers)}, **{f"b{i}": b for i, (_, b) in enumerate(layers)})
    status = [n for n in client.status()["networks"] if n["net"] == net.id][0]
    print(json.dumps({"net": net.id, "processes": net.processes(), "links": status["links"]}))


def cut(client, net_id):
    """Predict through the cut until the broker has rebuilt the network on the hosts it still reaches."""
    net, t = Network(client, net_id, None), time.monotonic()
    X = data()[0][:4]
    before, errors = net.predict(X, remember=False), []
    while time.monotonic() - t < 30:
        try:
            out = net.predict(X, remember=False)
        except (RemoteError, TimeoutError) as e:
            errors.append(str(e))
            continue
        status = [n for n in client.status()["networks"] if n["net"] == net_id][0]
        if status["restarts"]:
            print(json.dumps({"same": bool(np.array_equal(out, before)), "errors": errors,
                              "failure": status["last_failure"], "seconds": time.monotonic() - t,
                              "hosts": sorted({p["host"] for p in status["processes"]})}))
            return
        time.sleep(0.1)
    print(json.dumps({"failure": None, "errors": errors}))


def after(client, net_id, saved):
    """The network's weights as they were saved before the failover, and it trains on."""
    net, spread = Network(client, net_id, None), np.load(saved)
    same = all(np.array_equal(spread[f"W{i}"], W) and np.array_equal(spread[f"b{i}"], b)
               for i, (W, b) in enumerate(net.weights()))
    X, Y = data()
    net.train(X, Y, epochs=1, batch_size=16, learning_rate=0.1, shuffle=False, progress=False)
    print(json.dumps({"same": same, "broker": client.status()["broker"], "hosts": sorted(
        {p["host"] for p in net.processes()})}))


if __name__ == "__main__":
    op, broker, arg = sys.argv[1:4]
    with mesh.Client(broker, timeout=10) as c:
        if op == "after":
            after(c, arg, sys.argv[4])
        else:
            train(c, arg) if op == "train" else cut(c, arg)
