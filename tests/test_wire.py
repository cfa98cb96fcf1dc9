import json

import numpy as np
import pytest

from mesh import wire


def test_round_trip_keeps_header_and_arrays():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2.0])
    frames = wire.pack({"k": wire.FWD, "seq": 7}, [a, b])
    h, (a2, b2) = wire.unpack([bytes(f) for f in frames])
    assert h == {"k": "fwd", "seq": 7}
    np.testing.assert_array_equal(a2, a)
    assert a2.dtype == np.float32 and b2.dtype == np.float64
    np.testing.assert_array_equal(b2, b)


def test_empty_array_travels():
    h, (e,) = wire.unpack([bytes(f) for f in wire.pack({"k": "x"}, [np.zeros((3, 0))])])
    assert e.shape == (3, 0)


@pytest.mark.parametrize("frames, why", [
    ([], "empty"),
    ([b"\xff\xfe"], "not JSON"),
    ([b"[1, 2]"], "JSON object"),
    ([b'{"a": []}'], "string 'k'"),
    ([b'{"k": "x", "a": [["<f8", [2]]]}'], "declares 1 arrays"),
    ([b'{"k": "x", "a": [["<f8", [2]]]}', b"123"], "frame of 3 bytes"),
    ([b'{"k": "x", "a": [["|O", [1]]]}', b"1234567"], "bad array"),
    ([b'{"k": "x", "a": [["<f8", [-1]]]}', b""], "bad array"),
    ([b'{"k": "x", "a": [["<f8", [1.5]]]}', b"12345678"], "bad array"),
    ([b'{"k": "x", "a": [["<f8", [0, 4294967296]]]}', b""], "bad array"),
    ([b'{"k": "x", "a": "nope"}'], "declares"),
    ([json.dumps({"k": "x", "pad": "y" * wire.MAX_HEADER}).encode()], "exceeds"),
])
def test_malformed_messages_are_refused_with_a_reason(frames, why):
    with pytest.raises(wire.WireError, match=why):
        wire.unpack(frames)


def test_object_arrays_cannot_be_sent():
    with pytest.raises(wire.WireError):
        wire.pack({"k": "x"}, [np.array(["a"], dtype=object)])
