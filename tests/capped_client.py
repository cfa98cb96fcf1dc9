"""The client side of the capped-hosts test, run inside the broker's namespace:

    capped_client.py BROKER FAULTS_LOG

Asks for a network too big for the workers (refused), creates one whose
middle layer no one worker can hold, trains it while a whole worker host is
killed at a known point (layer 1 stopped itself after step 4: faults.py), and
prints, as JSON, what the test checks: the refusal, where the groups ran, the
weights' distance from the in-process numpy network trained alike."""
import json
import os
import signal
import sys
import threading
import time

import numpy as np

from mesh import faults
from mesh.client import Client, RemoteError
from mesh.reference import ReferenceNet

SIZES = [4096, 4096, 10]  # 135 MiB of float64 weights, 3 x that in adam's state
SPEC = dict(dtype="float64", activation="tanh", output="softmax", loss="cross_entropy", seed=5)
TRAIN = dict(epochs=2, batch_size=32, learning_rate=1e-3, optimizer="adam", shuffle=False)


def data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(128, 64))
    return X, np.eye(10)[rng.integers(0, 10, len(X))]


def held_pid(log, seconds=120):
    """The group the fault stopped, once it is stopped (it writes the log, then stops itself)."""
    deadline = time.monotonic() + seconds
    while not faults.fired(log) or state(pid_in(log)) not in ("T", "t"):
        if time.monotonic() > deadline:
            raise TimeoutError("the fault never fired")
        time.sleep(0.01)
    return pid_in(log)


def pid_in(log):
    return int(faults.fired(log)[0].rsplit(" pid ", 1)[1])


def state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def say(what):
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def main(broker, log):
    out = {}
    client = Client(broker, timeout=180)
    try:
        client.create([40000, 40000, 10], **SPEC)
    except RemoteError as e:
        out["refused"] = str(e)
    net = client.create(SIZES, **SPEC)
    say("created")
    X, Y = data()
    net.predict(X[:1], remember=False)
    start = net.weights()
    say("read the weights")
    procs = net.processes()
    out["before"] = procs
    hold_host = next(p["host"] for p in procs if p["gid"] == "n1.1.0")
    workers = client.status()["workers"]
    victim = next(w for w in workers if w["host"] != hold_host and any(p["host"] == w["host"] and p["layer"] == 2
                                                                       for p in procs))
    out["victim"] = victim["host"]
    result = {}

    def train():
        with Client(broker, timeout=180) as c:
            result["history"] = c.network(net.id).train(X, Y, progress=False, **TRAIN)
    runner = threading.Thread(target=train)
    runner.start()
    pid = held_pid(log)  # layer 1 applied step 4 and stopped: the run is mid-way, whatever the speed
    say(f"held {pid}; killing worker {victim['pid']} on {victim['host']}")
    os.kill(victim["pid"], signal.SIGKILL)  # a whole worker host: its spawner and groups die with it
    os.kill(pid, signal.SIGCONT)
    runner.join(600)
    say(f"trained: {result}")
    n = client.status()["networks"][0]
    say({k: n[k] for k in ("state", "snapshotting", "restarts", "alive", "steps", "queued", "in_flight")})
    ref = ReferenceNet(start, optimizer="adam", dtype=np.float64, activation="tanh", output="softmax",
                       loss="cross_entropy")
    hist_ref = ref.train(X, Y, epochs=2, batch_size=32, learning_rate=1e-3, shuffle=False)
    after = net.weights()
    out["history_error"] = float(np.max(np.abs(np.array(result["history"]) - np.array(hist_ref))))
    out["weights_equal"] = all(np.allclose(W, Wr, rtol=1e-9, atol=1e-12) and np.allclose(b, br, rtol=1e-9, atol=1e-12)
                               for (W, b), (Wr, br) in zip(after, ref.layers))
    out["weight_error"] = max(float(np.max(np.abs(W - Wr))) for (W, _), (Wr, _) in zip(after, ref.layers))
    out["steps"] = sorted(set(net.steps().values()))
    status = client.status()
    out["after"] = net.processes()
    out["restarts"] = [n["restarts"] for n in status["networks"]]
    out["workers"] = status["workers"]
    print(json.dumps(out))
    client.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
