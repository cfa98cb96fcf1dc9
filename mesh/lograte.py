"""Log lines that a peer's messages cause, thinned: the 1st, 2nd, 4th, 8th... of each kind
is logged, with how many there have been. A flood of bad messages costs the log a few dozen
lines, not one per message, and the first of each kind is always seen."""


class Sometimes:
    def __init__(self, log):
        self.log = log
        self.counts = {}

    def warning(self, kind, msg, *args, exc_info=False):
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n & (n - 1) == 0:
            self.log.warning(f"{msg} ({n} so far)", *args, exc_info=exc_info)
