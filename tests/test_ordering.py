"""Steps ordered in the groups, not by round trips to the broker: a pipelining
client (many predicts and backprops in flight) gets exactly the weights of one
that waits for every answer, and a recovery in the middle of that keeps it exact."""
import contextlib

import numpy as np
import pytest

from mesh import datapath, wire
from mesh.client import RemoteError
from mesh.reference import ReferenceNet

from conftest import alive, held

SPEC = dict(activation="tanh", output="sigmoid", loss="mse")


@contextlib.contextmanager
def float64_net(mesh, sizes, seed):
    net = mesh.remember(mesh.client.create(sizes, seed=seed, dtype="float64", **SPEC))
    try:
        yield net
    finally:
        net.drop()


def data(rows, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 3)), rng.uniform(size=(rows, 1))


@pytest.mark.parametrize("group_size", [1, None])
def test_pipelined_online_training_equals_one_row_at_a_time(mesh2, group_size):
    X, T = data(40)
    net = mesh2.remember(mesh2.client.create([4, 3, 1], group_size=group_size, seed=5, dtype="float64", **SPEC))
    twin = mesh2.remember(mesh2.client.create([4, 3, 1], group_size=group_size, seed=5, dtype="float64", **SPEC))
    try:
        net.predict(X[:1], remember=False)  # sizes layer 1 so the reference can copy the weights
        ref = ReferenceNet(net.weights(), dtype=np.float64, **SPEC)
        outputs, losses = net.online(X, T, learning_rate=0.2, window=8)
        expected = []
        for i in range(len(X)):
            expected.append(ref.forward(X[i:i + 1])[0])
            ref.step(X[i:i + 1], T[i:i + 1], 0.2)
        np.testing.assert_allclose(outputs, np.array(expected), rtol=1e-9, atol=1e-12)
        for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
            np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
        # the same steps as training with batches of one row, in one request
        twin.train(X, T, batch_size=1, learning_rate=0.2, shuffle=False, progress=False)
        for (W, b), (Wt, bt) in zip(net.weights(), twin.weights()):
            np.testing.assert_array_equal(W, Wt)
            np.testing.assert_array_equal(b, bt)
        assert len(losses) == len(X) and np.all(np.isfinite(losses))
        assert set(net.steps().values()) == {len(X)}
    finally:
        net.drop()
        twin.drop()


def test_backprop_sent_before_its_predict_answered_waits_for_it(mesh2):
    X, T = data(3, seed=1)
    net = mesh2.remember(mesh2.client.create([3, 1], seed=2, dtype="float64", **SPEC))
    try:
        net.predict(X[:1], remember=False)
        ref = ReferenceNet(net.weights(), dtype=np.float64, **SPEC)
        c = mesh2.client
        p = c.send(wire.PREDICT, [X], net=net.id, keep=True)
        b = c.send(wire.BACKPROP, [T], net=net.id, learning_rate=0.5)
        q = c.send(wire.PREDICT, [X], net=net.id, keep=False)  # must see the step
        loss = c.wait(b)[0]["loss"]  # answers may be collected in any order
        after = c.wait(q)[1][0]
        before = c.wait(p)[1][0]
        np.testing.assert_allclose(before, ref.forward(X), rtol=1e-9)
        assert loss == pytest.approx(ref.step(X, T, 0.5), rel=1e-9)
        np.testing.assert_allclose(after, ref.forward(X), rtol=1e-9)
    finally:
        net.drop()


def test_pipelined_online_training_survives_a_killed_group(fresh_mesh, tmp_path):
    """A group dies right after it applied step 700 of 1,500 while many predicts
    and backprops are in flight: the broker rebuilds it, replays the steps
    already sent, and the waiting backprops take new step ids in the order they
    came. The weights are still those of one row at a time."""
    mesh = fresh_mesh(workers=1, faults_plan="n1.2.0@step=700", faults_log=tmp_path / "faults.log")
    X, T = data(1500, seed=3)
    net = mesh.remember(mesh.client.create([6, 4, 1], seed=4, dtype="float64", **SPEC))
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), dtype=np.float64, **SPEC)
    victim = [p for p in net.processes() if p["gid"] == "n1.2.0"][0]
    net.online(X, T, learning_rate=0.1, window=8)
    fired = mesh.fired()
    assert len(fired) == 1 and f"after step 700 pid {victim['pid']}" in fired[0], fired
    assert not alive(victim["pid"])
    assert victim["pid"] not in [p["pid"] for p in net.processes()]  # it was rebuilt
    for i in range(len(X)):
        ref.step(X[i:i + 1], T[i:i + 1], 0.1)
    for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
    assert set(net.steps().values()) == {len(X)}


def test_async_training_with_the_loss_at_the_output_groups_ends(mesh2):
    """The output group starts the backward before the broker hears the loss, so
    layer 1's DONE may overtake the OUT: every pass must still be counted."""
    X, T = data(2000, seed=6)
    with float64_net(mesh2, [16, 16, 1], seed=1) as net:
        history = net.train(X, T, epochs=3, batch_size=8, micro_batches=1, mode="async", learning_rate=0.05,
                            progress=False)
        assert len(history) == 3 and all(np.isfinite(history))
        assert len(set(net.steps().values())) == 1  # every group applied every micro-batch's step


def test_a_backprop_that_failed_while_waiting_is_never_applied(mesh2):
    """The output group is held, so the predict cannot be answered; the backprop
    waiting for it fails at its deadline. Released, the predict is answered and
    the failed step was never applied anywhere."""
    X, T = data(20, seed=7)
    c = mesh2.client
    with float64_net(mesh2, [3, 1], seed=2) as net:
        net.predict(X[:1], remember=False)
        before = net.weights()
        output_group = [p for p in net.processes() if p["layer"] == 2][0]
        with held(output_group["pid"]):
            p = c.send(wire.PREDICT, [X], net=net.id, keep=True, chunk=1)
            b = c.send(wire.BACKPROP, [T], net=net.id, learning_rate=0.5, timeout=0.2, patience=60)
            with pytest.raises(RemoteError, match="did not answer"):
                c.wait(b)
        c.wait(p)
        np.testing.assert_allclose(net.predict(X[:2], remember=False),
                                   ReferenceNet(before, dtype=np.float64, **SPEC).forward(X[:2]), rtol=1e-12)
        for (W, b_), (W0, b0) in zip(net.weights(), before):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b_, b0)
        assert set(net.steps().values()) == {0}


def test_a_second_remembered_predict_in_flight_does_not_lose_the_first(mesh2):
    X, T = data(300, seed=8)
    c = mesh2.client
    with float64_net(mesh2, [3, 1], seed=2) as net:
        first = c.send(wire.PREDICT, [X], net=net.id, keep=True, chunk=1)
        second = c.send(wire.PREDICT, [X[:2]], net=net.id, keep=True)
        assert c.wait(first)[1][0].shape == (300, 1)
        assert c.wait(second)[1][0].shape == (2, 1)
        assert np.isfinite(net.backprop(T[:2], learning_rate=0.1))  # trains on the second
        assert net.predict(X[:5]).shape == (5, 1)  # and the window was not leaked


def test_a_refused_backward_the_broker_let_go_of_rebuilds_instead_of_wedging(fresh_mesh):
    """A backprop is answered once its backward is sent, and the broker lets its
    passes go. If a group then refuses that backward (here: the first of 10,001
    remembered passes was evicted from its bounded store), the group's FAULT names
    the step: the network is rebuilt from the snapshot and the log, and answers."""
    mesh = fresh_mesh(workers=1, timeout=120)
    rows = datapath.MAX_HELD + 1
    X, T = data(rows, seed=9)
    X = X[:, :2]
    net = mesh.remember(mesh.client.create([1], seed=2, dtype="float64", **SPEC))
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), dtype=np.float64, **SPEC)
    net.predict(X, chunk=1)
    assert np.isfinite(net.backprop(T, learning_rate=0.1))
    ref.step(X, T, 0.1)  # the step is in the log, so the rebuilt network has it
    np.testing.assert_allclose(net.predict(X[:3], remember=False), ref.forward(X[:3]), rtol=1e-9)
    assert net.client.status()["networks"][0]["restarts"] == 1
    assert set(net.steps().values()) == {1}
