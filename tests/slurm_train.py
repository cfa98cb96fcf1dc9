"""The command a test's Slurm job runs in the job's mesh (launch/slurm/mesh.sbatch
sets MESH_BROKER and MESH_KEYS): `python slurm_train.py OUT EPOCHS [hold]`.

It creates a network, writes its first weights and what the mesh looks like
(workers, their budgets, every group's pid and host) to OUT.json and OUT-0.npz,
trains it one epoch at a time with a line after each ("epoch K done": the
known point a test cancels at), then writes the losses, weights and outputs to
OUT-1.npz. The test compares them with mesh/reference.py itself. With `hold`,
it then waits, its network in place, until a signal ends it (a job that runs
into its time limit)."""
import json
import os
import signal
import sys

import numpy as np

from mesh import Client
from mesh.client import MeshTimeout, RemoteError

SPEC = dict(activation="tanh", output="softmax", loss="cross_entropy")
TRAIN = dict(batch_size=8, learning_rate=0.1, shuffle=False)


def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 3))
    return X, np.eye(2)[rng.integers(0, 2, size=40)]


def refused_without_keys(address):
    """Whether the broker turns away a client with no keys (its socket is CurveZMQ)."""
    keys = os.environ.pop("MESH_KEYS")
    try:
        with Client(address, timeout=3) as c:
            c.status()
        return False
    except (MeshTimeout, RemoteError):
        return True
    finally:
        os.environ["MESH_KEYS"] = keys


def layers(prefix, weights):
    return {f"{prefix}{k}{i}": a for i, (W, b) in enumerate(weights) for k, a in (("W", W), ("b", b))}


def main(out, epochs, hold=False):
    address = os.environ["MESH_BROKER"]
    X, Y = data()
    with Client(address, timeout=60) as c:
        net = c.create([4, 2], group_size=2, seed=5, dtype="float64", **SPEC)
        net.predict(X[:1], remember=False)  # layer 1 learns its input width
        np.savez(f"{out}-0.npz", **layers("", net.weights()))
        status = c.status()
        with open(f"{out}.json", "w") as f:
            json.dump({"broker": address, "keys": os.environ.get("MESH_KEYS"), "workers": status["workers"],
                       "broker_pid": status["broker"]["pid"], "processes": net.processes(),
                       "refused_without_keys": refused_without_keys(address)}, f)
        pids = [status["broker"]["pid"], *(w["pid"] for w in status["workers"]), *(p["pid"] for p in net.processes())]
        print(f"mesh pids: {json.dumps(pids)}", flush=True)
        history = []
        for epoch in range(epochs):
            history += net.train(X, Y, epochs=1, progress=False, **TRAIN)
            print(f"epoch {epoch + 1} done", flush=True)
        np.savez(f"{out}-1.npz", history=np.array(history), outputs=net.predict(X, remember=False),
                 **layers("", net.weights()))
        if hold:
            print("holding", flush=True)
            signal.pause()
        net.drop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["hold"])
