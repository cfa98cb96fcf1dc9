"""Factors: rows that mix numbers and strings become one numeric matrix.

A number at position p feeds column ("n", p); a string v at position p feeds
its own one-hot column ("f", p, v), made the first time that pair is seen, so
no vocabulary is ever declared. Columns keep the order in which they were
first seen. A string never seen before, when growing is not allowed, simply
lights no column."""
import numpy as np

MAX_WIDTH = 100_000  # values per row


class Encoder:
    def __init__(self, width=None, keys=()):
        self.width = width               # values per row, fixed by the first rows seen
        self.keys = [tuple(k) for k in keys]
        self.columns = {k: i for i, k in enumerate(self.keys)}
        self._plain = None

    def to_dict(self):
        return {"width": self.width, "keys": [list(k) for k in self.keys]}

    @classmethod
    def from_dict(cls, d):
        return cls(d["width"], d["keys"])

    def encode(self, X, S=None, strings=(), grow=True, dtype=np.float64):
        """(matrix of shape (rows, columns), number of columns added)."""
        rows, width = X.shape
        if width > MAX_WIDTH:
            raise ValueError(f"rows of {width} values: more than {MAX_WIDTH} per row is not supported")
        if self.width is None:
            self.width = width
        elif width != self.width:
            raise ValueError(f"rows have {width} values, the network takes {self.width}")
        if S is None and self._all_numbers(width):  # all numbers, all known: the common case
            if not np.isfinite(X).all():
                r, p = np.argwhere(~np.isfinite(X))[0]
                raise ValueError(f"row {r}, position {p}: {X[r, p]} is not a finite number")
            return X.astype(dtype, copy=False), 0
        is_num = np.ones(X.shape, bool) if S is None else S < 0
        bad = is_num & ~np.isfinite(X)
        if bad.any():
            r, p = np.argwhere(bad)[0]
            raise ValueError(f"row {r}, position {p}: {X[r, p]} is not a finite number")
        added = self._grow(is_num, S, strings) if grow else 0
        out = np.zeros((rows, len(self.keys)), dtype=dtype)
        for p in range(width):
            col = self.columns.get(("n", p))
            if col is not None:
                out[:, col] = np.where(is_num[:, p], X[:, p], 0.0)
            if S is not None:
                # column of each string code at this position (-1: never seen), then one-hot in one go
                lookup = np.array([self.columns.get(("f", p, v), -1) for v in strings] + [-1], dtype=np.int64)
                cols = lookup[S[:, p]]  # code -1 (a number) reads the trailing -1
                hit = np.flatnonzero(cols >= 0)
                out[hit, cols[hit]] = 1.0
        return out, added

    def _all_numbers(self, width):
        """Whether the columns are exactly one number per position (cached until they change)."""
        if self._plain is None:
            self._plain = len(self.keys) == width and all(k == ("n", i) for i, k in enumerate(self.keys))
        return self._plain

    def _grow(self, is_num, S, strings):
        first_seen = []  # (row, position, key) of keys not yet known
        for p in range(is_num.shape[1]):
            num_rows = np.flatnonzero(is_num[:, p])
            if num_rows.size and ("n", p) not in self.columns:
                first_seen.append((int(num_rows[0]), p, ("n", p)))
            if S is not None:
                codes = S[:, p]
                uniq, first = np.unique(codes, return_index=True)
                for code, r in zip(uniq, first):
                    if code >= 0 and ("f", p, strings[code]) not in self.columns:
                        first_seen.append((int(r), p, ("f", p, strings[code])))
        for _, _, key in sorted(first_seen, key=lambda t: (t[0], t[1])):
            self.columns[key] = len(self.keys)
            self.keys.append(key)
        if first_seen:
            self._plain = None
        return len(first_seen)

    def column_names(self):
        return [f"x{k[1]}" if k[0] == "n" else f"x{k[1]}={k[2]}" for k in self.keys]
