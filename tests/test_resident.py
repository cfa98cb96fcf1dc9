"""Training with the data resident in the mesh (broker/resident.py, rundata.py): the rows
and targets go to each host once and the groups make every step themselves. The weights
are those of the broker-fed run, bit for bit, and of the numpy reference; a kill -9 at a
known step heals to the fault-free weights; a standby takes such a run over."""
import glob
import os

import numpy as np
import pytest

from mesh.reference import ReferenceNet

from conftest import STATE, alive
from test_standby import pair_mesh  # noqa: F401  the fixture

SPEC = dict(activation="tanh", output="sigmoid", loss="mse")  # the loss of each output group's own slice


def data(rows=96, width=4, outs=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, width)), rng.uniform(size=(rows, outs))


def staged_files():
    """The run files (staging.py) in the workers' state folders: none once a run ends."""
    return glob.glob(os.path.join(STATE, "neuromesh", "worker-*", "run-*"))


def trained(h, group_size, resident, sizes=(5, 4, 3), optimizer="momentum", **kw):
    net = h.client.create(list(sizes), group_size=group_size, seed=4, dtype="float64", **SPEC)
    h.remember(net)
    X, Y = data(outs=sizes[-1])
    net.predict(X[:1], remember=False)  # materialise layer 1
    ref = ReferenceNet(net.weights(), optimizer=optimizer, dtype=np.float64, **SPEC)
    opts = dict(epochs=3, batch_size=16, learning_rate=0.1, optimizer=optimizer, seed=2, micro_batches=2,
                progress=False, **kw)
    hist = net.train(X, Y, resident=resident, **opts)
    assert net.last_resident is resident
    hist_ref = ref.train(X, Y, epochs=3, batch_size=16, learning_rate=0.1, shuffle=opts.get("shuffle", True),
                         seed=2)
    return net, hist, ref, hist_ref


@pytest.mark.parametrize("group_size", [1, 2, None], ids=["per-neuron", "per-group", "per-layer"])
def test_resident_training_is_the_broker_fed_run_bit_for_bit_and_the_reference(mesh2, group_size):
    a, hist_a, ref, hist_ref = trained(mesh2, group_size, True)
    b, hist_b, _, _ = trained(mesh2, group_size, False)
    for (W, bias), (Wb, bb), (Wr, br) in zip(a.weights(), b.weights(), ref.layers):
        np.testing.assert_array_equal(W, Wb)  # the same floats as the broker-fed run
        np.testing.assert_array_equal(bias, bb)
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bias, br, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hist_a, hist_b, rtol=1e-12)
    np.testing.assert_allclose(hist_a, hist_ref, rtol=1e-9)
    assert set(a.steps().values()) == {3 * 96 // 16}  # every group applied every step once
    assert staged_files() == []  # the run's files went with it


def test_resident_softmax_in_one_output_group_and_a_graph_of_one_layer(mesh2):
    """The head in one group (softmax), and a network whose layer 1 is its output layer."""
    for sizes in ([5, 3], [6, 4, 2]):
        a, hist_a, ref, hist_ref = trained(mesh2, None, True, sizes=sizes, optimizer="adam", shuffle=False)
        for (W, bias), (Wr, br) in zip(a.weights(), ref.layers):
            np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(bias, br, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(hist_a, hist_ref, rtol=1e-9)


def test_a_kill_at_a_known_step_of_a_resident_run_heals_to_the_fault_free_weights(fresh_mesh, tmp_path):
    plan = ["n1.2.0@step=5", "n1.1.1@step=30", "n1.3.0@step=50:worker"]
    h = fresh_mesh(workers=3, timeout=60, faults_plan=",".join(plan), faults_log=tmp_path / "faults.log")
    net = h.client.create([6, 5, 3], group_size=2, seed=4, dtype="float64", **SPEC)
    h.remember(net)
    X, Y = data(rows=192)
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), optimizer="momentum", dtype=np.float64, **SPEC)
    before = {p["gid"]: p["pid"] for p in net.processes()}
    epochs, batch = 6, 16
    hist = net.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.05, optimizer="momentum", seed=1,
                     micro_batches=2, progress=False, resident=True)
    assert net.last_resident is True
    fired = h.fired()
    assert [line.split()[0] for line in fired] == plan, fired
    for entry, line in zip(plan, fired):
        gid, step = entry.split("@")[0], int(entry.split("=")[1].split(":")[0])
        assert f"after step {step} pid {before[gid]}" in line, line
        assert not alive(before[gid])
    hist_ref = ref.train(X, Y, epochs=epochs, batch_size=batch, learning_rate=0.05, shuffle=True, seed=1)
    np.testing.assert_allclose(hist, hist_ref, rtol=1e-9)
    for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
    assert set(net.steps().values()) == {epochs * len(X) // batch}


def test_the_standby_takes_over_a_resident_run_with_the_same_weights(pair_mesh):  # noqa: F811
    h = pair_mesh("broker@step=30")
    active = h.mesh.brokers[0].pid
    X, Y = data(rows=192)
    runs = []
    for _ in range(2):  # the second, a twin on the new active broker with no failover
        net = h.client.create([6, 5, 3], group_size=2, seed=4, dtype="float64", **SPEC)
        h.remember(net)
        runs.append((net, net.train(X, Y, epochs=4, batch_size=16, learning_rate=0.05, optimizer="momentum",
                                    seed=1, micro_batches=2, progress=False, resident=True)))
    fired = h.fired()
    assert len(fired) == 1 and f"at step 30 pid {active}" in fired[0], fired
    assert not alive(active)
    (net, hist), (twin, twin_hist) = runs
    np.testing.assert_allclose(hist, twin_hist, rtol=1e-12)
    for (W, b), (Wt, bt) in zip(net.weights(), twin.weights()):
        np.testing.assert_array_equal(W, Wt)
        np.testing.assert_array_equal(b, bt)
    assert set(net.steps().values()) == {4 * len(X) // 16}
