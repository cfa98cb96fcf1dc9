"""Each neuron group is its own OS process, placed on the workers, and all of
them end with the mesh."""
from conftest import alive, all_gone


def cmdline(pid):
    """What `ps` shows for a process."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().split(")")[-1].split()[1])


def test_one_process_per_neuron(mesh2):
    net = mesh2.remember(mesh2.client.create([5, 5, 1], group_size=1, seed=7))
    try:
        procs = net.processes()
        assert len(procs) == 11
        pids = {p["pid"] for p in procs}
        assert len(pids) == 11 and all(alive(p) for p in pids)
        assert sorted((p["layer"], p["neurons"][0]) for p in procs) == \
            [(1, i) for i in range(5)] + [(2, i) for i in range(5)] + [(3, 0)]
        assert all(p["neurons"][1] - p["neurons"][0] == 1 for p in procs)
        # groups are children of the workers' spawners, not of the broker
        workers = {p.pid for p in mesh2.mesh.procs[1:]}
        assert all(parent(parent(p)) in workers for p in pids)
        assert {p["worker"] for p in procs} == {"w1", "w2"}  # spread over both workers
    finally:
        net.drop()


def test_ps_tells_the_processes_apart(mesh2):
    net = mesh2.remember(mesh2.client.create([2, 1], seed=7))
    try:
        broker, *workers = mesh2.mesh.procs
        assert cmdline(broker.pid) == "mesh broker"
        assert [cmdline(w.pid) for w in workers] == ["mesh worker"] * 2
        assert sorted(cmdline(p["pid"]) for p in net.processes()) == [f"mesh group {net.id}.1.0",
                                                                      f"mesh group {net.id}.2.0"]
    finally:
        net.drop()


def test_group_size_slices_layers(mesh2):
    net = mesh2.remember(mesh2.client.create([5, 3], group_size=2, seed=7))
    try:
        ranges = sorted((p["layer"], tuple(p["neurons"])) for p in net.processes())
        assert ranges == [(1, (0, 2)), (1, (2, 4)), (1, (4, 5)), (2, (0, 2)), (2, (2, 3))]
    finally:
        net.drop()


def test_whole_layer_by_default(mesh2):
    net = mesh2.remember(mesh2.client.create([5, 3], seed=7))
    try:
        assert sorted((p["layer"], tuple(p["neurons"])) for p in net.processes()) == [(1, (0, 5)), (2, (0, 3))]
    finally:
        net.drop()


def test_drop_ends_the_group_processes(mesh2):

    net = mesh2.client.create([3, 3], group_size=1, seed=7)
    pids = [p["pid"] for p in net.processes()]
    net.drop()
    assert all_gone(pids)
    assert all(n["net"] != net.id for n in mesh2.client.status()["networks"])


def test_placement_pins_layers_to_workers(mesh2):
    net = mesh2.remember(mesh2.client.create([4, 4, 2], group_size=2, seed=1, placement={1: "w2", 3: "w2"}))
    try:
        by_layer = {}
        for p in net.processes():
            by_layer.setdefault(p["layer"], set()).add(p["worker"])
        assert by_layer[1] == {"w2"} and by_layer[3] == {"w2"}
        links = [n for n in mesh2.client.status()["networks"] if n["net"] == net.id][0]["links"]
        assert (links["total"], links["cross_host"]) == (2 * 2 + 2 * 1, 0)  # one host: every link is local
        assert links["by_host"] == [{"layer": 1, "to_layer": 2, "from": "127.0.0.1", "to": "127.0.0.1", "count": 4,
                                     "cross_host": False},
                                    {"layer": 2, "to_layer": 3, "from": "127.0.0.1", "to": "127.0.0.1", "count": 2,
                                     "cross_host": False}]
    finally:
        net.drop()


def test_placement_to_unknown_host_is_refused(mesh2):
    import pytest
    from mesh.client import RemoteError
    with pytest.raises(RemoteError, match="pinned to '10.9.9.9', but no worker is there"):
        mesh2.client.create([2, 1], placement={1: "10.9.9.9"})
    with pytest.raises(RemoteError, match="placement must map layer numbers"):
        mesh2.client.create([2, 1], placement={7: "w1"})
