"""Fuzz campaigns at every socket (fuzz.py's messages, drawn by Hypothesis): the broker's
client socket, the broker's inbox, group inboxes with a wrong token and with the predict
token, the pair's channel, a worker's socket, and a group's inbox with the network's own
token. After each campaign every process is alive, its memory is bounded, the broker
answers and the predictions equal the numpy reference.

Each campaign ends with a message whose answer can only come once everything before it
on the same connection was read, so "it survived" is an event, not a wait. Hypothesis
runs derandomized and keeps no database: the same messages every run."""
import subprocess
import sys

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Harness, alive, end_process_group, wait_until
from fuzz import KINDS, messages
from mesh import sockets, wire
from mesh.procstat import Meter
from mesh.reference import ReferenceNet
from rig import Rig

CAMPAIGN = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
BATCHES = st.integers(1, 25)
GROWTH = 64 << 20  # bytes of resident memory a campaign may add to any process, at most


def rss(pids):
    return {pid: Meter().read_all({"p": pid})["p"][1] for pid in pids}


@pytest.fixture(scope="module")
def target(mesh2):
    net = mesh2.remember(mesh2.client.create([4, 3, 2], group_size=2, seed=5, dtype="float64"))
    X = np.random.default_rng(0).normal(size=(6, 3))
    net.predict(X, remember=False)
    pids = [mesh2.client.status()["broker"]["pid"]] + [p["pid"] for p in net.processes()]
    yield net, X, rss(pids)
    net.drop()


def assert_mesh_answers_right(mesh2, net, X, before=None):
    ref = ReferenceNet(net.weights(), dtype=np.float64)
    np.testing.assert_allclose(net.predict(X, remember=False), ref.forward(X), rtol=1e-9)  # direct
    np.testing.assert_allclose(net.predict(X), ref.forward(X), rtol=1e-9)  # through the broker
    s = mesh2.client.status()
    pids = [s["broker"]["pid"]] + [w["pid"] for w in s["workers"]] + [p["pid"] for p in net.processes()]
    assert all(alive(p) for p in pids)
    if before is not None:
        grew = {pid: n - before[pid] for pid, n in rss(before).items()}
        assert max(grew.values()) < GROWTH, grew


def send_all(sock, batch):
    for frames in batch:
        if frames:
            sock.send_multipart(frames)


def answered_after(sock, who):
    """A status request, then every answer drained until its own: the broker (of `who`) read
    everything sent before it on this connection. Its answer."""
    sockets.send(sock, {"k": wire.STATUS, "id": "end"})
    while True:
        assert sock.poll(30_000), f"{who} stopped answering"
        _, answer, _ = sockets.recv(sock)
        if answer.get("id") == "end":
            return answer


def test_fuzz_the_broker_client_socket(mesh2, target):
    net, X, before = target
    ctx = zmq.Context()
    try:
        sock = sockets.make(ctx, zmq.DEALER, connect=mesh2.mesh.address)
        kinds = [k for k in KINDS if k != wire.DROP]  # a drop of the target network would be obeyed

        @CAMPAIGN
        @given(st.lists(messages(kinds=kinds, net=net.id), min_size=1, max_size=25))
        def campaign(batch):
            send_all(sock, batch)
            assert answered_after(sock, "the broker")["ok"]
        campaign()
    finally:
        ctx.destroy(linger=0)
    assert_mesh_answers_right(mesh2, net, X, before)


@pytest.mark.parametrize("layer", [1, 2])
def test_fuzz_a_group_inbox_with_a_wrong_token_and_the_predict_token(mesh2, target, layer):
    net, X, before = target
    lease = mesh2.client._route(net.id)
    victim = [p for p in net.processes() if p["layer"] == layer][0]
    ctx = zmq.Context()
    try:
        reply = sockets.abstract_ipc("reply")
        answers = sockets.make(ctx, zmq.PULL, bind=reply)
        sock = sockets.make(ctx, zmq.PUSH, connect=victim["endpoints"]["tcp"])
        first = sockets.make(ctx, zmq.PUSH, connect=lease["first"][0])

        @CAMPAIGN
        @given(st.lists(messages(tokens=("not-the-token", lease["ptok"], None), net=net.id), min_size=1,
                        max_size=25))
        def campaign(batch):
            send_all(sock, batch)
            send_all(first, batch)
        campaign()
        # last, on the layer-1 connection, a client's pass at a step the group is not at: its STALE
        # answer comes once everything before it was read
        sockets.send(first, {"k": wire.FWD, "tok": lease["ptok"], "net": net.id, "gen": lease["gen"],
                             "at": -1, "src": 0, "seq": f"{1:016x}-1", "reply": reply}, [X])
        assert answers.poll(60_000), "layer 1 never answered after the campaign"
        _, h, _ = sockets.recv(answers)
        assert (h["k"], h["seq"]) == (wire.STALE, f"{1:016x}-1")
    finally:
        ctx.destroy(linger=0)
    assert_mesh_answers_right(mesh2, net, X, before)


def test_fuzz_a_group_inbox_with_the_network_token():
    """A group fed every kind of message by a peer that knows the network's token (a buggy
    neighbour, or the broker) refuses what is wrong and computes right with what it holds."""
    ctx = zmq.Context()
    try:
        r = Rig(ctx, layer=1, fan_in=2, downs=1)
        kinds = [k for k in KINDS if k not in (wire.SETUP, wire.SET)]  # both would be obeyed: new weights

        @CAMPAIGN
        @given(st.lists(messages(tokens=("tok",), kinds=kinds, net="n1"), min_size=1, max_size=25))
        def campaign(batch):
            for frames in batch:
                if frames:
                    r.send(None, raw=frames)
            while r.sink.poll(0):
                r.sink.recv_multipart()
            for d in r.downs:
                while d.poll(0):
                    d.recv_multipart()
            assert r.g.state.running

        campaign()
        r.g.execute(r.g.state.apply({"k": wire.PURGE, "beyond": r.g.state.applied.done}, []))  # what the broker does when the heartbeat shows a wait
        while r.sink.poll(0):
            r.sink.recv_multipart()
        r.W = r.g.state.neurons.W[:, :2].copy()  # a GROW may have widened it: the test's pass has 2 inputs
        r.g.state.neurons.W = r.W.copy()
        r.g.state.neurons.b[:] = 0
        assert r.alive_and_right()
    finally:
        ctx.destroy(linger=0)


def test_fuzz_the_broker_inbox_and_its_worker_messages(fresh_mesh):
    """As a worker would: registered, the broker's inbox address comes in its welcome."""
    h = fresh_mesh(workers=1, timeout=30)
    broker = h.client.status()["broker"]["pid"]
    ctx = zmq.Context()
    try:
        fake = sockets.make(ctx, zmq.DEALER, connect=h.mesh.address)
        fake.setsockopt(zmq.ROUTING_ID, b"worker-fuzz")
        sockets.send(fake, {"k": wire.REGISTER, "host": "127.0.0.1", "slots": 1, "pid": 1})
        assert fake.poll(30_000)
        _, welcome, _ = sockets.recv(fake)
        inbox = sockets.make(ctx, zmq.PUSH, connect=welcome["inbox_ipc"])
        kinds = [wire.HELLO, wire.HEARTBEAT, wire.READY, wire.OUT, wire.DONE, wire.STATE, wire.SNAPPED, wire.KEPT,
                 wire.KEEP, wire.FAULT, wire.REGISTER, wire.SPAWNED, wire.EXITED]

        @CAMPAIGN
        @given(st.lists(messages(kinds=kinds, net="n1"), min_size=1, max_size=25))
        def campaign(batch):
            send_all(inbox, batch)
            send_all(fake, batch)
            answered_after(fake, "the broker")
        campaign()
        fake.close()
    finally:
        ctx.destroy(linger=0)
    wait_until(lambda: len(h.client.status()["workers"]) == 1, "the fake worker is forgotten")
    net = h.remember(h.client.create([3, 2], seed=2, dtype="float64"))
    X = np.random.default_rng(4).normal(size=(3, 2))
    np.testing.assert_allclose(net.predict(X), ReferenceNet(net.weights(), dtype=np.float64).forward(X), rtol=1e-9)
    assert alive(broker) and h.client.status()["broker"]["pid"] == broker


def test_fuzz_a_workers_socket():
    """A worker whose broker (this test) sends it garbage goes on heartbeating it."""
    ctx = zmq.Context()
    router = sockets.make(ctx, zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    worker = subprocess.Popen([sys.executable, "-m", "mesh", "worker", "--broker", f"tcp://127.0.0.1:{port}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              process_group=0)
    try:
        assert router.poll(60_000), "the worker never registered"
        ident, h, _ = sockets.recv(router, routed=True)
        assert h["k"] == wire.REGISTER
        sockets.send(router, {"k": wire.WELCOME, "inbox_port": 9}, identity=ident)
        kinds = [k for k in KINDS if k != wire.SPAWN]  # a broker's spawn is obeyed: its group may die, not the worker

        @CAMPAIGN
        @given(st.lists(messages(kinds=kinds), min_size=1, max_size=25))
        def campaign(batch):
            for frames in batch:
                router.send_multipart([ident, *frames] if frames else [ident, b""])
        campaign()
        beats = 0
        while beats < 2:  # heartbeats after the campaign: its loop goes round
            assert router.poll(30_000), "the worker went quiet"
            _, h, _ = sockets.recv(router, routed=True)
            beats += h["k"] == wire.HEARTBEAT
        assert worker.poll() is None
    finally:
        end_process_group(worker)
        ctx.destroy(linger=0)


def test_fuzz_the_pair_channel():
    """PAIR, SHIP and SHIPPED (and everything else) from a local process that is not the peer,
    to both brokers of a keyless pair: neither is fenced, wiped or fed."""
    h = Harness(1, timeout=60, standby=True)
    ctx = zmq.Context()
    try:
        a, b = h.mesh.address.split(",")
        net = h.remember(h.client.create([3, 2], seed=6, dtype="float64"))
        X = np.random.default_rng(5).normal(size=(4, 2))
        out = net.predict(X, remember=False)
        wait_until(lambda: h.client.status()["broker"]["pair"]["lag"] == 0, "the standby holds the network")
        socks = [sockets.make(ctx, zmq.DEALER, connect=addr) for addr in (a, b)]
        kinds = [wire.PAIR, wire.SHIP, wire.SHIPPED, wire.PAIR, wire.SHIP, wire.STATUS, wire.PING]

        @CAMPAIGN
        @given(st.lists(messages(kinds=kinds), min_size=1, max_size=25))
        def campaign(batch):
            for sock in socks:
                send_all(sock, batch)
                answered_after(sock, "a broker of the pair")
        campaign()
        s = h.client.status()["broker"]["pair"]
        assert (s["role"], s["epoch"], s["peer_role"]) == ("active", 1, "standby")
        assert all(alive(p.pid) for p in h.mesh.brokers)
        np.testing.assert_array_equal(net.predict(X, remember=False), out)
    finally:
        ctx.destroy(linger=0)
        h.stop()


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
