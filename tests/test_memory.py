"""The memory model (mesh/memory.py) and placement under budgets
(mesh/broker/placement.py plan): pure, in milliseconds."""
import itertools

import pytest
from click.testing import CliRunner

from mesh import memory, optim
from mesh.keeper import STREAM_BYTES
from mesh.cli import cli, status_lines
from mesh.broker.network import window_for
from mesh.broker.placement import Model, Refused, cut, keepers, place, plan, planned_bytes, wiring, work
from mesh.broker.records import GroupRecord, WorkerRecord
from mesh.sizes import GiB, MiB, format_size, parse_size
from mesh.spec import Spec


@pytest.mark.parametrize("text, n", [("1.5GiB", 3 << 29), ("800MiB", 800 << 20), ("2GB", 2_000_000_000),
                                     ("512KiB", 512 << 10), ("10kb", 10_000), ("1000", 1000), (" 3 MB ", 3_000_000)])
def test_sizes_parse(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "GiB", "1.5 GiBs", "-1GiB", "0", "1,5GiB", "lots"])
def test_sizes_refused_with_the_text(text):
    with pytest.raises(ValueError, match="invalid memory size"):
        parse_size(text)


def test_format_size():
    assert format_size(3 << 29) == "1.5 GiB"
    assert format_size(800 << 20) == "800 MiB"
    assert format_size(12) == "12 B"


def test_group_model_counts_every_part():
    rows, fan_in, s = 100, 49, 8
    p = rows * 50 * s
    parts = memory.group_parts(rows, fan_in, s, "adam", window=12, pass_rows=10, kept=[(100, 49), (50, 49)])
    assert parts["weights"] == parts["gradient"] == p
    assert parts["update"] == min(p, optim.BLOCK * s)            # by blocks (optim.py): one block's temporary
    assert parts["optimizer"] == 2 * p
    assert parts["transit"] == min(3 * p, STREAM_BYTES)          # the largest replica on its way in, streamed
    assert "snapshots" not in parts and "replicas" not in parts   # on disk:
    disk = memory.group_disk(rows, fan_in, s, "adam", kept=[(100, 49), (50, 49)])
    assert disk == 2 * 3 * p + 2 * 3 * p + 2 * 3 * (p // 2)      # its own last two, two of each it keeps for
    assert parts["activations"] == 12 * 10 * (49 + 100) * s
    assert parts["messages"] == 12 * 10 * 49 * s
    assert parts["baseline"] == memory.GROUP_BASELINE
    sgd = memory.group_parts(rows, fan_in, s, "sgd", window=12, pass_rows=10)
    assert sgd["optimizer"] == sgd["update"] == sgd["transit"] == 0
    assert memory.group_disk(rows, fan_in, s, "sgd") == 2 * p


def test_pieces_for_is_the_fewest_that_fit():
    room = 150 * MiB
    k = memory.pieces_for(4096, 1024, 8, "adam", 12, room)
    each = lambda k: memory.group_bytes(-(-4096 // k), 1024, 8, "adam", 12, kept=[(-(-4096 // k), 1024)])  # noqa: E731
    assert k > 1 and each(k) <= room < each(k - 1)
    assert memory.pieces_for(10, 10, 8, "adam", 12, memory.GROUP_BASELINE) is None  # the baseline alone is too much


def test_cut_is_uneven_by_one_at_most():
    assert cut(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert cut(5, 5) == [(i, i + 1) for i in range(5)]


def hosts(*budgets, slots=1, host=None):
    return [{"wid": f"id{i}", "name": f"w{i}", "host": host or f"10.0.0.{i}", "slots": slots,
             "budget": b, "free": None if b is None else b - memory.WORKER_BASELINE, "work": 0}
            for i, b in enumerate(budgets, 1)]


def per_worker(spec, inputs, placed, hs, optimizer="adam"):
    """{worker id: planned bytes} (with the replicas each group really keeps) and {worker id: work}."""
    widths = [inputs] + spec.sizes[:-1]
    host = {h["wid"]: h["host"] for h in hs}
    records = [GroupRecord(gid=i, layer=layer, lo=lo, hi=hi, worker=w, host=host[w])
               for i, (layer, lo, hi, w) in enumerate(placed)]
    model = Model(widths, 8, optimizer, window_for(spec.sizes))
    planned = planned_bytes(records, model)
    mem = {h["wid"]: memory.WORKER_BASELINE for h in hs}
    load = {h["wid"]: 0 for h in hs}
    for r in records:
        mem[r.worker] += planned[r.gid]
        load[r.worker] += work(r.hi - r.lo, widths[r.layer])
    return mem, load


def test_without_budgets_placement_is_as_before():
    spec = Spec([5, 5, 1], group_size=2)
    placed = plan(spec, 0, 16, "adam", hosts(None, None), {})
    assert [(layer, lo, hi) for layer, lo, hi, _ in placed] == spec.groups()
    assert [w for *_, w in placed] == place(spec.groups(), [("id1", 1), ("id2", 1)])  # contiguous runs by slots


def test_budgets_cut_a_layer_too_big_for_any_worker_and_are_respected():
    spec = Spec([2048, 2048, 10], dtype="float64")  # layer 2: 2048 x 2049 float64 = 32 MiB, adam ~4x that and more
    hs = hosts(*[200 * MiB] * 3)
    placed = plan(spec, 64, window_for(spec.sizes), "adam", hs, {})
    layer2 = [(lo, hi) for layer, lo, hi, _ in placed if layer == 1]
    assert len(layer2) > 1 and layer2[0][0] == 0 and layer2[-1][1] == 2048  # cut, and whole
    assert all(a[1] == b[0] for a, b in zip(layer2, layer2[1:]))
    mem, _ = per_worker(spec, 64, placed, hs)
    assert all(mem[h["wid"]] <= h["budget"] for h in hs), {k: format_size(v) for k, v in mem.items()}
    assert len({w for *_, w in placed}) == 3


def test_uneven_budgets_get_uneven_work():
    spec = Spec([1024, 1024], dtype="float64", group_size=128)
    hs = hosts(2 * GiB, 2 * GiB, 120 * MiB)
    placed = plan(spec, 256, window_for(spec.sizes), "adam", hs, {})
    mem, load = per_worker(spec, 256, placed, hs)
    assert all(mem[h["wid"]] <= h["budget"] for h in hs)
    assert load["id3"] < load["id1"] and load["id3"] < load["id2"]


def brute_force_best(groups, widths, wids):
    best = None
    for assign in itertools.product(wids, repeat=len(groups)):
        load = dict.fromkeys(wids, 0)
        for (layer, lo, hi), w in zip(groups, assign):
            load[w] += work(hi - lo, widths[layer])
        best = min(best or max(load.values()), max(load.values()))
    return best


def test_max_work_per_worker_is_minimised():
    spec = Spec([6, 3, 2], group_size=2, dtype="float64")
    hs = hosts(4 * GiB, 4 * GiB, 4 * GiB)
    placed = plan(spec, 7, 16, "sgd", hs, {})
    _, load = per_worker(spec, 7, placed, hs, "sgd")
    groups = [(layer, lo, hi) for layer, lo, hi, _ in placed]
    assert max(load.values()) == brute_force_best(groups, [7, 6, 3], [h["wid"] for h in hs])


def test_fewest_cross_host_links_break_ties():
    spec = Spec([4, 4], group_size=4)  # two groups of equal work, three equal workers on two hosts
    hs = hosts(GiB, GiB, GiB)
    hs[1]["host"] = hs[0]["host"]
    placed = plan(spec, 4, 12, "sgd", hs, {})
    # the max is one group's work whatever we do; the second group goes beside the first, not across hosts
    w1, w2 = [w for *_, w in placed]
    assert w1 != w2 and {w1, w2} == {"id1", "id2"}


def test_balanced_cuts_equal_work_per_process():
    spec = Spec([64, 16, 4], group_size="balanced")
    placed = plan(spec, 64, 16, "adam", hosts(None, None, slots=4), {})
    works = [work(hi - lo, [64, 64, 16][layer]) for layer, lo, hi, _ in placed if layer < 2]
    assert len(placed) == 6 + 2 + 1 and max(works) <= 1.5 * min(works)  # layer 3 is less than a share: one group


def test_pins_still_hold_under_budgets():
    spec = Spec([512, 512], dtype="float64")
    hs = hosts(GiB, GiB, GiB)
    placed = plan(spec, 32, 12, "adam", hs, {"2": "w3"})
    assert {w for layer, *_, w in placed if layer == 1} == {"id3"}
    with pytest.raises(ValueError, match="pinned to 'w9'"):
        plan(spec, 32, 12, "adam", hs, {"2": "w9"})


def test_refused_beyond_the_sum_of_budgets_with_the_numbers():
    spec = Spec([8192, 8192, 10], dtype="float64")
    with pytest.raises(Refused) as e:
        plan(spec, 0, window_for(spec.sizes), "adam", hosts(1 << 30, 1 << 30), {})
    msg = str(e.value)
    assert msg.startswith("needs ") and msg.endswith("the workers offer 2 GiB (w1 1, w2 1)"), msg


def test_refused_when_no_cut_fits_names_the_layer():
    # fits in sum, but layer 2 is pinned to one worker too small for it, however cut
    spec = Spec([256, 4096], dtype="float64")
    hs = hosts(2 * GiB, 2 * GiB, 100 * MiB)
    with pytest.raises(Refused, match=r"layer 2 \(4096 neurons x 256 inputs\) cannot be cut to fit"):
        plan(spec, 16, 12, "adam", hs, {"2": "w3"})


def test_explicit_group_size_is_kept_and_refused_when_a_group_cannot_fit():
    spec = Spec([1024, 1024], dtype="float64", group_size=512)
    placed = plan(spec, 1024, 12, "adam", hosts(2 * GiB, 2 * GiB), {})
    assert [(lo, hi) for _, lo, hi, _ in placed] == [(0, 512), (512, 1024)] * 2
    with pytest.raises(Refused, match="layer 1 .* in 2 groups of up to 512 neurons"):
        plan(spec, 1024, 12, "adam", hosts(*[80 * MiB] * 5), {})


def test_replicas_counted_where_the_keepers_are():
    records = [GroupRecord(gid=g, layer=0, lo=0, hi=10, worker=w, host=h)
               for g, w, h in [("a", "w1", "h1"), ("b", "w1", "h1"), ("c", "w2", "h2")]]
    keeper = keepers(records)
    assert keeper["a"].gid == keeper["b"].gid == "c"  # c keeps for both
    model = Model([10], 8, "adam", 12)
    planned = planned_bytes(records, model)
    assert keeper["c"].gid == "a"  # ...and a for c
    assert planned["c"] == planned["a"] == model.bytes(0, 10, [(0, 10)]) > planned["b"] == model.bytes(0, 10)
    disk = planned_bytes(records, model, disk=True)  # two replicas on c's disk, one on a's
    assert disk["c"] - disk["a"] == model.disk(0, 10, [(0, 10)]) - model.disk(0, 10) == disk["a"] - disk["b"]


def test_status_lines_show_planned_and_measured_memory():
    s = {"broker": {"address": "tcp://127.0.0.1:5555", "pid": 1}, "networks": [],
         "workers": [{"name": "w1", "host": "127.0.0.1", "pid": 2, "slots": 2, "groups": 3,
                      "memory": {"budget": 3 << 29, "planned": 900 * MiB, "measured": 850 * MiB},
                      "disk": {"budget": 40 << 30, "planned": 2 << 30, "measured": 1 << 30}},
                     {"name": "w2", "host": "127.0.0.1", "pid": 3, "slots": 2, "groups": 0,
                      "memory": {"budget": None, "planned": 40 * MiB, "measured": None}}]}
    lines = list(status_lines(s))
    assert lines[2].endswith("memory planned 900 MiB of 1.5 GiB, measured 850 MiB; "
                             "disk planned 2 GiB of 40 GiB, measured 1 GiB")
    assert lines[3].endswith("memory planned 40 MiB (no budget), measured -")


def test_cli_refuses_a_bad_memory_size_in_one_line():
    r = CliRunner().invoke(cli, ["worker", "--memory", "1.5GB/s"])
    assert r.exit_code == 2 and "invalid memory size '1.5GB/s'" in r.output


def test_a_lost_workers_group_goes_where_it_fits_with_most_room():
    from mesh.broker.budgets import roomiest

    class Net:
        groups = {gid: GroupRecord(gid=gid, layer=0, lo=0, hi=1, worker=w, planned=planned) for gid, w, planned in
                  [("n1.1.0", "a", 300 * MiB), ("n1.2.0", "b", 100 * MiB), ("n1.2.1", "dead", 250 * MiB)]}
    workers = {w: WorkerRecord(name=w, host="h", memory=m) for w, m in [("a", 600 * MiB), ("b", 500 * MiB), ("c", None)]}
    assert roomiest(workers, [Net], 250 * MiB) == "b"  # b has 400 MiB left less its worker's own, a 300 less
    assert roomiest(workers, [Net], 5000 * MiB) is None  # fits nowhere: the caller falls back to slots
    assert roomiest({"c": workers["c"]}, [Net], 1) is None


def test_wiring_is_planned_a_group_at_a_time_and_each_link_names_both_ends():
    """Each group's "up" part names the index it has among its source's "down", and that
    "down" entry names the part back: for a graph whose last layer reads layers 2, 1 and
    the rows, over two hosts."""
    spec = Spec([4, 3, 2], group_size=2, inputs={3: [2, 1, 0]})
    layers = [[GroupRecord(gid=f"n.{l + 1}.{i}", layer=l, index=i, lo=lo, hi=hi, host="ab"[(l + i) % 2],
                           worker=b"w", endpoints={"tcp": f"tcp://{'ab'[(l + i) % 2]}:{10 * l + i}"})
               for i, (lo, hi) in enumerate(cut(size, -(-size // 2)))] for l, size in enumerate(spec.sizes)]
    plans = wiring(layers, graph=spec.inputs, rows=5)
    first, setup = next(plans)
    setups = {first.gid: setup, **{g.gid: s for g, s in plans}}
    assert first is layers[0][0] and list(setups) == [g.gid for layer in layers for g in layer]
    by_endpoint = {g.endpoints["tcp"]: g for layer in layers for g in layer}
    for layer in layers:
        for g in layer:
            ups = setups[g.gid]["up"]
            for part, (endpoint, lo, hi, key, index) in enumerate(ups):
                if endpoint is None:  # the rows, from the broker
                    continue
                u = by_endpoint[endpoint]
                back = setups[u.gid]["down"][index]
                assert by_endpoint[back[0]] is g and back[4] == part and hi - lo == u.hi - u.lo
    assert [len(setups[g.gid]["up"]) for g in layers[2]] == [2 + 2 + 1]  # layer 2's, layer 1's, the rows
    assert [len(setups[g.gid]["down"]) for g in layers[0]] == [2 + 1] * 2  # layer 3's and layer 2's groups
