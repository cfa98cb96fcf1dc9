"""From the broker loop to the HTTP threads: the latest snapshots.

The loop publishes and never waits for a reader (a lock held for an append).
Each reader takes the frames it has not seen yet; one that fell more than
KEEP frames behind gets the newest only. Every death is its own frame
(snapshot.py), so a reader that keeps up sees every process go down."""
import json
import threading
from collections import deque

KEEP = 8


class Frame:
    def __init__(self, seq, state):
        self.seq, self.state = seq, state
        self._json = None

    def json(self):
        """Encoded once, by the first HTTP thread that needs it (not in the broker loop)."""
        if self._json is None:
            self._json = json.dumps(self.state, separators=(",", ":"), allow_nan=False).encode()
        return self._json


class Frames:
    def __init__(self, keep=KEEP):
        self.ring = deque(maxlen=keep)
        self.seq = 0
        self.closed = False
        self.changed = threading.Condition()

    def publish(self, state):
        with self.changed:
            self.seq += 1
            self.ring.append(Frame(self.seq, state))
            self.changed.notify_all()

    def latest(self):
        with self.changed:
            return self.ring[-1] if self.ring else None

    def after(self, seq, timeout):
        """Frames newer than seq, waiting up to `timeout` s for one; [] on timeout or close."""
        with self.changed:
            self.changed.wait_for(lambda: self.seq > seq or self.closed, timeout)
            if self.closed or self.seq <= seq:
                return []
            if self.ring[0].seq > seq + 1:  # fell behind: the newest is what matters
                return [self.ring[-1]]
            return [f for f in self.ring if f.seq > seq]

    def close(self):
        with self.changed:
            self.closed = True
            self.changed.notify_all()
