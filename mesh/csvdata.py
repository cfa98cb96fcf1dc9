"""CSV files in: each cell a number if it parses as one, else a factor (string)."""
import csv

import numpy as np


def _cell(s):
    try:
        return float(s)
    except ValueError:
        return s


def read_table(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty")
        rows = [[_cell(c) for c in r] for r in reader if r]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(f"{path}: line {i + 2} has {len(r)} cells, the header has {len(header)}")
    return header, rows


def read_rows(path):
    return read_table(path)[1]


def read_xy(path, target):
    """(rows without the target column, targets (rows, k)). A numeric target is
    one column; a target of labels becomes one-hot columns in sorted order."""
    header, rows = read_table(path)
    if target not in header:
        raise ValueError(f"{path} has no column {target!r}; columns: {', '.join(header)}")
    j = header.index(target)
    X = [r[:j] + r[j + 1:] for r in rows]
    y = [r[j] for r in rows]
    if all(isinstance(v, float) for v in y):
        return X, np.array(y).reshape(-1, 1)
    labels = sorted({str(v) for v in y})
    index = {v: i for i, v in enumerate(labels)}
    Y = np.zeros((len(y), len(labels)))
    Y[np.arange(len(y)), [index[str(v)] for v in y]] = 1.0
    return X, Y
