"""A group's inbox loop and its sends: the per-message path of the data plane.

`serve(dp, sock, handle)` receives one message at a time (a blocking receive, bounded by
the socket's RCVTIMEO) until the group's state stops (`dp.g.running`). The common data
message it files itself, into the state's DataPath (`dp`); every other message, data or
control, goes to `handle(buf)` with its first frame (Group.handle: the state's on_data or
handle, then the records it returns are sent). `send(sock, msg, flags)` sends one built
message and `send_each(socks, msg, flags)` one to each socket, past pyzmq's Python send
wrapper; `data` builds one (wire.data, or its compiled twin: the same bytes).

The loop files the common data message itself — a part of a pass that is neither its
first nor its last, of this network and generation, with nothing to wait for — into the
pass's buffer, exactly as `DataPath._filed` and `DataPath._summed` would (the same checks,
the same bytes in the same place: the buffer's dtype is the message's); such a part sends
nothing, so there are no records to run. Everything else goes to `handle`, which decides
as it always does; nothing is changed before every check has passed. In a per-neuron
layer of fan-in N that is N - 2 parts of every N. Two implementations of it:
- compiled (`mesh/_fastpath.pyx`, Cython calling pyzmq's compiled Socket methods, built by
  `pip install -e .` when a compiler is there);
- pure Python (here): it runs when the extension was not built, or when MESH_PURE_PYTHON=1.

A data message is received as bytes (one copy of the frame), not as a zmq.Frame: for the
small messages of a per-neuron mesh that is ~1 us cheaper, and it needs no second call to
ask whether more frames follow. A frame that starts like a data message is read as one
whatever follows it: each frame is then judged on its own, so a peer gains nothing it could
not get by sending them apart.
"""
import os
import struct

import zmq
import zmq.backend

from . import sockets, wire

_MAGIC = wire.DATA_MAGIC
_RCVMORE = zmq.RCVMORE
_send = zmq.backend.Socket.send  # pyzmq's compiled send, past the Python wrapper around it (routing ids, groups)


def _load():
    if os.environ.get("MESH_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _fastpath
        whole = all(hasattr(_fastpath, name) for name in ("serve", "send", "send_each", "data", "filed")) and \
            getattr(_fastpath, "API", 0) == API
        return _fastpath if whole and _fastpath.usable() else None  # not one built from older sources
    except Exception:  # not built, or built against another pyzmq or layout: the pure-Python loop runs
        return None


API = 2  # serve(dp, sock, handle, once): the compiled module's must match (not one built from older sources)
compiled = _load()
KIND = "compiled" if compiled is not None else "pure Python"


def control_frames(sock, first):
    """The whole of a control message whose first frame `first` (bytes) was just read."""
    frames = [first]
    more = sock.get(_RCVMORE)
    while more:
        frame = sock.recv(copy=False)
        frames.append(frame)
        more = frame.more
    return frames


def _lane_struct():
    """The header's fields the lane reads (the others skipped as padding)."""
    wanted = {"kind", "flags", "dtype", "tok", "ndrop", "ep", "gen", "seq", "tag", "after", "src", "nrows", "ncols"}
    return struct.Struct("<x" + "".join(code if name in wanted else f"{struct.calcsize(code)}x"
                                        for name, code in wire.DATA_FIELDS[1:]))


_LANE = _lane_struct()
_HEADER = wire.DATA.size
_FWD, _BWD = wire.DATA_CODE[wire.FWD], wire.DATA_CODE[wire.BWD]
_ITEMSIZE = [0 if d is None else d.itemsize for d in wire.ARRAY_DTYPES]


def py_lane(dp, g, buf):
    """True when `buf` was a middle part of a pass and is filed, as on_message would file it
    (the same checks, the same bytes in the same place); False: not handled, nothing changed.
    _fastpath.pyx's lane is this, compiled."""
    if len(buf) < _HEADER or buf[0] != _MAGIC:
        return False
    kind, flags, dcode, tok, ndrop, ep, gen, seq, tag, after, src, nrows, ncols = _LANE.unpack_from(buf)
    if flags & wire.F_REPLY or ndrop or ep or tag or not dcode or dcode != dp.dcode or tok != dp.tok or gen != g.gen:
        return False
    size = _ITEMSIZE[dcode]
    if len(buf) != _HEADER + nrows * ncols * size:
        return False
    part = memoryview(buf)
    if kind == _FWD:  # DataPath.on_message, then forward's _filed
        if after != -1 and (after > g.applied.done or src == g.rows_src):
            return False  # it may wait: on_message decides
        count = g.fan_in
        if count <= 1 or src >= count or g.faults.planned:
            return False
        lo, hi = g.columns[src]
        held = dp.fwd.entries.get(seq)  # Bounded's own dict: its get() is one more Python call
        if ncols != hi - lo or lo < 0 or held is None:
            return False  # a pass's first part: its buffer is made there
        entry = held[0]
        x, seen, k, into = entry  # into: x's bytes
        if k + 1 >= count or len(seen) != count or seen[src] or x.shape[0] != nrows or hi > x.shape[1]:
            return False  # its last part (the forward runs there), or a repeat (refused there)
        width, row = x.shape[1] * size, ncols * size
        for r in range(nrows):
            at = r * width + lo * size
            into[at:at + row] = part[_HEADER + r * row:_HEADER + (r + 1) * row]
    elif kind == _BWD:  # DataPath.on_message, then backward's _summed
        count = g.fan_out
        if count <= 1 or src >= count or ncols != g.neurons.W.shape[0]:
            return False
        held = dp.bwd.entries.get(seq)
        if held is None:
            return False
        entry = held[0]
        parts, seen, k, into = entry
        if k + 1 >= count or len(seen) != count or seen[src] or parts.shape != (count, nrows, ncols):
            return False
        n = nrows * ncols * size
        into[src * n:(src + 1) * n] = part[_HEADER:]
    else:
        return False
    seen[src] = 1
    entry[2] = k + 1
    return True


def py_serve(dp, sock, handle, once=False):
    """Messages from the inbox until the group's state stops (once: one message): the lane's
    to `dp`, the others' first frame to `handle`."""
    g = dp.g
    recv = sock.recv
    while g.running:
        try:
            buf = recv()
        except zmq.Again:  # quiet for a while: look at `running` again
            if once:
                raise
            continue
        try:
            handled = py_lane(dp, g, buf)
        except Exception:
            handled = False  # whatever it was, handle judges it (on_data: on_message)
        if not handled:
            handle(buf)
        if once:
            return


def py_send(sock, msg, flags=0):
    _send(sock, msg, flags, len(msg) < sockets.ZERO_COPY)


def py_send_each(socks, msg, flags=0):
    copy = len(msg) < sockets.ZERO_COPY
    for sock in socks:
        _send(sock, msg, flags, copy)


def use(kind):
    """Run the loops of `kind` from now on ("compiled" or "pure Python"; a benchmark's A/B)."""
    global serve, send, send_each, data, KIND
    if kind == "compiled" and compiled is None:
        raise RuntimeError("the compiled data path is not built here (pip install -e . builds it) or is off "
                           "(MESH_PURE_PYTHON)")
    KIND = kind
    serve, send, send_each, data = ((compiled.serve, compiled.send, compiled.send_each, compiled.data)
                                    if kind == "compiled" else (py_serve, py_send, py_send_each, wire.data))


use(KIND)
