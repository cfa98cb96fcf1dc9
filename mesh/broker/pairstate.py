"""Two brokers, one active: the ZeroMQ Guide's Binary Star, with epochs.

Each broker of a pair dials the other's client address (--peer) with a
DEALER, and sends on it: heartbeats (PAIR, every INTERVAL), and, from the
active, its state (SHIP, replication.py) or, from the standby, what it applied
(SHIPPED). It hears the other on its own client socket; with keys, only a
mesh key may speak for a broker.

    STARTING ──peer is active──────────────────────────▶ STANDBY
        │ ──peer starting or standby, holding no state: the primary ─▶ ACTIVE
        │ ──peer silent for EXPIRY: the primary ──────────▶ ACTIVE
        │ ──peer silent for EXPIRY: the backup ───────────▶ STANDBY
    STANDBY ──peer silent AND a worker or client came to it (a vote, good for
              2 x EXPIRY)──────────────────────────────────────────────▶ ACTIVE
            ──peer alive but not active, and this one holds its state──▶ ACTIVE
    ACTIVE ──peer active at a higher epoch───────────────▶ FENCED (the broker exits)

A standby that merely cannot see its peer does not take over: it also
needs a vote, a worker or a client that came to it (Binary Star's rule).
Taking over raises the epoch; every message a broker sends workers and
groups carries it, and they ignore an older one, so a broker that was only
frozen acts on nothing when it wakes. A broker whose loop was frozen longer
than EXPIRY doubts itself (Pair.doubting) until its peer answers a heartbeat
sent after it woke (the echo of "n"), for DOUBT at most.

Only the peer may speak for the pair: with keys, a mesh key (CurveZMQ); without
keys, the pair shares a secret (MESH_PAIR_SECRET) and every PAIR, SHIP and
SHIPPED carries an HMAC of its header and arrays under it, with the sender's
incarnation and the receiver's ("inc", "to"): a local process that is not the
peer can neither forge one nor replay one to the broker that sent it or to
another incarnation of its peer."""
import enum
import hashlib
import hmac
import os
import time

import zmq

from .. import heartbeat, sockets, wire
from ..wire import encode_header

# the pair's own pace, written in heartbeat.py beside the one it is derived from (and why it differs)
INTERVAL, LIVENESS, EXPIRY = heartbeat.PAIR_INTERVAL, heartbeat.PAIR_LIVENESS, heartbeat.PAIR_EXPIRY
DOUBT = 3 * INTERVAL  # a broker woken from a freeze waits this long at most to hear its peer answer it


class Role(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    STANDBY = "standby"
    FENCED = "fenced"


class Pair:
    def __init__(self, ctx, peer, primary, keys, address, secret=None):
        self.peer_address, self.primary, self.address = peer, primary, address
        self.secret = secret  # bytes shared with the peer (a keyless pair), or None: keys authenticate
        self.sock = sockets.make(ctx, zmq.DEALER, keys=keys, dial=keys and keys.broker_public)
        self.sock.setsockopt(zmq.ROUTING_ID, b"pair-" + os.urandom(6).hex().encode())
        self.sock.setsockopt(zmq.SNDHWM, 100_000)  # records queue here while the standby applies them
        self.sock.connect(peer)
        self.role = Role.STARTING
        self.epoch = 0
        self.incarnation = os.urandom(4).hex()  # the peer tells a restarted broker from a live one by it
        self.link = heartbeat.Peer(INTERVAL, LIVENESS)
        self.heard_peer = False
        self.peer = {}            # its last heartbeat: role, epoch, primary, holds, incarnation
        self.holds = False        # standby: it holds the active's whole state (replication.Shadow.whole)
        self.applied = 0          # standby: the last commit of the active's it applied (in its heartbeats)
        self.started = time.monotonic()
        self.doubt_until = 0.0
        self.beats = 0            # heartbeats sent; the peer echoes the last it heard
        self.doubt_from = 0       # in doubt, only a heartbeat echoing this one (or later) is news
        self.failovers = 0
        self.fenced_by = None
        self.seen_as = None  # the address the peer dials this broker at: one others can reach it at
        self.voted = None  # when a worker or client last came to this standby (it takes over if the peer then goes)

    # -- what the broker asks ---------------------------------------------
    @property
    def active(self):
        return self.role is Role.ACTIVE and not self.doubting

    @property
    def doubting(self):
        return time.monotonic() < self.doubt_until

    def peer_alive(self):
        return self.heard_peer and not self.link.expired()

    def shipping(self):
        """The standby is there to ship to: replies wait for its acknowledgement."""
        return self.active and self.peer_alive() and self.peer.get("role") in (Role.STANDBY.value,
                                                                               Role.STARTING.value)

    def send(self, header, arrays=()):
        if self.secret is not None:
            header = dict(header, inc=self.incarnation, to=self.peer.get("incarnation"))
            header["mac"] = self.mac(header, arrays)
        try:
            sockets.send(self.sock, header, arrays, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def mac(self, header, arrays):
        """The HMAC of a message under the pair's secret: its header (as the wire encodes it)
        and every array's dtype, shape and bytes."""
        m = hmac.new(self.secret, encode_header(header).encode(), hashlib.sha256)
        for a in arrays:
            m.update(f"{a.dtype.str}{a.shape}".encode())
            m.update(memoryview(a if a.flags.c_contiguous else a.copy()).cast("B"))
        return m.hexdigest()

    def authentic(self, k, h, arrays):
        """Whether a PAIR, SHIP or SHIPPED comes from the peer, unaltered, for this incarnation."""
        if self.secret is None:
            return True  # keyed: the caller checked the sender's mesh key (or --insecure: anyone)
        mac = h.pop("mac", None)
        if not isinstance(mac, str) or not hmac.compare_digest(mac, self.mac(h, arrays)):
            return False
        if h.get("inc") == self.incarnation:
            return False  # its own message, sent back to it
        return h.get("to") == self.incarnation or (k == wire.PAIR and h.get("to") is None)

    def beat(self, force=False):
        if self.link.due() or force:
            self.beats += 1
            self.send({"k": wire.PAIR, "role": self.role.value, "epoch": self.epoch, "primary": self.primary,
                       "holds": self.holds, "incarnation": self.incarnation, "address": self.address,
                       "you": self.peer_address, "n": self.beats, "echo": self.peer.get("n"),
                       "applied": self.applied})

    def froze(self, seconds):
        """The loop did not come round for `seconds` (stopped, swapped out): another may have
        taken over meanwhile. Act on nothing until the peer answers a heartbeat sent now (what
        it sent during the freeze is old news), or for DOUBT at most (it may be gone). True if
        this starts a doubt."""
        if self.role is not Role.ACTIVE or seconds <= EXPIRY:
            return False
        self.doubt_until = time.monotonic() + DOUBT
        self.doubt_from = self.beats + 1
        self.beat(force=True)
        return True

    # -- events; each returns what the broker must do: None, "activate", "take over", "fence" ----
    def heard(self, h):
        self.link.heard_now()
        self.heard_peer = True
        self.seen_as = h.get("you") or self.seen_as
        self.peer = {k: h.get(k) for k in ("role", "epoch", "primary", "holds", "incarnation", "address", "n")}
        peer_role, peer_epoch = h.get("role"), int(h.get("epoch") or 0)
        if self.doubting and (h.get("echo") or 0) >= self.doubt_from:
            self.doubt_until = 0.0  # it heard us since we woke: what it says now is current
        if self.role is Role.ACTIVE:
            if peer_role == Role.ACTIVE.value and (peer_epoch > self.epoch or
                                                   (peer_epoch == self.epoch and not self.primary)):
                self.fenced_by = peer_epoch
                self.role = Role.FENCED
                return "fence"
            return None
        if self.role is Role.STARTING:
            if peer_role == Role.ACTIVE.value:
                return self._become(Role.STANDBY, peer_epoch)
            if peer_role in (Role.STARTING.value, Role.STANDBY.value):
                if not h.get("holds") and self.primary:
                    return self._activate(peer_epoch, takeover=False)
                return self._become(Role.STANDBY, peer_epoch)
            return None
        if self.role is Role.STANDBY:
            self.epoch = max(self.epoch, peer_epoch)
            if peer_role in (Role.STARTING.value, Role.STANDBY.value):
                if self.holds and not h.get("holds") or (self.holds and h.get("holds") and self.primary):
                    return self._activate(peer_epoch, takeover=True)
                if not self.holds and not h.get("holds") and self.primary:
                    return self._activate(peer_epoch, takeover=False)
        return None

    def tick(self):
        """Startup decisions, and heartbeats."""
        now = time.monotonic()
        if self.role is Role.STARTING and now - self.started > EXPIRY and not self.peer_alive():
            action = self._activate(0, takeover=False) if self.primary else self._become(Role.STANDBY, 0)
        elif self.role is Role.STANDBY and self.voted is not None and now - self.voted < 2 * EXPIRY:
            action = self.vote(again=True)  # a vote that came while the peer still looked alive
        else:
            action = None
        self.beat()
        return action

    def vote(self, again=False):
        """A worker or client came to this broker. A standby whose peer is silent takes over;
        one whose peer still looks alive remembers the vote for a while (tick)."""
        if self.role is not Role.STANDBY:
            return None
        if not self.peer_alive():
            self.voted = None
            return self._activate(self.peer.get("epoch") or 0, takeover=self.holds)
        if not again:
            self.voted = time.monotonic()
        return None

    def _become(self, role, peer_epoch):
        self.role = role
        self.epoch = max(self.epoch, peer_epoch)
        self.beat(force=True)
        return None

    def _activate(self, peer_epoch, takeover):
        self.epoch = max(self.epoch, int(peer_epoch or 0)) + 1
        self.role = Role.ACTIVE
        if takeover:
            self.failovers += 1
        self.beat(force=True)
        return "take over" if takeover else "activate"

    def status(self, lag=None):
        return {"role": self.role.value, "epoch": self.epoch, "primary": self.primary, "address": self.address,
                "peer": self.peer_address, "peer_role": self.peer.get("role") if self.peer_alive() else None,
                "lag": lag, "failovers": self.failovers}

    def close(self):
        self.sock.close(linger=0)
