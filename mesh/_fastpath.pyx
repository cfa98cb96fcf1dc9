# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled per-message loop (see fastpath.py, whose pure-Python loop this mirrors).

It calls pyzmq's own compiled Socket methods (zmq.backend.Socket.recv and .send, past the
Python wrapper pyzmq puts around send): no libzmq is linked or declared here. (A cimport of
pyzmq's Socket would call them through its vtable, but its .pxd needs zmq.h, which pyzmq's
wheels do not ship; the call costs ~0.05 us either way, measured.) The only data message it handles itself is the
common one, a part of a pass that is neither the pass's first nor its last, whose buffer
DataPath has already made (`DataPath.fwd` / `DataPath.bwd`): it is checked as
`DataPath.on_message`, `_filed` and `_summed` check it, and its bytes are copied into the
same place `x[:, lo:hi] = a` (or `parts[src] = a`) would put them, the dtypes being the same.
Every other message, and any that fails a check here, goes to the group's `handle` untouched
(Group.handle: GroupState.on_data, hence `DataPath.on_message`, or its handle for control):
nothing here changes state before every check has passed.
"""
import struct
import sys

import zmq

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from . import sockets, wire

cdef Py_ssize_t HEADER = wire.DATA.size
cdef Py_ssize_t O_TOK, O_NDROP, O_EP, O_GEN, O_SEQ, O_TAG, O_AFTER, O_SRC, O_NROWS, O_NCOLS
cdef Py_ssize_t O_NET, O_LAYER, O_STEP, O_OF, O_ROWS, O_VALUE, O_HEAD, O_RPID, O_RTAG


def _offset(name):
    codes = [code for field, code in wire.DATA_FIELDS]
    at = [field for field, _ in wire.DATA_FIELDS].index(name)
    return struct.calcsize("<" + "".join(codes[:at]))


O_TOK, O_NDROP, O_EP, O_GEN, O_SEQ, O_TAG, O_AFTER, O_SRC, O_NROWS, O_NCOLS = (
    _offset(n) for n in ("tok", "ndrop", "ep", "gen", "seq", "tag", "after", "src", "nrows", "ncols"))
O_NET, O_LAYER, O_STEP, O_OF, O_ROWS, O_VALUE, O_HEAD, O_RPID, O_RTAG = (
    _offset(n) for n in ("net", "layer", "step", "of", "rows", "value", "head", "rpid", "rtag"))
_CODE_OF = wire._CODE_OF
_wire_data = wire.data

cdef uint8_t MAGIC = wire.DATA_MAGIC
cdef int FWD = wire.DATA_CODE[wire.FWD]
cdef int BWD = wire.DATA_CODE[wire.BWD]
cdef int F_REPLY = wire.F_REPLY
cdef Py_ssize_t ZERO_COPY = sockets.ZERO_COPY
cdef Py_ssize_t ITEMSIZE[8]
for _i, _d in enumerate(wire.ARRAY_DTYPES):
    ITEMSIZE[_i] = 0 if _d is None else _d.itemsize
cdef int NDTYPES = len(wire.ARRAY_DTYPES)
WireError = wire.WireError
Again = zmq.Again
from zmq.backend import Socket as _Socket
_recv, _send = _Socket.recv, _Socket.send


API = 2  # fastpath.API: serve(dp, sock, handle, once)


def usable():
    """The layout this was compiled against is the one in wire.py, and the host is little-endian."""
    return sys.byteorder == "little" and wire.DATA.format == _LAYOUT and len(wire.ARRAY_DTYPES) <= 8


_LAYOUT = "<BBBB16sIHHIqqQqqIIId24sI4sII"  # wire.DATA_FIELDS when this was written: data() writes these


cdef inline uint64_t rd_Q(const char *p, Py_ssize_t at) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p + at, 8)
    return v


cdef inline uint32_t rd_I(const char *p, Py_ssize_t at) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p + at, 4)
    return v


cdef inline uint16_t rd_H(const char *p, Py_ssize_t at) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p + at, 2)
    return v


cdef bint lane(object dp, object g, bytes buf) except -1:
    """True when this message was a middle part of a pass and is filed; False: not handled."""
    cdef const char *p = PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    if n < HEADER:
        return False
    cdef int kind = <uint8_t>p[1]
    cdef int flags = <uint8_t>p[2]
    cdef int dcode = <uint8_t>p[3]
    if (kind != FWD and kind != BWD) or flags & F_REPLY or rd_H(p, O_NDROP) or rd_I(p, O_EP) or rd_Q(p, O_TAG):
        return False
    if dcode == 0 or dcode >= NDTYPES or dcode != <int>dp.dcode:
        return False
    cdef bytes tok = dp.tok
    if PyBytes_GET_SIZE(tok) != 16 or memcmp(p + O_TOK, PyBytes_AS_STRING(tok), 16):
        return False
    if <int64_t>rd_Q(p, O_GEN) != <int64_t>g.gen:
        return False
    cdef uint64_t nrows = rd_I(p, O_NROWS), ncols = rd_I(p, O_NCOLS)
    cdef uint64_t item = ITEMSIZE[dcode]
    if nrows > <uint64_t>n or ncols > <uint64_t>n or <uint64_t>n != HEADER + nrows * ncols * item:
        return False
    cdef uint32_t src = rd_I(p, O_SRC)
    cdef int64_t seq = <int64_t>rd_Q(p, O_SEQ), after, k
    cdef Py_ssize_t count, lo, hi, width, r
    cdef Py_buffer view
    cdef char *dst
    cdef bytearray seen
    if kind == FWD:  # DataPath.on_message, then forward's _filed
        after = <int64_t>rd_Q(p, O_AFTER)
        if after != -1:
            if after > <int64_t>g.applied.done:
                return False  # it may wait: on_message decides
            rows_src = g.rows_src
            if rows_src is not None and <int64_t>rows_src == src:
                return False
        count = g.fan_in
        if count <= 1 or src >= count or g.faults.planned:
            return False
        lo, hi = g.columns[src]
        if <Py_ssize_t>ncols != hi - lo or lo < 0:
            return False
        held = dp.fwd.entries.get(seq)  # Bounded's own dict: its get() is a Python call
        if held is None:
            return False  # the pass's first part: its buffer is made there
        entry = (<tuple>held)[0]
        x, seen, k, into = entry  # into: x's bytes (a memoryview: its buffer comes cheaper than an array's)
        if k + 1 >= count or PyByteArray_GET_SIZE(seen) != count or PyByteArray_AS_STRING(seen)[src]:
            return False  # its last part (the forward runs there), or a repeat (refused there)
        shape = x.shape
        if len(shape) != 2 or shape[0] != nrows or hi > shape[1]:
            return False
        width = shape[1]
        PyObject_GetBuffer(into, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            if view.len != <Py_ssize_t>(nrows * width * item):
                return False
            dst = <char *>view.buf
            for r in range(<Py_ssize_t>nrows):
                memcpy(dst + (r * width + lo) * item, p + HEADER + r * ncols * item, ncols * item)
        finally:
            PyBuffer_Release(&view)
    else:  # BWD: DataPath.on_message, then backward's _summed
        count = g.fan_out
        if count <= 1 or src >= count or <Py_ssize_t>ncols != g.neurons.W.shape[0]:
            return False
        held = dp.bwd.entries.get(seq)
        if held is None:
            return False
        entry = (<tuple>held)[0]
        parts, seen, k, into = entry
        if k + 1 >= count or PyByteArray_GET_SIZE(seen) != count or PyByteArray_AS_STRING(seen)[src] \
                or parts.shape != (count, nrows, ncols):
            return False
        PyObject_GetBuffer(into, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            if view.len != <Py_ssize_t>(count * nrows * ncols * item):
                return False
            memcpy(<char *>view.buf + src * nrows * ncols * item, p + HEADER, nrows * ncols * item)
        finally:
            PyBuffer_Release(&view)
    PyByteArray_AS_STRING(seen)[src] = 1
    entry[2] = k + 1
    return True


def serve(dp, sock, handle, bint once=False):
    """fastpath.py_serve's loop, compiled: messages until the group's state stops (once:
    one); what the lane does not file goes to handle(buf)."""
    g = dp.g
    cdef object buf
    cdef bint handled
    while g.running:
        try:
            buf = _recv(sock)
        except Again:  # quiet for a while: look at `running` again
            if once:
                raise
            continue
        handled = False
        if PyBytes_GET_SIZE(buf) and <uint8_t>PyBytes_AS_STRING(buf)[0] == MAGIC:
            try:
                handled = lane(dp, g, <bytes>buf)
            except Exception:
                handled = False  # whatever it was, handle judges it (on_data: on_message)
        if not handled:
            handle(buf)
        if once:
            return


def send(sock, msg, int flags=0):
    """One built message to one socket (copied under ZERO_COPY bytes, as sockets.send does)."""
    _send(sock, msg, flags, len(msg) < ZERO_COPY)


def send_each(list socks, msg, int flags=0):
    """One built message to every socket (copied under ZERO_COPY bytes, as sockets.send does)."""
    cdef bint copy = len(msg) < ZERO_COPY
    for s in socks:
        _send(s, msg, flags, copy)


def filed(dp, buf):
    """Whether the lane filed `buf` (tests and benchmarks call the lane through this)."""
    return lane(dp, dp.g, buf)


cdef inline void put_s(char *o, bytes value, Py_ssize_t size) noexcept:
    """struct's "Ns": the bytes, cut to N or padded with zeros."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    if n > size:
        n = size
    memcpy(o, PyBytes_AS_STRING(value), n)
    memset(o + n, 0, size - n)


def data(kind, flags, tuple fields, array=None, drop=()):
    """wire.data, compiled: the same bytes for the same arguments (a data message with one
    array and no seqs to drop); anything else, or any field struct would refuse, goes to
    wire.data, which builds it or raises as it always does."""
    if array is None or drop or len(fields) != 17:
        return _wire_data(kind, flags, fields, array, drop)
    code = _CODE_OF.get(array.dtype)
    shape = array.shape
    if code is None or len(shape) != 2:
        return _wire_data(kind, flags, fields, array, drop)
    tok, net, layer, ndrop, ep, gen, seq, tag, after, step, src, of, rows, value, head, rpid, rtag = fields
    cdef uint8_t c_kind, c_flags
    cdef uint32_t c_net, c_ep, c_src, c_of, c_rows, c_rpid, c_nrows, c_ncols
    cdef uint16_t c_layer, c_ndrop
    cdef int64_t c_gen, c_seq, c_after, c_step
    cdef uint64_t c_tag
    cdef double c_value
    if type(tok) is not bytes or type(head) is not bytes or type(rtag) is not bytes:
        return _wire_data(kind, flags, fields, array, drop)
    try:
        c_kind, c_flags, c_net, c_layer, c_ndrop, c_ep = kind, flags, net, layer, ndrop, ep
        c_gen, c_seq, c_tag, c_after, c_step, c_src, c_of, c_rows = gen, seq, tag, after, step, src, of, rows
        c_value, c_rpid, c_nrows, c_ncols = value, rpid, shape[0], shape[1]
    except (OverflowError, TypeError, ValueError):
        return _wire_data(kind, flags, fields, array, drop)  # struct.error, as before
    body = array.tobytes()  # C order, whatever the array's layout
    cdef Py_ssize_t size = PyBytes_GET_SIZE(body)
    out = PyBytes_FromStringAndSize(NULL, HEADER + size)
    cdef char *o = PyBytes_AS_STRING(out)
    o[0] = <char>MAGIC
    o[1] = <char>c_kind
    o[2] = <char>c_flags
    o[3] = <char><uint8_t>code
    put_s(o + O_TOK, tok, 16)
    memcpy(o + O_NET, &c_net, 4)
    memcpy(o + O_LAYER, &c_layer, 2)
    memcpy(o + O_NDROP, &c_ndrop, 2)
    memcpy(o + O_EP, &c_ep, 4)
    memcpy(o + O_GEN, &c_gen, 8)
    memcpy(o + O_SEQ, &c_seq, 8)
    memcpy(o + O_TAG, &c_tag, 8)
    memcpy(o + O_AFTER, &c_after, 8)
    memcpy(o + O_STEP, &c_step, 8)
    memcpy(o + O_SRC, &c_src, 4)
    memcpy(o + O_OF, &c_of, 4)
    memcpy(o + O_ROWS, &c_rows, 4)
    memcpy(o + O_VALUE, &c_value, 8)
    put_s(o + O_HEAD, head, 24)
    memcpy(o + O_RPID, &c_rpid, 4)
    put_s(o + O_RTAG, rtag, 4)
    memcpy(o + O_NROWS, &c_nrows, 4)
    memcpy(o + O_NCOLS, &c_ncols, 4)
    memcpy(o + HEADER, PyBytes_AS_STRING(body), size)
    return out
