"""Answers a client may ask for again: after a failover, a client sends the
new active broker every request it has no answer to, and one that already
had its effect (a backprop's step, a create, a training run) must not have
it twice. The broker keeps the latest answers by (client identity, request
id); the active ships each new one to its standby (journal.py)."""
from collections import OrderedDict

MAX_ANSWERS = 1024   # answers kept, oldest forgotten first
MAX_CACHED_ROWS = 4096  # a remembered predict's outputs are kept up to this many rows
MAX_BYTES = 64 << 20  # and the arrays of all the answers kept, at most


class Answers:
    def __init__(self):
        self.by_key = OrderedDict()  # (client, request id) -> (serial, fields, arrays)
        self.serial = 0              # of the last answer added
        self.bytes = 0               # of the arrays kept

    def add(self, key, fields, arrays=()):
        self.serial += 1
        old = self.by_key.pop(key, None)
        if old is not None:
            self.bytes -= sum(a.nbytes for a in old[2])
        self.by_key[key] = (self.serial, fields, list(arrays))
        self.bytes += sum(a.nbytes for a in arrays)
        while len(self.by_key) > MAX_ANSWERS or self.bytes > MAX_BYTES:
            _, (_, _, dropped) = self.by_key.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in dropped)

    def get(self, key):
        """(fields, arrays) of the answer given to key, or None."""
        found = self.by_key.get(key)
        return None if found is None else found[1:]

    def __contains__(self, key):
        return key in self.by_key

    def since(self, serial):
        """[(key, fields, arrays)] added after serial, oldest first."""
        return [(key, fields, arrays) for key, (s, fields, arrays) in self.by_key.items() if s > serial]
