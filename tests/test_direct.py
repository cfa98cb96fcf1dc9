"""Predicts that skip the broker (mesh/direct.py, broker/leases.py): the same
answers as through the broker and as the numpy reference; a lease that no
longer holds (a step, a rebuilt group) sends the predict through the broker;
the predict token admits forward passes and nothing else."""
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from mesh import Client, sockets, table, wire
from mesh.broker import leases
from mesh.broker.records import GroupRecord
from mesh.broker.states import State
from mesh.client import RemoteError
from mesh.reference import ReferenceNet

from conftest import alive

CASES = [  # sizes, activation, output, loss, input width
    ([5, 5, 1], "sigmoid", "sigmoid", "mse", 2),
    ([6, 4, 3], "relu", "softmax", "cross_entropy", 4),
]


def counts(client):
    return dict(client.direct.counts)


def through_broker(h):
    """A second client of the same mesh whose predicts all go through the broker."""
    return Client(h.mesh.address, timeout=30, direct_predicts=False)


@pytest.mark.parametrize("group_size", [1, 2, None])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[2]}")
def test_direct_predicts_equal_the_brokers_and_the_reference(mesh2, case, group_size):
    sizes, act, out, loss, width = case
    c = mesh2.client
    net = mesh2.remember(c.create(sizes, group_size=group_size, seed=3, dtype="float64", activation=act, output=out,
                                  loss=loss))
    X = np.random.default_rng(1).normal(size=(10, width))
    try:
        net.predict(X[:1])  # sizes layer 1 (the first rows a network sees go through the broker)
        before = counts(c)
        got = net.predict(X, remember=False, chunk=3)  # four passes, each through every group
        row = net.predict(X[0], remember=False)
        many = np.tile(X, (5, 1))  # 25 passes of 2 rows: more than a window of them on their way
        got_many = net.predict(many, remember=False, chunk=2)
        assert counts(c)["direct"] == before["direct"] + 3
        with through_broker(mesh2) as other:
            assert other.direct is None
            np.testing.assert_array_equal(got, other.network(net.id).predict(X, remember=False, chunk=3))
            np.testing.assert_array_equal(got_many, other.network(net.id).predict(many, remember=False, chunk=2))
        ref = ReferenceNet(net.weights(), activation=act, output=out, loss=loss, dtype=np.float64)
        np.testing.assert_allclose(got, ref.forward(X), rtol=1e-9, atol=1e-12)
        assert row.shape == (sizes[-1],)
        np.testing.assert_allclose(row, got[0], rtol=1e-12)
    finally:
        net.drop()


def test_another_clients_step_makes_the_lease_stale_and_the_broker_answers(mesh2):
    c = mesh2.client
    net = mesh2.remember(c.create([4, 1], seed=5, dtype="float64"))
    X = np.array([[0.1, 0.9], [0.5, -0.3]])
    try:
        net.predict(X)
        net.predict(X, remember=False)
        before = counts(c)
        net.predict(X)  # remembered: the broker keeps it for the backprop
        assert counts(c) == before
        with through_broker(mesh2) as other:
            theirs = other.network(net.id)
            theirs.predict(X)
            theirs.backprop([[1.0], [0.0]], learning_rate=0.5)  # a step: every group's weights move on
        ref = ReferenceNet(net.weights(), dtype=np.float64)
        got = net.predict(X, remember=False)  # the lease was at the step before: STALE, then the broker
        assert counts(c) == {"direct": before["direct"], "broker": before["broker"] + 1}
        np.testing.assert_allclose(got, ref.forward(X), rtol=1e-9, atol=1e-12)
        again = net.predict(X, remember=False)  # a new lease, at that step
        assert counts(c)["direct"] == before["direct"] + 1
        np.testing.assert_array_equal(again, got)
    finally:
        net.drop()


def test_a_predict_sees_this_clients_own_step_sent_just_before(mesh2):
    """Pipelined: a remembered predict and its backprop are sent, not waited for; the direct
    predict after them sees the step, as a predict through the broker would."""
    c = mesh2.client
    net = mesh2.remember(c.create([4, 3, 1], seed=6, dtype="float64"))
    X = np.array([[0.2, -0.4], [0.7, 0.1]])
    try:
        net.predict(X)
        net.predict(X, remember=False)  # holds a lease
        ref = ReferenceNet(net.weights(), dtype=np.float64)
        ids = [c.send(wire.PREDICT, [X], net=net.id, keep=True, width=2),
               c.send(wire.BACKPROP, [np.array([[1.0], [0.0]])], net=net.id, learning_rate=0.5)]
        got = net.predict(X, remember=False)
        for rid in ids:
            c.wait(rid)
        ref.step(X, np.array([[1.0], [0.0]]), 0.5)
        np.testing.assert_allclose(got, ref.forward(X), rtol=1e-9, atol=1e-12)
    finally:
        net.drop()


def test_a_rebuilt_layer_one_group_sends_the_predict_through_the_broker(fresh_mesh, tmp_path):
    """Layer 1's process is killed after step 2 of another client's training and rebuilt:
    the lease names a socket nobody listens on any more. The send fails at once (not
    silence: after silence the client would not ask for a lease again so soon)."""
    h = fresh_mesh(workers=1, faults_plan="n1.1.0@step=2", faults_log=tmp_path / "faults.log", timeout=30)
    c = h.client
    net = h.remember(c.create([3, 1], seed=2, dtype="float64"))
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(16, 3)), rng.uniform(size=(16, 1))
    net.predict(X[:2])
    net.predict(X[:2], remember=False)
    lease = c.direct.leases[net.id]
    with through_broker(h) as other:
        other.network(net.id).train(X, Y, epochs=1, batch_size=4, learning_rate=0.2, shuffle=False, progress=False)
    assert [line.split()[0] for line in h.fired()] == ["n1.1.0@step=2"]
    assert [n["restarts"] for n in c.status()["networks"]] == [1]
    assert c.direct.leases[net.id] is lease
    before = counts(c)
    got = net.predict(X, remember=False)
    assert counts(c)["broker"] == before["broker"] + 1 and net.id not in c.direct.leases
    ref = ReferenceNet(net.weights(), dtype=np.float64)
    np.testing.assert_allclose(got, ref.forward(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(net.predict(X, remember=False), got)
    assert counts(c)["direct"] == before["direct"] + 1
    h.remember(net)


def test_factor_rows_encode_at_the_client_as_at_the_broker(mesh2):
    c = mesh2.client
    net = mesh2.remember(c.create([4, 1], seed=1, dtype="float64"))
    rows = [[1.0, "red", 3.0], [0.5, "blue"], [2.0, "red", 1.0, "x"]]
    try:
        net.train(rows, [[1.0], [0.0], [1.0]], epochs=2, batch_size=2, progress=False)
        asked = [[1.5, "blue", 2.0], [0.0, "green"], [1.0]]  # green: never trained on, lights nothing
        before = counts(c)
        got = net.predict(asked, remember=False)
        assert counts(c)["direct"] == before["direct"] + 1
        with through_broker(mesh2) as other:
            np.testing.assert_array_equal(got, other.network(net.id).predict(asked, remember=False))
        with pytest.raises(RemoteError, match="only ever held numbers"):  # the broker says what is wrong
            net.predict([["text", "red"]], remember=False)
        assert counts(c)["broker"] == before["broker"] + 1
    finally:
        net.drop()


def test_the_predict_token_admits_forward_passes_and_nothing_else(mesh2):
    c = mesh2.client
    net = mesh2.remember(c.create([3, 2], seed=4, dtype="float64"))
    X = np.array([[0.2, 0.4]])
    try:
        net.predict(X)
        first = net.predict(X, remember=False)
        pids = {p["pid"] for p in net.processes()}
        lease = c._route(net.id)
        assert lease["lease"]
        ctx = zmq.Context()
        try:
            reply = sockets.abstract_ipc("reply")
            answers = sockets.make(ctx, zmq.PULL, bind=reply)
            sock = sockets.make(ctx, zmq.PUSH, connect=lease["first"][0])
            base = {"net": net.id, "tok": lease["ptok"], "gen": lease["gen"]}
            fwd = {"k": wire.FWD, "src": 0, "at": lease["at"]}
            for h, arrays in [({"k": wire.STOP}, []),
                              ({"k": wire.SET, "optimizer": {}}, [np.zeros((3, 2)), np.zeros(3)]),
                              ({"k": wire.GROW, "cols": 5}, []),
                              ({**fwd, "seq": f"{7:016x}-1", "reply": "tcp://10.1.2.3:9"}, [X]),
                              ({**fwd, "seq": f"{7:016x}-2", "reply": 7}, [X]),
                              ({**fwd, "seq": f"{7:016x}-3", "reply": reply}, [X])]:  # last, on the same connection
                sockets.send(sock, {**base, **h}, arrays)
            assert answers.poll(30_000), "no answer to the one forward pass with a reply address"
            _, h, (z,) = sockets.recv(answers)
        finally:
            ctx.destroy(linger=0)
        assert (h["k"], h["seq"]) == (wire.OUT, f"{7:016x}-3")
        np.testing.assert_array_equal(1 / (1 + np.exp(-z)), first)  # nobody stopped, no weights changed
        assert all(alive(pid) for pid in pids)
        assert {p["pid"] for p in net.processes()} == pids
    finally:
        net.drop()


def test_a_lease_holder_cannot_answer_for_another_clients_pass(mesh2):
    """Passes with the predict token but without a reply address, or with an integer seq
    (the broker's kind), or marked as training passes, go nowhere: they never reach the
    broker as outputs of another client's predict."""
    c = mesh2.client
    net = mesh2.remember(c.create([3, 2], seed=8, dtype="float64"))
    X = np.random.default_rng(3).normal(size=(200, 2))
    try:
        net.predict(X[:1])
        lease = c._route(net.id)
        ref = ReferenceNet(net.weights(), dtype=np.float64).forward(X)
        with through_broker(mesh2) as other:
            fields, arrays = table.from_rows(X)
            rid = other.send(wire.PREDICT, arrays, net=net.id, keep=False, chunk=1, strict=True, **fields)
            ctx = zmq.Context()
            try:
                sock = sockets.make(ctx, zmq.PUSH, connect=lease["first"][0])
                forged = np.full((1, 2), 50.0)
                for seq in range(1, 2 * len(X) + 50):  # every seq the broker may give the predict's passes
                    base = {"k": wire.FWD, "src": 0, "gen": lease["gen"], "at": lease["at"], "net": net.id,
                            "tok": lease["ptok"]}
                    for extra in ({"seq": seq}, {"seq": seq, "head": True},
                                  {"seq": seq, "reply": sockets.abstract_ipc("reply")}, {"seq": f"{1:016x}-{seq}"}):
                        sockets.send(sock, {**base, **extra}, [forged])
            finally:
                ctx.destroy(linger=0)
            _, (got,) = other.wait(rid)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(net.predict(X, remember=False), ref, rtol=1e-9, atol=1e-12)
    finally:
        net.drop()


def test_a_refused_training_run_leaves_the_encoder_that_leases_hold(mesh2):
    """A run refused for a bad option after its rows were encoded (with scaling learned)
    leaves no trace: direct predicts and the broker's still agree."""
    c = mesh2.client
    net = mesh2.remember(c.create([3, 1], seed=9, dtype="float64"))
    X = np.random.default_rng(5).normal(loc=4.0, size=(8, 2))
    try:
        net.predict(X[:1])
        net.predict(X, remember=False)  # holds a lease
        with through_broker(mesh2) as other:
            with pytest.raises(RemoteError, match="batch_size must be at least 1"):
                other.request(wire.TRAIN, [X, np.zeros((8, 1))], net=net.id, width=2, learn={"standardize": True},
                              options={"batch_size": 0})
            got = net.predict(X, remember=False)
            assert net.id in c.direct.leases  # the same lease, not a new one
            np.testing.assert_array_equal(got, other.network(net.id).predict(X, remember=False))
    finally:
        net.drop()


def fake(keys=None, host="127.0.0.1", state=State.READY, inputs=2, group_host="127.0.0.1"):
    groups = {"g1": GroupRecord(gid="g1", layer=0, lo=0, hi=1, host=group_host,
                                endpoints={"ipc": "ipc://@a", "tcp": "tcp://127.0.0.1:1"})}
    net = SimpleNamespace(id="n1", state=state, waits=lambda: False, inputs=inputs, sent=SimpleNamespace(done=3),
                          step=3, groups=groups, row_readers=lambda: [("g1", 0)], last=lambda: ["g1"], gen=2, token="t",
                          layer1_width=2, encoder=SimpleNamespace(to_dict=dict),
                          spec=SimpleNamespace(dtype="float64", output="sigmoid"))
    return SimpleNamespace(keys=keys, host=host), net


@pytest.mark.parametrize("why, retry, kw", [("keys", leases.NEVER, dict(keys=object())),
                                            ("training", 1.0, dict(state=State.TRAINING)),
                                            ("first rows", 0.0, dict(inputs=0)),
                                            ("another host", leases.NEVER, dict(group_host="10.0.0.2"))])
def test_the_broker_refuses_a_lease_and_says_why_and_when_to_ask_again(why, retry, kw):
    b, net = fake(**kw)
    with pytest.raises(leases.NoLease, match=why) as e:
        leases.lease(b, net)
    assert e.value.retry == retry
    assert leases.lease(*fake())["at"] == 3
