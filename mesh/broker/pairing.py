"""The broker as one of a pair: what changes when there are two.

The loop (loop.py) asks this at a few points: each tick (the pair's
decisions and heartbeats, and the standby brought up to date), each message
on the client socket (the other broker's, or a vote while this one is the
standby), each request (asked again after a failover?), and each answer
(does it wait for the standby?). The decisions are pairstate.py's; what is
shipped, replication.py's; taking over, takeover.py's."""
import logging
import time
from collections import deque

from .. import wire
from .answers import MAX_CACHED_ROWS, Answers
from .registry import send_worker
from .replication import Shadow, Shipper
from .pairstate import Pair, Role
from .statusview import status_of
from .takeover import take_over

log = logging.getLogger("mesh.broker")
# requests whose answer a client that asks again after a failover gets again, instead of a second effect
ANSWERED_ONCE = {wire.CREATE, wire.LOAD, wire.BACKPROP, wire.TRAIN, wire.SET_WEIGHTS, wire.DROP, wire.CANCEL}
FENCED_EXIT = 3  # the exit code of a fenced broker
STALL = 2.0  # seconds without an acknowledgement of the last commit before the standby is sent it all again


class Fenced(SystemExit):
    """Another broker of the pair took over while this one was frozen: it stops."""


class Paired:
    def __init__(self, broker, peer, primary, secret=None):
        self.b = broker
        self.pair = Pair(broker.ctx, peer, primary, broker.keys, broker.address, secret)
        self.shipper = Shipper(self.pair.send)  # what the standby has been sent (as the active one)
        self.shadow = Shadow()     # the active one's state (as the standby)
        self.answers = Answers()   # of requests with an effect (and remembered predicts), for one asked again
        self.asked = {}            # (client, request id) -> kind, of those being worked on
        self.waiting = deque()     # (commit, send) of answers the standby must hold first
        self.stalled_since = None  # since when the standby has not acknowledged the last commit

    @property
    def epoch(self):
        return self.pair.epoch

    @property
    def active(self):
        return self.pair.active

    def froze(self, seconds):
        """True if the loop just stalled long enough for this broker to doubt itself (pair.froze)."""
        return self.pair.froze(seconds)

    def close(self):
        self.pair.close()

    # -- each tick --------------------------------------------------------
    def tick(self):
        """The pair's decisions and heartbeats; the standby brought up to date. True if this
        broker is active and goes on with its tick."""
        self.act(self.pair.tick())
        if not self.pair.active:
            return False
        if self.pair.shipping():
            self.ship()
            self.unstick()
        elif self.waiting:  # no standby (gone, or never came): no one to wait for
            self.release(all_of_them=True)
        return True

    def act(self, action):
        pair = self.pair
        if action == "take over":
            log.warning("taking over as the active broker (epoch %d)", pair.epoch)
            print(f"mesh broker: active now (epoch {pair.epoch}), taking over from {pair.peer_address}", flush=True)
            take_over(self.b, self.shadow, pair.epoch, self.asked)
            self.answers = self.shadow.answers
            self.shadow = Shadow()
        elif action == "activate":
            print(f"mesh broker: active (epoch {pair.epoch})", flush=True)
        elif action == "fence":
            raise Fenced(f"mesh broker: another broker took over (epoch {pair.fenced_by}, this one was "
                         f"active at epoch {pair.epoch}); this one stops. Start it again to rejoin as the standby.")

    def ship(self):
        """Bring the standby up to date; the commit number that covers the state as it is now."""
        try:
            return self.shipper.sync(self.b, self.answers)
        except OverflowError:  # it fell behind by a whole queue: start it over
            log.warning("the standby broker fell behind; shipping it the whole state again")
            self.shipper.reset()
            return self.shipper.seq + 1  # covered only by the commit of the next, whole, sync

    def unstick(self):
        """A commit the standby never acknowledges (the record lost on a reconnect, with nothing
        after it to show the gap): after a while, ship it all again."""
        now = time.monotonic()
        if self.shipper.acked >= self.shipper.committed:
            self.stalled_since = None
        elif self.stalled_since is None:
            self.stalled_since = now
        elif now - self.stalled_since > STALL:
            log.warning("the standby broker has not acknowledged the state for %.0fs; shipping it all again", STALL)
            self.shipper.reset()
            self.stalled_since = None

    def when_shipped(self, then):
        """then() once the standby holds the state as it is now (at once without one)."""
        if not self.pair.shipping():
            return then()
        commit = self.ship()
        if commit <= self.shipper.acked and not self.waiting:
            return then()
        self.waiting.append((commit, then))

    def release(self, all_of_them=False):
        while self.waiting and (all_of_them or self.waiting[0][0] <= self.shipper.acked):
            _, send = self.waiting.popleft()
            send()

    # -- each message on the client socket -----------------------------------
    def admits(self, ident, k, h, arrays, is_mesh, worker_op):
        """Whether the broker handles this message itself: not the pair's own, and not
        while this broker is the standby (a worker or client that comes is a vote)."""
        if k in (wire.PAIR, wire.SHIP, wire.SHIPPED):
            if is_mesh and self.pair.authentic(k, h, arrays):  # only the peer speaks for the pair
                try:
                    self.from_peer(k, h, arrays)
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("refused a malformed %s from the peer broker: %s", k, e)
            return False
        if self.pair.active:
            return True
        if self.pair.doubting or not (k == wire.REGISTER and is_mesh or not worker_op):
            return False  # a frozen broker waits to hear its peer; a worker's heartbeat is no vote
        self.act(self.pair.vote())  # a failover, if the peer is silent
        if self.pair.active:
            return True
        if not worker_op:
            self.refuse(ident, k, h)
        else:  # a worker: back to the active one at once, if there is one
            send_worker(self.b, ident, {"k": wire.STANDBY, "peer_alive": self.pair.peer_alive()})
        return False

    def from_peer(self, k, h, arrays):
        """Its heartbeat, a record of its state (we are its standby), or what it applied of ours."""
        pair = self.pair
        if k == wire.PAIR:
            if h.get("incarnation") != pair.peer.get("incarnation"):
                self.shipper.reset()  # a new standby process: it holds nothing of ours
            self.act(pair.heard(h))
            if pair.role is Role.ACTIVE:  # its heartbeat says what it applied too: an acknowledgement lost is no hang
                self.acknowledged(h.get("applied") or 0)
        elif k == wire.SHIP and pair.role in (Role.STANDBY, Role.STARTING):
            done = self.shadow.take(h, arrays)
            if done == "gap":
                log.warning("a record from the active broker went missing; asking it to start over")
                pair.send({"k": wire.SHIPPED, "gap": True})
            elif done is not None:
                pair.holds, pair.applied = self.shadow.whole, done
                pair.send({"k": wire.SHIPPED, "seq": done})
        elif k == wire.SHIPPED and pair.role is Role.ACTIVE:
            if h.get("gap"):
                self.shipper.reset()
            else:
                self.acknowledged(int(h["seq"]))

    def acknowledged(self, seq):
        if seq > self.shipper.acked:
            self.shipper.acked = seq
            self.stalled_since = None
            self.release()

    def refuse(self, client, k, h):
        if k == wire.STATUS and not h.get("pair"):  # asked of this broker alone: how the standby is
            return self.b.reply(client, h.get("id"), ok=True, **status_of(self.b))
        self.b.reply(client, h.get("id"), ok=False, standby=True, peer_alive=self.pair.peer_alive(),
                     error=f"this broker is the standby of a pair; the active one is at {self.pair.peer_address}")

    # -- each request, each answer -------------------------------------------
    def first_time(self, k, client, h):
        """A pair's client asks again what it has no answer to (after a failover): a request with
        an effect has it once. False if this one is answered here (or will be, being worked on)."""
        if k not in ANSWERED_ONCE and not (k == wire.PREDICT and h.get("keep", True)):
            return True
        key = (client, h.get("id"))
        if key in self.asked:
            return False  # the answer goes to the same client and id
        if key in self.answers and k != wire.PREDICT:
            fields, arrays = self.answers.get(key)
            self.b.reply(client, h.get("id"), arrays, **fields)
            return False
        # a remembered predict asked again runs again (the backprop after it needs its passes)
        # but is answered as it was the first time, if it was
        self.asked[key] = k
        return True

    def answer(self, client, req, arrays, fields, send):
        """An answer: kept if asked again may come, and sent once the standby holds what it follows from."""
        key = (client, req)
        kind = self.asked.pop(key, None)
        if kind is not None:
            if key in self.answers:
                fields, arrays = self.answers.get(key)
            elif kind in ANSWERED_ONCE or sum(len(a) for a in arrays) <= MAX_CACHED_ROWS:
                # shipped with the next sync, before any step after it
                self.answers.add(key, fields, arrays, effect=kind in ANSWERED_ONCE)
        if client is None:
            return
        go = lambda: send(client, req, arrays, fields)  # noqa: E731
        if kind in ANSWERED_ONCE:  # it had an effect: the standby holds it before the client hears of it
            self.when_shipped(go)
        elif self.waiting:  # in order behind those
            self.waiting.append((self.shipper.committed, go))
        else:
            go()

    def status(self):
        return self.pair.status(self.shipper.lag if self.pair.active else None)
