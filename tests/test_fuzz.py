"""Garbage at every socket leaves every process alive and the answers right."""
import numpy as np
import pytest
import zmq

from conftest import alive
from fuzz import message
from mesh import sockets
from mesh.reference import ReferenceNet

N = 10_000


@pytest.fixture(scope="module")
def target(mesh2):
    net = mesh2.remember(mesh2.client.create([4, 3, 2], group_size=2, seed=5, dtype="float64"))
    X = np.random.default_rng(0).normal(size=(6, 3))
    net.predict(X, remember=False)
    yield net, X
    net.drop()


def assert_mesh_answers_right(mesh2, net, X):
    ref = ReferenceNet(net.weights(), dtype=np.float64)
    np.testing.assert_allclose(net.predict(X, remember=False), ref.forward(X), rtol=1e-9)
    s = mesh2.client.status()
    pids = [s["broker"]["pid"]] + [w["pid"] for w in s["workers"]] + [p["pid"] for p in net.processes()]
    assert all(alive(p) for p in pids)


def blast(address, n, seed, token=None):
    ctx = zmq.Context()
    try:
        kind = zmq.DEALER if token is None else zmq.PUSH
        s = sockets.make(ctx, kind, connect=address)
        rng = np.random.default_rng(seed)
        for _ in range(n):
            frames = message(rng)
            if frames:
                s.send_multipart(frames)
        if kind == zmq.DEALER:  # drain what the broker answered, so the test ends clean
            while s.poll(1000):
                s.recv_multipart()
    finally:
        ctx.destroy(linger=0)


def test_fuzz_the_broker_client_socket(mesh2, target):
    net, X = target
    blast(mesh2.mesh.address, N, seed=1)
    assert_mesh_answers_right(mesh2, net, X)


def test_fuzz_a_group_inbox(mesh2, target):
    net, X = target
    victim = [p for p in net.processes() if p["layer"] == 2][0]
    blast(victim["endpoints"]["tcp"], N, seed=2, token="not-the-token")
    assert_mesh_answers_right(mesh2, net, X)


def test_oversized_messages_are_refused(fresh_mesh, monkeypatch):
    monkeypatch.setenv("MESH_MAX_MESSAGE", str(1 << 20))  # the launched broker and workers inherit it
    h = fresh_mesh(workers=1)
    net = h.remember(h.client.create([3, 1], seed=1, dtype="float64"))
    X = np.zeros((2, 2))
    net.predict(X, remember=False)
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(h.mesh.address)
        s.send_multipart([b'{"k": "predict", "id": 1}', b"\0" * (4 << 20)])  # 4 MiB > 1 MiB limit
        assert not s.poll(1000), "the broker answered a message over its size limit"
    finally:
        ctx.destroy(linger=0)
    assert net.predict(X, remember=False).shape == (2, 1)


def test_group_survives_malformed_messages_that_carry_the_token():
    """A group fed malformed messages from a peer that knows the network's token
    (a buggy neighbour) refuses each, then computes the right answer."""
    from mesh.group import Group
    ctx = zmq.Context()
    try:
        sink = sockets.make(ctx, zmq.PULL)  # stands in for the broker's inbox
        sink_port = sink.bind_to_random_port("tcp://127.0.0.1")
        g = Group(ctx, {"net": "n1", "gid": "n1.1.0", "layer": 0, "dtype": "float64", "token": "tok",
                        "listen": "127.0.0.1", "advertise": "127.0.0.1",
                        "broker_inbox": f"tcp://127.0.0.1:{sink_port}", "ipc_dir": None})
        W, b = np.array([[1.0, -2.0], [0.5, 0.25]]), np.array([0.1, -0.1])
        g.setup({"function": "tanh", "index": 0, "fan_in": 1, "fan_out": 1, "down": [], "up": []}, [W, b])
        feed = sockets.make(ctx, zmq.PUSH, connect=g.endpoints["tcp"])
        rng = np.random.default_rng(3)
        sent = 0
        # data-path kinds, and kinds a group does not take; control kinds from an authentic
        # peer (stop, set, grow) would be obeyed, as they should be
        kinds = ["fwd", "bwd", "hello", "out", "predict", "nonsense"]  # with and without the right "gen"
        for _ in range(3000):
            frames = message(rng, token="tok", kinds=kinds)
            if frames:
                feed.send_multipart(frames)
                sent += 1
        handled = 0
        while g.inbox.poll(500):
            g.handle_one()
            handled += 1
        assert handled == sent and g.running  # every message read, none fatal
        while sink.poll(200):  # READY and the FAULT replies
            sink.recv_multipart()
        x = np.array([[0.3, 0.7]])
        sockets.send(feed, {"k": "fwd", "tok": "tok", "gen": 0, "net": "n1", "seq": 10 ** 9, "src": 0}, [x])
        assert g.inbox.poll(2000)
        g.handle_one()
        assert sink.poll(2000)
        _, h, (out,) = sockets.recv(sink)
        assert h["k"] == "out"
        np.testing.assert_allclose(out, np.tanh(x @ g.neurons.W.T + g.neurons.b))
    finally:
        ctx.destroy(linger=0)
