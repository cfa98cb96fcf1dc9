"""A group's state, one message at a time, without a socket: what each message makes it
send (outbox.py's records) is the whole of what it did. Step ordering, custody of
snapshots, and a client's pass under a lease."""
import os

import numpy as np
import pytest

from mesh import datapath, rundata, sockets, staging, wire
from mesh.groupstate import GroupState
from mesh.outbox import BROKER, Answer, Onward, Rewire, Send, ToBroker

TOK = "tok"
X = np.array([[0.3, -0.7]])
W = np.arange(4, dtype=float).reshape(2, 2) / 10


def group(gid="n1.1.0", layer=0, **fields):
    """A group's state, set up as the broker would (setup)."""
    s = GroupState({"net": "n1", "gid": gid, "layer": layer, "lo": 0, "hi": 2, "dtype": "float64", "token": TOK,
                    "advertise": "127.0.0.1"})
    return s, setup(s, **fields)


def setup(s, down=(), up=None, applied=0, **fields):
    """tanh over 2 inputs, 2 neurons; down: the endpoints of the groups that read it; up: its
    input's parts (default: the rows). What the setup sends."""
    up = up or [[None, 0, 2, None, None]]
    return s.apply({"k": wire.SETUP, "function": "tanh", "index": 0, "fan_in": len(up), "fan_out": 1,
                    "down": [[ep, 0, 1, None, 0] for ep in down], "up": up, "applied": applied, **fields},
                   [W, np.zeros(2)])


def control(s, header, arrays=()):
    return s.handle(dict(header, tok=TOK, net="n1"), list(arrays))


def data(s, header, arrays=(), tok=TOK):
    return s.on_data(wire.pack_data(dict(header, tok=tok, net="n1"), list(arrays)))


def kinds(out):
    """What each record carries: its kind, and for a data message its pass."""
    said = []
    for o in out:
        if isinstance(o, Onward):
            for to, msg in o.sends:
                d, _, _ = wire.unpack_data(msg)
                said.append((to, wire.DATA_KINDS[d.kind], d.seq))
        elif isinstance(o, (Send, ToBroker)):
            said.append((getattr(o, "to", BROKER), o.header["k"]))
        else:
            said.append(type(o).__name__)
    return said


def passed(out, seq):
    """The array of pass seq's data message among the records."""
    return next(a for o in out if isinstance(o, Onward) for d, a, _ in map(wire.unpack_data, (m for _, m in o.sends))
                if d.seq == seq)


# -- ordering -------------------------------------------------------------------------------
def test_what_waits_for_a_step_goes_once_it_is_applied_in_the_order_it_came():
    s, out = group(down=["ipc://@next"])
    assert kinds(out) == ["Rewire", (BROKER, wire.READY)] and out[0].peers == {"ipc://@next": None}
    assert kinds(data(s, {"k": wire.FWD, "seq": 1, "after": 0, "keep": True}, [X])) == [("ipc://@next", "fwd", 1)]
    assert data(s, {"k": wire.FWD, "seq": 2, "after": 1, "keep": True}, [X]) == ()  # step 1 is not applied yet
    assert control(s, {"k": wire.GET, "after": 1, "req": "r", "slots": False}) == ()  # behind it
    assert data(s, {"k": wire.FWD, "seq": 3, "after": 0}, [X]) == ()  # ready, but the rows keep their order
    assert s.waits() == 1 and s.beat()["waits"] == 1
    out = data(s, {"k": wire.BWD, "seq": 1, "step": 1, "of": 1, "lr": 0.5}, [np.ones((1, 2))])
    assert s.applied.done == 1 and s.waits() is None
    assert kinds(out) == [(BROKER, "done", 1), ("ipc://@next", "fwd", 2), (BROKER, wire.STATE),
                          ("ipc://@next", "fwd", 3)]
    after = np.tanh(X @ s.neurons.W.T + s.neurons.b)
    assert not np.allclose(s.neurons.W, W)  # the step changed the weights, and pass 2 saw it
    np.testing.assert_array_equal(passed(out, 2), after)
    np.testing.assert_array_equal(out[2].arrays[0], s.neurons.W)


def test_a_step_applied_out_of_order_releases_nothing_until_the_ones_before_it():
    s, _ = group()
    for seq in (1, 2):
        data(s, {"k": wire.FWD, "seq": seq, "after": 0, "keep": True}, [X])
    assert control(s, {"k": wire.GET, "after": 2, "req": "r", "slots": False}) == ()
    assert kinds(data(s, {"k": wire.BWD, "seq": 2, "step": 2, "of": 1, "lr": 0.1}, [np.ones((1, 2))])) == [
        (BROKER, "done", 2)]  # step 2 is applied, step 1 is not: the GET still waits
    out = data(s, {"k": wire.BWD, "seq": 1, "step": 1, "of": 1, "lr": 0.1}, [np.ones((1, 2))])
    assert kinds(out) == [(BROKER, "done", 1), (BROKER, wire.STATE)] and out[1].header["applied"] == 2


def test_with_a_sender_the_gradient_upstream_goes_before_the_update():
    """A process that sends (group.py) gets a pass's dL/dx as soon as it is made, before the
    group updates its own weights (the next step waits on the one, not the other); the
    records after it, and what a state without a sender returns, keep their order."""
    s, _ = group("n1.2.0", layer=1, up=[["ipc://@up", 0, 2, None, 0]])
    data(s, {"k": wire.FWD, "seq": 1, "after": 0, "keep": True}, [X])
    seen = []
    s.sender = lambda out: seen.append((kinds(out), s.applied.done, s.neurons.W.copy()))
    rest = data(s, {"k": wire.BWD, "seq": 1, "step": 1, "of": 1, "lr": 0.5, "ack": True}, [np.ones((1, 2))])
    (flushed, applied, W_then), = seen
    assert flushed == [("ipc://@up", "bwd", 1)] and applied == 0
    np.testing.assert_array_equal(W_then, W)  # sent before the update...
    assert s.applied.done == 1 and not np.allclose(s.neurons.W, W)  # ...which came after
    assert all(k[1] != "bwd" for k in kinds(rest))

    quiet, _ = group("n1.2.0", layer=1, up=[["ipc://@up", 0, 2, None, 0]])
    data(quiet, {"k": wire.FWD, "seq": 1, "after": 0, "keep": True}, [X])
    out = data(quiet, {"k": wire.BWD, "seq": 1, "step": 1, "of": 1, "lr": 0.5, "ack": True}, [np.ones((1, 2))])
    assert kinds(out)[0] == ("ipc://@up", "bwd", 1) and quiet.applied.done == 1


def test_a_purge_drops_what_waits_for_a_step_never_handed_out():
    s, _ = group()
    control(s, {"k": wire.GET, "after": 9, "req": "never"})
    control(s, {"k": wire.GET, "after": 0, "req": "behind"})
    out = control(s, {"k": wire.PURGE, "gen": 0, "beyond": 3})
    assert kinds(out) == [(BROKER, wire.STATE)] and out[0].header["req"] == "behind"


def test_a_message_far_ahead_or_of_another_network_is_refused_or_ignored():
    s, _ = group()
    out = control(s, {"k": wire.GET, "after": datapath.MAX_AHEAD + 1})
    assert kinds(out) == [(BROKER, wire.FAULT)] and "follow step" in out[0].header["error"]
    assert s.handle({"k": wire.GET, "tok": "other", "net": "n1"}, []) == ()
    assert data(s, {"k": wire.FWD, "seq": 1, "after": 0}, [X], tok="other") == ()


# -- custody --------------------------------------------------------------------------------
WARD, KEEPER = "ipc://@ward", "ipc://@keeper"


def deliver(at, out):
    """Carry the Sends among out to the states at their endpoints (at: endpoint -> state), and
    what those answer (a stream's parts, their GOTs), until none is left; the rest, in order."""
    rest, queue = [], list(out)
    while queue:
        o = queue.pop(0)
        if isinstance(o, Send) and o.to in at:
            queue += at[o.to].handle(o.header, o.arrays)
        else:
            rest.append(o)
    return rest


def keeper_and_ward():
    keeper, _ = group("n1.1.1", wards=[["n1.1.0", WARD, None, 2]])
    ward, out = group("n1.1.0", keeper=[KEEPER, None])
    assert out[0] == Rewire({KEEPER: None})
    return keeper, ward


def test_a_snapshot_goes_to_its_keeper_and_the_keeper_says_it_kept_it():
    keeper, ward = keeper_and_ward()
    out = control(ward, {"k": wire.SNAP, "snap": 1})
    assert kinds(out)[0] == (KEEPER, wire.KEEP) and kinds(out)[-1] == (BROKER, wire.SNAPPED)  # a stream of parts
    assert (out[-1].header["snap"], out[-1].header["step"]) == (1, 0)
    rest = deliver({KEEPER: keeper, WARD: ward}, out)  # each part acknowledged (GOT), the next sent
    assert kinds(rest) == [(BROKER, wire.SNAPPED), (BROKER, wire.KEPT)]
    assert (rest[1].header["of"], rest[1].header["snap"]) == ("n1.1.0", 1)
    stranger, _ = group("n1.1.2")
    assert kinds(stranger.handle(out[0].header, out[0].arrays)) == [(BROKER, wire.FAULT)]  # no ward of its


def test_a_rebuilt_ward_fetches_its_replica_and_is_ready_with_its_weights():
    keeper, ward = keeper_and_ward()
    ward.neurons.W += 1
    deliver({KEEPER: keeper, WARD: ward}, control(ward, {"k": wire.SNAP, "snap": 1}))
    setup(keeper, gen=1, wards=[["n1.1.0", WARD, None, 2]])  # a recovery: every group set up anew
    rebuilt, out = group("n1.1.0", keeper=[KEEPER, None], gen=1, restore={"snap": 1, "from": "n1.1.1"})
    assert kinds(out) == ["Rewire", (KEEPER, wire.FETCH)]  # not ready: its replica is on its way
    replica = keeper.handle(out[1].header, [])
    assert kinds(replica)[0] == (WARD, wire.REPLICA)
    ready = deliver({KEEPER: keeper, WARD: rebuilt}, replica)
    assert kinds(ready) == [(BROKER, wire.READY)] and ready[0].header["restored"] == 1
    np.testing.assert_array_equal(rebuilt.neurons.W, W + 1)


def test_a_fetch_before_the_keepers_own_setup_is_answered_once_it_is_set_up():
    keeper, ward = keeper_and_ward()
    deliver({KEEPER: keeper, WARD: ward}, control(ward, {"k": wire.SNAP, "snap": 1}))
    assert control(keeper, {"k": wire.FETCH, "of": "n1.1.0", "snap": 1, "gen": 1}) == ()  # of a generation ahead
    out = setup(keeper, gen=1, wards=[["n1.1.0", WARD, None, 2]])
    assert kinds(out)[:3] == ["Rewire", (BROKER, wire.READY), (WARD, wire.REPLICA)]


def test_a_network_of_one_group_snapshots_to_the_broker():
    s, _ = group(broker_keeps=True)
    assert kinds(control(s, {"k": wire.SNAP, "snap": 1})) == [(BROKER, wire.KEEP), (BROKER, wire.SNAPPED)]


# -- a client's pass under a lease ----------------------------------------------------------
def predict(s, reply, at=0, seq=1):
    return data(s, {"k": wire.FWD, "seq": f"{7:016x}-{seq}", "gen": 0, "at": at, "src": 0, "reply": reply}, [X],
                tok=wire.predict_token(TOK))


def test_a_predict_token_pass_is_answered_to_its_reply_address():
    s, _ = group()
    reply = sockets.abstract_ipc("reply")
    out = predict(s, reply)
    assert [type(o) for o in out] == [Answer] and out[0].to == reply
    d, a, _ = wire.unpack_data(out[0].frames[0])
    assert wire.DATA_KINDS[d.kind] == wire.OUT and (d.tag, d.seq) == (7, 1)
    np.testing.assert_array_equal(a, np.tanh(X @ W.T))
    assert len(s.data.held) == 0  # nothing kept for a backward: a lease holder cannot train


def test_a_lease_whose_step_has_passed_is_stale():
    s, _ = group(applied=1)
    reply = sockets.abstract_ipc("reply")
    out = predict(s, reply, at=0)
    header, _ = wire.unpack(out[0].frames)
    assert out[0].to == reply and header["k"] == wire.STALE and "at step 1, the lease at 0" in header["error"]
    assert [type(o) for o in predict(s, reply, at=1, seq=2)] == [Answer]  # a lease of the step it is at holds


def test_a_predict_token_opens_the_forward_of_a_group_that_reads_the_rows_only():
    s, _ = group("n1.2.0", layer=1, up=[["ipc://@up", 0, 2, None, 0]])
    reply = sockets.abstract_ipc("reply")
    assert predict(s, reply) == () and len(s.data.direct_parts) == 0
    for kind in (wire.BWD, wire.TARGET):  # a predict token carries nothing else
        assert data(s, {"k": kind, "seq": 1, "step": 1, "of": 1}, [np.ones((1, 2))],
                    tok=wire.predict_token(TOK)) == ()


def test_a_lease_pass_goes_on_without_blocking_and_a_full_peer_makes_it_stale():
    s, _ = group(down=["ipc://@next"])
    reply = sockets.abstract_ipc("reply")
    out = predict(s, reply)
    assert [type(o) for o in out] == [Onward] and out[0].lease
    d, a, _ = wire.unpack_data(out[0].sends[0][1])
    assert d.flags & wire.F_REPLY and wire.reply_address(d.rpid, d.rtag) == reply
    np.testing.assert_array_equal(a, np.tanh(X @ W.T))
    stale = datapath.stale(out[0].d, "full")  # what the loop sends the client if the next group takes nothing
    assert stale.to == reply and wire.unpack(stale.frames)[0]["k"] == wire.STALE


# -- a resident run's steps (rundata.py) ------------------------------------------------------
def resident_group(tmp_path, down=()):
    """A group on a host where a run's rows (6 x 2) and targets (6 x 2) are staged."""
    s = GroupState({"net": "n1", "gid": "n1.1.0", "layer": 0, "lo": 0, "hi": 2, "dtype": "float64", "token": TOK,
                    "advertise": "127.0.0.1", "state_dir": str(tmp_path)})
    setup(s, down=down)
    rows = np.arange(12, dtype=float).reshape(6, 2) / 10
    for part, A in (("X", rows), ("Y", rows[::-1] / 2)):
        staging.stage(str(tmp_path), {"name": "n1-run", "part": part, "shape": [6, 2], "dtype": "<f8", "at": 0}, [A])
    return s, rows


def run(s, first=1, steps=3):
    return control(s, {"k": wire.RUN, "name": "n1-run", "gen": 0, "first": first, "seq": 10, "batch": 2,
                       "micro": 1, "lr": 0.1, "head": "sigmoid:mse", "lo": 0, "hi": 2},
                   [np.array([5, 4, 3, 2, 1, 0][:2 * steps])])


def test_a_row_reader_makes_each_steps_forward_from_the_staged_rows_and_a_cut_drops_those_not_started(tmp_path):
    s, rows = resident_group(tmp_path, down=["ipc://@next"])
    out = run(s)
    assert kinds(out) == [("ipc://@next", "fwd", 10)]  # step 1's; steps 2 and 3 wait for the step before
    np.testing.assert_array_equal(passed(out, 10), np.tanh(rows[[5, 4]] @ W.T))
    assert s.waits() == 1
    out = control(s, {"k": wire.CUT, "gen": 0})
    assert [(o.header["k"], o.header["started"]) for o in out] == [(wire.CUT, 1)]  # how far it got
    assert s.waits() is None  # steps 2 and 3 went
    out = data(s, {"k": wire.BWD, "seq": 10, "step": 1, "of": 1, "lr": 0.1, "ack": False}, [np.ones((2, 2))])
    assert s.applied.done == 1 and kinds(out) == []  # applied; nothing follows it


def test_an_output_group_takes_its_targets_by_the_same_rows_and_reports_the_losses_in_one_message(tmp_path,
                                                                                                   monkeypatch):
    monkeypatch.setattr(rundata, "REPORT_SECONDS", 3600)  # by count and at the grant's end only: never by the clock
    s, rows = resident_group(tmp_path)  # layer 1 is the output layer: it reads the rows and has the head
    out = run(s)
    assert kinds(out) == [(BROKER, wire.LOSSES)] and s.applied.done == 3  # three steps, one report, no OUT
    assert out[0].header["steps"] == [1, 2, 3]
    ref = GroupState({"net": "n1", "gid": "n1.1.0", "layer": 0, "lo": 0, "hi": 2, "dtype": "float64",
                      "token": TOK, "advertise": "127.0.0.1"})
    setup(ref)
    T = rows[::-1] / 2
    losses = []
    for step, idx in enumerate(([5, 4], [3, 2], [1, 0]), 1):  # the broker-fed run's messages
        data(ref, {"k": wire.TARGET, "seq": step, "step": step, "of": 1, "lr": 0.1, "ack": False, "rows": 2,
                   "output": "sigmoid", "loss": "mse"}, [T[idx]])
        said = data(ref, {"k": wire.FWD, "seq": step, "after": step - 1, "keep": True, "head": True}, [rows[idx]])
        losses += [wire.unpack_data(m)[0].value for o in said if isinstance(o, Onward) for _, m in o.sends]  # OUT
    np.testing.assert_array_equal(out[0].arrays[0], losses)  # the same floats
    np.testing.assert_array_equal(s.neurons.W, ref.neurons.W)


def test_a_staged_file_is_whole_before_it_is_named_refuses_paths_and_replaces_a_networks_older_run(tmp_path):
    A = np.arange(10, dtype=float).reshape(5, 2)
    part = {"name": "n1-run", "part": "X", "shape": [5, 2], "dtype": "<f8"}
    assert not staging.stage(str(tmp_path), dict(part, at=0), [A[:3]])
    assert sorted(os.listdir(tmp_path)) == ["run-n1-run-X.npy.part"]  # no group maps half of it
    assert staging.stage(str(tmp_path), dict(part, at=3), [A[3:]])
    np.testing.assert_array_equal(staging.mapped(str(tmp_path), "n1-run", "X"), A)
    for bad in ({"name": "../n1"}, {"at": 4}, {"dtype": "<f4"}):
        with pytest.raises(ValueError):
            staging.stage(str(tmp_path), {**part, "at": 0, **bad}, [A])
    staging.stage(str(tmp_path), dict(part, name="n12-run", at=0), [A])
    staging.stage(str(tmp_path), dict(part, name="n1-new", at=0), [A])  # n1's run, staged again after a failover
    assert sorted(os.listdir(tmp_path)) == ["run-n1-new-X.npy", "run-n12-run-X.npy"]
    staging.unstage(str(tmp_path), "n1-new")
    assert sorted(os.listdir(tmp_path)) == ["run-n12-run-X.npy"]
