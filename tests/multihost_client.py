"""The client side of the multi-host test, run inside the broker's namespace:
    multihost_client.py train BROKER OUT.npz   -> trains a spread network, saves weights and placement
    multihost_client.py cut BROKER NET         -> predicts until the broker reports the lost host"""
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
    net, t = Network(client, net_id, None), time.monotonic()
    while time.monotonic() - t < 30:
        try:
            net.predict([[0.0] * 5], remember=False)
        except (RemoteError, TimeoutError) as e:
            print(json.dumps({"error": str(e), "kind": type(e).__name__, "seconds": time.monotonic() - t}))
            return
        time.sleep(0.1)
    print(json.dumps({"error": None}))


if __name__ == "__main__":
    op, broker, arg = sys.argv[1:4]
    with mesh.Client(broker, timeout=10) as c:
        train(c, arg) if op == "train" else cut(c, arg)
