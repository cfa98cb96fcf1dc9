"""Rows that mix numbers and strings, carried as plain arrays:

    X        float64 (rows, positions): the numbers; 0 where a cell is a string,
             NaN where a row has no value (missing, or past the row's end)
    S        int64   (rows, positions): -1 for a number (or no value), else an
             index into strings
    strings  one uint8 frame: the distinct strings, UTF-8, NUL-separated

Rows may have different lengths (ragged): the table is as wide as the longest
row. All-number rows travel as X alone. No pickling, and no JSON per cell."""
import numbers

import numpy as np

from .wire import WireError


class Rows:
    """Rows converted once, to send many times (an estimator's epochs).
    learn: what the encoder learns from these rows when they train it first
    (encoder.py): {"standardize": True, "target": {...}}."""

    def __init__(self, rows, learn=None):
        self.fields, self.arrays = from_rows(rows)
        if learn:
            self.fields = dict(self.fields, learn=learn)
        self.count = len(self.arrays[0])


def is_missing(v):
    """None, NaN, and pandas' NA and NaT: a cell with no value."""
    return v is None or (isinstance(v, (float, np.floating)) and v != v) or type(v).__name__ in ("NAType", "NaTType")


def from_rows(rows):
    """(header fields, arrays) for a list of rows, one row, or a 2-D array."""
    if isinstance(rows, Rows):
        return rows.fields, rows.arrays
    if isinstance(rows, np.ndarray) and rows.dtype.kind in "fiub":
        X = np.atleast_2d(rows).astype(np.float64)
        if X.ndim != 2:
            raise ValueError(f"rows must be 1-D or 2-D, got shape {rows.shape}")
        return {"width": X.shape[1]}, [X]
    if hasattr(rows, "to_numpy") and hasattr(rows, "columns"):  # a DataFrame
        rows = rows.to_numpy(dtype=object).tolist()
    elif isinstance(rows, np.ndarray):
        rows = rows.tolist()
    rows = list(rows)
    if rows and not _is_row(rows[0]):
        rows = [rows]
    if not rows:
        raise ValueError("no rows given")
    for r, row in enumerate(rows):
        if not _is_row(row):
            raise ValueError(f"row {r} is {row!r}, not a row of values")
    width = max(len(row) for row in rows)
    X = np.full((len(rows), width), np.nan)
    S = np.full((len(rows), width), -1, dtype=np.int64)
    index = {}  # string -> its code, in order of first sight
    for r, row in enumerate(rows):
        for p, v in enumerate(row):
            if isinstance(v, str):
                if "\0" in v:
                    raise ValueError(f"row {r}, position {p}: strings may not contain NUL")
                S[r, p] = index.setdefault(v, len(index))
                X[r, p] = 0.0
            elif isinstance(v, (numbers.Real, np.bool_)) and not is_missing(v):
                X[r, p] = float(v)
            elif not is_missing(v):
                raise ValueError(f"row {r}, position {p}: {v!r} is neither a number nor a string")
    if not index:
        return {"width": width}, [X]
    blob = np.frombuffer("\0".join(index).encode(), dtype=np.uint8)
    return {"width": width, "strings": len(index)}, [X, S, blob]


def each_row(rows):
    """(header fields, arrays) of each row on its own, for rows sent one by one."""
    if hasattr(rows, "to_numpy") and hasattr(rows, "columns"):  # a DataFrame
        rows = rows.to_numpy(dtype=object)
    if not isinstance(rows, np.ndarray):
        rows = list(rows)
    return [from_rows(rows[i:i + 1]) for i in range(len(rows))]


def _is_row(v):
    return isinstance(v, (list, tuple, np.ndarray))


def to_table(header, arrays):
    """(X, S or None, strings) from received fields; WireError if inconsistent."""
    if not arrays:
        raise WireError("no rows in message")
    X = arrays[0]
    if X.ndim != 2 or X.dtype != np.float64:
        raise WireError(f"rows must be a 2-D float64 array, got {X.dtype}{list(X.shape)}")
    n = header.get("strings", 0)
    if not n:
        return X, None, []
    if len(arrays) != 3:
        raise WireError("rows with strings need X, S and the string table")
    S, blob = arrays[1], arrays[2]
    if S.shape != X.shape or S.dtype != np.int64:
        raise WireError(f"string index shape {list(S.shape)} does not match rows {list(X.shape)}")
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise WireError("string table is not bytes")
    try:
        strings = blob.tobytes().decode().split("\0")
    except UnicodeDecodeError:
        raise WireError("string table is not UTF-8") from None
    if len(strings) != n or (S.size and (S.min() < -1 or S.max() >= n)):
        raise WireError("string index out of range")
    return X, S, strings
