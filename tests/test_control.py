"""The control plane with real processes: cancel from another client, Ctrl-C on
`mesh train`, cancel of an online run, and a status that says what the
network is doing. Every cancel lands at a known point: a group stops itself
right after it applied step k (mesh/faults.py, action :stop) and is let go
once the cancel is on its way."""
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from mesh import wire
from mesh.broker.training import AHEAD
from mesh.client import Cancelled, Client
from mesh.reference import ReferenceNet

from conftest import closed_port, held, process_state, wait_until

SPEC = dict(activation="tanh", output="sigmoid", loss="mse", dtype="float64")


def data(rows, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 3)), rng.uniform(size=(rows, 1))


def reference_after(weights, X, T, steps, batch, lr):
    """The in-process network after the first `steps` mini-batches (no shuffle)."""
    ref = ReferenceNet(weights, dtype=np.float64, activation="tanh", output="sigmoid", loss="mse")
    for s in range(steps):
        i = (s * batch) % len(X)
        ref.step(X[i:i + batch], T[i:i + batch], lr)
    return ref


def assert_weights(net, ref):
    for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)


def state_of(client, net_id):
    return next(n for n in client.status()["networks"] if n["net"] == net_id)


def test_cancel_from_another_client_stops_training_at_a_step_boundary(fresh_mesh, tmp_path):
    h = fresh_mesh(workers=1, faults_plan="n1.1.0@step=5:stop", faults_log=tmp_path / "faults.log")
    X, T = data(128)  # 16 steps an epoch: the cancel comes mid-epoch, with AHEAD steps on their way at most
    net = h.remember(h.client.create([4, 3, 1], seed=3, **SPEC))
    net.predict(X[:1], remember=False)
    start = net.weights()
    opts = {"epochs": 50, "batch_size": 8, "learning_rate": 0.1, "shuffle": False}
    rid = h.client.send(wire.TRAIN, [X, T], net=net.id, options=opts, patience=120)
    pid = h.held_by_fault()  # layer 1 applied step 5 and stopped there
    with Client(h.mesh.address) as other:
        assert state_of(other, net.id)["state"] == "training"
        cancel = other.send(wire.CANCEL, net=net.id, patience=120)
        wait_until(lambda: state_of(other, net.id)["training"].get("cancelling"), "the cancel reached the broker")
        os.kill(pid, signal.SIGCONT)
        told = other.wait(cancel)[0]
    with pytest.raises(Cancelled) as stopped:
        h.client.wait(rid)
    steps = stopped.value.steps
    assert 5 <= steps <= 5 + AHEAD, steps  # the steps on their way when the cancel came were finished, no more
    assert told["cancelled"] == ["train"] and told["steps"] == steps and told["state"] == "ready"
    assert f"after 0 epochs and {steps} steps" in str(stopped.value)
    assert set(net.steps().values()) == {steps}  # applied everywhere, nothing half done
    assert_weights(net, reference_after(start, X, T, steps, 8, 0.1))
    assert state_of(h.client, net.id)["state"] == "ready"
    history = net.train(X, T, epochs=1, batch_size=8, learning_rate=0.1, shuffle=False, progress=False)
    assert len(history) == 1 and set(net.steps().values()) == {steps + 16}  # a new run starts at once


def test_ctrl_c_on_mesh_train_cancels_and_says_how_far_it_got(fresh_mesh, tmp_path):
    h = fresh_mesh(workers=1, faults_plan="n1.1.0@step=3:stop", faults_log=tmp_path / "faults.log")
    X, T = data(128, seed=1)
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,c,y\n" + "".join(f"{a},{b},{c},{y}\n" for (a, b, c), (y,) in zip(X, T)))
    net = h.remember(h.client.create([4, 1], seed=3, **SPEC))
    train = subprocess.Popen([sys.executable, "-m", "mesh", "train", net.id, str(csv), "--target", "y",
                              "--epochs", "100", "--batch-size", "8", "--broker", h.mesh.address],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = h.held_by_fault()
        train.send_signal(signal.SIGINT)
        wait_until(lambda: (state_of(h.client, net.id)["training"] or {}).get("cancelling"),
                   "the cancel reached the broker")  # while layer 1 is still held
        os.kill(pid, signal.SIGCONT)
        out, err = train.communicate(timeout=60)
    finally:
        if train.poll() is None:
            train.kill()
            train.communicate()
    assert train.returncode == 1, err
    assert "Error: interrupted in epoch 1 of 100: training of network n1 was cancelled after 0 epochs and" in err, err
    assert "Traceback" not in err
    steps = int(err.split(" and ")[1].split()[0])
    assert 3 <= steps <= 3 + AHEAD  # the steps on their way were finished, no more
    assert state_of(h.client, net.id)["state"] == "ready"
    assert set(net.steps().values()) == {steps}


def test_cancel_stops_an_online_run_of_another_client(fresh_mesh, tmp_path):
    h = fresh_mesh(workers=1, faults_plan="n1.2.0@step=20:stop", faults_log=tmp_path / "faults.log")
    X, T = data(400, seed=2)
    net = h.remember(h.client.create([4, 1], seed=5, **SPEC))
    net.predict(X[:1], remember=False)
    start = net.weights()
    outcome = {}

    def online():
        with Client(h.mesh.address, timeout=60) as c:
            try:
                c.network(net.id).online(X, T, learning_rate=0.2, window=4)
            except Cancelled as e:
                outcome["cancelled"] = e

    runner = threading.Thread(target=online)
    runner.start()
    try:
        pid = h.held_by_fault()
        told = net.cancel()
        os.kill(pid, signal.SIGCONT)
    finally:
        runner.join(120)
    assert told["cancelled"] == ["online"] and told["state"] == "ready"
    rows = outcome["cancelled"].steps
    assert 20 <= rows < len(X), rows
    assert set(net.steps().values()) == {rows}  # every backprop it was answered for, and no other
    ref = ReferenceNet(start, dtype=np.float64, activation="tanh", output="sigmoid", loss="mse")
    for i in range(rows):
        ref.step(X[i:i + 1], T[i:i + 1], 0.2)
    assert_weights(net, ref)
    outputs, _ = net.online(X[:5], T[:5], learning_rate=0.2)  # a new run is not cancelled
    assert len(outputs) == 5 and set(net.steps().values()) == {rows + 5}


def test_status_says_recovering_while_a_network_is_rebuilt(fresh_mesh):
    h = fresh_mesh(workers=1)
    net = h.remember(h.client.create([3, 2, 1], seed=1, **SPEC))
    net.predict([[0.1, 0.2]], remember=False)
    procs = {p["layer"]: p for p in net.processes()}
    with held(procs[3]["pid"]):  # the rebuild waits for this one to answer its new wiring
        os.kill(procs[1]["pid"], signal.SIGKILL)
        wait_until(lambda: state_of(h.client, net.id)["state"] == "recovering", "status says recovering")
        s = state_of(h.client, net.id)
        assert s["restarts"] == 1 and "exited with code" in s["last_failure"]
        assert process_state(procs[3]["pid"]) in ("T", "t")
    wait_until(lambda: state_of(h.client, net.id)["state"] == "ready", "ready again")
    r = subprocess.run([sys.executable, "-m", "mesh", "status", "--broker", h.mesh.address],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert "network n1: ready" in r.stdout and "restarts 1, last failure: group n1.1.0" in r.stdout, r.stdout
    h.remember(net)


def test_no_broker_is_reported_within_five_seconds():
    with closed_port() as port:
        r = subprocess.run([sys.executable, "-m", "mesh", "status", "--broker", f"tcp://127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert "no broker answers at tcp://127.0.0.1:" in r.stderr and "within 5s" in r.stderr, r.stderr
