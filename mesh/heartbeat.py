"""Heartbeats, written once (zguide's Paranoid Pirate): peers send one every
INTERVAL; a peer silent for LIVENESS intervals is gone; reconnects back off
from RECONNECT_MIN doubling to RECONNECT_MAX."""
import time

INTERVAL = 1.0
LIVENESS = 5  # a busy broker (wiring hundreds of groups) must not look dead
EXPIRY = INTERVAL * LIVENESS
RECONNECT_MIN, RECONNECT_MAX = 1.0, 32.0
# The two brokers of a pair beat twice as often and decide sooner (3 s) than workers and
# clients give up on a broker (EXPIRY, 5 s): the standby must have taken over by the time
# they turn to it, and a failover must decide well within the 10 s asked of it.
PAIR_INTERVAL = INTERVAL / 2
PAIR_LIVENESS = 6
PAIR_EXPIRY = PAIR_INTERVAL * PAIR_LIVENESS


class Peer:
    """When we last heard from a peer, and when we last spoke to it."""

    def __init__(self, interval=INTERVAL, liveness=LIVENESS):
        self.interval, self.expiry = interval, interval * liveness
        self.heard = self.said = time.monotonic()

    def heard_now(self):
        self.heard = time.monotonic()

    def expired(self):
        return time.monotonic() - self.heard > self.expiry

    def due(self):
        """True once per interval: time to send a heartbeat."""
        now = time.monotonic()
        if now - self.said >= self.interval:
            self.said = now
            return True
        return False


class Backoff:
    def __init__(self, lo=RECONNECT_MIN, hi=RECONNECT_MAX):
        self.lo, self.hi, self.delay = lo, hi, lo

    def next(self):
        d, self.delay = self.delay, min(self.delay * 2, self.hi)
        return d

    def reset(self):
        self.delay = self.lo
