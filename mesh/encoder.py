"""Factors: rows that mix numbers and strings become one numeric matrix.

A number at position p feeds column ("n", p); a string v at position p feeds
its own one-hot column ("f", p, v), made the first time that pair is seen in
training, so no vocabulary is ever declared. Columns keep the order in which
they were first seen. A cell with no value (missing, or past the end of a
shorter row) lights no column; a longer row than any before adds columns for
its new positions like new factor values.

Only training adds columns (grow=True). Predicting never does: a string never
seen at its position, or a value at a position never seen, lights no column.
Each position has a kind learned in training: "number", "factor", or "mixed"
when training saw both. A string where training only ever saw numbers is most
likely a mistake (a shifted column, a typo), so it is refused unless strict=False.
So is a row of another width than training's when training only ever saw rows of
one width holding only numbers (no text, no missing value): `fixed` is that width.

The encoder may also keep what training learned about the data (`learn`):
each numeric position's mean and spread, taken from the first training rows
that ask for them and applied to every row it encodes afterwards (standardize), and how outputs map back to targets (target:
class labels, or a target's mean and spread, and the data's column names)."""
import numpy as np

MAX_WIDTH = 100_000  # values per row


def widened(M, width):
    """Rows encoded before layer 1 grew to `width` inputs: the new columns are zero."""
    if M.shape[1] >= width:
        return M
    return np.concatenate([M, np.zeros((len(M), width - M.shape[1]), M.dtype)], axis=1)


class KindError(ValueError):
    """A value of a kind its position never had in training, or a row of a width it never had."""


class Encoder:
    def __init__(self, width=None, keys=(), scaling=(), target=None, fixed=None):
        self.width = width               # positions of the longest row trained on
        self.fixed = fixed               # the one width of training's rows, if all held only numbers; else 0
        self.keys = [tuple(k) for k in keys]
        self.columns = {k: i for i, k in enumerate(self.keys)}
        self.factor_positions = {k[1] for k in self.keys if k[0] == "f"}
        self.scaling = {int(p): (float(m), float(s)) for p, m, s in scaling}  # position -> (mean, spread)
        self.target = target             # {"labels": [...]} or {"mean": [...], "scale": [...]}, or None
        self._plain = None

    def to_dict(self):
        return {"width": self.width, "keys": [list(k) for k in self.keys],
                "scaling": [[p, m, s] for p, (m, s) in sorted(self.scaling.items())], "target": self.target,
                "fixed": self.fixed}

    @classmethod
    def from_dict(cls, d):
        fixed = d.get("fixed")
        if fixed is not None and (not isinstance(fixed, int) or isinstance(fixed, bool) or fixed < 0):
            raise ValueError(f"encoder's fixed width must be a whole number, got {fixed!r}")
        return cls(d["width"], d["keys"], d.get("scaling") or (), _checked_target(d.get("target")), fixed)

    def kind(self, p):
        """What training saw at position p: "number", "factor", "mixed", or None."""
        number, factor = ("n", p) in self.columns, p in self.factor_positions
        return "mixed" if number and factor else "number" if number else "factor" if factor else None

    def encode(self, X, S=None, strings=(), grow=True, strict=True, learn=None, dtype=np.float64):
        """(matrix of shape (rows, columns), number of columns added).
        grow: training; new columns are made for what is new, and `learn` is taken in.
        Without grow, strict refuses a string at a position training only saw numbers at."""
        rows, width = X.shape
        if width > MAX_WIDTH:
            raise ValueError(f"rows of {width} values: more than {MAX_WIDTH} per row is not supported")
        is_str = np.zeros(X.shape, bool) if S is None else S >= 0
        absent = np.isnan(X) & ~is_str
        bad = ~np.isfinite(X) & ~absent
        if bad.any():
            r, p = np.argwhere(bad)[0]
            raise ValueError(f"row {r}, position {p}: {X[r, p]} is not a finite number")
        is_num = ~is_str & ~absent
        added = 0
        if grow:
            numbers_only = S is None and not absent.any()
            self.fixed = width if numbers_only and self.fixed in (None, width) and (self.width or width) == width \
                else 0
            settings = _checked_learn(learn)
            added = self._grow(X, is_num, S, strings, settings.get("standardize", False))
            self.width = max(self.width or 0, width)
            if "target" in settings:
                self.target = settings["target"]
        elif strict and self.fixed and width != self.fixed:
            raise KindError(f"rows of {width} values, but this network was trained only on rows of {self.fixed} "
                            f"numbers (strict=False, or mesh predict --allow-new-kinds, takes them: a position "
                            f"not given contributes nothing, one never trained is ignored)")
        elif strict and S is not None:
            self._check_kinds(is_str, S, strings)
        if S is None and not absent.any() and self._all_numbers(width):  # the common case
            M = X if not self.scaling else (X - self._plain[0]) / self._plain[1]
            return M.astype(dtype, copy=False), added
        out = np.zeros((rows, len(self.keys)), dtype=dtype)
        for p in range(width):
            col = self.columns.get(("n", p))
            if col is not None:
                mean, scale = self.scaling.get(p, (0.0, 1.0))
                out[:, col] = np.where(is_num[:, p], (np.nan_to_num(X[:, p]) - mean) / scale, 0.0)
            if S is not None and p in self.factor_positions:
                # column of each string code at this position (-1: never seen), then one-hot in one go
                lookup = np.array([self.columns.get(("f", p, v), -1) for v in strings] + [-1], dtype=np.int64)
                cols = lookup[S[:, p]]  # code -1 (a number, or no value) reads the trailing -1
                hit = np.flatnonzero(cols >= 0)
                out[hit, cols[hit]] = 1.0
        return out, added

    def _all_numbers(self, width):
        """Whether the columns are exactly one number per position, in order, for rows this
        wide (cached until they change, with the scaling as vectors)."""
        if self._plain is None:
            n = len(self.keys)
            plain = all(k == ("n", i) for i, k in enumerate(self.keys))
            mean = np.array([self.scaling.get(p, (0.0, 1.0))[0] for p in range(n)])
            scale = np.array([self.scaling.get(p, (0.0, 1.0))[1] for p in range(n)])
            self._plain = (mean, scale) if plain else False
        return self._plain is not False and len(self.keys) == width

    def _check_kinds(self, is_str, S, strings):
        numeric = [p for p in range(is_str.shape[1]) if self.kind(p) == "number"]
        if numeric and is_str[:, numeric].any():
            r, i = np.argwhere(is_str[:, numeric])[0]
            p = numeric[i]
            raise KindError(f"row {r}, position {p}: {strings[S[r, p]]!r} is text, but position {p} only ever "
                                f"held numbers in training (strict=False, or mesh predict --allow-new-kinds, "
                                f"takes it as an unseen value)")

    def _grow(self, X, is_num, S, strings, standardize):
        first_seen = []  # (row, position, key) of keys not yet known
        for p in range(is_num.shape[1]):
            num_rows = np.flatnonzero(is_num[:, p])
            if num_rows.size and ("n", p) not in self.columns:
                first_seen.append((int(num_rows[0]), p, ("n", p)))
            if num_rows.size and standardize and p not in self.scaling:
                # the statistics of the first rows that train this position and ask for them
                values = X[num_rows, p]
                spread = float(values.std())
                self.scaling[p] = (float(values.mean()), spread if spread > 0 else 1.0)
                self._plain = None
            if S is not None:
                codes = S[:, p]
                uniq, first = np.unique(codes, return_index=True)
                for code, r in zip(uniq, first):
                    if code >= 0 and ("f", p, strings[code]) not in self.columns:
                        first_seen.append((int(r), p, ("f", p, strings[code])))
        for _, p, key in sorted(first_seen, key=lambda t: (t[0], t[1])):
            self.columns[key] = len(self.keys)
            self.keys.append(key)
            if key[0] == "f":
                self.factor_positions.add(p)
        if first_seen:
            self._plain = None
        return len(first_seen)

    def column_names(self):
        return [f"x{k[1]}" if k[0] == "n" else f"x{k[1]}={k[2]}" for k in self.keys]


def _checked_learn(learn):
    """A request's `learn` settings, checked: they come from a client."""
    if not learn:
        return {}
    if not isinstance(learn, dict) or set(learn) - {"standardize", "target"}:
        raise ValueError(f"learn must be a dict of standardize and target, got {learn!r}")
    out = {"standardize": bool(learn.get("standardize"))}
    if "target" in learn:
        out["target"] = _checked_target(learn["target"])
    return out


def _checked_target(target):
    """None, or what the outputs mean: {"labels": [str, ...]} (classes) or {"mean": [float, ...],
    "scale": [float, ...]} (standardised targets), with the data's "column" and "inputs" names."""
    if target is None:
        return None
    checks = {"labels": _texts, "mean": _numbers, "scale": _numbers, "inputs": _texts,
              "column": lambda v: isinstance(v, str)}
    ok = isinstance(target, dict) and all(k in checks and checks[k](v) for k, v in target.items()) \
        and ("mean" in target) == ("scale" in target) and not ("labels" in target and "mean" in target)
    if not ok:
        raise ValueError(f"target must be {{'labels': [...]}} or {{'mean': [...], 'scale': [...]}} "
                         f"(with 'column' and 'inputs' names), got {target!r}")
    return target


def _texts(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _numbers(v):
    return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
