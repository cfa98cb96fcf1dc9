"""CSV files in, as a user's data comes: a header line, then one row per line.
Each cell is a number if it parses as one, missing if empty or a usual marker
of a missing value (NA, N/A, NaN, null, None, ?), else text (a factor).
Unlike rows given in Python, every line must have as many cells as the header.

A target column becomes training targets the way the estimators make them
(targets_for): text labels become classes, numbers are kept and, for a linear
output, standardised; the returned `target` record says how to read outputs
back (mesh predict), and is kept with the network by its encoder."""
import csv

import numpy as np

MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "#n/a", "<na>"}


class DataError(ValueError):
    """A file that cannot be read as the data asked for; the message says where and why."""


def _cell(s):
    s = s.strip()
    if s.lower() in MISSING:
        return None
    try:
        return float(s)
    except ValueError:
        return s


def read_table(path):
    """(header, rows) of a CSV file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.reader(f)
            header = next(reader, None)
            lines = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read it as CSV: {e}") from None
    if not header or not any(c.strip() for c in header):
        raise DataError(f"{path} is empty: expected a header line, then rows")
    header = [c.strip() for c in header]
    if not lines:
        raise DataError(f"{path} has a header but no rows")
    for line, r in lines:
        if len(r) != len(header):
            raise DataError(f"{path}: line {line} has {len(r)} cells, the header has {len(header)}")
    return header, [[_cell(c) for c in r] for _, r in lines]


def read_xy(path, target):
    """(input column names, input rows, target cells), rows whose target is missing left out."""
    header, rows = read_table(path)
    if target not in header:
        raise DataError(f"{path} has no column {target!r}; columns: {', '.join(header)}")
    j = header.index(target)
    rows = [r for r in rows if r[j] is not None]
    if not rows:
        raise DataError(f"{path}: column {target!r} has no values")
    return header[:j] + header[j + 1:], [r[:j] + r[j + 1:] for r in rows], [r[j] for r in rows]


def read_inputs(path, target):
    """Rows of a file to predict, in the order of the columns the network was trained on
    (target: its record; the target column, if the file has it, is left out)."""
    header, rows = read_table(path)
    names = (target or {}).get("inputs")
    if not names:
        return [r for r in rows]
    missing = [n for n in names if n not in header]
    if missing:
        raise DataError(f"{path} has no column {missing[0]!r}, which the network was trained on")
    at = [header.index(n) for n in names]
    return [[r[i] for i in at] for r in rows]


def targets_for(column, inputs, y, outputs, output, known=None):
    """(Y, target record) to train a network of `outputs` outputs (function `output`) on
    target cells y. known: the record of an earlier training, whose classes or scaling
    are kept. DataError when the network cannot learn this target."""
    record = {"column": column, "inputs": inputs}
    if all(isinstance(v, float) for v in y):
        y = np.array(y).reshape(-1, 1)
        if outputs != 1:
            raise DataError(f"column {column!r} holds numbers: it needs a network with 1 output, not {outputs}")
        if output != "linear":
            if y.min() < 0 or y.max() > 1:
                raise DataError(f"column {column!r} holds numbers from {y.min():g} to {y.max():g}, but the "
                                f"network's {output} output only reaches 0..1: create it with --output linear")
            return y, record
        mean, scale = (known["mean"][0], known["scale"][0]) if known and "mean" in known else \
            (float(y.mean()), float(y.std()) or 1.0)
        return (y - mean) / scale, dict(record, mean=[mean], scale=[scale])
    labels = [_label(v) for v in y]
    classes = sorted(set(labels))
    if known and "labels" in known:
        unknown = sorted(set(classes) - set(known["labels"]))
        if unknown:
            raise DataError(f"column {column!r} has classes {', '.join(unknown)} that the network was not "
                            f"trained on before ({', '.join(known['labels'])})")
        classes = known["labels"]
    if len(classes) < 2:
        raise DataError(f"column {column!r} has one class only ({classes[0]}): nothing to learn")
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index[v] for v in labels])
    if outputs == 1 and len(classes) == 2:  # one sigmoid output: the chance of the second class
        return codes.reshape(-1, 1).astype(np.float64), dict(record, labels=classes)
    if outputs != len(classes):
        raise DataError(f"column {column!r} has {len(classes)} classes ({', '.join(classes[:5])}"
                        f"{', ...' if len(classes) > 5 else ''}) but the network has {outputs} output{'s' if outputs > 1 else ''}: "
                        f"create one with {len(classes)}, e.g. mesh create 16,{len(classes)} --output softmax "
                        f"--loss cross_entropy")
    return np.eye(len(classes))[codes], dict(record, labels=classes)


def _label(v):
    """A class label as text: 1.0 and 1 are the same class "1"."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def read_outputs(outputs, target):
    """What to print for each row of outputs: class labels, targets in their own units, or the outputs."""
    if target and "labels" in target:
        labels = target["labels"]
        picks = (outputs[:, 0] >= 0.5).astype(int) if outputs.shape[1] == 1 else outputs.argmax(axis=1)
        return [labels[i] for i in picks]
    if target and "mean" in target:
        outputs = outputs * np.array(target["scale"]) + np.array(target["mean"])
    return [",".join(f"{v:.6g}" for v in row) for row in outputs]
