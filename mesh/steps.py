"""Step ids that finish out of order, summed up by one number: every id up to
`done` has finished. The broker counts the steps it has sent, each group the
steps it has applied (groupstate.py, "Ordering"). And how a step's rows are cut
into micro-batches: one rule for the broker's runs and a group's resident one."""
import numpy as np


def cut_count(rows, micro):
    """How many micro-batches a step of `rows` rows is cut into, `micro` asked."""
    return min(micro, rows)


def micro_batches(rows, micro):
    """A step's row indices cut into micro-batches (np.array_split's cut; the rows whole
    when there is one, without its cost on every step of batch_size=1)."""
    count = cut_count(len(rows), micro)
    return [rows] if count == 1 else np.array_split(rows, count)


class Watermark:
    def __init__(self, done=0):
        self.done = done
        self.ahead = set()  # ids finished beyond `done` (two clients' steps may finish out of order)

    def mark(self, step):
        if step > self.done:
            self.ahead.add(step)
        while self.done + 1 in self.ahead:
            self.done += 1
            self.ahead.discard(self.done)
