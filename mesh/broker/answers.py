"""Answers a client may ask for again: after a failover, a client sends the
new active broker every request it has no answer to, and one that already
had its effect (a backprop's step, a create, a training run) must not have
it twice. The broker keeps the latest answers by (client identity, request
id); the active ships each new one to its standby (replication.py).

Two stores: answers to requests with an effect, bounded by count only (no
predict can push one out), and a remembered predict's outputs, bounded by
count and bytes (asked again, it is answered as the first time)."""
from collections import OrderedDict

MAX_ANSWERS = 1024      # answers to requests with an effect, and remembered predicts' outputs, each
MAX_CACHED_ROWS = 4096  # a remembered predict's outputs are kept up to this many rows
MAX_BYTES = 64 << 20    # and the outputs kept, at most


class Answers:
    def __init__(self):
        self.effects = OrderedDict()  # (client, request id) -> (serial, fields, arrays)
        self.outputs = OrderedDict()  # likewise, of remembered predicts
        self.serial = 0               # of the last answer added
        self.bytes = 0                # of the outputs kept

    def add(self, key, fields, arrays=(), effect=True):
        self.serial += 1
        store = self.effects if effect else self.outputs
        old = store.pop(key, None)
        if old is not None and not effect:
            self.bytes -= sum(a.nbytes for a in old[2])
        store[key] = (self.serial, fields, list(arrays))
        if not effect:
            self.bytes += sum(a.nbytes for a in arrays)
        while len(store) > MAX_ANSWERS or (not effect and self.bytes > MAX_BYTES):
            _, (_, _, dropped) = store.popitem(last=False)
            if not effect:
                self.bytes -= sum(a.nbytes for a in dropped)

    def get(self, key):
        """(fields, arrays) of the answer given to key, or None."""
        found = self.effects.get(key) or self.outputs.get(key)
        return None if found is None else found[1:]

    def __contains__(self, key):
        return key in self.effects or key in self.outputs

    def since(self, serial):
        """[(key, fields, arrays, effect)] added after serial, oldest first."""
        new = [(s, key, fields, arrays, store is self.effects) for store in (self.effects, self.outputs)
               for key, (s, fields, arrays) in store.items() if s > serial]
        return [entry[1:] for entry in sorted(new, key=lambda e: e[0])]
