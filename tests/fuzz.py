"""Random and malformed multipart messages: random bytes, wrong frame counts,
headers that are not JSON or not objects, real message kinds with wrong
fields, wrong dtypes and shapes, and shapes that declare huge sizes."""
import json

import numpy as np

from mesh import wire

KINDS = [v for k, v in vars(wire).items() if k.isupper() and isinstance(v, str) and len(v) < 12]


JUNK = [None, True, -1, 0, 2 ** 62, 1.5, "nan", "x" * 40, [], {}, [1, "a"]]


def _junk_value(rng):
    return JUNK[int(rng.integers(0, len(JUNK)))]


def message(rng, token=None, kinds=KINDS):
    """One malformed message (a list of bytes frames)."""
    kind = int(rng.integers(0, 6))
    if kind == 0:  # random bytes, any number of frames
        return [rng.bytes(int(rng.integers(0, 200))) for _ in range(int(rng.integers(0, 5)))]
    header = {"k": kinds[int(rng.integers(0, len(kinds)))]}
    for key in ("net", "seq", "src", "id", "step", "of", "lr", "gid", "keep", "spec", "timeout"):
        if rng.random() < 0.4:
            header[key] = _junk_value(rng)
    if token is not None and rng.random() < 0.5:
        header["tok"] = token
    if kind == 1:  # not JSON, or not an object
        return [rng.choice([b"{", b"[1,2]", b"null", b'"k"', b"\xff\xfe{}"])]
    if kind == 2:  # declared arrays that do not match the frames
        dtype = ["<f4", "<f8", "<i8", "|O", "<c16", "x"][int(rng.integers(0, 6))]
        shape = [int(rng.integers(-2, 5)) for _ in range(int(rng.integers(0, 4)))]
        header["a"] = [[dtype, shape]]
        return [json.dumps(header).encode()] + [rng.bytes(int(rng.integers(0, 64)))
                                                for _ in range(int(rng.integers(0, 3)))]
    if kind == 3:  # huge declared sizes
        header["a"] = [["<f8", [2 ** 40, 2 ** 20]]]
        return [json.dumps(header).encode(), b"\0" * 8]
    if kind == 4:  # well-formed arrays of odd shapes and dtypes for real kinds
        arrays = [np.zeros(tuple(int(n) for n in rng.integers(0, 4, size=int(rng.integers(1, 4)))),
                           dtype=[np.float32, np.float64, np.int64][int(rng.integers(0, 3))])
                  for _ in range(int(rng.integers(0, 3)))]
        return [bytes(f) for f in wire.pack(header, arrays)]
    return [json.dumps(header).encode()] * int(rng.integers(1, 4))  # repeated header frames
