"""A request's rows -> the matrix layer 1 reads (encoder.py), growing layer 1
first for columns never seen, within its workers' budgets or not at all.
Every function takes the broker."""
from .. import table, wire
from ..encoder import Encoder
from . import budgets


def encode(b, net, h, arrays, grow=True, strict=True, keep_rows=False):
    """Rows of a request -> the input matrix, growing layer 1 for new columns first.
    keep_rows: also the rows as they came, for encode_again."""
    rows = table.to_table(h, arrays)
    M, _ = encode_rows(b, net, rows, grow, strict, h.get("learn"))
    return (M, rows) if keep_rows else M


def encode_again(b, net, rows):
    """Rows a remembered predict left unseen values of, encoded now that a step trains on
    them: layer 1 grows for them. -> (matrix, columns added)."""
    return encode_rows(b, net, rows, grow=True, strict=False, learn=None)


def encode_rows(b, net, rows, grow, strict, learn):
    X, S, strings = rows
    before = net.inputs
    kept = net.encoder.to_dict() if grow and budgets.budgeted(b.workers, net) else None
    M, added = net.encoder.encode(X, S, strings, grow=grow, strict=strict, learn=learn, dtype=net.spec.dtype)
    if added and kept is not None:  # layer 1 grows: within its workers' budgets, or not at all
        try:
            budgets.check(b.workers, b.nets.values(), net,
                          f"growing layer 1 from {before} to {net.inputs} inputs", inputs=net.inputs)
        except ValueError:
            net.encoder = Encoder.from_dict(kept)
            raise
    if added:
        # the first inputs are drawn from the seed, by each group that reads the rows for its own rows;
        # later ones start at 0
        grow = {"k": wire.GROW, "cols": added, "init": net.spec.to_dict() if before == 0 else None}
        net.log.append(("grow", grow))
        net.layer1_width += added
        for gid, _ in net.row_readers():  # every layer that reads the rows grows
            b.flow.to_group(net, gid, grow)
        budgets.replan(net)
    return M, added
