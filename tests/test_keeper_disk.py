"""Fault tolerance costs disk, not memory: a group's snapshots and the replicas
it keeps are files in its worker's state folder, written from the live arrays
(or the message's frames) and read memory-mapped; what is resident at a
step's peak is W, dW, the optimizer's slots and one temporary at most."""
import glob
import os
import tracemalloc

import numpy as np
import pytest

from mesh import RemoteError, memory
from mesh import keeper as keeper_module
from mesh.keeper import CREDIT, Keeper, Outgoing, Stored, parts_of
from mesh.reference import ReferenceNet
from mesh.neurons import Neurons
from mesh.optim import Optimizer
from mesh.sizes import MiB
from conftest import wait_until

ROWS, FAN_IN, BATCH = 256, 2048, 8


def step(n, rng):
    x = rng.normal(size=(BATCH, FAN_IN))
    a = n.forward(x)
    n.backward(x, a, rng.normal(size=a.shape), need_dx=True)
    n.apply(0.01)


@pytest.mark.parametrize("optimizer, most", [("sgd", 3), ("momentum", 4), ("adam", 5)])
def test_resident_copies_at_a_steps_peak_with_a_snapshot_taken(tmp_path, optimizer, most):
    """numpy's allocations are traced (tracemalloc): the peak over a step and a snapshot, in
    copies of the parameters, is within the model's count (the snapshot adds none)."""
    rng = np.random.default_rng(0)
    keeper = Keeper(str(tmp_path / "g"))
    tracemalloc.start()
    try:
        n = Neurons(rng.normal(size=(ROWS, FAN_IN)), np.zeros(ROWS), "tanh", Optimizer(optimizer))
        step(n, rng)  # the optimizer's slots exist from here on
        tracemalloc.reset_peak()
        step(n, rng)
        keeper.keep_own(n, 1, 2, None)
        keeper.keep_own(n, 2, 3, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    copies = peak / (memory.parameters(ROWS, FAN_IN) * 8)
    parts = memory.group_parts(ROWS, FAN_IN, 8, optimizer, window=1, pass_rows=BATCH)
    planned = sum(parts[k] for k in ("weights", "gradient", "optimizer", "update")) / parts["weights"]
    print(f"{optimizer}: {copies:.2f} copies at the peak, {planned:.2f} planned")
    assert copies <= most and copies <= planned + 0.1  # + the pass's x and a: 8 rows of 2048 and 256
    keeper.close()
    assert not os.path.exists(tmp_path / "g")


def test_snapshots_are_files_superseded_ones_go_and_a_restore_equals_the_state(tmp_path):
    rng = np.random.default_rng(1)
    n = Neurons(rng.normal(size=(4, 3)), rng.normal(size=4), "tanh", Optimizer("adam"))
    step_small = lambda: (n.backward(x := rng.normal(size=(2, 3)), n.forward(x), rng.normal(size=(2, 4))), n.apply(0.1))
    step_small()
    keeper = Keeper(str(tmp_path / "g"))
    first = keeper.keep_own(n, 1, 1, None)
    held = first.arrays()  # mapped now: they stay readable after the files are superseded
    assert isinstance(first, Stored) and isinstance(held[0], np.memmap)
    W1 = n.W.copy()
    step_small()
    keeper.keep_own(n, 2, 2, whole=1)
    step_small()
    keeper.keep_own(n, 3, 3, whole=2)  # 1 is neither the whole one nor the newest: its files go
    assert sorted(os.listdir(tmp_path / "g")) == ["own-2", "own-3"]
    keeper.keep_message("w", first.header(), held, np.float64, 4, None)  # a ward's replica
    back = keeper.replica("w", 1)
    np.testing.assert_array_equal(back.arrays()[0], W1)
    restored = keeper.restore_own(3, "tanh")
    np.testing.assert_array_equal(restored.W, n.W)
    assert restored.optimizer.t == n.optimizer.t and len(restored.optimizer.slots[0]) == 2
    with pytest.raises(ValueError, match="a replica of shapes"):
        keeper.keep_message("w", first.header(), held[:1], np.float64, 4, None)
    keeper.forget_all_but([])
    assert sorted(os.listdir(tmp_path / "g")) == ["own-2", "own-3"]
    keeper.close()
    assert not os.path.exists(tmp_path / "g")


def test_a_replica_streams_part_by_part_within_its_credit_and_arrives_whole(tmp_path, monkeypatch):
    """Outgoing sends CREDIT parts ahead of the acknowledgements, never more; Incoming writes
    each part to its file as it comes (under a temporary name until the last); a part out of
    order, or beyond the arrays, is refused."""
    monkeypatch.setattr(keeper_module, "CHUNK_BYTES", 1000)
    rng = np.random.default_rng(2)
    n = Neurons(rng.normal(size=(30, 20)), rng.normal(size=30), "tanh", Optimizer("adam"))
    n.backward(x := rng.normal(size=(2, 20)), n.forward(x), rng.normal(size=(2, 30)))
    n.apply(0.1)
    ward, keeper = Keeper(str(tmp_path / "ward")), Keeper(str(tmp_path / "keeper"))
    snap = ward.keep_own(n, 4, 7, None)
    sent = []
    out = Outgoing(lambda h, arrays: sent.append((h, [np.array(a) for a in arrays])), {"snap": 4, **snap.header()}, snap)
    assert len(sent) == CREDIT
    h0, a0 = sent[0]
    assert h0["shapes"] == [[30, 20], [30], [30, 20], [30, 20], [30], [30]] and h0["parts"] == len(parts_of(snap.arrays()))
    stream = keeper.receive("of-w", h0, np.float64, 30)
    with pytest.raises(ValueError, match="part 1 of replica 4, expected part 0"):
        stream.add(*sent[1])
    done, part = False, 0
    while not done:
        assert len(sent) - part <= CREDIT  # never more parts unacknowledged than its credit
        done = stream.add(*sent[part])
        assert os.path.isdir(tmp_path / "keeper" / "of-w-4.part")  # under its temporary name until finish()
        out.more(part)
        part += 1
    assert out.done and part == len(sent) > 2 * CREDIT
    kept = stream.finish()
    assert sorted(os.listdir(tmp_path / "keeper")) == ["of-w-4"]
    for got, want in zip(kept.arrays(), [n.W, n.b, *n.optimizer.state()[1]]):
        np.testing.assert_array_equal(got, want)
    again = keeper.receive("of-w", h0, np.float64, 30)
    with pytest.raises(ValueError, match="goes beyond its arrays"):
        again.add(dict(h0, part=0), [np.zeros(30 * 20 + 1)])
    again.abandon()
    with pytest.raises(ValueError, match="a replica of shapes"):
        keeper.receive("of-w", dict(h0, shapes=[[29, 20], [30]]), np.float64, 30)
    ward.close()
    keeper.close()


def test_replicas_stream_in_parts_and_a_killed_group_comes_back_from_them(fresh_mesh, tmp_path, monkeypatch):
    """With parts of 512 bytes (MESH_REPLICA_CHUNK), each group's replica travels to its keeper
    in many KEEP parts; a group SIGKILLed after step 3 is rebuilt from its keeper's replica,
    streamed back in REPLICA parts, and training ends with the reference's weights (adam: its
    moments travel too)."""
    monkeypatch.setenv("MESH_REPLICA_CHUNK", "512")
    h = fresh_mesh(workers=2, timeout=60, faults_plan="n1.2.0@step=3", faults_log=tmp_path / "faults.log")
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(32, 5)), np.eye(3)[rng.integers(0, 3, 32)]
    spec = dict(activation="tanh", output="softmax", loss="cross_entropy")
    net = h.remember(h.client.create([24, 16, 3], seed=3, dtype="float64", **spec))
    net.predict(X[:1], remember=False)
    ref = ReferenceNet(net.weights(), optimizer="adam", dtype=np.float64, **spec)
    hist = net.train(X, Y, epochs=2, batch_size=8, learning_rate=0.01, optimizer="adam", shuffle=False, progress=False)
    assert [line.split()[0] for line in h.fired()] == ["n1.2.0@step=3"]
    np.testing.assert_allclose(hist, ref.train(X, Y, epochs=2, batch_size=8, learning_rate=0.01, shuffle=False), rtol=1e-9)
    for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
    assert set(net.steps().values()) == {8}


def worker_folders(h):
    root = os.path.join(os.environ["XDG_STATE_HOME"], "neuromesh")
    return [f for w in h.client.status()["workers"] for f in glob.glob(os.path.join(root, f"worker-{w['pid']}-*"))]


def test_a_mesh_keeps_its_snapshots_on_disk_and_leaves_nothing_behind(fresh_mesh):
    h = fresh_mesh(2, timeout=30)
    folders = worker_folders(h)
    assert len(folders) == 2
    net = h.remember(h.client.create([16, 8, 2], dtype="float64", seed=2))
    rng = np.random.default_rng(0)
    net.train(rng.normal(size=(8, 4)), rng.normal(size=(8, 2)), epochs=2, batch_size=1, progress=False)
    files = [f for d in folders for f in glob.glob(os.path.join(d, "*", "*", "*.npy"))]
    assert any("/own-" in f for f in files) and any("/of-" in f for f in files), files
    disk = [w["disk"] for w in h.client.status()["workers"]]
    assert all(d["budget"] and d["planned"] > 0 for d in disk), disk
    wait_until(lambda: sum(w["disk"]["measured"] for w in h.client.status()["workers"]) > 0, "snapshot bytes", 30)
    net.drop()
    wait_until(lambda: not [f for d in folders for f in glob.glob(os.path.join(d, "*"))], "the files of its groups gone")
    h.stop()
    assert not [f for f in folders if os.path.exists(f)]


def test_a_network_whose_snapshots_would_not_fit_the_disk_is_refused_before_it_starts(fresh_mesh):
    h = fresh_mesh(1, worker_disk="1MiB")
    with pytest.raises(RemoteError, match=r"its snapshots would not fit: worker w1 would need [\d.]+ MiB of disk "
                                          r"for snapshots, its disk budget is 1 MiB \(nothing was started\)"):
        h.client.create([512, 512, 1], dtype="float64")
    assert h.client.status()["networks"] == [] and h.client.status()["workers"][0]["groups"] == 0
    h.client.create([8, 1], dtype="float64")  # a small one still fits
