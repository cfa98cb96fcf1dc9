"""A pair's client (two broker addresses) follows the active broker: it asks when it
hears nothing, moves to the other broker after FAILOVER_AFTER of silence or when
its standby says the other is alive, and sends there again every unanswered
request, with the remembered predicts that backprops still to come train on (the
new broker does not hold their passes)."""
import time
from collections import deque
from dataclasses import dataclass

import zmq

from . import heartbeat, sockets, wire
from .errors import MeshTimeout

PING_EVERY = heartbeat.INTERVAL  # a client of a pair asks whether its broker is there when it hears nothing
FAILOVER_AFTER = heartbeat.EXPIRY  # ...and moves to the other broker after this long without an answer


@dataclass
class Kept:
    """A remembered predict, as sent: the other broker must be given it again if a backprop may train on it."""
    rid: int
    net: str
    header: dict
    arrays: list
    used: bool = False  # an answered backprop trained on it


class Failover:
    """The pair's side of a connection (connection.Connection): what to send again, and when to move."""

    def __init__(self, conn):
        self.conn = conn
        self.outbox = {}  # request id -> (header, arrays), to send again after a failover
        self.kept = deque(maxlen=64)  # Kept: the last remembered predicts
        self.resend_at = None  # when to ask a standby again (it is taking over)
        self.fled = -FAILOVER_AFTER  # when it last left a broker that went silent or dropped the connection
        self.unreachable = 0  # brokers in a row that accepted no connection

    def sent(self, rid, header, arrays):
        self.outbox[rid] = (header, arrays)
        if header["k"] == wire.PREDICT and header.get("keep"):
            self.kept.append(Kept(rid, header.get("net"), header, arrays))

    def forget(self, rid):
        self.outbox.pop(rid, None)

    def answered(self, rid):
        """An answered backprop has used its network's remembered predict."""
        header = self.outbox.get(rid, ({},))[0]
        if header.get("k") == wire.BACKPROP:
            kept = self._before(rid, header.get("net"))
            if kept is not None:
                kept.used = True

    def resend_if_due(self):
        if self.resend_at is not None and time.monotonic() >= self.resend_at:
            self.resend_at = None
            self.resend()

    def refused(self, h):
        """We asked the standby: go to the other broker if it sees that one alive, else ask again
        here in a moment (it takes over once its peer is silent: we voted for that). The one we
        just left for dead still looks alive to it for a moment: stay then."""
        fled = time.monotonic() - self.fled < FAILOVER_AFTER
        self.fail_over(flip=bool(h.get("peer_alive")) and not fled)

    def silent(self, op):
        """The broker said nothing: ask; after FAILOVER_AFTER of silence, move to the other
        broker. True if it moved. MeshTimeout when neither accepts a connection."""
        conn, now = self.conn, time.monotonic()
        events = sockets.monitor_events(conn.monitor)
        dropped = zmq.EVENT_DISCONNECTED in events  # a dead broker's host closes its connections
        conn.connected |= any(e != zmq.EVENT_DISCONNECTED for e in events)
        if dropped or now - conn.heard > FAILOVER_AFTER:
            self.unreachable = 0 if conn.connected else self.unreachable + 1
            if self.unreachable >= len(conn.brokers.all):
                raise MeshTimeout(f"no broker answers at {conn.brokers}: neither accepted a connection within "
                                  f"{FAILOVER_AFTER:g}s (are `mesh broker` processes running there?); {op!r} "
                                  f"not answered{conn.hint()}")
            self.fail_over()
            self.fled = now
            return True
        if now - conn.heard > PING_EVERY and now - conn.pinged > PING_EVERY:
            conn.pinged = now
            try:
                sockets.send(conn.sock, {"k": wire.PING, "id": 0}, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        return False

    def fail_over(self, flip=True):
        """Talk to the other broker of the pair (flip) and ask it again what is unanswered; or
        ask the same one again in a moment (once, however many refusals come meanwhile)."""
        if not flip:
            self.resend_at = self.resend_at or time.monotonic() + PING_EVERY / 2
            return
        self.conn.brokers.next()
        self.conn.reopen()
        self.resend_at = None
        self.resend()

    def resend(self):
        """Every unanswered request, in order, with the remembered predicts that backprops still to
        come train on, answered or not: the new broker does not hold their passes. (Those are the
        one before each unanswered backprop, and each network's last one no backprop has used.)"""
        again = {rid: self.outbox[rid] for rid in self.conn.sent}
        for rid in list(again):
            kept = self._before(rid, again[rid][0].get("net")) if again[rid][0]["k"] == wire.BACKPROP else None
            if kept is not None:
                again.setdefault(kept.rid, (kept.header, kept.arrays))
        for net in {k.net for k in self.kept}:
            last = self._before(float("inf"), net)
            if not last.used:
                again.setdefault(last.rid, (last.header, last.arrays))
        for rid in sorted(again):
            header, arrays = again[rid]
            sockets.send(self.conn.sock, header, arrays, flags=zmq.NOBLOCK)

    def _before(self, rid, net):
        """The remembered predict a backprop (request rid) on net trains on: the last one before it."""
        return next((k for k in reversed(self.kept) if k.net == net and k.rid < rid), None)
