"""A graph survives as a chain does: groups SIGKILLed at known steps (mesh/faults.py)
and a standby broker's takeover end with the weights of a fault-free run, bit for
bit; save/load keeps the graph; new input columns grow every layer that reads
the rows at the right offset; budgets plan each layer for its whole fan-in."""
import numpy as np
import pytest

from mesh.broker.placement import plan
from mesh.encoder import Encoder
from mesh.estimator import MeshClassifier
from mesh.reference import ReferenceNet
from mesh.sizes import MiB
from mesh.spec import Spec

from conftest import alive
from test_factors import encode
from test_graph import assert_same_weights
from test_standby import pair_mesh, pair_status  # noqa: F401 (the fixture)

SPEC = dict(activation="tanh", output="softmax", loss="cross_entropy")
SIZES, GRAPH = [6, 5, 3], {2: [1, 0], 3: [2, 1, 0]}  # the output reads layers 2, 1 and the rows


def data(rows=192, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 4)), np.eye(3)[rng.integers(0, 3, rows)]


def train(net, X, Y, epochs):
    return net.train(X, Y, epochs=epochs, batch_size=16, learning_rate=0.05, optimizer="momentum", shuffle=True,
                     seed=1, micro_batches=2, progress=False)


def assert_twin(h, net, hist, X, Y, epochs):
    """A twin trained the same way with no fault: the same floats, every step applied once everywhere."""
    twin = h.remember(h.client.create(SIZES, inputs=GRAPH, group_size=2, seed=4, dtype="float64", **SPEC))
    assert train(twin, X, Y, epochs) == hist
    for (W, b), (Wt, bt) in zip(net.weights(), twin.weights()):
        np.testing.assert_array_equal(W, Wt)
        np.testing.assert_array_equal(b, bt)
    assert set(net.steps().values()) == {epochs * len(X) // 16}


def test_graph_training_with_kills_ends_with_fault_free_weights(fresh_mesh, tmp_path):
    """Groups of each layer SIGKILLed right after they applied a known step (one reads the
    rows and two layers, one is read by two layers), then a whole worker; 144 steps, so
    snapshots and their keepers' replicas are used. The weights are the fault-free run's
    and the reference's."""
    plan = ["n1.3.1@step=5", "n1.1.0@step=30", "n1.2.1@step=70", "n1.1.2@step=100:worker"]
    h = fresh_mesh(workers=3, timeout=60, faults_plan=",".join(plan), faults_log=tmp_path / "faults.log")
    X, Y = data()
    net = h.remember(h.client.create(SIZES, inputs=GRAPH, group_size=2, seed=4, dtype="float64", **SPEC))
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), optimizer="momentum", dtype=np.float64, inputs=GRAPH, **SPEC)
    before = {p["gid"]: p["pid"] for p in net.processes()}
    hist = train(net, X, Y, 12)
    fired = h.fired()
    assert [line.split()[0] for line in fired] == plan, fired
    for entry, line in zip(plan, fired):
        gid, step = entry.split("@")[0], int(entry.split("=")[1].split(":")[0])
        assert f"after step {step} pid {before[gid]}" in line, line
    after = {p["gid"]: p["pid"] for p in h.remember(net).processes()}
    assert all(after[e.split("@")[0]] != before[e.split("@")[0]] and not alive(before[e.split("@")[0]]) for e in plan)
    np.testing.assert_allclose(hist, ref.train(X, Y, epochs=12, batch_size=16, learning_rate=0.05, shuffle=True,
                                               seed=1), rtol=1e-9)
    assert_same_weights(net.weights(), ref.layers)
    status = [n for n in h.client.status()["networks"] if n["net"] == net.id][0]
    assert status["restarts"] >= len(plan)
    assert_twin(h, net, hist, X, Y, 12)


def test_graph_predicts_in_flight_are_answered_through_a_kill(fresh_mesh, tmp_path):
    """The output group (it reads the rows too) dies at the 7th forward of a 30-pass predict."""
    h = fresh_mesh(workers=2, faults_plan="n1.3.0@fwd=7", faults_log=tmp_path / "faults.log")
    net = h.remember(h.client.create(SIZES, inputs=GRAPH, seed=2, dtype="float64", **SPEC))
    X = np.random.default_rng(1).normal(size=(300, 4))
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), dtype=np.float64, inputs=GRAPH, **SPEC)
    got = net.predict(X, remember=False, chunk=10)
    assert len(h.fired()) == 1
    np.testing.assert_allclose(got, ref.forward(X), rtol=1e-12)
    h.remember(net)


def test_graph_training_through_a_failover_ends_bit_for_bit(pair_mesh):  # noqa: F811
    h = pair_mesh("broker@step=30")
    active = h.mesh.brokers[0].pid
    X, Y = data()
    net = h.remember(h.client.create(SIZES, inputs=GRAPH, group_size=2, seed=4, dtype="float64", **SPEC))
    hist = train(net, X, Y, 8)  # the active broker dies in this call, which completes on the standby
    assert f"at step 30 pid {active}" in h.fired()[-1] and not alive(active)
    assert pair_status(h)["failovers"] == 1
    assert [n["graph"] for n in h.client.status()["networks"]] == [[[0], [1, 0], [2, 1, 0]]]  # the journal's
    assert_twin(h, net, hist, X, Y, 8)


def test_save_load_keeps_the_graph_and_training_continues_identically(mesh2, tmp_path):
    X, Y = data(48, seed=2)
    a = mesh2.remember(mesh2.client.create(SIZES, inputs=GRAPH, group_size=2, seed=3, dtype="float64", **SPEC))
    try:
        a.train(X, Y, epochs=2, batch_size=8, learning_rate=0.01, optimizer="adam", shuffle=False, progress=False)
        a.save(tmp_path / "a.npz")
        b = mesh2.remember(mesh2.client.load(tmp_path / "a.npz"))
        try:
            assert mesh2.client.network(b.id).info["graph"] == [[0], [1, 0], [2, 1, 0]]
            np.testing.assert_array_equal(b.predict(X, remember=False), a.predict(X, remember=False))
            for n in (a, b):
                n.train(X, Y, epochs=1, batch_size=8, learning_rate=0.01, optimizer="adam", shuffle=False,
                        progress=False)
            for (W, c), (W2, c2) in zip(a.weights(), b.weights()):
                np.testing.assert_array_equal(W, W2)  # optimizer state came back too
                np.testing.assert_array_equal(c, c2)
        finally:
            b.drop()
    finally:
        a.drop()


@pytest.mark.parametrize("group_size", [1, None])
def test_new_input_columns_grow_every_layer_that_reads_the_rows(mesh2, group_size):
    """Layer 2 reads the rows after layer 1, layer 3 reads them first: a value first seen
    after 40 online steps adds a column to the rows' part of each, at its own offset."""
    graph = {2: [1, 0], 3: [0, 2]}
    net = mesh2.remember(mesh2.client.create([4, 3, 1], inputs=graph, group_size=group_size, seed=5,
                                             dtype="float64", activation="tanh"))
    try:
        rng = np.random.default_rng(0)
        rows = [[float(rng.normal()), str(rng.choice(["red", "green"]))] for _ in range(40)]
        enc = Encoder()
        encode(enc, [rows[0]])  # the first rows size the network: no growth
        net.predict(rows[0], remember=False)
        ref = ReferenceNet(net.weights(), dtype=np.float64, activation="tanh", inputs=graph)
        for row in rows + [[0.3, "blue"]] + rows[:10]:
            x, added = encode(enc, [row])
            if added:
                ref.grow_inputs(added)
            t = float(row[1] == "red")
            np.testing.assert_allclose(net.predict(row), ref.forward(x)[0], rtol=1e-9, atol=1e-12)
            net.backprop([t], 0.5)
            ref.step(x, np.array([[t]]), 0.5)
        layers = net.weights()
        assert [W.shape[1] for W, _ in layers] == [4, 4 + 4, 4 + 3]  # the rows: number, red, green, blue
        assert_same_weights(layers, ref.layers)
    finally:
        net.drop()


def test_budgets_plan_a_graph_for_its_whole_fan_in(fresh_mesh):
    """The output layer reads 512 + 512 + 8 inputs: planned (and placed) for all of them."""
    h = fresh_mesh(3, worker_memory="140MiB", timeout=60)
    graph = {3: [2, 1, 0]}
    net = h.remember(h.client.create([512, 512, 4], inputs=graph, dtype="float64", optimizer="sgd", seed=5,
                                     activation="tanh", output="linear"))
    memory = {w["name"]: w["memory"] for w in h.client.status()["workers"]}
    assert all(m["planned"] <= m["budget"] == 140 * MiB for m in memory.values())
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(16, 8)), rng.normal(size=(16, 4))
    got = net.predict(X)
    assert [W.shape[1] for W, _ in net.weights()] == [8, 512, 1032]
    ref = ReferenceNet(net.weights(), activation="tanh", output="linear", optimizer="sgd", dtype=np.float64,
                       inputs=graph)
    np.testing.assert_allclose(got, ref.forward(X), rtol=1e-9, atol=1e-12)
    net.train(X, T, epochs=1, batch_size=8, learning_rate=0.01, shuffle=False, progress=False)
    for lo in range(0, 16, 8):
        ref.step(X[lo:lo + 8], T[lo:lo + 8], 0.01)
    assert_same_weights(net.weights(), ref.layers)
    status = [n for n in h.client.status()["networks"] if n["net"] == net.id][0]
    assert status["links"]["total"] == sum(  # every edge's group pairs: 2->1, 3->(2, 1)
        len(a) * len(b) for a, b in [(_layer(status, 2), _layer(status, 1)), (_layer(status, 3), _layer(status, 2)),
                                     (_layer(status, 3), _layer(status, 1))])


def _layer(status, k):
    return [p for p in status["processes"] if p["layer"] == k]


def test_a_layer_that_reads_more_is_cut_into_more_pieces():
    """The same sizes and budgets: the output layer of the graph reads 2048 + 2048 + 16
    inputs, the chain's 2048, so the graph's is cut finer to fit."""
    hosts = [{"wid": w, "name": f"w{w}", "host": "127.0.0.1", "slots": 1, "budget": 300 * MiB, "free": 300 * MiB,
              "work": 0} for w in range(4)]  # room for the chain's layers whole, not for the graph's last
    pieces = {}
    for name, graph in (("chain", None), ("graph", {3: [2, 1, 0]})):
        spec = Spec([2048, 2048, 2048], dtype="float64", inputs=graph)
        where = plan(spec, 16, 16, "adam", hosts, {})
        pieces[name] = [sum(1 for layer, *_ in where if layer == k) for k in range(3)]
    assert pieces["graph"][:2] == pieces["chain"][:2]
    assert pieces["graph"][2] > pieces["chain"][2], pieces


def test_an_estimator_with_inputs_fits_a_wide_and_deep_network(mesh2):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    y = np.where(X[:, 0] + X[:, 1] * X[:, 2] > 0, "yes", "no")
    clf = MeshClassifier(hidden_layer_sizes=(8, 4), inputs={3: [2, 0]}, max_iter=30, batch_size=32,
                         learning_rate_init=0.01, random_state=0, client=mesh2.client)
    try:
        assert clf.get_params()["inputs"] == {3: [2, 0]}
        clf.fit(X[:150], y[:150])
        layers = clf.net_.weights()
        assert [W.shape[1] for W, _ in layers] == [3, 8, 4 + 3]  # the output reads layer 2 and the rows
        assert clf.score(X[150:], y[150:]) > 0.6
        assert mesh2.client.network(clf.net_.id).info["graph"] == [[0], [1], [2, 0]]
    finally:
        clf.close()
