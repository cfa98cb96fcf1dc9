"""Chaos: exact training while random group processes (and whole workers)
are killed with SIGKILL; the final weights are compared with a fault-free
run of the reference, and every group's step count with the number of
steps. Issue 6's full run: 10 group kills and 2 worker kills."""
import os
import random
import signal
import threading
import time

import numpy as np

from ..client import Client, Network
from ..localmesh import LocalMesh
from ..reference import ReferenceNet

SPEC = dict(activation="tanh", output="softmax", loss="cross_entropy")


def killer(address, net_id, plan, every, stop, killed, seed=7):
    """Carry out the plan of kills, one every `every` seconds, into `killed`."""
    rnd = random.Random(seed)
    with Client(address, timeout=120) as c:
        net = Network(c, net_id, None)
        plan = list(plan)
        while plan and not stop.wait(every):
            what = plan[0]
            if what == "group":
                victim = rnd.choice([p for p in net.processes() if p["alive"] and p["pid"]])
                name, pid = f"group {victim['gid']}", victim["pid"]
            else:
                victim = rnd.choice(c.status()["workers"][1:])  # the first stays: someone takes over
                name, pid = f"worker {victim['name']}", victim["pid"]
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # it died a moment ago and the broker has not heard yet: pick again
            killed.append(f"{name} pid {pid}")
            plan.pop(0)


def run(group_kills=10, worker_kills=2, epochs=40, rows=512, batch=16, every=0.7, log=print):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 8))
    Y = np.eye(4)[rng.integers(0, 4, rows)]
    with LocalMesh(workers=2 + worker_kills, timeout=120) as client:
        net = client.create([16, 12, 4], group_size=4, seed=4, dtype="float64", **SPEC)
        net.predict(X[:1], remember=False)
        ref = ReferenceNet(net.weights(), optimizer="adam", dtype=np.float64, **SPEC)
        stop, killed = threading.Event(), []
        plan = ["group"] * group_kills + ["worker"] * worker_kills
        random.Random(1).shuffle(plan)
        t = threading.Thread(target=killer, args=(client.address, net.id, plan, every, stop, killed))
        start = time.perf_counter()
        t.start()
        try:
            hist = net.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.01, optimizer="adam",
                             seed=3, micro_batches=2, progress=False)
        finally:
            stop.set()
            t.join()
        seconds = time.perf_counter() - start
        ref.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.01, shuffle=True, seed=3)
        worst = max(float(np.max(np.abs(W - Wr) / (np.abs(Wr) + 1e-12)))
                    for (W, _), (Wr, _) in zip(net.weights(), ref.layers))
        steps = set(net.steps().values())
        status = [n for n in client.status()["networks"] if n["net"] == net.id][0]
    row = {"kills": len(killed), "restarts": status["restarts"], "seconds": f"{seconds:.1f}",
           "final loss": f"{hist[-1]:.4f}", "max rel. weight diff vs fault-free": f"{worst:.1e}",
           "steps per group": sorted(steps), "expected steps": epochs * -(-rows // batch)}
    for k in killed:
        log(f"  killed {k}")
    log(row)
    return row


if __name__ == "__main__":
    run()
