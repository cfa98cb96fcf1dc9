"""The broker's loop: the one address clients and workers know.

One loop shape (the ZeroMQ Guide's Majordomo): poll (never forever), route
each message by its kind to the module that handles it, then tick: expire
late jobs and silent workers and groups, and send due heartbeats.

    the client socket   workers' messages -> registry.py; clients' requests -> clientops.py
                        (the other broker of a pair's -> pairing.py)
    the inbox           groups' messages -> inbox.py; the data path's -> dataflow.py
    each round          a slice of pending work (a wiring, building.py)

The broker holds the state they share (its workers, its networks, its
sockets) and wires each job's Ports (ports.py) to the modules that do the
work: building.py, encoding.py, losses.py, snapshots.py. The output groups
compute a training pass's loss and output gradient themselves; the broker
never touches a hidden layer: activations and gradients flow group to group."""
import logging
import os
import time
from collections import deque
from functools import partial

import zmq

from .. import sockets, statedir, wire
from ..faults import Faults
from ..lograte import Sometimes
from . import building, clientops, inbox, liveness, registry
from .checkpoints import checkpoint_path
from .dataflow import Flow
from .encoding import encode_again
from .losses import abandon_step, break_net, group_lost
from .pairing import Paired
from .ports import Ports
from .snapshots import snapshot_due, take_snapshot
from .steplog import SNAPSHOT_EVERY

log = logging.getLogger("mesh.broker")
TICK = 0.05  # seconds between checks of deadlines and heartbeats
POLLIN = int(zmq.POLLIN)  # a plain int: zmq's flag enum costs microseconds a test


class Broker:
    def __init__(self, bind="tcp://127.0.0.1:5555", ctx=None, keys=None, checkpoint_dir=None, peer=None,
                 primary=False, pair_secret=None, heartbeat_expiry=None):
        self.ctx = ctx or zmq.Context()
        self.expiry = liveness.base_expiry(heartbeat_expiry)  # a group's, before load stretches it
        self.checkpoint_dir = os.path.abspath(checkpoint_dir or statedir.checkpoint_dir())
        self.keys = keys
        if keys is not None:
            keys.start_authenticator(self.ctx)
        self.front = sockets.make(self.ctx, zmq.ROUTER, bind=bind, keys=keys, serve="front")
        self.front.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a worker that reconnects keeps its identity
        self.address = sockets.bound_endpoint(self.front)
        host = sockets.host_of(self.address)
        self.inbox = sockets.make(self.ctx, zmq.PULL, keys=keys, serve="mesh")
        self.inbox_port = self.inbox.bind_to_random_port(f"tcp://{host}")
        self.host = host
        self.inbox_ipc = sockets.abstract_ipc("broker")  # for groups on this host
        self.inbox.bind(self.inbox_ipc)
        self.workers = {}        # identity -> records.WorkerRecord (registry.py)
        self.nets = {}           # id -> network.Network
        self.made = {"worker": 0, "net": 0}  # names handed out: w1, w2..., n1, n2...
        self.paired = Paired(self, peer, primary, pair_secret) if peer else None  # one of a pair (pairing.py), or alone
        self.faults = Faults("broker")  # a test's faults at the broker's known points (faults.py)
        self.frozen_at = time.monotonic()
        self.flow = Flow(self.push_to_group, partial(abandon_step, self))
        self.ports = Ports(flow=self.flow, reply=self.reply, wire_up=partial(building.wire_up, self),
                           respawn=partial(building.respawn, self), abandon_step=partial(abandon_step, self),
                           break_net=partial(break_net, self), run_deferred=self.run_deferred,
                           take_snapshot=lambda net, then: take_snapshot(self.ports, net, then),
                           snapshot_due=lambda net: snapshot_due(self.ports, net, SNAPSHOT_EVERY),
                           checkpoint_file=partial(checkpoint_path, self.checkpoint_dir),
                           encode_again=partial(encode_again, self),
                           when_shipped=lambda then: then() if self.paired is None else self.paired.when_shipped(then),
                           rebroker=partial(inbox.rebroker, self), end_net=partial(building.end_net, self),
                           fault=lambda event, count: self.faults.at(event, count, f"at {event} {count}"),
                           to_worker=partial(registry.send_worker, self),
                           in_slices=lambda steps: self.pending.append(iter(steps)))
        self.worker_ops = {k: partial(op, self) for k, op in registry.OPS.items()}
        self.inbox_ops = {**{k: partial(op, self) for k, op in inbox.OPS.items()},
                          wire.OUT: self.flow.out, wire.DONE: self.flow.done, wire.FAULT: self.flow.fault}
        self.running = True
        self.longest_loop = 0.0  # seconds: the longest one round of the loop took
        self.pending = deque()  # work done a slice a round: generators (building.wire_up)
        self.sometimes = Sometimes(log)  # what peers' bad messages log
        self.dashboard = None  # main() starts it; tick() offers it the state, at a rate it bounds

    # -- the loop --------------------------------------------------------
    def run(self):
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        next_tick = 0.0
        while self.running:
            events = dict(poller.poll(0 if self.pending else TICK * 1000))
            t = time.monotonic()
            if self.paired is not None:
                if self.paired.froze(t - self.frozen_at):  # workers and groups were not silent: we were
                    registry.forgive(self)
                self.frozen_at = t
                if not self.paired.active:  # a standby (or a broker in doubt) reads its client socket only
                    if self.front in events:
                        self.on_front()
                    if t >= next_tick:
                        self.tick()
                        next_tick = t + TICK
                    continue
            if self.inbox in events:
                for _ in range(256):  # drain the data path first: it unblocks the mesh (a tick at most)
                    if not self.inbox.get(zmq.EVENTS) & POLLIN or time.monotonic() - t > TICK:
                        break
                    self.on_inbox()
                if time.monotonic() - t > TICK:
                    registry.heartbeat_workers(self)
            t_inbox = time.monotonic() - t
            if self.front in events:
                self.on_front()
            building.work(self)
            now = time.monotonic()
            if now >= next_tick:  # deadlines and heartbeats: a few times a second is plenty
                self.tick()
                next_tick = now + TICK
            took = time.monotonic() - t
            self.longest_loop = max(self.longest_loop, took)  # in status: what a benchmark reads
            if took > 1.0:  # the loop must come round every heartbeat; say when it does not
                log.warning("broker loop took %.1fs (inbox %.1fs)", took, t_inbox)

    def close(self):
        if self.paired is not None:  # one of a pair: its groups are the standby's to take over
            self.paired.close()
        else:
            for net in list(self.nets.values()):
                building.stop_net(self, net)
        # workers are not told to stop: they reconnect to the next broker, which ends what they still run
        if self.dashboard is not None:
            self.dashboard.close()
        if self.keys is not None:
            self.keys.stop()
        self.ctx.destroy(linger=0)

    def tick(self):
        if self.paired is not None and not self.paired.tick():
            if self.paired.pair.doubting:  # keep the workers ours while we wait to hear the peer
                registry.heartbeat_workers(self)
            return
        now = time.monotonic()
        for job in [j for j in self.ports.jobs if j.deadline < now]:
            try:
                job.expire()
            except Exception:
                log.exception("a job failed to expire cleanly")
                job.end()
        registry.expire_workers(self)
        registry.heartbeat_workers(self)
        inbox.expire_groups(self, now)
        if self.dashboard is not None:
            self.dashboard.offer(self)

    def on_front(self):
        """One message on the client socket; whatever it holds or raises, the broker goes on."""
        try:
            self.front_message()
        except Exception:
            self.sometimes.warning("front", "refused a message on the client socket", exc_info=True)

    def front_message(self):
        try:
            ident, key, h, arrays = sockets.recv_with_key(self.front, keyed=self.keys is not None)
        except wire.WireError as e:
            self.sometimes.warning("malformed", "refused a malformed message: %s", e)
            if e.identity is not None:
                self.reply(e.identity, None, ok=False, error=f"malformed message: {e}")
            return
        k = h["k"]
        is_mesh = self.keys is None or self.keys.is_mesh(key)  # with keys, a client's key cannot act as a worker
        if self.paired is not None and not self.paired.admits(ident, k, h, arrays, is_mesh, k in self.worker_ops):
            return
        if k in self.worker_ops and is_mesh and (k == wire.REGISTER or ident in self.workers):
            try:
                if ident in self.workers:
                    self.workers[ident].peer.heard_now()
                self.worker_ops[k](ident, h)
            except Exception as e:  # a worker's bad message is logged, never fatal
                self.sometimes.warning("worker", "refused a worker message %r: %s", k, e)
            return
        self.dispatch(k, ident, h, arrays)

    def dispatch(self, k, client, h, arrays):
        """Run one client request; one for a network that is being rebuilt or read waits until it is whole."""
        try:
            op = clientops.HANDLERS.get(k)
            if op is None:
                raise ValueError(f"unknown request {k!r}")
            net = self.nets.get(h.get("net")) if k in clientops.WAITS_FOR_RECOVERY else None
            if net is not None and net.waits():
                net.deferred.append((k, client, h, arrays))
                return
            if self.paired is None or self.paired.first_time(k, client, h):
                op(self, client, h, arrays)
        except (ValueError, KeyError, TypeError, RuntimeError, wire.WireError) as e:
            msg = str(e) if not isinstance(e, (KeyError, TypeError)) else f"bad {k} request: {type(e).__name__}: {e}"
            self.reply(client, h.get("id"), ok=False, error=msg)
        except Exception as e:  # a request we did not foresee must not take the broker down
            log.exception("request %r failed", k)
            self.reply(client, h.get("id"), ok=False, error=f"bad {k} request: {type(e).__name__}: {e}")

    def on_inbox(self):
        try:
            _, h, arrays = sockets.recv(self.inbox)
            net = self.nets.get(h.get("net"))
            op = self.inbox_ops.get(h["k"])
            if net is None or op is None or h.get("gid") not in net.groups or h.get("tok") != net.token:
                return  # a network already dropped, or not from one of its groups
            if h["k"] not in (wire.HELLO, wire.HEARTBEAT) and h.get("gen") != net.gen:
                return  # sent before a recovery rewired the network
            op(net, h, arrays)
        except Exception as e:  # a group's bad message is logged, never fatal
            self.sometimes.warning("inbox", "refused a malformed inbox message: %s: %s", type(e).__name__, e)

    # -- replies and sends -------------------------------------------------
    def reply(self, client, req, arrays=(), **fields):
        """Never blocks: a client that is gone, or not reading, loses its reply rather than stalling the mesh.
        In a pair, an answer goes once the standby holds everything it follows from."""
        if self.paired is not None and "k" not in fields:  # an answer, not progress
            return self.paired.answer(client, req, arrays, fields, self.send_reply)
        if client is not None:
            self.send_reply(client, req, arrays, fields)

    def send_reply(self, client, req, arrays, fields):
        try:
            sockets.send(self.front, wire.reply(req, **fields), arrays, identity=client, flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.info("could not reply to a client: %s", e)

    def push_to_group(self, net, gid, header, arrays=()):
        """One message to a group (Flow.to_group adds the network's fields)."""
        if self.paired is not None:
            header["ep"] = self.paired.epoch  # fencing: a group ignores a broker older than one it heard
        try:
            sockets.send(net.push[gid], header, arrays)
        except (zmq.Again, KeyError):  # no connection to it (gone, or refusing our key): treat it as lost
            if net.groups[gid].alive:
                group_lost(self, net, [gid], f"{net.describe(gid)} cannot be reached")

    def run_deferred(self, net):
        """Requests that waited while the network was recovering or being snapshotted."""
        while net.deferred and not net.waits():
            op, client, h, arrays = net.deferred.popleft()
            self.dispatch(op, client, h, arrays)
