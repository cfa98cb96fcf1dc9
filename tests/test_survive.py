"""Processes die during training; the mesh heals, and the result is the same
as if nothing had happened. A reduced chaos run (the full one is
benchmarks/chaos.py)."""
import os
import random
import signal
import threading

import numpy as np
import pytest

from mesh.client import RemoteError

from mesh.reference import ReferenceNet

SPEC = dict(activation="tanh", output="softmax", loss="cross_entropy")


def data(rows=192, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    return X, np.eye(3)[rng.integers(0, 3, rows)]


def chaos(address, net_id, group_kills, worker_kills, every, stop):
    """Kill random group processes, then whole workers, every `every` seconds.
    Runs in its own thread, so with its own client (zmq sockets are not shared between threads)."""
    from mesh.client import Client, Network
    with Client(address, timeout=60) as client:
        return _chaos(client, Network(client, net_id, None), group_kills, worker_kills, every, stop)


def _chaos(client, net, group_kills, worker_kills, every, stop):
    rnd = random.Random(7)
    killed = []
    plan = ["group"] * group_kills + ["worker"] * worker_kills
    for what in plan:
        if stop.wait(every):
            break
        try:
            if what == "group":
                victim = rnd.choice([p for p in net.processes() if p["alive"] and p["pid"]])
                os.kill(victim["pid"], signal.SIGKILL)
                killed.append(("group", victim["gid"], victim["pid"]))
            else:
                workers = client.status()["workers"]
                victim = rnd.choice(workers[1:])  # keep the first: someone must take the groups
                os.kill(victim["pid"], signal.SIGKILL)
                killed.append(("worker", victim["name"], victim["pid"]))
        except Exception as e:  # the status call may itself wait for a recovery
            killed.append(("error", repr(e), None))
    return killed


def test_exact_training_with_kills_ends_with_fault_free_weights(fresh_mesh):
    h = fresh_mesh(workers=3, timeout=60)
    X, Y = data()
    net = h.client.create([6, 5, 3], group_size=2, seed=4, dtype="float64", **SPEC)
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), optimizer="momentum", dtype=np.float64, **SPEC)
    epochs, batch = 12, 16
    stop, killed = threading.Event(), []
    t = threading.Thread(target=lambda: killed.extend(chaos(h.mesh.address, net.id, 4, 1, 0.4, stop)))
    t.start()
    try:
        hist = net.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.05, optimizer="momentum",
                         shuffle=True, seed=1, micro_batches=2, progress=False)
    finally:
        stop.set()
        t.join()
    hist_ref = ref.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.05, shuffle=True, seed=1)
    assert sum(k[0] == "group" for k in killed) >= 2, killed
    print("chaos:", killed)
    np.testing.assert_allclose(hist, hist_ref, rtol=1e-9)
    for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
    steps = net.steps()  # sequence accounting: every group applied every step exactly once
    assert set(steps.values()) == {epochs * len(X) // batch}, steps
    status = [n for n in h.client.status()["networks"] if n["net"] == net.id][0]
    assert status["restarts"] >= sum(k[0] == "group" for k in killed)
    h.remember(net)


def test_predicts_in_flight_are_answered_through_a_kill(fresh_mesh):
    h = fresh_mesh(workers=2)
    net = h.client.create([4, 3], group_size=1, seed=2, dtype="float64")
    X = np.random.default_rng(1).normal(size=(300, 3))
    expected = net.predict(X, remember=False, chunk=10)
    victim = [p for p in net.processes() if p["layer"] == 1][0]
    timer = threading.Timer(0.01, os.kill, (victim["pid"], signal.SIGKILL))
    timer.start()
    got = [net.predict(X, remember=False, chunk=10) for _ in range(5)]
    timer.join()
    for g in got:
        np.testing.assert_array_equal(g, expected)
    h.remember(net)


def test_checkpoints_during_training_resume_after_a_broker_restart(fresh_mesh, tmp_path):
    X, Y = data(64)
    first = fresh_mesh(workers=1)
    net = first.remember(first.client.create([5, 3], seed=2, dtype="float64", **SPEC))
    with pytest.raises(RemoteError, match="checkpoint name"):  # a client names a file, never a path
        net.train(X, Y, checkpoint_every=5, checkpoint_path="../../etc/x/../passwd-", progress=False)
    net.train(X, Y, epochs=2, batch_size=8, learning_rate=0.05, optimizer="adam", shuffle=False,
              checkpoint_every=5, checkpoint_path=f"ckpt-{os.getpid()}.npz", progress=False)  # steps 5, 10, 15, 16
    path = net.last_checkpoint
    assert os.path.dirname(path).endswith("neuromesh-checkpoints")
    expected = net.weights()
    first.stop()  # the broker and everything with it
    second = fresh_mesh(workers=1)
    again = second.remember(second.client.load(path))
    for (W, b), (W2, b2) in zip(expected, again.weights()):
        np.testing.assert_array_equal(W, W2)
    assert set(again.steps().values()) == {16}  # optimizer state came back with the weights
    os.remove(path)
