"""The group's per-message loop (mesh/fastpath.py), on both its paths: compiled
(mesh/_fastpath.pyx) and pure Python. Each path's lane files the middle parts of a pass
itself, in the state's DataPath; whatever it takes, it must leave the group exactly as
GroupState.on_data (DataPath.on_message) would have, and whatever it declines must reach the
group's handle untouched."""
import os
import shutil

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, event, given, settings, strategies as st

from mesh import fastpath, sockets, wire
from rig import Rig

PATHS = ["pure Python", "compiled"]
FWD, BWD = wire.DATA_CODE[wire.FWD], wire.DATA_CODE[wire.BWD]


@pytest.fixture(params=PATHS)
def path(request):
    if request.param == "compiled" and fastpath.compiled is None:
        pytest.skip("the compiled data path is not built here, or MESH_PURE_PYTHON is set")
    before = fastpath.KIND
    fastpath.use(request.param)
    yield request.param
    fastpath.use(before)


def test_the_compiled_path_is_built_where_there_is_a_compiler():
    """pip install -e . builds it (setup.py); only a machine with no C compiler runs without it."""
    if os.environ.get("MESH_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("MESH_PURE_PYTHON is set")
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler here")
    assert fastpath.compiled is not None, "the compiled data path was not built: see pip install -e . -v"
    assert fastpath.KIND == "compiled"


def lane(path):
    return fastpath.compiled.filed if path == "compiled" else lambda dp, buf: fastpath.py_lane(dp, dp.g, buf)


def part(r, seq, src, a, kind=FWD, gen=0, after=-1, tok=None, ep=0, step=1, of=1, lr=0.1):
    return wire.data(kind, 0, (wire.token_bytes(tok or r.g.state.token), 1, 2, 0, ep, gen, seq, 0, after, step, src, of,
                               0, lr, b"", 0, b""), a)


def test_the_loop_serves_both_shapes_and_stops(ctx, path):
    """Data and control messages through serve(): a pass of 5 parts out of order, a repeat and
    a part of a wrong shape refused with a FAULT, a stranger's part dropped, then a STOP."""
    r = Rig(ctx, layer=1, fan_in=5, rows=2, cols=5)
    x = np.array([[0.3, -0.7, 0.1, 2.0, -1.5]])
    cols = [np.ascontiguousarray(x[:, i:i + 1]) for i in range(5)]
    for src in (3, 0, 1):
        r.feed.send(part(r, 7, src, cols[src]))
    r.feed.send(part(r, 7, 1, cols[1]))  # a repeat
    r.feed.send(part(r, 7, 2, np.zeros((2, 1))))  # a lying shape
    r.feed.send(part(r, 7, 2, cols[2], tok="someone else"))
    r.feed.send(part(r, 7, 2, cols[2], gen=5))  # of another generation
    for src in (2, 4):
        r.feed.send(part(r, 7, src, cols[src]))
    r.feed.send_multipart(wire.pack({"k": wire.STOP, "tok": r.g.state.token, "net": "n1"}))
    r.g.serve()  # until the STOP
    heard = [r.heard() for _ in range(3)]
    faults = [h for h, _ in heard if h["k"] == wire.FAULT]
    assert len(faults) == 2 and "shape" in faults[0]["error"] and "shape" in faults[1]["error"]
    (out,) = [a for h, (a,) in ((h, a) for h, a in heard if h["k"] == wire.OUT)]
    assert np.array_equal(out, np.tanh(x @ r.W.T))
    assert r.g.state.running is False


def test_the_lane_takes_middle_parts_only(ctx, path):
    r = Rig(ctx, layer=1, fan_in=4, rows=2, cols=4)
    take = lane(path)
    a = np.ones((1, 1))
    assert not take(r.g.state.data, part(r, 1, 0, a))  # the first part: its buffer is made by on_message
    r.g.handle(part(r, 1, 0, a))  # the group's way: GroupState.on_data, then its records sent
    assert take(r.g.state.data, part(r, 1, 1, a)) and take(r.g.state.data, part(r, 1, 2, a))
    assert not take(r.g.state.data, part(r, 1, 2, a))  # a repeat: on_message refuses it
    assert not take(r.g.state.data, part(r, 1, 3, a))  # the last: the forward runs in on_message
    assert r.g.state.data.fwd.get(1)[2] == 3


# -- whatever the lane takes, it leaves the group as on_message would -------------------
def parts_of(shapes=((1, 1), (2, 1), (1, 2), (1, 3))):
    """Half of them parts that fit the pass (the lane's case), half anything near it."""
    fits = st.tuples(st.sampled_from([FWD, BWD]), st.integers(0, 1), st.integers(0, 2), st.just((1, 1)),
                     st.just("<f8"), st.just(0), st.just(-1), st.just(0), st.floats(-2, 2))
    near = st.tuples(st.sampled_from([FWD, FWD, BWD]), st.integers(0, 2), st.integers(0, 6),
                     st.sampled_from(shapes), st.sampled_from(["<f8", "<f8", "<f4"]), st.sampled_from([0, 0, 1]),
                     st.sampled_from([-1, -1, 0, 3]), st.sampled_from([0, 0, 2]), st.floats(-2, 2))
    return st.one_of(fits, near)


def state(r):
    """What the data path holds: each pass's marks, its count and what is filed (its other
    bytes are whatever np.empty gave)."""
    def held(store, filed):
        return {seq: (bytes(seen), n, filed(x, np.frombuffer(bytes(seen), np.uint8) > 0).tobytes())
                for seq, ((x, seen, n, _), _) in store.entries.items()}
    dp = r.g.state.data
    return held(dp.fwd, lambda x, marks: x[:, marks]), held(dp.bwd, lambda parts, marks: parts[marks])


def heard_all(r):
    """Everything the group said, up to its answer to a GET sent now (on the same connection)."""
    sockets.send(r.feed, {"k": wire.GET, "tok": r.g.state.token, "net": "n1", "slots": False})
    r.g.handle_one()
    out = []
    while True:
        assert r.sink.poll(10_000), "the group did not answer"
        _, h, arrays = sockets.recv(r.sink)
        if h["k"] == wire.STATE:
            return out
        out.append((h["k"], h.get("seq"), h.get("error"), [a.tobytes() for a in arrays]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(parts_of(), min_size=1, max_size=25))
def test_the_lane_files_what_on_message_would(ctx, path, messages):
    """Two groups, the same messages: one sees them through on_message alone, the other
    through the lane first. What they hold and what they said must be the same."""
    rigs = [Rig(ctx, layer=1, fan_in=3, rows=1, cols=3) for _ in range(2)]
    for r in rigs:
        r.g.state.fan_out = 3  # gradients from three groups downstream
    take = lane(path)
    try:
        for kind, seq, src, shape, dtype, gen, after, ep, value in messages:
            for i, r in enumerate(rigs):
                buf = part(r, seq, src, np.full(shape, value, dtype), kind=kind, gen=gen, after=after, ep=ep)
                if i == 1 and take(r.g.state.data, buf):
                    event("the lane took a part")
                else:
                    try:
                        r.g.handle(buf)  # on_data (DataPath.on_message), its records sent
                    except wire.WireError:
                        pass
        assert state(rigs[0]) == state(rigs[1])
        assert heard_all(rigs[0]) == heard_all(rigs[1])
    finally:
        for r in rigs:
            for s in (r.feed, r.sink, r.g.inbox, r.g.broker):
                s.close(0)


# -- the compiled builder makes wire.data's bytes -------------------------------------
def field(code):
    ints = {"B": 8, "H": 16, "I": 32, "Q": 64}
    if code in ints:
        n = ints[code]
        return st.one_of(st.integers(0, 9), st.integers(0, 2 ** n - 1), st.integers(-2, 2 ** n + 1))
    if code == "q":
        return st.one_of(st.integers(-2, 9), st.integers(-(2 ** 63), 2 ** 63 - 1), st.just(2 ** 63))
    if code == "d":
        return st.one_of(st.floats(allow_nan=True), st.integers(-9, 9))
    return st.binary(max_size=int(code[:-1]) + 2)  # "Ns": shorter, exact and longer


@pytest.mark.skipif(fastpath.compiled is None, reason="the compiled data path is not built")
@settings(max_examples=300, deadline=None)
@given(st.integers(0, 256), st.integers(0, 256), st.tuples(*(field(code) for _, code in wire.DATA_FIELDS[4:-2])),
       st.sampled_from(["<f8", "<f4", "<i8", "|u1", ">f8", "<f2"]), st.tuples(st.integers(0, 3), st.integers(0, 3)),
       st.booleans())
def test_the_compiled_builder_makes_the_same_bytes(kind, flags, fields, dtype, shape, transposed):
    array = np.arange(shape[0] * shape[1]).astype(dtype).reshape(shape)
    array = array.T if transposed else array
    results = []
    for build in (wire.data, fastpath.compiled.data):
        try:
            results.append(build(kind, flags, fields, array))
        except Exception as e:
            results.append(type(e))
    assert results[0] == results[1]
