"""The broker's records, pure: what the active broker ships is what its standby holds and
rebuilds (the journal's ship -> apply round trip, takeover's network from its record), and the
small structures the data path leans on (FairQueue, Watermark). No process is started."""
import json
import types

import numpy as np

from mesh import wire
from mesh.broker.answers import Answers
from mesh.broker.replication import Shadow, Shipper, net_record
from mesh.broker.network import Network
from mesh.broker.passes import FairQueue
from mesh.broker.records import GroupRecord, SnapshotRecord, WorkerRecord
from mesh.broker.takeover import network_from
from mesh.spec import Spec
from mesh.steps import Watermark


def a_network():
    net = Network("n3", Spec([4, 2], seed=7, group_size=2))
    for layer, gids in enumerate([["n3.1.0", "n3.1.1"], ["n3.2.0"]]):
        net.layers[layer] = gids
        for index, gid in enumerate(gids):
            net.groups[gid] = GroupRecord(gid=gid, layer=layer, index=index, lo=2 * index, hi=2 * index + 2,
                                          worker=b"worker-a", worker_name="w1", host="127.0.0.1", key=None,
                                          pid=100 + index, endpoints={"tcp": f"tcp://127.0.0.1:{9000 + index}"},
                                          alive=True, heard=1.0, snaps={1, 2}, holds={("n3.1.1", 2)}, planned=64)
    net.step, net.seq, net.layer1_width = 12, 40, 3
    net.snapshot = SnapshotRecord(id=2, step=10, inputs=3)
    net.log = [("step", 11, [(np.arange(6.0).reshape(2, 3), np.eye(2))], 2, 0.1)]  # one micro-batch of 2 rows
    return net


def shipped(net, answers=None):
    """Everything a Shipper sends for a broker holding `net`, applied by a Shadow."""
    records = []
    shipper = Shipper(lambda header, arrays: records.append((header, arrays)) or True)
    broker = types.SimpleNamespace(made={"worker": 1, "net": 3}, nets={net.id: net}, workers={
        b"worker-a": WorkerRecord(name="w1", host="127.0.0.1", hostname="h", key=None, slots=2, pid=9,
                                  groups=set(net.groups), memory=None)})
    commit = shipper.sync(broker, answers or Answers())
    shadow = Shadow()
    done = [shadow.take(dict(h), [np.asarray(a) for a in arrays]) for h, arrays in records]
    return shadow, commit, done


def test_what_is_shipped_is_what_the_standby_holds():
    net = a_network()
    answers = Answers()
    answers.add((b"client-1", 5), {"ok": True, "net": "n3"}, [np.ones(2)])
    shadow, commit, done = shipped(net, answers)
    assert done[-1] == commit and shadow.whole  # one sync, applied whole at its commit
    assert shadow.nets["n3"]["meta"] == net_record(net)
    assert shadow.broker["made"] == {"worker": 1, "net": 3}
    fields, arrays = shadow.answers.get((b"client-1", 5))
    assert fields == {"ok": True, "net": "n3"} and np.array_equal(arrays[0], np.ones(2))


def test_takeover_rebuilds_the_network_from_its_record():
    net = a_network()
    shadow, _, _ = shipped(net)
    again = network_from(shadow.nets["n3"], epoch=2)
    record, rebuilt = net_record(net), net_record(again)
    assert rebuilt.pop("gen") > record.pop("gen")  # the new broker's generations start above the old one's
    assert rebuilt == record
    assert again.groups["n3.1.0"].snaps == {1, 2} and again.groups["n3.1.0"].holds == {("n3.1.1", 2)}
    assert again.snapshot == SnapshotRecord(id=2, step=10, inputs=3)
    (kind, step, ((X, T),), rows, lr), = again.log
    assert (kind, step, rows, lr) == ("step", 11, 2, 0.1)
    assert np.array_equal(X, np.arange(6.0).reshape(2, 3)) and np.array_equal(T, np.eye(2))


def test_a_record_is_what_it_ships_and_live_fields_start_afresh():
    g = a_network().groups["n3.1.1"]
    g.usage, g.msgs, g.attached = [0.5, 1 << 20, "R"], 7, False
    again = GroupRecord.from_dict(json.loads(json.dumps(g.to_dict())))
    assert again.to_dict() == g.to_dict() and again.worker == b"worker-a" and again.holds == {("n3.1.1", 2)}
    assert (again.usage, again.msgs, again.heard, again.attached) == (None, None, 0.0, True)  # heartbeats tell
    w = WorkerRecord(name="w2", host="10.0.0.2", slots=3, memory=1 << 30, pool="10.0.0.2/host", groups={"n3.1.1"},
                     load=2.0, waiting=[{"k": "spawn"}])
    back = WorkerRecord.from_dict(json.loads(json.dumps(w.to_dict())))
    assert back.to_dict() == w.to_dict() and (back.groups, back.load, back.waiting) == (set(), None, None)


def test_a_sync_with_nothing_new_ships_nothing():
    net = a_network()
    records = []
    shipper = Shipper(lambda header, arrays: records.append(header) or True)
    broker = types.SimpleNamespace(made={}, nets={net.id: net}, workers={})
    first = shipper.sync(broker, Answers())
    count = len(records)
    assert shipper.sync(broker, Answers()) == first and len(records) == count
    net.step = 13
    assert shipper.sync(broker, Answers()) > first and [h["what"] for h in records[count:]] == ["net", "commit"]
    assert all(h["k"] == wire.SHIP for h in records)


def test_a_fair_queue_serves_each_client_in_turn():
    q = FairQueue()
    job = {c: types.SimpleNamespace(client=c) for c in "ab"}
    passes = [types.SimpleNamespace(job=job[c], n=i) for i, c in enumerate("aaab")]
    for p in passes:
        q.append(p)
    urgent = types.SimpleNamespace(job=job["b"], n="urgent")
    q.append(urgent, first=True)
    served = [q.pop_ready(lambda p: True).n for _ in range(len(q))]
    assert served == [0, "urgent", 1, 3, 2]  # a, b, a, b, then what is left of a
    q.append(passes[0])
    assert q.pop_ready(lambda p: False) is None and len(q) == 1


def test_a_watermark_counts_steps_done_in_any_order():
    w = Watermark(3)
    for step in (5, 7, 4):
        w.mark(step)
    assert w.done == 5 and w.ahead == {7}
    w.mark(2)  # long done: changes nothing
    w.mark(6)
    assert w.done == 7 and not w.ahead


def test_a_meter_reads_some_processes_a_heartbeat_and_all_of_them_in_turn():
    import os
    from mesh.procstat import Meter
    m = Meter()
    pids = {f"g{i}": os.getpid() for i in range(5)}
    seen = set()
    for _ in range(5):
        got = m.read_some(pids, 0.0, keep=(1,))  # no time at all: one each call, never none
        assert len(got) == 1 and all(len(v) == 3 and v[1] > 0 for v in got.values())
        seen |= set(got)
    assert seen == set(pids)  # every one in turn
    assert set(m.read_some(pids, 60.0)) == set(pids)  # time enough: all at once
