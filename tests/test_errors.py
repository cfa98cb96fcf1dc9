"""Bad input gets a clear error and leaves everything running."""
import os
import signal
import time

import numpy as np
import pytest
import zmq

from mesh import sockets, wire
from mesh.client import Client, MeshTimeout, RemoteError


@pytest.fixture(scope="module")
def net(mesh2):
    n = mesh2.remember(mesh2.client.create([3, 1], seed=1, dtype="float64"))
    n.train([[0.5, 0.5]], [[0.0]], epochs=1, batch_size=1, learning_rate=0.0, progress=False)  # two number inputs
    yield n
    n.drop()


def still_works(net):
    out = net.predict([[0.1, 0.2]], remember=False)
    assert out.shape == (1, 1) and np.isfinite(out).all()


@pytest.mark.parametrize("rows, why", [
    ([[float("inf"), 1.0]], "row 0, position 0: inf is not a finite number"),
    ([[1.0, {"a": 1}]], "neither a number nor a string"),
    ([[1.0, 2.0], 1.0], "row 1 is 1.0, not a row of values"),
    ([[1.0, "a\0b"]], "strings may not contain NUL"),
    ([], "no rows"),
])
def test_bad_rows_are_refused(net, rows, why):
    with pytest.raises((RemoteError, ValueError), match=why):
        net.predict(rows)
    still_works(net)


def test_text_where_training_saw_only_numbers_is_refused_at_predict(net):
    with pytest.raises(RemoteError, match="row 1, position 1: 'text' is text, but position 1 only ever held numbers"):
        net.predict([[1.0, 2.0], [1.0, "text"]], remember=False)
    still_works(net)


def test_unknown_network(mesh2):
    from mesh.client import Network
    with pytest.raises(RemoteError, match="unknown network 'n999'"):
        Network(mesh2.client, "n999", None).predict([1.0, 2.0])


def test_backprop_without_predict(net):
    with pytest.raises(RemoteError, match="call predict first"):
        net.backprop([1.0], learning_rate=0.1)
    net.predict([0.1, 0.2])
    net.backprop([1.0], learning_rate=0.1)
    with pytest.raises(RemoteError, match="call predict first"):  # a pass trains once
        net.backprop([1.0], learning_rate=0.1)
    still_works(net)


@pytest.mark.parametrize("targets, lr, why", [
    ([1.0, 2.0], 0.1, "targets have shape"),
    ([float("nan")], 0.1, "finite"),
    ([1.0], -1.0, "invalid learning rate: -1"),
])
def test_bad_backprop(net, targets, lr, why):
    net.predict([0.1, 0.2])
    with pytest.raises(RemoteError, match=why):
        net.backprop(targets, learning_rate=lr)
    still_works(net)


@pytest.mark.parametrize("kwargs, why", [
    (dict(sizes=[0]), "positive integers"),
    (dict(sizes=[2.5]), "must be integers"),
    (dict(sizes=[True]), "must be integers"),
    (dict(sizes=[10 ** 12]), "positive integers"),
    (dict(sizes=[2], activation="swish"), "unknown activation 'swish'"),
    (dict(sizes=[2], output="linear", loss="cross_entropy"), "cross_entropy needs"),
    (dict(sizes=[2], group_size=0), "group_size"),
    (dict(sizes=[2], dtype="int8"), "unknown dtype"),
])
def test_bad_create(mesh2, kwargs, why):
    with pytest.raises(ValueError, match=why):
        mesh2.client.create(**kwargs)


def test_bad_create_sent_raw_is_refused_by_broker(mesh2):
    with pytest.raises(RemoteError, match="unknown activation"):
        mesh2.client.request(wire.CREATE, spec={"sizes": [2], "activation": "nope"})
    with pytest.raises(RemoteError, match="bad create request"):
        mesh2.client.request(wire.CREATE, spec={"sizes": [2], "colour": "red"})


def test_garbage_frames_on_the_broker_socket(mesh2, net):
    ctx = zmq.Context()
    try:
        s = sockets.make(ctx, zmq.DEALER, connect=mesh2.mesh.address)
        junk = [[b"\x00\xff"], [b"{}"], [b"not json", b"x"], [b'{"k": "predict", "a": [["<f8", [1000]]]}', b"12"],
                [b'{"k": "predict", "id": 1}'], [b'{"k": "nonsense", "id": 2}'], [b'{"k": "spawned", "gid": 1}']]
        for frames in junk:
            s.send_multipart(frames)
        replies = 0
        while s.poll(2000):
            _, h, _ = sockets.recv(s)
            assert h["ok"] is False and h["error"]
            replies += 1
        assert replies == len(junk)
    finally:
        ctx.destroy(linger=0)
    still_works(net)


def test_silent_broker_times_out_with_a_clear_error():
    ctx = zmq.Context()
    dead = ctx.socket(zmq.ROUTER)
    port = dead.bind_to_random_port("tcp://127.0.0.1")  # a socket that never answers
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=0.2) as c:
            t = time.monotonic()
            with pytest.raises(MeshTimeout, match=f"broker at tcp://127.0.0.1:{port} did not answer 'status'"):
                c.status()
            assert time.monotonic() - t < 10
    finally:
        ctx.destroy(linger=0)


def test_dead_group_is_restarted_and_status_says_so(fresh_mesh):
    h = fresh_mesh(workers=1)
    net = h.remember(h.client.create([3, 2, 1], group_size=1, seed=1, dtype="float64"))
    X = [[0.1, 0.2], [0.4, -0.3]]
    before = net.predict(X, remember=False)
    victim = [p for p in net.processes() if p["layer"] == 2][0]
    os.kill(victim["pid"], signal.SIGKILL)
    np.testing.assert_array_equal(net.predict(X, remember=False), before)  # answered, by the rebuilt mesh
    status = [n for n in h.client.status()["networks"] if n["net"] == net.id][0]
    assert status["restarts"] == 1 and victim["gid"] in status["last_failure"]
    again = [p for p in net.processes() if p["gid"] == victim["gid"]][0]
    assert again["pid"] != victim["pid"] and again["alive"]
    h.remember(net)


def test_without_workers_left_calls_fail_naming_the_host(fresh_mesh):
    h = fresh_mesh(workers=1)
    net = h.remember(h.client.create([3, 1], seed=1))
    net.predict([0.1, 0.2], remember=False)
    worker = h.client.status()["workers"][0]
    os.kill(worker["pid"], signal.SIGKILL)  # its spawner and groups die with it
    deadline = time.monotonic() + 15
    while True:
        try:
            net.predict([0.1, 0.2], remember=False)
        except RemoteError as e:
            assert "127.0.0.1" in str(e) and "no worker is left" in str(e), str(e)
            break
        assert time.monotonic() < deadline, "the lost worker was never reported"
        time.sleep(0.2)


def test_silent_group_is_replaced_and_the_call_answered(fresh_mesh):
    """A group that is alive but stuck (SIGSTOP) stops heartbeating: it is ended and rebuilt."""
    h = fresh_mesh(workers=1, timeout=30)
    net = h.remember(h.client.create([3, 1], seed=1, dtype="float64"))
    X = [[0.1, 0.2]]
    before = net.predict(X, remember=False)
    stuck = [p for p in net.processes() if p["layer"] == 2][0]
    os.kill(stuck["pid"], signal.SIGSTOP)
    t = time.monotonic()
    np.testing.assert_array_equal(net.predict(X, remember=False), before)
    assert time.monotonic() - t < 20
    status = [n for n in h.client.status()["networks"] if n["net"] == net.id][0]
    assert status["restarts"] == 1 and "stopped answering heartbeats" in status["last_failure"]
    from conftest import all_gone
    assert all_gone([stuck["pid"]])  # the stuck process was ended, not left behind
    h.remember(net)


def test_a_call_times_out_naming_what_did_not_answer(fresh_mesh):
    h = fresh_mesh(workers=1, timeout=1.0)
    net = h.remember(h.client.create([3, 1], seed=1))
    net.predict([0.1, 0.2], remember=False)
    out_group = [p for p in net.processes() if p["layer"] == 2][0]
    os.kill(out_group["pid"], signal.SIGSTOP)  # silent for less than the heartbeat expiry
    try:
        with pytest.raises(RemoteError, match=f"{out_group['gid']}.*did not answer within 1s"):
            net.predict([0.1, 0.2], remember=False)
    finally:
        os.kill(out_group["pid"], signal.SIGCONT)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_of_no_rows_is_refused(net, batch_size):
    with pytest.raises(RemoteError, match="batch_size must be at least 1"):
        net.train([[0.1, 0.2]], [[1.0]], batch_size=batch_size, progress=False)
