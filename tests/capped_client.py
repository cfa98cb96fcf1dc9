"""The client side of the capped-hosts tests, run inside the broker's namespace:

    capped_client.py BROKER FAULTS_LOG          the smaller faithful version
    capped_client.py BROKER FAULTS_LOG proof    the proof (PROOF_SIZES; see proof())

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
from mesh.spec import Spec, initial_layer

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
    net = client.create(SIZES, group_size="balanced", **SPEC)  # about equal work per process: layer 2 cut and spread
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


PROOF_SIZES, PROOF_INPUTS = [8192, 8192, 10], 1024  # 605 MB of float64 weights
PROOF_SPEC = dict(SPEC, seed=7)
PROOF_TRAIN = dict(epochs=2, batch_size=32, learning_rate=0.01, optimizer="sgd", shuffle=False)
PROOF_ROWS = 128
PROOF_VICTIM = "n1.2.1"  # a layer-2 group: the fault (MESH_TEST_FAULTS) kills it at a known step


def initial(spec, inputs):
    """The network's starting weights, drawn here from its seed as its groups draw them (spec.py)."""
    widths = [inputs] + spec.sizes[:-1]
    return [initial_layer(spec, layer, fan_in) for layer, fan_in in enumerate(widths)]


def proof(broker, log):
    """The float64 [8192, 8192, 10] on 1,024 inputs, planned for sgd: refused when planned for
    adam (its state would not fit), then created, trained while a layer-2 group is SIGKILLed
    after a known step, and compared with the numpy reference: the outputs before and after
    training and the losses of every epoch."""
    out = {}
    client = Client(broker, timeout=300)
    try:
        client.create(PROOF_SIZES, optimizer="adam", **PROOF_SPEC)
    except RemoteError as e:
        out["refused"] = str(e)
    net = client.create(PROOF_SIZES, optimizer="sgd", **PROOF_SPEC)
    say("created")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(PROOF_ROWS, PROOF_INPUTS))
    Y = np.eye(10)[rng.integers(0, 10, len(X))]
    before = net.predict(X, remember=False, chunk=64)  # the first rows: layer 1 grows to 1,024 inputs
    say("predicted")
    out["before"] = net.processes()
    ref = ReferenceNet(initial(Spec(PROOF_SIZES, **PROOF_SPEC), PROOF_INPUTS),
                       optimizer="sgd", dtype=np.float64, activation="tanh", output="softmax", loss="cross_entropy")
    out["start_error"] = float(np.max(np.abs(before - ref.forward(X))))
    started = time.monotonic()
    history = net.train(X, Y, progress=False, **PROOF_TRAIN)
    out["train_seconds"] = round(time.monotonic() - started, 1)
    say(f"trained in {out['train_seconds']} s: {history}")
    hist_ref = ref.train(X, Y, **{k: v for k, v in PROOF_TRAIN.items() if k != "optimizer"})
    out["history_error"] = float(np.max(np.abs(np.array(history) - np.array(hist_ref))))
    out["output_error"] = float(np.max(np.abs(net.predict(X, remember=False, chunk=64) - ref.forward(X))))
    out["fired"] = faults.fired(log)
    status = client.status()  # (not net.steps(): it reads a layer at a time through the broker, 512 MiB here)
    out["steps"] = [n["steps"] for n in status["networks"]]
    out["after"] = net.processes()
    out["restarts"] = [n["restarts"] for n in status["networks"]]
    out["workers"] = status["workers"]
    print(json.dumps(out))
    client.close()


if __name__ == "__main__":
    (proof if sys.argv[3:] == ["proof"] else main)(*sys.argv[1:3])
