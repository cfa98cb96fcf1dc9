"""Processes die during training; the mesh heals, and the result is the same
as if nothing had happened. A reduced chaos run (the full one is
benchmarks/chaos.py)."""
import os

import numpy as np
import pytest

from mesh.client import RemoteError

from mesh.reference import ReferenceNet

from conftest import alive

SPEC = dict(activation="tanh", output="softmax", loss="cross_entropy")


def data(rows=192, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    return X, np.eye(3)[rng.integers(0, 3, rows)]


def test_exact_training_with_kills_ends_with_fault_free_weights(fresh_mesh, tmp_path):
    """Four faults at known steps of 144: three groups, each SIGKILLed right after
    it applied its step, then a whole worker. Training ends with the weights of
    a run without faults, and every group applied every step exactly once."""
    plan = ["n1.2.0@step=5", "n1.1.1@step=30", "n1.3.0@step=61", "n1.2.2@step=90:worker"]
    h = fresh_mesh(workers=3, timeout=60, faults_plan=",".join(plan), faults_log=tmp_path / "faults.log")
    X, Y = data()
    net = h.client.create([6, 5, 3], group_size=2, seed=4, dtype="float64", **SPEC)
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), optimizer="momentum", dtype=np.float64, **SPEC)
    before = {p["gid"]: p["pid"] for p in net.processes()}
    worker_of = {p["gid"]: p["worker"] for p in net.processes()}
    epochs, batch = 12, 16
    hist = net.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.05, optimizer="momentum",
                     shuffle=True, seed=1, micro_batches=2, progress=False)
    fired = h.fired()
    assert [line.split()[0] for line in fired] == plan, fired  # each fault fired once, where it says
    for entry, line in zip(plan, fired):
        gid, step = entry.split("@")[0], int(entry.split("=")[1].split(":")[0])
        assert f"after step {step} pid {before[gid]}" in line, line  # in the group's first process
    hist_ref = ref.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.05, shuffle=True, seed=1)
    np.testing.assert_allclose(hist, hist_ref, rtol=1e-9)
    for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
    steps = net.steps()  # sequence accounting: every group applied every step exactly once
    assert set(steps.values()) == {epochs * len(X) // batch}, steps
    after = {p["gid"]: p for p in net.processes()}
    for entry in plan:
        gid = entry.split("@")[0]
        assert after[gid]["pid"] != before[gid] and not alive(before[gid])
    lost = worker_of["n1.2.2"]
    assert lost not in {w["name"] for w in h.client.status()["workers"]}  # the killed worker is gone
    assert all(p["worker"] != lost for p in after.values())  # and its groups were rebuilt elsewhere
    status = [n for n in h.client.status()["networks"] if n["net"] == net.id][0]
    assert status["restarts"] >= len(plan)
    h.remember(net)


def test_predicts_in_flight_are_answered_through_a_kill(fresh_mesh, tmp_path):
    """A layer-1 group dies when the 7th forward of a 30-pass predict reaches it:
    the passes in flight are sent again and every answer is right."""
    h = fresh_mesh(workers=2, faults_plan="n1.1.0@fwd=7", faults_log=tmp_path / "faults.log")
    net = h.client.create([4, 3], group_size=1, seed=2, dtype="float64")
    X = np.random.default_rng(1).normal(size=(300, 3))
    net.predict(X[:1], remember=False)  # forward 1
    ref = ReferenceNet(net.weights(), dtype=np.float64)
    victim = [p for p in net.processes() if p["gid"] == "n1.1.0"][0]
    got = net.predict(X, remember=False, chunk=10)  # forwards 2..31: the 7th kills it mid-predict
    fired = h.fired()
    assert len(fired) == 1 and fired[0].startswith(f"n1.1.0@fwd=7 at forward 7 pid {victim['pid']}"), fired
    np.testing.assert_allclose(got, ref.forward(X), rtol=1e-12)
    assert not alive(victim["pid"])
    assert [n for n in h.client.status()["networks"] if n["net"] == net.id][0]["restarts"] == 1
    np.testing.assert_array_equal(net.predict(X, remember=False, chunk=10), got)
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


def test_a_network_of_one_group_survives_its_process(fresh_mesh, tmp_path):
    """No other group can keep its replica: the broker keeps it (the only weights it holds)."""
    h = fresh_mesh(workers=1, faults_plan="n1.1.0@step=3", faults_log=tmp_path / "faults.log")
    X, Y = data(16)
    net = h.remember(h.client.create([3], seed=2, dtype="float64", output="softmax", loss="cross_entropy"))
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), dtype=np.float64, output="softmax", loss="cross_entropy")
    net.train(X, Y, epochs=2, batch_size=4, learning_rate=0.1, shuffle=False, progress=False)
    assert len(h.fired()) == 1
    ref.train(X, Y, epochs=2, batch_size=4, learning_rate=0.1)
    for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
    assert [n["restarts"] for n in h.client.status()["networks"]] == [1]
    h.remember(net)
