"""The benchmarks' own bookkeeping, on a real mesh with tiny sizes: they run, and
their rows say what the tables promise. No speed is asserted here (speed lives in
`mesh bench`)."""
import numpy as np

from mesh.bench import latency, online, sklearn, throughput


def test_throughput_names_the_bottleneck_group_and_its_idle_share(mesh2):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 64)]
    spec = dict(sizes=[8, 3], activation="relu", output="softmax", loss="cross_entropy")
    row = throughput.compare(mesh2.client, "tiny", X, Y, spec, 16, rounds=1, log=lambda s: None)
    assert row["bottleneck"].endswith((".1.0", ".2.0")) and set(row) >= set(throughput.COLUMNS)
    assert 0 <= float(row["idle share"].split()[0]) <= 1


def test_online_times_train_with_one_row_a_step_beside_a_ring_of_bare_hops(mesh2):
    row = online.pairs_per_second(mesh2.client, 100, rounds=1, rows=32, log=lambda s: None)
    assert row["n"] == 100 and row["target"] == "1,500" and float(row["pairs/s"].split()[0].replace(",", "")) > 0
    assert float(row["4-hop ring/s"].split()[0].replace(",", "")) > 0 and float(row["pairs/s / ring"].split()[0]) > 0


def test_latency_asks_each_network_direct_and_through_the_broker(mesh2):
    ways, hops, processes = latency.predict_latency(mesh2.client, None, n=10)
    assert set(ways) == {"direct", "through the broker"} and processes == 3
    assert len(hops) == latency.BLOCKS and all(h > 0 for h in hops)
    assert all(0 < p50 <= p99 and len(ratios) == latency.BLOCKS for p50, p99, ratios in ways.values())


def test_sklearn_compares_fit_times_and_accuracy_on_the_digits(mesh2):
    lines = []
    rows = sklearn.run(mesh2.client, rounds=1, iterations=2, log=lines.append)
    assert [r["estimator"] for r in rows] == ["MLPClassifier + StandardScaler", "MeshClassifier"]
    assert all(set(r) == set(sklearn.COLUMNS) for r in rows) and float(rows[1]["fit / scikit-learn's"].split()[0]) > 0
    assert len(lines) == 1 and "2 iterations" in lines[0]


def test_throughput_runs_a_graph_beside_the_chain(mesh2):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 64)]
    spec = dict(sizes=[8, 5, 3], activation="relu", output="softmax", loss="cross_entropy", inputs={3: [2, 1, 0]})
    row = throughput.compare(mesh2.client, "tiny graph", X, Y, spec, 16, rounds=1, log=lambda s: None)
    assert row["bench"] == "tiny graph" and row["torch rows/s"] == "-"
    assert float(row["mesh rows/s"].split()[0].replace(",", "")) > 0


def test_dataplane_measures_each_path_beside_bare_pyzmq():
    from mesh.bench import dataplane
    rows = dataplane.run(rounds=1, fan_ins=(4,), passes=3, log=lambda *_: None)
    assert [r["path"] for r in rows] == [*dataplane.PATHS, "bare pyzmq"]
    assert all(set(r) == set(dataplane.COLUMNS) for r in rows)
    steps = dataplane.breakdown(fan_in=4, passes=3)
    assert all(any(step.startswith(f"{what}, {path}") for step in steps)
               for path in dataplane.PATHS for what in ("build", "send", "receive and handle"))


def test_dataplane_targets_table_has_every_row_with_a_number_or_a_refusal():
    from mesh.bench import targets
    rows, note = targets.run(rounds=1, quick=True, log=lambda *_: None)
    assert "memory budget" in note and all(set(r) == set(targets.COLUMNS) for r in rows)
    names = [r["measure"] for r in rows]
    wanted = ["per neuron, online", "per neuron [4,4,1], 9 processes: create s", "per neuron [4,4,1]: predict one row p50",
              "per neuron [4,4,1]: PSS per group", "per neuron [5,5,1], 11 processes", "train(batch_size=1)",
              "online(window=8)", "group mode [10, 100, 100, 1], the original's online test", "small"]
    assert all(any(w in n for n in names) for w in wanted), names
    assert sum("per neuron, online" in n for n in names) == 3
    for r in rows:
        got = r["measured: median (min-max)"]
        assert got.startswith(("the broker: ", "failed: ")) or any(c.isdigit() for c in got.split()[0]), r
