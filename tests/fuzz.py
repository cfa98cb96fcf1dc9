"""Messages a fuzz campaign sends, as Hypothesis strategies that know the wire's shape:
real kinds with the fields the mesh reads (plausible values and absurd ones: huge and
negative numbers, NaN, deep nesting, wrong types), missing and extra fields, the right
token or a wrong one, arrays that fit their declaration and arrays that lie about it,
headers too deep for json, and plain random bytes."""
import json
import struct

import numpy as np
from hypothesis import strategies as st

from mesh import wire

KINDS = sorted({v for k, v in vars(wire).items() if k.isupper() and isinstance(v, str) and v.isalpha()} - {
    wire.STOP})  # a stop with the right token is obeyed, as it should be
FIELDS = ["net", "seq", "src", "id", "step", "of", "lr", "gid", "keep", "spec", "timeout", "gen", "after", "at",
          "reply", "ep", "cols", "snap", "whole", "rows", "output", "loss", "ack", "head", "drop", "tcp", "ipc",
          "host", "beyond", "optimizer", "function", "index", "fan_in", "fan_out", "down", "up", "init", "restore",
          "keeper", "wards", "settings", "slots", "role", "epoch", "primary", "holds", "incarnation", "what", "inc",
          "to", "mac", "config", "inbox_port", "inbox_ipc", "pid", "usage", "groups", "memory", "req", "endpoints",
          "applied", "waits", "msgs", "learn", "strict", "chunk", "epochs", "batch_size", "learning_rate", "n", "echo"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 8),  # plausible: indexes, steps, generations
    st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "n1", "n1.1.0", "tcp://127.0.0.1:9", "ipc://@x", "broker", "sgd", "adam", "tanh",
                     "softmax", "mse", "reset", "commit", "active", "standby", "x" * 300]),
    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=4), max_leaves=12)
DTYPES = ["<f8", "<f4", "<i8", "|u1"]
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3)


@st.composite
def arrays(draw):
    """Arrays that travel as they are declared (of sizes a real message might have)."""
    return [np.zeros(tuple(draw(shapes)), dtype=draw(st.sampled_from(DTYPES)))
            for _ in range(draw(st.integers(0, 3)))]


def data_message(draw, token, lying):
    """A data message (wire.DATA): every field drawn over its whole range or near the values
    the mesh uses, the array as declared, or (lying) bytes that do not fit the declaration."""
    small = st.integers(-2, 8)
    value = {"B": st.integers(0, 255), "H": st.integers(0, 2 ** 16 - 1), "I": st.one_of(small.filter(
        lambda n: n >= 0), st.integers(0, 2 ** 32 - 1)), "q": st.one_of(small, st.integers(-(2 ** 63), 2 ** 63 - 1)),
        "Q": st.one_of(st.just(0), st.integers(0, 2 ** 64 - 1)), "d": st.floats(allow_nan=True, allow_infinity=True),
        "16s": st.just(wire.token_bytes(token)), "24s": st.sampled_from([b"", b"softmax:cross_entropy", b"x:y",
                                                                          b"sigmoid:mse"]),
        "4s": st.binary(min_size=4, max_size=4)}
    fields = [draw(value[code]) for name, code in wire.DATA_FIELDS[4:-2]]  # from tok to rtag
    kind = draw(st.integers(0, 7))
    flags = draw(st.integers(0, 31))
    if lying:
        dtype, nrows, ncols = draw(st.integers(0, 9)), draw(st.integers(0, 2 ** 32 - 1)), draw(st.integers(0, 9))
        head = wire.DATA.pack(wire.DATA_MAGIC, kind, flags, dtype, *fields, nrows, ncols)
        return head + draw(st.binary(max_size=64))
    array = draw(st.sampled_from([None, "f8", "f4"]))
    if array is not None:
        array = np.zeros((draw(st.integers(0, 4)), draw(st.integers(0, 4))), dtype=array)
    try:
        return wire.data(kind, flags, fields, array, drop=draw(st.lists(st.integers(-9, 9), max_size=3)))
    except (struct.error, wire.WireError):
        return b"\xd7"


@st.composite
def messages(draw, tokens=(None,), kinds=KINDS, net=None):
    """One message: a list of bytes frames."""
    shape = draw(st.sampled_from(["packed", "packed", "lying", "deep", "bytes", "not json", "data", "data",
                                  "data lying"]))
    if shape.startswith("data"):
        return [data_message(draw, draw(st.sampled_from(tokens)), shape == "data lying")]
    if shape == "bytes":
        return [draw(st.binary(max_size=200)) for _ in range(draw(st.integers(0, 4)))]
    if shape == "not json":
        return [draw(st.sampled_from([b"{", b"[1,2]", b"null", b'"k"', b"\xff\xfe{}", b'{"k": 1}', b'{"a": []}']))]
    header = {"k": draw(st.sampled_from(kinds))}
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=8, unique=True)):
        header[field] = draw(values)
    token = draw(st.sampled_from(tokens))
    if token is not None:
        header["tok"] = token
    if net is not None and draw(st.booleans()):
        header["net"] = net
    if shape == "deep":  # under the header's size limit, over json's recursion limit (or near it)
        depth = draw(st.sampled_from([17, 500, 5000, 30000]))
        return [json.dumps(header).encode()[:-1] + b', "z": ' + b"[" * depth + b"]" * depth + b"}"]
    if shape == "lying":  # declared arrays that do not fit their frames: wrong counts, dtypes, huge shapes
        header["a"] = [[draw(st.sampled_from(DTYPES + ["|O", "<c16", "x", 3])),
                        draw(st.lists(st.integers(-2, 2 ** 62), max_size=4) | values)]
                       for _ in range(draw(st.integers(0, 2)))]
        return [json.dumps(header).encode()] + [draw(st.binary(max_size=64)) for _ in range(draw(st.integers(0, 3)))]
    return [bytes(f) for f in wire.pack(header, draw(arrays()))]
