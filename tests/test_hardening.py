"""No message kills or wedges a process: each way found to do it, sent again.

Most of these feed one group process of this test's own (a real Group, its
sockets on loopback) one message at a time, so what it did with each is an
event the test sees, not a guess about timing; the rest send the same bytes to
a real mesh (test_hardening_mesh.py)."""
import json
import time
import types
import zipfile

import numpy as np
import pytest
import zmq

from rig import Rig
from mesh import checkpoint, sockets, wire
from mesh.bounded import Bounded
from mesh.broker import inbox
from mesh.broker.pairstate import Pair
from mesh.broker.records import GroupRecord
from mesh.client import Client
from mesh.dashboard.server import loopback_host
from mesh.datapath import MAX_AHEAD

DEEP = b"[" * 30000  # under the header limit; json recurses once per bracket


def test_a_header_too_deep_for_json_is_a_wire_error():
    for raw in (DEEP, b'{"k": "x", "a": [], "z": ' + b"[" * 17 + b"]" * 17 + b"}"):
        with pytest.raises(wire.WireError):
            wire.unpack([raw])
    header, _ = wire.unpack(wire.pack({"k": "setup", "down": [["ep", 0, 1, None]], "init": {"spec": {"s": [1]}}}))
    assert header["down"] == [["ep", 0, 1, None]]  # what the mesh really sends still nests


def test_a_group_lives_through_a_deep_header_and_a_memory_error(ctx):
    r = Rig(ctx)
    r.send(None, raw=[DEEP])
    r.send({"k": wire.GROW, "tok": "tok", "net": "n1", "cols": 10 ** 12})  # 8 TB asked for
    h, _ = r.heard()
    assert h["k"] == wire.FAULT and "grow" in h["error"].lower()
    assert r.g.state.neurons.W.shape == (2, 2)
    assert r.alive_and_right()


def test_the_predict_token_opens_layer_1s_forward_and_nothing_else(ctx):
    """With a predict token: 300 never-completing 4 MB parts to a layer-2 group are not kept,
    and a pass straight into the last layer, with a reply address, is not answered."""
    r = Rig(ctx, layer=1, fan_in=2, rows=2, cols=2)
    reply = sockets.abstract_ipc("reply")
    answers = sockets.make(ctx, zmq.PULL, bind=reply)
    ptok = wire.predict_token("tok")
    part = np.zeros((262_144, 1))  # 2 MB of one source's column, twice a pass
    for i in range(300):
        r.send({"k": wire.FWD, "tok": ptok, "net": "n1", "gen": 0, "at": 0, "seq": f"{1:016x}-{i}", "src": 0,
                "reply": reply}, [part if i % 2 else np.zeros((1, 1))])
    assert len(r.g.state.data.direct_parts) == 0 and r.g.state.data.direct_parts.nbytes == 0
    assert r.g.sent == 1 and not answers.poll(0)  # its READY only
    assert r.quiet()


def test_a_rebroker_without_its_address_is_refused_and_the_old_socket_stays(ctx):
    r = Rig(ctx)
    r.send({"k": wire.REBROKER, "tok": "tok", "net": "n1"})
    h, _ = r.heard()
    assert h["k"] == wire.FAULT and "KeyError" in h["error"]
    r.send({"k": wire.REBROKER, "tok": "tok", "net": "n1", "tcp": "nonsense://x"})
    assert r.heard()[0]["k"] == wire.FAULT
    assert r.quiet()  # still its broker's, on the socket it had


def test_nothing_waits_for_a_step_forever(ctx):
    r = Rig(ctx)
    r.send({"k": wire.GET, "tok": "tok", "net": "n1", "after": 10 ** 9})  # absurdly far: refused at once
    h, _ = r.heard()
    assert h["k"] == wire.FAULT and "follow step" in h["error"]
    assert r.g.state.waits() is None
    r.send({"k": wire.GET, "tok": "tok", "net": "n1", "after": MAX_AHEAD, "req": "wedge"})  # possible: it waits
    r.send({"k": wire.GET, "tok": "tok", "net": "n1", "after": 0, "req": "behind"})  # in order, behind it
    assert r.g.state.waits() == MAX_AHEAD and len(r.g.state.waiting) == 2
    r.g.beat()
    beat, _ = r.heard()
    assert beat["waits"] == MAX_AHEAD  # the broker hears what it waits for...
    r.send({"k": wire.PURGE, "tok": "tok", "net": "n1", "gen": 0, "beyond": 7})  # ...and purges steps it never gave
    h, _ = r.heard()
    assert (h["k"], h["req"]) == (wire.STATE, "behind") and r.g.state.waits() is None


def test_the_broker_purges_what_a_group_waits_for_a_step_it_never_handed_out():
    sent = []
    stub = types.SimpleNamespace(flow=types.SimpleNamespace(to_group=lambda net, gid, h: sent.append((gid, h))))
    net = types.SimpleNamespace(step=12, gen=3, groups={"n1.1.0": GroupRecord(gid="n1.1.0", layer=0, lo=0, hi=1, pid=7)})
    for waits in (None, 5, 12, "13"):
        inbox.group_beat(stub, net, {"gid": "n1.1.0", "pid": 7, "waits": waits}, [])
    assert sent == []  # legitimate, or not a number
    inbox.group_beat(stub, net, {"gid": "n1.1.0", "pid": 7, "waits": 13}, [])
    assert sent == [("n1.1.0", {"k": wire.PURGE, "beyond": 12, "gen": 3})]


def test_what_peers_fill_is_bounded_in_bytes(ctx, monkeypatch):
    monkeypatch.setitem(sockets._limits, "store", 1 << 20)  # 1 MiB a store, for this group
    r = Rig(ctx, layer=1, fan_in=2)
    pad = "x" * 60_000
    for i in range(3000):
        r.feed.send_multipart(wire.pack({"k": wire.FETCH, "tok": "tok", "net": "n1", "gen": 10 ** 9, "of": "n1.1.1",
                                         "snap": i, "pad": pad}))
    for i in range(3000):  # one of two parts each: passes that never complete
        r.feed.send(wire.pack_data({"k": wire.FWD, "tok": "tok", "net": "n1", "gen": 0, "seq": i, "src": 0,
                                    "after": 0}, [np.zeros((8192, 1))]))
    for _ in range(6000):
        assert r.g.inbox.poll(10_000)
        r.g.handle_one()
    assert len(r.g.state.custody.fetches) <= 64 and r.g.state.custody.fetches.nbytes < 64 * 1024
    assert r.g.state.data.fwd.nbytes <= (1 << 20) and r.g.state.data.fwd.evicted > 0
    assert r.quiet()


def test_a_bounded_store_drops_its_oldest_and_keeps_its_newest():
    b = Bounded("test", items=3, nbytes=100)
    for i in range(5):
        b.put(i, i, 10)
    assert b.values() == [2, 3, 4] and b.evicted == 2
    b.put(9, "big", 1000)  # over the budget alone: it stays, the others go
    assert b.values() == ["big"] and b.nbytes == 1000
    b.put(9, "small", 1)  # replaced in place
    assert b.get(9) == "small" and b.nbytes == 1 and b.remove_if(lambda v: v == "small") == 1 and not b


def test_the_dashboard_answers_loopback_host_names_exactly():
    assert all(loopback_host(h) for h in ("127.0.0.1", "127.0.0.1:8787", "localhost:80", "[::1]:8787", "127.9.9.9"))
    assert not any(loopback_host(h) for h in ("127.0.0.1.evil.example", "127.0.0.1.evil.example:8787", "evil",
                                              "localhost.evil.example", "[::1]x", "localhost:x", ""))


def test_a_checkpoint_declaring_huge_arrays_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("meta.json.npy", "w") as f:
            meta = {"format": checkpoint.FORMAT, "arrays": 1, "spec": {}, "encoder": {}, "optimizer": []}
            np.lib.format.write_array(f, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        with z.open("a0000.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                     "shape": (4_000_000, 3_000_000)})
            f.write(b"\0" * 64)
    with pytest.raises(checkpoint.CheckpointError, match="declares"):
        checkpoint.read(path)
    with Client("tcp://127.0.0.1:9", timeout=1) as c:  # refused before it asks any broker
        with pytest.raises(checkpoint.CheckpointError):
            c.load(path)


def test_a_pair_message_counts_only_from_the_peer_with_the_secret(ctx):
    a = Pair(ctx, "tcp://127.0.0.1:9", True, None, "tcp://127.0.0.1:8", secret=b"s" * 16)
    b = Pair(ctx, "tcp://127.0.0.1:8", False, None, "tcp://127.0.0.1:9", secret=b"s" * 16)
    sent = []
    a.sock = types.SimpleNamespace(send=lambda frame, flags=0, copy=True: sent.append(frame))

    def last():
        frames, sent[:] = list(sent), []
        return wire.unpack([bytes(f) for f in frames])

    a.beat(force=True)
    h, arrays = last()
    assert b.authentic(wire.PAIR, dict(h), arrays)  # addressed to no incarnation yet: a first heartbeat
    b.peer["incarnation"] = a.incarnation
    a.peer["incarnation"] = b.incarnation
    a.send({"k": wire.SHIP, "seq": 1}, [np.arange(4, dtype=np.uint8)])
    h, arrays = last()
    assert b.authentic(wire.SHIP, dict(h), arrays)
    assert not a.authentic(wire.SHIP, dict(h), arrays)  # sent back to the broker it came from
    forged = dict(h, seq=2)
    assert not b.authentic(wire.SHIP, forged, arrays)
    assert not b.authentic(wire.SHIP, dict(h), [np.arange(5, dtype=np.uint8)])
    assert not b.authentic(wire.PAIR, {"k": wire.PAIR, "role": "active", "epoch": 999}, [])
    other = Pair(ctx, "tcp://127.0.0.1:8", False, None, "tcp://127.0.0.1:9", secret=b"s" * 16)
    assert not other.authentic(wire.SHIP, dict(h), arrays)  # another incarnation of the peer: a replay




def test_a_flood_of_evictions_logs_a_few_lines(caplog):
    b = Bounded("test", items=1, nbytes=100)
    with caplog.at_level("WARNING", logger="mesh.bounded"):
        for i in range(1000):
            b.put(i, i, 1)
    assert b.evicted == 999
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 10 and said[-1].endswith("(512 so far)")  # the 1st, 2nd, 4th ... 512th


def test_an_ipc_endpoint_counts_as_listening_only_while_one_is_bound_and_the_probe_takes_nothing(ctx):
    """The check before dialling a peer's unix socket (sockets.nearest): a name bound here is
    listening, one never bound or no longer bound is not, a tcp address never is; and the
    socket probed still takes its messages."""
    pull = ctx.socket(zmq.PULL)
    ep = sockets.abstract_ipc("probe")
    pull.bind(ep)
    assert sockets.ipc_listening(ep) and not sockets.ipc_listening(ep + "x")
    assert not sockets.ipc_listening("tcp://127.0.0.1:1") and not sockets.ipc_listening(None)
    assert sockets.nearest("tcp://127.0.0.1:1", ep, same_host=True) == ep
    assert sockets.nearest("tcp://127.0.0.1:1", ep + "x", same_host=True) == "tcp://127.0.0.1:1"
    push = ctx.socket(zmq.PUSH)
    push.connect(ep)
    push.send(b"after the probe", zmq.NOBLOCK if push.poll(5000, zmq.POLLOUT) else 0)
    assert pull.poll(5000) and pull.recv() == b"after the probe"
    push.close(0)
    pull.unbind(ep)
    pull.close(0)
    for _ in range(200):  # zmq's own thread closes the listener: waited for, bounded
        if not sockets.ipc_listening(ep):
            break
        time.sleep(0.05)
    assert not sockets.ipc_listening(ep)
