"""A store that peers fill and cannot grow without bound.

Whatever a process keeps on a peer's word (parts of a pass whose other parts
may never come, messages waiting for a step, requests for a replica) goes in
a Bounded: at most `items` entries and `nbytes` bytes. Over either, the
oldest entries go, with a warning, and the newest always stays: a peer that
floods a store only ever displaces its own garbage, and a legitimate entry
is lost only if the store is flooded past its whole budget."""
import logging

from .lograte import Sometimes

log = logging.getLogger("mesh.bounded")


class Bounded:
    def __init__(self, name, items, nbytes):
        self.name, self.items, self.budget = name, items, nbytes
        self.entries = {}  # key -> (value, bytes), oldest first
        self.nbytes = 0
        self.evicted = 0   # entries dropped to stay within the budget, for tests
        self.sometimes = Sometimes(log)

    def put(self, key, value, nbytes=0):
        """Keep (or replace) key's value, costing nbytes; then drop the oldest to fit."""
        old = self.entries.get(key)
        if old is not None:
            self.nbytes -= old[1]
        self.entries[key] = (value, nbytes)  # a replaced key keeps its place: its age is its first part's
        self.nbytes += nbytes
        while len(self.entries) > 1 and (len(self.entries) > self.items or self.nbytes > self.budget):
            oldest = next(iter(self.entries))
            if oldest == key:  # the one just filed stays, whatever it costs
                break
            self.nbytes -= self.entries.pop(oldest)[1]
            self.evicted += 1
            self.sometimes.warning("over", "%s: over its budget (%d entries, %d bytes at most); the oldest dropped",
                                   self.name, self.items, self.budget)

    def get(self, key, default=None):
        entry = self.entries.get(key)
        return default if entry is None else entry[0]

    def pop(self, key, default=None):
        entry = self.entries.pop(key, None)
        if entry is None:
            return default
        self.nbytes -= entry[1]
        return entry[0]

    def popleft(self):
        """(key, value) of the oldest entry."""
        key = next(iter(self.entries))
        return key, self.pop(key)

    def first(self):
        """The oldest value, or None."""
        return next(iter(self.entries.values()))[0] if self.entries else None

    def remove_if(self, doomed):
        """Drop every value doomed(value) says; how many went."""
        gone = [key for key, (value, _) in self.entries.items() if doomed(value)]
        for key in gone:
            self.pop(key)
        return len(gone)

    def clear(self):
        self.entries.clear()
        self.nbytes = 0

    def values(self):
        return [v for v, _ in self.entries.values()]

    def __contains__(self, key):
        return key in self.entries

    def __len__(self):
        return len(self.entries)

    def __bool__(self):
        return bool(self.entries)
