"""The broker: the one address clients and workers know.

It keeps the registry of workers and networks, places groups on workers and
wires them, feeds rows into layer 1, gathers the last layer's outputs, and
answers clients; the output groups compute a training pass's loss and output
gradient themselves, the broker only where softmax spans several groups. It
never touches a hidden layer: activations and gradients flow group to group.

One loop shape: poll (never forever), handle one message, then expire
late jobs and silent workers and send due heartbeats.

This module holds the loop, the registry of workers and networks, and the
broker's side of each job's Ports (ports.py); what clients may ask is in
requests.py, the data path in dataflow.py, the work in the job modules."""
import logging
import os
from collections import deque
import re
import time

import zmq

from .. import heartbeat, memory, sockets, statedir, table, wire
from ..dashboard import Dashboard
from ..encoder import Encoder
from ..faults import Faults
from ..lifecycle import profiled
from ..lograte import Sometimes
from . import budgets, liveness, requests
from .dataflow import Flow
from .jobs import Create
from .network import Network, window_for
from .paired import FENCED_EXIT, Fenced, Paired
from .placement import plan, wiring
from .ports import Ports
from .recovery import Recover
from .snapshots import restore_plan, snapshot_due, take_snapshot
from .states import Event, State
from .steplog import SNAPSHOT_EVERY

log = logging.getLogger("mesh.broker")
TICK = 0.05  # seconds between checks of deadlines and heartbeats
WORK_SLICE = 0.02  # seconds of pending work (a wiring) each round of the loop
POLLIN = int(zmq.POLLIN)  # a plain int: zmq's flag enum costs microseconds a test
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


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
        self.workers = {}        # identity -> record
        self.nets = {}
        self.made = {"worker": 0, "net": 0}  # names handed out: w1, w2..., n1, n2...
        self.paired = Paired(self, peer, primary, pair_secret) if peer else None  # one of a pair (paired.py), or alone
        self.faults = Faults("broker")  # a test's faults at the broker's known points (faults.py)
        self.frozen_at = time.monotonic()
        self.flow = Flow(self.push_to_group, self.abandon_step)
        self.ports = Ports(flow=self.flow, reply=self.reply, wire_up=self.wire_up, respawn=self.respawn,
                           abandon_step=self.abandon_step, break_net=self.break_net, run_deferred=self.run_deferred,
                           take_snapshot=lambda net, then: take_snapshot(self.ports, net, then),
                           snapshot_due=lambda net: snapshot_due(self.ports, net, SNAPSHOT_EVERY),
                           checkpoint_file=self.checkpoint_file, encode_again=self.encode_again,
                           when_shipped=self.when_shipped, rebroker=self.rebroker, end_net=self.end_net,
                           fault=lambda event, count: self.faults.at(event, count, f"at {event} {count}"))
        self.worker_ops = {wire.REGISTER: self.register, wire.HEARTBEAT: self.worker_beat,
                           wire.SPAWNED: self.spawned, wire.EXITED: self.exited}
        self.inbox_ops = {wire.HELLO: self.hello, wire.HEARTBEAT: self.group_beat, wire.READY: self.ready,
                          wire.OUT: self.flow.out, wire.DONE: self.flow.done, wire.STATE: self.state,
                          wire.SNAPPED: self.snapped, wire.KEPT: self.kept, wire.KEEP: self.keep,
                          wire.FAULT: self.flow.fault}
        self.running = True
        self.longest_loop = 0.0  # seconds: the longest one round of the loop took
        self.pending = deque()  # work done a slice a round: generators (Broker.setups)
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
                    self.forgive()
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
                    self.heartbeat_workers()
            t_inbox = time.monotonic() - t
            if self.front in events:
                self.on_front()
            self.work()
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
                self.stop_net(net)
        # workers are not told to stop: they reconnect to the next broker, which ends what they still run
        if self.dashboard is not None:
            self.dashboard.close()
        if self.keys is not None:
            self.keys.stop()
        self.ctx.destroy(linger=0)

    def tick(self):
        if self.paired is not None and not self.paired.tick():
            if self.paired.pair.doubting:  # keep the workers ours while we wait to hear the peer
                self.heartbeat_workers()
            return
        now = time.monotonic()
        for job in [j for j in self.ports.jobs if j.deadline < now]:
            try:
                job.expire()
            except Exception:
                log.exception("a job failed to expire cleanly")
                job.end()
        backlog = self.front.poll(0)  # unread messages may hold the heartbeats that keep a worker alive
        for wid, w in list(self.workers.items()):
            if w["peer"].expired() and not backlog:
                self.lose_worker(wid, f"worker {w['name']} on {w['host']} stopped answering heartbeats")
        self.heartbeat_workers()
        if not self.inbox.poll(0):  # likewise for the groups' heartbeats
            for net in list(self.nets.values()):
                dead = {gid: why for gid, g in net.groups.items() if g["alive"] and g["pid"] and now - g["heard"] >
                        self.expiry for why in [liveness.verdict(g, self.workers.get(g["worker"]), now, self.expiry)]
                        if why}
                for gid in dead:  # stuck (stopped, wedged): end it, then rebuild; a busy one is left be
                    g = net.groups[gid]
                    self.send_worker(g["worker"], {"k": wire.KILL, "gid": gid, "pid": g["pid"], "sig": 9})
                if dead and not net.failed:
                    first = next(iter(dead))
                    self.group_lost(net, list(dead), f"{net.describe(first)} {dead[first]}")
        if self.dashboard is not None:
            self.dashboard.offer(self)

    def forgive(self):
        """Count every worker and group as heard now (after this broker's own loop stalled)."""
        now = time.monotonic()
        for w in self.workers.values():
            w["peer"].heard_now()
        for net in self.nets.values():
            for g in net.groups.values():
                g["heard"] = now

    def when_shipped(self, then):
        """then() once a standby holds the state as it is now (at once without one)."""
        return then() if self.paired is None else self.paired.when_shipped(then)

    def heartbeat_workers(self):
        """Due heartbeats out; also called inside long work, so workers never think us gone."""
        for wid, w in self.workers.items():
            if w["peer"].due():
                self.send_worker(wid, {"k": wire.HEARTBEAT})

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
                    self.workers[ident]["peer"].heard_now()
                self.worker_ops[k](ident, h)
            except Exception as e:  # a worker's bad message is logged, never fatal
                self.sometimes.warning("worker", "refused a worker message %r: %s", k, e)
            return
        self.dispatch(k, ident, h, arrays)

    def dispatch(self, k, client, h, arrays):
        """Run one client request; one for a network that is being rebuilt or read waits until it is whole."""
        try:
            op = requests.HANDLERS.get(k)
            if op is None:
                raise ValueError(f"unknown request {k!r}")
            net = self.nets.get(h.get("net")) if k in requests.WAITS_FOR_RECOVERY else None
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
            if net.groups[gid]["alive"]:
                self.group_lost(net, [gid], f"{net.describe(gid)} cannot be reached")

    def send_worker(self, wid, header):
        if self.paired is not None:
            header["ep"] = self.paired.epoch
            waiting = self.workers.get(wid, {}).get("waiting")
            if waiting is not None:  # after a failover, until it comes back (register)
                return waiting.append(header)
        try:
            sockets.send(self.front, header, identity=wid, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # -- workers -----------------------------------------------------------
    def register(self, wid, h):
        if wid not in self.workers:
            self.made["worker"] += 1
            name = f"w{self.made['worker']}"
            self.workers[wid] = {"name": name, "host": str(h["host"]), "hostname": str(h.get("hostname", "")),
                                 "key": h.get("key"),
                                 "slots": max(1, int(h.get("slots") or 1)), "pid": h.get("pid"), "peer": heartbeat.Peer(),
                                 "groups": set(), "memory": _budget(h.get("memory")),
                                 "pool": str(h["pool"])[:300] if h.get("pool") else None,
                                 "disk": _budget(h.get("disk")),
                                 "disk_pool": str(h["disk_pool"])[:300] if h.get("disk_pool") else None}
            log.info("worker %s joined from %s (%s slots, memory %s)", name, h["host"], h.get("slots"),
                     h.get("memory") or "unlimited")
        waiting = self.workers[wid].pop("waiting", None) or []
        self.send_worker(wid, {"k": wire.WELCOME, "inbox_port": self.inbox_port, "inbox_ipc": self.inbox_ipc})
        for header in waiting:  # sent to it after a failover, before it came back
            self.send_worker(wid, header)
        runs = dict(h.get("groups") or {})
        for gid, pid in runs.items():  # back after we gave it up: end what it still runs
            net = self.nets.get(str(gid).split(".")[0])
            g = net.groups.get(gid) if net else None
            if g is None or g["pid"] != pid or g["worker"] != wid:
                self.send_worker(wid, {"k": wire.KILL, "gid": gid, "pid": pid})
        for net in list(self.nets.values()):  # ours on it that it no longer runs (died while it was away)
            gone = [gid for gid, g in net.groups.items()
                    if g["worker"] == wid and g["alive"] and g["pid"] is not None and gid not in runs]
            if gone:
                self.group_lost(net, gone, f"{net.describe(gone[0])} is no longer run by its worker")

    def worker_beat(self, wid, h):
        """Its own and its groups' CPU and memory, kept for the dashboard."""
        now = time.monotonic()
        self.workers[wid]["usage"] = h.get("usage")
        load = h.get("load")
        self.workers[wid]["load"] = float(load) if isinstance(load, (int, float)) and 0 <= load < 1e6 else None
        for gid, use in dict(h.get("groups") or {}).items():
            net = self.nets.get(str(gid).split(".")[0])
            g = net.groups.get(gid) if net else None
            if g is not None and g["worker"] == wid:
                g["usage"], g["usage_at"] = use, now

    def spawned(self, wid, h):
        net = self.nets.get(str(h["gid"]).split(".")[0])
        if net and h["gid"] in net.groups and net.groups[h["gid"]]["worker"] == wid:
            net.groups[h["gid"]]["pid"] = h["pid"]

    def exited(self, wid, h):
        self.workers[wid]["groups"].discard(h["gid"])
        net = self.nets.get(str(h["gid"]).split(".")[0])
        g = net.groups.get(h["gid"]) if net else None
        if g is not None and g["pid"] == h["pid"] and g["worker"] == wid:  # only the worker that runs it
            self.group_lost(net, [h["gid"]], f"{net.describe(h['gid'])} exited with code {h['code']}")

    def lose_worker(self, wid, why):
        self.workers.pop(wid)
        log.warning("%s", why)
        for net in list(self.nets.values()):
            gone = [gid for gid, g in net.groups.items() if g["worker"] == wid]
            if gone:
                self.group_lost(net, gone, why)

    def group_lost(self, net, gids, why):
        """Groups are gone: rebuild them and replay, or, when that cannot be, fail the network."""
        net.note("lost", pids={gid: net.groups[gid]["pid"] for gid in gids}, why=why)
        for gid in gids:
            net.groups[gid]["alive"] = False
        log.warning("network %s: %s", net.id, why)
        if net.state in (State.FAILED, State.DROPPED):
            return
        if net.snapshot is None or not self.workers:
            return self.break_net(net, why if self.workers else f"{why}; no worker is left to restart it")
        interrupted = sorted((j for j in net.jobs if not isinstance(j, Recover)), key=lambda j: j.serial)
        if net.recovering is not None:  # a failure during recovery: start it over
            interrupted = net.recovering.interrupted
            net.recovering.end()
        for job in interrupted:
            net.jobs.discard(job)  # out of the way of the recovery's events; back when restarted
        Recover(self.ports, net, why, interrupted).begin()

    def abandon_step(self, net, why):
        """A step id was handed out and its backward will never be sent whole: groups
        wait for it, and some may hold half of it. Rebuild the network's state from
        the snapshot and the log, which holds whole steps only (recovery.py)."""
        if not net.failed and self.nets.get(net.id) is net:
            self.group_lost(net, [], why)

    def respawn(self, net, gid):
        """Start group gid again: on its worker if that lives, else where its planned memory
        fits with the most room left, or (no budgets) on the least loaded worker."""
        g = net.groups[gid]
        if g["worker"] not in self.workers:
            wid = budgets.roomiest(self.workers, self.nets.values(), g.get("planned", 0)) or min(
                self.workers, key=lambda w: len(self.workers[w]["groups"]) / self.workers[w]["slots"])
            w = self.workers[wid]
            g.update(worker=wid, worker_name=w["name"], host=w["host"], key=w["key"])
        self.workers[g["worker"]]["groups"].add(gid)
        g.update(pid=None, endpoints={}, snaps=set(), holds=set())  # a new process holds no snapshot
        old = net.push.pop(gid, None)
        if old is not None:
            old.close()
        self.spawn_group(net, gid)

    def spawn_group(self, net, gid):
        """Ask group gid's worker to start its process."""
        g = net.groups[gid]
        config = {"net": net.id, "gid": gid, "layer": g["layer"], "lo": g["lo"], "hi": g["hi"],
                  "dtype": net.spec.dtype, "token": net.token}
        self.send_worker(g["worker"], {"k": wire.SPAWN, "config": config})

    def run_deferred(self, net):
        """Requests that waited while the network was recovering or being snapshotted."""
        while net.deferred and not net.waits():
            op, client, h, arrays = net.deferred.popleft()
            self.dispatch(op, client, h, arrays)

    def break_net(self, net, why):
        """The network cannot answer until it is built again: fail it, every job on it
        (those a recovery had set aside too), and every request that waited."""
        if net.life.can(Event.FAILED):
            net.life.fire(Event.FAILED, why)
        self.end_work(net, f"network {net.id} failed: {why}")

    def end_work(self, net, why):
        for job in [j for j in list(self.ports.jobs) if j.net is net]:
            job.fail(why)
        while net.deferred:
            _, client, h, _ = net.deferred.popleft()
            self.reply(client, h.get("id"), ok=False, error=why)

    def hello(self, net, h, arrays):
        g = net.groups[h["gid"]]
        if g["pid"] is not None and g["pid"] != h["pid"] and g["alive"]:
            return  # not the process we started for this group
        g["pid"], g["endpoints"], g["alive"], g["heard"] = h["pid"], h["endpoints"], True, time.monotonic()
        g["attached"] = True
        self.dial_group(net, h["gid"])
        for job in list(net.jobs):
            job.on_hello(h["gid"])

    def rebroker(self, net, gid):
        """After a failover: tell live group gid where this broker's inbox is; it says hello there."""
        if gid not in net.push:
            self.dial_group(net, gid)
        host = self.host
        seen_as = self.paired.pair.seen_as
        if host in ("0.0.0.0", "*", "::") and seen_as:  # bound to every interface: the name the peer uses
            host = sockets.host_of(seen_as)
        self.flow.to_group(net, gid, {"k": wire.REBROKER, "tcp": f"tcp://{host}:{self.inbox_port}",
                                      "ipc": self.inbox_ipc, "host": self.host})

    def dial_group(self, net, gid):
        """(Re)connect the broker's socket to group gid, at the endpoints it said hello with."""
        g = net.groups[gid]
        old = net.push.pop(gid, None)
        if old is not None:
            old.close()
        net.push[gid] = sockets.make(self.ctx, zmq.PUSH, keys=self.keys, dial=g["key"],
                                     connect=sockets.nearest(g["endpoints"]["tcp"], g["endpoints"].get("ipc"),
                                                             g["host"] == self.host))

    def group_beat(self, net, h, arrays):
        g = net.groups[h["gid"]]
        if g["pid"] == h.get("pid"):
            g["heard"] = time.monotonic()
            g["msgs"], g["applied"] = h.get("msgs"), h.get("applied")  # for the dashboard
            waits = h.get("waits")
            if type(waits) is int and waits > net.step:  # for a step never handed out: nothing will free it
                self.flow.to_group(net, h["gid"], {"k": wire.PURGE, "beyond": net.step, "gen": net.gen})

    def ready(self, net, h, arrays):
        if h.get("restored") is not None:  # it holds that snapshot as its own copy again
            net.groups[h["gid"]]["snaps"].add(h["restored"])
        for job in list(net.jobs):
            job.on_ready(h["gid"])

    def snapped(self, net, h, arrays):
        """A group copied its state as snapshot h["snap"]; it keeps that and the whole one only."""
        g = net.groups[h["gid"]]
        g["snaps"] = {i for i in g["snaps"] if i == h.get("whole")} | {h["snap"]}
        g["kept_bytes"] = h.get("bytes")  # on its worker's disk: status shows the disk measured
        for job in list(net.jobs):
            job.on_snapped(h["gid"], h)

    def kept(self, net, h, arrays):
        """Group h["gid"] keeps the replica of group h["of"]'s snapshot h["snap"] (and the whole one)."""
        if h.get("of") not in net.groups:
            return
        g = net.groups[h["gid"]]
        g["holds"] = {(of, i) for of, i in g["holds"] if of != h["of"] or i == h.get("whole")} | {
            (h["of"], h["snap"])}
        for job in list(net.jobs):
            job.on_kept(h["of"], h)

    def keep(self, net, h, arrays):
        """The replica of a network of one group, which has no other process to keep it."""
        if len(net.groups) != 1 or h.get("of") != h["gid"]:
            return
        net.broker_replica = {i: r for i, r in net.broker_replica.items() if i == h.get("whole")}
        net.broker_replica[int(h["snap"])] = ({"of": h["of"], "snap": int(h["snap"]), "step": h["step"],
                                               "optimizer": h["optimizer"]}, [a.copy() for a in arrays])
        for job in list(net.jobs):
            job.on_kept(h["of"], h)

    def state(self, net, h, arrays):
        for job in list(net.jobs):
            job.on_state(h["gid"], h, arrays)

    # -- building networks -------------------------------------------------
    def build(self, client, req, spec, timeout, layers=None, optimizer=None, encoder=None, pins=None,
              plan_for=memory.PLAN_OPTIMIZER):
        """Place a network's groups on the workers (within their memory budgets, or
        refused with the numbers before any process starts), spawn them, and start
        the Create job. plan_for: the optimizer its memory is planned for."""
        inputs = len(encoder.keys) if encoder is not None else 0
        where = plan(spec, inputs, window_for(spec.sizes, spec.dtype), plan_for, budgets.hosts(self.workers, self.nets.values()),
                     pins or {})
        self.made["net"] += 1
        net = Network(f"n{self.made['net']}", spec, encoder, plan_for=plan_for)
        for layer, lo, hi, wid in where:
            index = len(net.layers[layer])
            gid = f"{net.id}.{layer + 1}.{index}"
            net.layers[layer].append(gid)
            w = self.workers[wid]
            net.groups[gid] = {"gid": gid, "layer": layer, "index": index, "lo": lo, "hi": hi, "worker": wid,
                               "worker_name": w["name"], "host": w["host"], "key": w["key"], "pid": None,
                               "endpoints": {}, "alive": False, "heard": 0.0,
                               "snaps": set(), "holds": set()}  # snapshots it holds: its own, others' replicas
        budgets.check(self.workers, self.nets.values(), net, "its snapshots", kinds=("disk",))  # before it starts
        for g in net.groups.values():
            self.workers[g["worker"]]["groups"].add(g["gid"])
        self.nets[net.id] = net
        budgets.replan(net)
        return Create(self.ports, net, client, req, timeout, layers, optimizer).begin()

    def wire_up(self, net, layers=None, optimizer=None, restore=False):
        """Every group has said hello: send each its neighbours and its weights (a
        loaded network's), or how to draw them (a new one's), or, when restoring,
        where its state is: its own snapshot, or its keeper's replica. The plan is made
        now; its messages go a slice of each round of the loop (Broker.work), so that
        wiring hundreds of groups never holds the loop (the groups answer READY)."""
        net.all_steps_done()
        records = [[net.groups[g] for g in gids] for gids in net.layers]
        plan, holders = restore_plan(net, [g for layer in records for g in layer]) if restore else ({}, {})
        # a new process's keeper is the group that holds its replica
        setups = wiring(records, holders, net.spec.inputs, net.layer1_width)
        self.pending.append(self.setups(net, net.gen, setups, plan, layers, optimizer, restore))

    def setups(self, net, gen, setups, plan, layers, optimizer, restore):
        """wire_up's messages, one group's at a time; they stop if the network is dropped or
        rebuilt meanwhile (a recovery wires it anew)."""
        spec = net.spec
        drawn = spec.to_dict()  # what a new network's groups draw their rows from
        for layer, gids in enumerate(net.layers):
            fan_in = spec.fan_in(layer, net.layer1_width)
            meta, slots = optimizer[layer] if optimizer else ({}, [])
            for gid in gids:
                if self.nets.get(net.id) is not net or net.gen != gen:
                    return
                g = net.groups[gid]
                header = {"k": wire.SETUP, "function": spec.hidden_function(layer), "gen": net.gen,
                          "applied": net.step, **setups[gid]}
                if restore:
                    self.flow.to_group(net, gid, dict(header, restore=plan[gid]))
                    if plan[gid].get("from") == "broker":
                        replica_header, arrays = net.broker_replica[plan[gid]["snap"]]
                        self.flow.to_group(net, gid, dict(replica_header, k=wire.REPLICA), arrays)
                elif layers is None:  # a new network: each group draws its own rows from the seed
                    self.flow.to_group(net, gid, dict(header, init={"spec": drawn, "fan_in": fan_in}))
                else:  # a loaded one: the file's weights, a group's rows at a time
                    W, b = layers[layer]
                    arrays = [W[g["lo"]:g["hi"]], b[g["lo"]:g["hi"]]]
                    self.flow.to_group(net, gid, header, arrays)
                    if meta.get("has_slots"):
                        sl = [s[g["lo"]:g["hi"]] for s in slots]
                        self.flow.to_group(net, gid, {"k": wire.SET, "optimizer": meta}, arrays + sl)
                yield

    def work(self):
        """Pending work (the messages of a wiring), for a slice of this round at most."""
        deadline = time.monotonic() + WORK_SLICE
        while self.pending and time.monotonic() < deadline:
            try:
                next(self.pending[0])
            except StopIteration:
                self.pending.popleft()
            except Exception:
                log.exception("a wiring failed")
                self.pending.popleft()

    def encode(self, net, h, arrays, grow=True, strict=True, keep_rows=False):
        """Rows of a request -> the input matrix, growing layer 1 for new columns first.
        keep_rows: also the rows as they came, for encode_again."""
        rows = table.to_table(h, arrays)
        M, _ = self.encode_rows(net, rows, grow, strict, h.get("learn"))
        return (M, rows) if keep_rows else M

    def encode_again(self, net, rows):
        """Rows a remembered predict left unseen values of, encoded now that a step trains on
        them: layer 1 grows for them. -> (matrix, columns added)."""
        return self.encode_rows(net, rows, grow=True, strict=False, learn=None)

    def encode_rows(self, net, rows, grow, strict, learn):
        X, S, strings = rows
        before = net.inputs
        kept = net.encoder.to_dict() if grow and budgets.budgeted(self.workers, net) else None
        M, added = net.encoder.encode(X, S, strings, grow=grow, strict=strict, learn=learn, dtype=net.spec.dtype)
        if added and kept is not None:  # layer 1 grows: within its workers' budgets, or not at all
            try:
                budgets.check(self.workers, self.nets.values(), net,
                              f"growing layer 1 from {before} to {net.inputs} inputs", inputs=net.inputs)
            except ValueError:
                net.encoder = Encoder.from_dict(kept)
                raise
        if added:
            # the first inputs are drawn from the seed, by each group that reads the rows for its own rows;
            # later ones start at 0
            grow = {"k": wire.GROW, "cols": added, "init": net.spec.to_dict() if before == 0 else None}
            net.log.append(("grow", grow))
            net.layer1_width += added
            for gid, _ in net.row_readers():  # every layer that reads the rows grows
                self.flow.to_group(net, gid, grow)
            budgets.replan(net)
        return M, added

    def stop_net(self, net):
        self.nets.pop(net.id, None)  # first: the jobs failed below must not try to recover it
        for gid in net.groups:
            if gid in net.push:
                self.flow.to_group(net, gid, {"k": wire.STOP})
        self.end_work(net, f"network {net.id} was dropped")
        net.life.fire(Event.DROPPED)
        for sock in net.push.values():
            sock.close()
        for g in net.groups.values():
            if g["worker"] in self.workers:
                self.workers[g["worker"]]["groups"].discard(g["gid"])

    def end_net(self, net):
        """Drop a network and have its workers end every process of it, started or starting
        (those that never said hello have no socket a STOP could go to)."""
        self.stop_net(net)
        for gid, g in net.groups.items():
            if g["worker"] in self.workers:
                self.send_worker(g["worker"], {"k": wire.KILL, "gid": gid, "sig": 9})

    def status(self):
        return requests.status_of(self)

    def budgets_of(self, wid):
        """A worker's memory and disk: budget, planned and measured (status, the dashboard)."""
        return {"memory": budgets.status(self.workers, self.nets.values(), wid),
                "disk": budgets.disk_status(self.workers, self.nets.values(), wid)}

    def checkpoint_file(self, name):
        """Where a client's checkpoint goes: a plain file name, inside this broker's checkpoint folder only."""
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):  # no folders, no ..
            raise ValueError(f"checkpoint name {name!r}: use letters, digits, '.', '_' or '-' "
                             f"(it is written inside the broker's folder {self.checkpoint_dir})")
        os.makedirs(self.checkpoint_dir, mode=0o700, exist_ok=True)
        return os.path.join(self.checkpoint_dir, name)


def _budget(value):
    """A worker's memory budget from its REGISTER: positive bytes, or None (no budget)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class BindError(RuntimeError):
    """The broker's address cannot be bound (in use, or not this host's)."""


def main(bind, keys=None, checkpoint_dir=None, dashboard=None, peer=None, primary=False, pair_secret=None,
         heartbeat_expiry=None):
    """dashboard: where to serve it (a dashboard.Listen), or None for none.
    peer: the other broker's client address, for a pair (pair.py); primary: this one starts active."""
    try:
        broker = Broker(bind, keys=keys, checkpoint_dir=checkpoint_dir, peer=peer, primary=primary,
                        pair_secret=pair_secret, heartbeat_expiry=heartbeat_expiry)
    except zmq.ZMQError as e:
        raise BindError(f"cannot listen on {bind}: {e}") from None
    print(f"mesh broker listening on {broker.address}", flush=True)
    if dashboard is not None:
        try:
            broker.dashboard = Dashboard(dashboard, broker)
        except OSError as e:
            broker.close()
            raise BindError(f"cannot serve the dashboard on {dashboard.host}:{dashboard.port}: {e.strerror or e}; "
                            f"choose another with --dashboard ADDR:PORT (port 0: any free one), or --dashboard off")
        print(f"dashboard: {broker.dashboard.url}", flush=True)
    if peer:
        print(f"mesh broker: one of a pair with {peer} ({'primary' if primary else 'backup'})", flush=True)
    try:
        with profiled("broker"):
            broker.run()
    except KeyboardInterrupt:
        pass
    except Fenced as e:
        print(e.code, flush=True)
        raise SystemExit(FENCED_EXIT) from None
    finally:
        broker.close()
