"""A client's connection to the broker: one DEALER socket, requests matched to their
replies by id, and silence told apart from refusal. Every wait has a deadline; a
refusal is raised as RemoteError with the broker's message, silence as MeshTimeout
naming what did not answer. A pair's connection follows the active broker
(failover.py)."""
import itertools
import os
import time

import zmq

from . import sockets, wire
from .brokers import Brokers
from .errors import BrokerExited, Cancelled, MeshTimeout, RemoteError
from .failover import Failover

DEFAULT_TIMEOUT = 60.0
GRACE = 5.0  # we wait a little longer than the broker, so its error, which names the culprit, arrives first
CONNECT_GRACE = 5.0  # seconds: no connection by then means no broker listens there


class Connection:
    def __init__(self, address, timeout=DEFAULT_TIMEOUT, keys=None):
        """address: the broker's, or a pair's two separated by a comma. keys: a keys folder
        (see mesh.security); default MESH_KEYS, if set."""
        from .security import Keys
        self.brokers, self.timeout = Brokers(address), float(timeout)
        self.keys = Keys(keys, "client") if keys else Keys.from_env("client")
        self.ctx = zmq.Context()
        # the same identity at either broker of a pair: an answer given before a failover is found again
        self.identity = b"client-" + os.urandom(8).hex().encode()
        self.ids = itertools.count(1)
        self.sent = {}      # request id -> (op, seconds to wait) of requests not yet answered
        self.answers = {}   # request id -> frames of answers that came before they were waited for
        self.failover = Failover(self) if self.brokers.pair else None
        self.watch = None  # () -> why the broker cannot answer, or None: set by whoever started it (localmesh)
        self._open()

    @property
    def address(self):
        return self.brokers.current

    def _open(self):
        self.sock = sockets.make(self.ctx, zmq.DEALER, keys=self.keys, dial=self.keys and self.keys.broker_public)
        self.sock.setsockopt(zmq.ROUTING_ID, self.identity)
        # told when the connection is made: silence then means a slow broker, not a missing one
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECTED |
                                                    zmq.EVENT_DISCONNECTED)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.connected = False
        self.spoken = False  # it has answered: keys, missing or wrong, are not why it is silent
        self.born = self.heard = self.pinged = time.monotonic()
        self.sock.connect(self.address)

    def reopen(self):
        """A fresh socket to the current address (a pair's client has moved to the other broker)."""
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
        self._open()

    def close(self):
        self.sock.disable_monitor()
        self.ctx.destroy(linger=0)

    def forget(self, rid):
        self.sent.pop(rid, None)
        self.answers.pop(rid, None)
        if self.failover is not None:
            self.failover.forget(rid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, op, arrays=(), timeout=None, on_progress=None, **fields):
        """Send one request and wait for its reply: (header, arrays)."""
        return self.wait(self.send(op, arrays, timeout, **fields), on_progress)

    def send(self, op, arrays=(), timeout=None, patience=None, **fields):
        """Send a request without waiting; its id, for wait(). Replies may come in any
        order (a backprop waits for its predict); wait() sorts them by id.
        timeout: the broker's deadline for the work; patience: how long wait() waits
        for the reply (default: the timeout and a little more, so the broker's error comes first)."""
        timeout = float(timeout or self.timeout)
        wait = float(patience) if patience else timeout + min(GRACE, timeout)
        rid = next(self.ids)
        header = {"k": op, "id": rid, "timeout": timeout, **fields}
        self.sock.setsockopt(zmq.SNDTIMEO, int(wait * 1000))
        try:
            sockets.send(self.sock, header, arrays)
        except zmq.Again:
            raise MeshTimeout(f"could not send {op!r} to the broker at {self.address} within "
                              f"{wait:g}s: no connection{self.hint()}") from None
        self.sent[rid] = (op, wait)
        if self.failover is not None:
            self.failover.sent(rid, header, arrays)
        return rid

    def wait(self, rid, on_progress=None):
        """The reply to request rid: (header, arrays); RemoteError if the broker refused it.
        After a KeyboardInterrupt the request is still pending: it may be waited for again."""
        op, wait = self.sent[rid]
        try:
            deadline = time.monotonic() + wait
            while rid not in self.answers:
                if self.failover is not None:
                    self.failover.resend_if_due()
                if not self.sock.poll(self._next_poll(deadline) * 1000):
                    if self.failover is not None:
                        if self.failover.silent(op):
                            deadline = time.monotonic() + wait  # the work starts again at the other broker
                    else:
                        self._check_connected(op)
                    gone = self.watch and self.watch()
                    if gone:
                        raise BrokerExited(f"{gone}: {op!r} will not be answered")
                    if time.monotonic() >= deadline:
                        raise MeshTimeout(f"broker at {self.address} did not answer {op!r} within {wait:g}s"
                                          f"{self.hint()}")
                    continue
                if self._receive(rid, on_progress):
                    deadline = time.monotonic() + wait
        except KeyboardInterrupt:
            raise
        except BaseException:
            self._done(rid)
            raise
        self._done(rid)
        h, out = self.answers.pop(rid)
        if not h.get("ok"):
            if h.get("cancelled"):
                raise Cancelled(h.get("error", "cancelled"), h.get("epochs", 0), h.get("steps", 0), h.get("history", ()))
            raise RemoteError(h.get("error", "unknown error"))
        return h, out

    def _receive(self, rid, on_progress):
        """One message from the broker, while waiting for request rid; True if the wait starts
        again (the work moved to the other broker of a pair, or reported progress)."""
        _, h, out = sockets.recv(self.sock, max_header=1 << 24)
        self.connected = self.spoken = True
        self.heard = time.monotonic()
        if h.get("standby") and h.get("id") in self.sent and self.failover is not None:
            self.failover.refused(h)  # we asked a pair's standby
            return True
        if h.get("k") == wire.PROGRESS:
            if on_progress and h.get("id") == rid:
                on_progress(h)
                return True  # long work that reports progress is alive
        elif h.get("id") in self.sent:
            self.answers[h["id"]] = (h, out)
            if self.failover is not None:
                self.failover.answered(h["id"])
        # else: a late answer to a request that timed out
        return False

    def _done(self, rid):
        del self.sent[rid]
        if self.failover is not None:
            self.failover.forget(rid)

    def _next_poll(self, deadline):
        """Seconds to poll: to the deadline, but no longer than it takes to tell that nothing listens."""
        left = max(0.0, deadline - time.monotonic())
        return left if self.connected and not self.brokers.pair and not self.watch else min(left, 0.25)

    def _check_connected(self, op):
        self.connected |= any(e != zmq.EVENT_DISCONNECTED for e in sockets.monitor_events(self.monitor))
        if not self.connected and time.monotonic() - self.born > CONNECT_GRACE:
            raise MeshTimeout(f"no broker answers at {self.address}: nothing accepted a connection within "
                              f"{CONNECT_GRACE:g}s (is `mesh broker` or `mesh up` running there?); {op!r} not sent"
                              f"{self.hint()}")

    def hint(self):
        """Keys could be why a broker is silent only if it accepted the connection (a broker with keys
        drops a client without them after the handshake) and never answered this client."""
        if self.keys or self.spoken or not self.connected:
            return ""
        return " (if the broker uses keys, set MESH_KEYS to a folder with client keys)"
