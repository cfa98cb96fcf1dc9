"""Memory budgets with real processes: refusal before any process starts,
a network cut across budgeted workers equal to the reference, growth
refused within the budget, and the model against measured RSS."""
import numpy as np
import pytest

from mesh import RemoteError
from mesh import memory
from mesh.broker.network import window_for
from mesh.broker.placement import keepers
from mesh.broker.records import GroupRecord
from mesh.procstat import pss_bytes
from mesh.reference import ReferenceNet
from mesh.sizes import MiB
from test_mesh_math import ATOL, RTOL, assert_same_weights
from conftest import wait_until


def worker_memory(h):
    return {w["name"]: w["memory"] for w in h.client.status()["workers"]}


def test_infeasible_network_refused_with_the_numbers_and_nothing_started(fresh_mesh):
    h = fresh_mesh(2, worker_memory="200MiB")
    with pytest.raises(RemoteError, match=r"^needs [\d.]+ GiB, the workers offer 400 MiB \(w1 200, w2 200\)$"):
        h.client.create([8192, 8192, 10], dtype="float64", optimizer="adam")
    s = h.client.status()
    assert s["networks"] == [] and all(w["groups"] == 0 for w in s["workers"])
    assert all(m["budget"] == 200 * MiB for m in worker_memory(h).values())


def test_network_cut_across_budgeted_workers_equals_the_reference(fresh_mesh):
    h = fresh_mesh(3, worker_memory="130MiB", timeout=60)
    net = h.remember(h.client.create([2048, 2048, 4], dtype="float64", optimizer="sgd", seed=5,
                                     activation="tanh", output="linear"))
    layer2 = [p for p in net.processes() if p["layer"] == 2]
    assert len(layer2) > 1 and len({p["worker"] for p in layer2}) > 1  # cut, and across workers
    assert all(m["planned"] <= m["budget"] for m in worker_memory(h).values())
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(16, 8)), rng.normal(size=(16, 4))
    got = net.predict(X)
    ref = ReferenceNet(net.weights(), activation="tanh", output="linear", loss="mse", optimizer="sgd",
                       dtype=np.float64)
    np.testing.assert_allclose(got, ref.forward(X), rtol=RTOL, atol=ATOL)
    net.train(X, T, epochs=2, batch_size=8, learning_rate=0.01, shuffle=False, progress=False)
    for _ in range(2):
        for lo in range(0, 16, 8):
            ref.step(X[lo:lo + 8], T[lo:lo + 8], 0.01)
    assert_same_weights(net.weights(), ref.layers)
    np.testing.assert_allclose(net.predict(X), ref.forward(X), rtol=RTOL, atol=ATOL)


def test_growth_beyond_the_budget_is_refused_and_the_network_keeps_answering(fresh_mesh):
    h = fresh_mesh(1, worker_memory="120MiB")
    net = h.remember(h.client.create([4096], dtype="float64"))
    net.train([[0.1, 0.2], [0.3, 0.4]], [[1.0] * 4096, [0.0] * 4096], epochs=1, batch_size=2, progress=False)
    before = net.predict([0.1, 0.2], remember=False)
    rows = [[0.5, f"v{i}"] for i in range(600)]
    with pytest.raises(RemoteError, match=r"growing layer 1 from 2 to 602 inputs would not fit: worker w1 would "
                                          r"need .* its budget is 120 MiB; network n1 stays as it was"):
        net.train(rows, [[0.0] * 4096] * 600, epochs=1, batch_size=100, progress=False)
    assert h.client.network(net.id).info["inputs"] == 2
    np.testing.assert_array_equal(net.predict([0.1, 0.2], remember=False), before)


def steady_plan(net, worker, inputs):
    """What the model plans on a worker that stays resident between steps: the weights, the
    optimizer's slots, links and baselines (the gradient, the update's temporary, the passes in
    flight and a replica on its way in are a step's or a snapshot's peak: test_keeper_disk
    measures those)."""
    procs = net.processes()
    records = [GroupRecord(gid=p["gid"], layer=p["layer"] - 1, lo=p["neurons"][0], hi=p["neurons"][1],
                           worker=p["worker"], host=p["host"]) for p in procs]
    widths = [inputs] + [p["neurons"][1] for p in procs if p["layer"] == 1][-1:] + [2048]
    keeper = keepers(records)
    total = memory.WORKER_BASELINE
    for r in records:
        if r.worker == worker:
            kept = [(k.hi - k.lo, widths[k.layer]) for k in records if keeper[k.gid] is r]
            parts = memory.group_parts(r.hi - r.lo, widths[r.layer], 8, "adam", window_for([2048, 2048, 4]),
                                       kept=kept, ends=memory.link_ends(*[sum(1 for q in records if q.layer == l)
                                                                          for l in (r.layer - 1, r.layer + 1)]))
            total += sum(parts[k] for k in ("weights", "optimizer", "links", "baseline"))
    return total


def test_measured_memory_lies_between_the_plans_resident_part_and_the_whole_plan(fresh_mesh):
    """A float64 adam network of ~100 MiB of state, layer 2 cut across two workers; once
    two snapshots with optimizer state are held (steps 64 and 128, on disk), each worker's
    memory (PSS of itself, its spawner and its groups: what its heartbeats report) is at least
    80% of what the model plans to stay resident between steps, and below the whole plan (the
    passes in flight, a step's gradient and temporary, a replica on its way in)."""
    h = fresh_mesh(2, worker_memory="220MiB", timeout=60)
    net = h.remember(h.client.create([2048, 2048, 4], dtype="float64", optimizer="adam"))
    assert len([p for p in net.processes() if p["layer"] == 2]) == 2
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(130, 16)), rng.uniform(size=(130, 4))
    net.train(X, T, epochs=1, batch_size=1, learning_rate=1e-3, optimizer="adam", shuffle=False, progress=False)
    status = h.client.status()["workers"]
    for w in status:
        m = w["memory"]
        groups = [p["pid"] for p in net.processes() if p["worker"] == w["name"]]
        spawner = [int(p) for p in open(f"/proc/{w['pid']}/task/{w['pid']}/children").read().split()]
        measured = sum(pss_bytes(pid) for pid in [w["pid"], *spawner, *groups])  # what its heartbeats report
        steady = steady_plan(net, w["name"], 16)
        ratio = measured / steady
        print(f"{w['name']}: planned {m['planned'] / MiB:.0f} MiB ({steady / MiB:.0f} between steps), "
              f"measured {measured / MiB:.0f} MiB, {ratio:.2f}")
        assert 0.8 <= ratio and measured <= m["planned"], (w["name"], m, measured, steady)
    wait_until(lambda: all(w["memory"]["measured"] for w in h.client.status()["workers"]), "heartbeats", 10)
