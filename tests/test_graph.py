"""Networks whose layers read any earlier layers (mesh/graph.py): the graph is
checked at create; the reference learns it (checked by finite differences);
the mesh matches the reference to 1e-9 in float64 (predict through the broker
and direct, backprop, exact, async and online training) for group sizes 1, 2
and a whole layer, on one worker and two."""
import numpy as np
import pytest
import zmq

from mesh import Client, sockets, wire
from mesh.client import RemoteError
from mesh.reference import ReferenceNet
from mesh.spec import Spec

from rig import Rig
from test_cli import mesh_cmd
from test_reference import numeric_gradients

RTOL, ATOL = 1e-9, 1e-12
GRAPHS = {  # sizes, inputs
    "issue": ([6, 5, 2], {2: [1, 0], 3: [2, 1, 0]}),        # layer 3 reads 2, 1 and the rows
    "wide-deep": ([5, 4, 1], {3: [2, 0]}),                  # the rows straight to the output too
    "branches": ([4, 3, 2], {2: [0], 3: [1, 2]}),           # two layers read the rows alone
    "rows-first": ([3, 4, 1], {2: [0, 1], 3: [0, 2, 1]}),   # the rows' columns before a layer's
}
SPEC = dict(activation="tanh", output="sigmoid", loss="mse")


def ref_of(net, inputs, **spec):
    kw = dict(SPEC, **spec)
    return ReferenceNet(net.weights(), dtype=np.float64, inputs=inputs, **kw)


def assert_same_weights(got, want):
    assert len(got) == len(want)
    for (W, b), (Wr, br) in zip(got, want):
        np.testing.assert_allclose(W, Wr, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(b, br, rtol=RTOL, atol=ATOL)


# ---- the graph, checked -------------------------------------------------------

@pytest.mark.parametrize("inputs, why", [
    ({3: [3]}, "layer 3 cannot read 3: a source is an earlier layer"),
    ({2: [5]}, "layer 2 cannot read 5"),
    ({3: [2, 2]}, "layer 3 lists a source twice"),
    ({2: []}, "layer 2 needs one or more sources"),
    ({4: [1]}, "inputs name layer 4, but the network has layers 1 to 3"),
    ({0: [0]}, "inputs name layer 0"),
    ({3: [1]}, "no layer reads layer 2's output"),
    ({2: ["x"]}, "a source is a layer number"),
])
def test_invalid_graphs_are_refused_with_the_reason(inputs, why):
    with pytest.raises(ValueError, match=why):
        Spec([6, 5, 2], inputs=inputs)
    with pytest.raises(ValueError, match=why):
        ReferenceNet([(np.zeros((6, 2)), np.zeros(6)), (np.zeros((5, 6)), np.zeros(5)), (np.zeros((2, 5)), np.zeros(2))],
                     inputs=inputs)


def test_the_default_is_the_chain_and_a_graph_travels_in_the_spec():
    assert Spec([6, 5, 2]).inputs is None
    assert Spec([6, 5, 2], inputs={2: [1], 3: [2]}).inputs is None  # the chain said out loud
    spec = Spec([6, 5, 2], inputs={"2": [1, 0], 3: [2, 1, 0]})  # keys as JSON has them, or ints
    assert spec.inputs == [[0], [1, 0], [2, 1, 0]]
    again = Spec(**spec.to_dict())
    assert again.inputs == spec.inputs
    assert [again.source_widths(layer, 4) for layer in range(3)] == [[4], [6, 4], [5, 6, 4]]
    assert again.row_readers() == [0, 1, 2]


def test_the_broker_refuses_an_invalid_graph_at_create(mesh2):
    with pytest.raises(RemoteError, match="lists a source twice"):
        mesh2.client.request("create", spec=dict(Spec([3, 2]).to_dict(), inputs=[[0], [1, 1]]))
    with pytest.raises(ValueError, match="cannot read 2"):  # the client says so before asking
        mesh2.client.create([3, 2], inputs={2: [2]})


# ---- the reference learns graphs ---------------------------------------------

def random_graph_net(sizes, inputs, width, rng, **kw):
    spec = Spec(sizes, inputs=inputs)
    layers = [(rng.normal(0, 0.7, (n, spec.fan_in(i, width))), rng.normal(0, 0.7, n)) for i, n in enumerate(sizes)]
    return ReferenceNet(layers, dtype=np.float64, inputs=inputs, **kw)


@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("output, loss", [("sigmoid", "mse"), ("softmax", "cross_entropy")])
def test_reference_gradients_of_a_graph_are_finite_differences(name, output, loss):
    sizes, inputs = GRAPHS[name]
    rng = np.random.default_rng(len(name))
    net = random_graph_net(sizes, inputs, 3, rng, activation="tanh", output=output, loss=loss)
    X = rng.normal(size=(5, 3))
    T = rng.dirichlet(np.ones(sizes[-1]), size=5) if output == "softmax" else rng.uniform(size=(5, sizes[-1]))
    for (gW, gb), (nW, nb) in zip(net.gradients(X, T), numeric_gradients(net, X, T)):
        np.testing.assert_allclose(gW, nW, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(gb, nb, rtol=1e-5, atol=1e-8)


def test_reference_chain_is_unchanged_and_growing_the_rows_widens_every_reader():
    rng = np.random.default_rng(0)
    chain = random_graph_net([4, 3], None, 2, rng)
    same = ReferenceNet(chain.layers, dtype=np.float64, inputs={2: [1]})
    X, T = rng.normal(size=(6, 2)), rng.uniform(size=(6, 3))
    assert chain.step(X, T, 0.3) == same.step(X, T, 0.3)
    for (W, b), (W2, b2) in zip(chain.layers, same.layers):
        np.testing.assert_array_equal(W, W2)
    sizes, inputs = GRAPHS["rows-first"]
    net = random_graph_net(sizes, inputs, 2, rng, optimizer="adam")
    net.step(X, rng.uniform(size=(6, 1)), 0.1)
    before = net.forward(X)
    net.grow_inputs(3)
    assert [W.shape[1] for W, _ in net.layers] == [5, 5 + 3, 5 + 4 + 3]
    np.testing.assert_allclose(net.forward(np.hstack([X, rng.normal(size=(6, 3))])), before, rtol=1e-12)
    # layer 3 reads the rows first: its new columns are its columns 2..4, zero
    np.testing.assert_array_equal(net.layers[2][0][:, 2:5], 0)


# ---- the mesh against the reference ------------------------------------------

@pytest.mark.parametrize("group_size", [1, 2, None])
@pytest.mark.parametrize("name", GRAPHS)
def test_graph_predict_and_backprop_match_the_reference(any_mesh, name, group_size):
    sizes, inputs = GRAPHS[name]
    rng = np.random.default_rng(7)
    net = any_mesh.remember(any_mesh.client.create(sizes, inputs=inputs, group_size=group_size, seed=3,
                                                   dtype="float64", **SPEC))
    try:
        X, T = rng.normal(size=(7, 3)), rng.uniform(size=(7, sizes[-1]))
        got = net.predict(X)
        ref = ref_of(net, inputs)
        assert [W.shape[1] for W, _ in net.weights()] == [Spec(sizes, inputs=inputs).fan_in(i, 3) for i in range(3)]
        np.testing.assert_allclose(got, ref.forward(X), rtol=RTOL, atol=ATOL)
        assert net.backprop(T, learning_rate=0.3) == pytest.approx(ref.step(X, T, 0.3), rel=1e-9)
        assert_same_weights(net.weights(), ref.layers)
        for i in range(3):  # a row at a time
            np.testing.assert_allclose(net.predict(X[i]), ref.forward(X[i:i + 1])[0], rtol=RTOL, atol=ATOL)
            net.backprop(T[i], learning_rate=0.5)
            ref.step(X[i:i + 1], T[i:i + 1], 0.5)
        assert_same_weights(net.weights(), ref.layers)
        assert set(net.steps().values()) == {4}
    finally:
        net.drop()


@pytest.mark.parametrize("group_size", [1, 2, None])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_graph_exact_training_matches_the_reference(mesh2, group_size, optimizer):
    sizes, inputs = GRAPHS["issue"]
    spec = dict(activation="relu", output="softmax", loss="cross_entropy")
    net = mesh2.remember(mesh2.client.create(sizes, inputs=inputs, group_size=group_size, seed=11, dtype="float64",
                                             **spec))
    try:
        rng = np.random.default_rng(5)
        X = rng.normal(size=(45, 3))
        Y = np.eye(2)[rng.integers(0, 2, size=45)]
        net.predict(X[:1], remember=False)  # the first rows size every layer that reads them
        ref = ref_of(net, inputs, optimizer=optimizer, **spec)
        lr = 0.01 if optimizer == "adam" else 0.2
        for shuffle in (False, True):
            hist = net.train(X, Y, epochs=2, batch_size=16, learning_rate=lr, optimizer=optimizer, shuffle=shuffle,
                             seed=4, micro_batches=3, progress=False)
            want = ref.train(X, Y, epochs=2, batch_size=16, learning_rate=lr, shuffle=shuffle, seed=4)
            np.testing.assert_allclose(hist, want, rtol=1e-9)
            assert_same_weights(net.weights(), ref.layers)
    finally:
        net.drop()


def test_graph_training_with_steps_ahead_matches_the_reference(mesh2):
    """A sigmoid output in several groups computes its loss there, so several mini-batches
    run ahead of the broker (training.py): still the reference's steps exactly."""
    sizes, inputs = GRAPHS["wide-deep"]
    net = mesh2.remember(mesh2.client.create([5, 4, 3], inputs=inputs, group_size=2, seed=2, dtype="float64", **SPEC))
    try:
        rng = np.random.default_rng(9)
        X, Y = rng.normal(size=(80, 3)), rng.uniform(size=(80, 3))
        net.predict(X[:1], remember=False)
        ref = ref_of(net, inputs, optimizer="adam")
        hist = net.train(X, Y, epochs=2, batch_size=4, learning_rate=0.01, optimizer="adam", shuffle=True, seed=1,
                         micro_batches=2, progress=False)
        np.testing.assert_allclose(hist, ref.train(X, Y, epochs=2, batch_size=4, learning_rate=0.01, shuffle=True,
                                                   seed=1), rtol=1e-9)
        assert_same_weights(net.weights(), ref.layers)
    finally:
        net.drop()


@pytest.mark.parametrize("group_size", [1, None])
def test_graph_online_training_equals_one_row_at_a_time(mesh2, group_size):
    sizes, inputs = GRAPHS["branches"]
    rng = np.random.default_rng(3)
    X, T = rng.normal(size=(30, 3)), rng.uniform(size=(30, 2))
    net = mesh2.remember(mesh2.client.create(sizes, inputs=inputs, group_size=group_size, seed=5, dtype="float64",
                                             **SPEC))
    try:
        net.predict(X[:1], remember=False)
        ref = ref_of(net, inputs)
        outputs, losses = net.online(X, T, learning_rate=0.2, window=8)
        expected = []
        for i in range(len(X)):
            expected.append(ref.forward(X[i:i + 1])[0])
            ref.step(X[i:i + 1], T[i:i + 1], 0.2)
        np.testing.assert_allclose(outputs, np.array(expected), rtol=RTOL, atol=ATOL)
        assert_same_weights(net.weights(), ref.layers)
        assert set(net.steps().values()) == {len(X)}
    finally:
        net.drop()


def test_graph_async_training_ends_with_every_step_applied_everywhere(mesh2):
    sizes, inputs = GRAPHS["issue"]
    rng = np.random.default_rng(6)
    X, T = rng.normal(size=(400, 3)), rng.uniform(size=(400, 2))
    net = mesh2.remember(mesh2.client.create(sizes, inputs=inputs, group_size=2, seed=1, dtype="float64", **SPEC))
    try:
        history = net.train(X, T, epochs=2, batch_size=8, micro_batches=1, mode="async", learning_rate=0.05,
                            progress=False)
        assert len(history) == 2 and all(np.isfinite(history))
        steps = set(net.steps().values())
        assert len(steps) == 1 and steps.pop() == 100  # every group applied each of the 2 x 50 steps
    finally:
        net.drop()


@pytest.mark.parametrize("group_size", [1, None])
def test_graph_direct_predicts_equal_the_brokers_and_the_reference(mesh2, group_size):
    sizes, inputs = GRAPHS["issue"]
    c = mesh2.client
    net = mesh2.remember(c.create(sizes, inputs=inputs, group_size=group_size, seed=3, dtype="float64", **SPEC))
    X = np.random.default_rng(1).normal(size=(10, 3))
    try:
        net.predict(X[:1])  # the first rows go through the broker
        before = dict(c.direct.counts)
        got = net.predict(X, remember=False, chunk=3)
        assert c.direct.counts["direct"] == before["direct"] + 1
        with Client(mesh2.mesh.address, timeout=30, direct_predicts=False) as other:
            np.testing.assert_array_equal(got, other.network(net.id).predict(X, remember=False, chunk=3))
        np.testing.assert_allclose(got, ref_of(net, inputs).forward(X), rtol=RTOL, atol=ATOL)
    finally:
        net.drop()


def test_mesh_create_inputs_on_the_command_line(mesh2):
    addr = mesh2.mesh.address
    r = mesh_cmd("create", "6,5,2", "--inputs", "2=1,0", "--inputs", "3=2,1,0", "--broker", addr)
    assert r.returncode == 0, r.stderr
    net = mesh2.client.network(r.stdout.strip())
    try:
        assert net.info["graph"] == [[0], [1, 0], [2, 1, 0]]
    finally:
        net.drop()
    for bad, why in ((["--inputs", "3=2,2"], "lists a source twice"), (["--inputs", "3:2"], "LAYER=SOURCE"),
                     (["--inputs", "2=0", "--inputs", "2=1"], "given twice")):
        r = mesh_cmd("create", "6,5,2", *bad, "--broker", addr)
        assert r.returncode != 0 and why in r.stderr, r.stderr


def test_the_predict_token_fills_only_the_rows_part_of_a_later_layer():
    """A group of a later layer reads a group's output (columns 0..1) and the rows (2..3). A
    client's pass under the predict token that claims to be the group's part is filed as the
    rows; the group's real part, under the network's token, completes the pass, and the answer
    is what those rows and that part give."""
    ctx = zmq.Context()
    try:
        r = Rig(ctx, layer=2, rows=2, cols=4)
        r.g.setup({"function": "tanh", "index": 0, "fan_in": 2, "fan_out": 1, "down": [],
                   "up": [["tcp://127.0.0.1:9", 0, 2, None, 0], [None, 2, 4, None, None]]}, [r.W, np.zeros(2)])
        r.heard()  # its READY
        assert r.g.state.rows_src == 1 and r.g.state.data.direct_parts.nbytes == 0
        reply = sockets.abstract_ipc("reply")
        answers = sockets.make(ctx, zmq.PULL, bind=reply)
        rows, part = np.array([[0.5, -0.25]]), np.array([[0.1, 0.3]])
        seq = f"{12:016x}-1"  # a client's: its tag, then its count
        base = {"k": wire.FWD, "net": "n1", "gen": 0, "at": 0, "seq": seq, "reply": reply}
        r.send({**base, "tok": wire.predict_token("tok"), "src": 0}, [rows])  # claims part 0
        assert len(r.g.state.data.direct_parts) == 1 and not answers.poll(0)
        r.send({**base, "tok": "tok", "src": 0}, [part])  # the group's part, passed on under the network's token
        assert answers.poll(10_000)
        _, h, (z,) = sockets.recv(answers)
        assert h["k"] == wire.OUT and h["seq"] == seq
        np.testing.assert_allclose(z, np.tanh(np.hstack([part, rows]) @ r.W.T))  # rows where the rows go
    finally:
        ctx.destroy(linger=0)
