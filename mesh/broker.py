"""The broker: the one address clients and workers know.

It keeps the registry of workers and networks, places groups on workers and
wires them, feeds rows into layer 1, gathers the last layer, computes the
loss and the output gradient, and answers clients. It never touches a
hidden layer: activations and gradients flow group to group.

One loop shape: poll (never forever), handle one message, then expire
late jobs and silent workers and send due heartbeats."""
import itertools
import logging
import os
import re
import tempfile
import time
from urllib.parse import urlparse

import numpy as np
import zmq

from . import heartbeat, jobs, sockets, table, wire
from .checkpoint import pack_state
from .dashboard import Dashboard
from .lifecycle import profiled
from .network import Network
from .placement import cross_host_links, place_pinned, wiring
from .spec import Spec, initial_layer

log = logging.getLogger("mesh.broker")
DEFAULT_TIMEOUT = 60.0
TICK = 0.05  # seconds between checks of deadlines and heartbeats
DEFAULT_CHECKPOINT_DIR = os.path.join(tempfile.gettempdir(), "neuromesh-checkpoints")
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ORDERED = {wire.GROW, wire.GET, wire.SET, wire.OPTIM}  # they see every step sent before them (group.py)
WAITS_FOR_RECOVERY = {wire.PREDICT, wire.BACKPROP, wire.TRAIN, wire.WEIGHTS, wire.SAVE, wire.SET_WEIGHTS}


class Broker:
    def __init__(self, bind="tcp://127.0.0.1:5555", ctx=None, keys=None, checkpoint_dir=None):
        self.ctx = ctx or zmq.Context()
        self.checkpoint_dir = os.path.abspath(checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
        self.keys = keys
        if keys is not None:
            keys.start_authenticator(self.ctx)
        self.front = sockets.make(self.ctx, zmq.ROUTER, bind=bind, keys=keys, serve="front")
        self.front.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a worker that reconnects keeps its identity
        self.address = sockets.bound_endpoint(self.front)
        host = urlparse(self.address.replace("tcp://", "http://")).hostname
        self.inbox = sockets.make(self.ctx, zmq.PULL, keys=keys, serve="mesh")
        self.inbox_port = self.inbox.bind_to_random_port(f"tcp://{host}")
        self.host = host
        self.inbox_ipc = sockets.abstract_ipc("broker")  # for groups on this host
        self.inbox.bind(self.inbox_ipc)
        self.workers = {}        # identity -> record
        self.nets = {}
        self.jobs = set()
        self.worker_names = (f"w{i}" for i in itertools.count(1))
        self.net_ids = (f"n{i}" for i in itertools.count(1))
        self.client_ops = {wire.CREATE: self.create, wire.PREDICT: self.predict, wire.BACKPROP: self.backprop,
                           wire.TRAIN: self.train, wire.WEIGHTS: self.weights, wire.SAVE: self.save, wire.SET_WEIGHTS: self.set_weights,
                           wire.LOAD: self.load, wire.PROCESSES: self.processes, wire.STATUS: self.status,
                           wire.DROP: self.drop}
        self.worker_ops = {wire.REGISTER: self.register, wire.HEARTBEAT: self.worker_beat,
                           wire.SPAWNED: self.spawned, wire.EXITED: self.exited}
        self.inbox_ops = {wire.HELLO: self.hello, wire.HEARTBEAT: self.group_beat, wire.READY: self.ready, wire.OUT: self.out,
                          wire.DONE: self.done, wire.STATE: self.state, wire.FAULT: self.fault}
        self.running = True
        self.dashboard = None  # main() starts it; tick() offers it the state, at a rate it bounds

    # -- the loop --------------------------------------------------------
    def run(self):
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        next_tick = 0.0
        while self.running:
            events = dict(poller.poll(TICK * 1000))
            t = time.monotonic()
            if self.inbox in events:
                for _ in range(256):  # drain the data path first: it unblocks the mesh
                    if not self.inbox.get(zmq.EVENTS) & zmq.POLLIN:
                        break
                    self.on_inbox()
                if time.monotonic() - t > TICK:
                    self.heartbeat_workers()
            t_inbox = time.monotonic() - t
            if self.front in events:
                self.on_front()
            now = time.monotonic()
            if now >= next_tick:  # deadlines and heartbeats: a few times a second is plenty
                self.tick()
                next_tick = now + TICK
            if time.monotonic() - t > 1.0:  # the loop must come round every heartbeat; say when it does not
                log.warning("broker loop took %.1fs (inbox %.1fs)", time.monotonic() - t, t_inbox)

    def close(self):
        for net in list(self.nets.values()):
            self.stop_net(net)
        # workers are not told to stop: they reconnect to the next broker, which ends what they still run
        if self.dashboard is not None:
            self.dashboard.close()
        if self.keys is not None:
            self.keys.stop()
        self.ctx.destroy(linger=0)

    def tick(self):
        now = time.monotonic()
        for job in [j for j in self.jobs if j.deadline < now]:
            try:
                job.expire()
            except Exception:
                log.exception("a job failed to expire cleanly")
                job._end()
        backlog = self.front.poll(0)  # unread messages may hold the heartbeats that keep a worker alive
        for wid, w in list(self.workers.items()):
            if w["peer"].expired() and not backlog:
                self.lose_worker(wid, f"worker {w['name']} on {w['host']} stopped answering heartbeats")
        self.heartbeat_workers()
        if not self.inbox.poll(0):  # likewise for the groups' heartbeats
            for net in list(self.nets.values()):
                silent = [gid for gid, g in net.groups.items()
                          if g["alive"] and g["pid"] and now - g["heard"] > heartbeat.EXPIRY]
                for gid in silent:  # alive but stuck (stopped, wedged): end it, then rebuild
                    g = net.groups[gid]
                    self._send_worker(g["worker"], {"k": wire.KILL, "gid": gid, "pid": g["pid"], "sig": 9})
                if silent and net.error is None:
                    self.group_lost(net, silent, f"{net.describe(silent[0])} stopped answering heartbeats")
        if self.dashboard is not None:
            self.dashboard.offer(self)

    def heartbeat_workers(self):
        """Due heartbeats out; also called inside long work, so workers never think us gone."""
        for wid, w in self.workers.items():
            if w["peer"].due():
                self._send_worker(wid, {"k": wire.HEARTBEAT})

    def on_front(self):
        try:
            ident, key, h, arrays = sockets.recv_with_key(self.front, keyed=self.keys is not None)
        except wire.WireError as e:
            log.warning("refused a malformed message: %s", e)
            if e.identity is not None:
                self.reply(e.identity, None, ok=False, error=f"malformed message: {e}")
            return
        k = h["k"]
        is_mesh = self.keys is None or self.keys.is_mesh(key)  # with keys, a client's key cannot act as a worker
        if k in self.worker_ops and is_mesh and (k == wire.REGISTER or ident in self.workers):
            try:
                if ident in self.workers:
                    self.workers[ident]["peer"].heard_now()
                self.worker_ops[k](ident, h)
            except Exception as e:  # a worker's bad message is logged, never fatal
                log.warning("refused a worker message %r: %s", k, e)
            return
        self.dispatch(k, ident, h, arrays)

    def dispatch(self, k, client, h, arrays):
        """Run one client request; one for a network that is recovering waits until it is whole."""
        try:
            op = self.client_ops.get(k)
            if op is None:
                raise ValueError(f"unknown request {k!r}")
            net = self.nets.get(h.get("net")) if k in WAITS_FOR_RECOVERY else None
            if net is not None and (net.recovering is not None or net.paused):
                net.deferred.append((k, client, h, arrays))
                return
            op(client, h, arrays)
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
            log.warning("refused a malformed inbox message: %s: %s", type(e).__name__, e)

    # -- replies and sends -------------------------------------------------
    def reply(self, client, req, arrays=(), **fields):
        """Never blocks: a client that is gone, or not reading, loses its reply rather than stalling the mesh."""
        try:
            sockets.send(self.front, {"k": wire.REPLY, "id": req, **fields}, arrays, identity=client,
                         flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.info("could not reply to a client: %s", e)

    def to_group(self, net, gid, header, arrays=()):
        header = dict(header, net=net.id, tok=net.token)
        if header["k"] in ORDERED:
            header["after"] = net.sent.done
        try:
            sockets.send(net.push[gid], header, arrays)
        except (zmq.Again, KeyError):  # no connection to it (gone, or refusing our key): treat it as lost
            if net.groups[gid]["alive"]:
                self.group_lost(net, [gid], f"{net.describe(gid)} cannot be reached")

    def _send_worker(self, wid, header):
        try:
            sockets.send(self.front, header, identity=wid, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # -- workers -----------------------------------------------------------
    def register(self, wid, h):
        if wid not in self.workers:
            name = next(self.worker_names)
            self.workers[wid] = {"name": name, "host": str(h["host"]), "hostname": str(h.get("hostname", "")),
                                 "key": h.get("key"),
                                 "slots": max(1, int(h.get("slots") or 1)), "pid": h.get("pid"), "peer": heartbeat.Peer(),
                                 "groups": set()}
            log.info("worker %s joined from %s (%s slots)", name, h["host"], h.get("slots"))
        self._send_worker(wid, {"k": wire.WELCOME, "inbox_port": self.inbox_port, "inbox_ipc": self.inbox_ipc})
        for gid, pid in dict(h.get("groups") or {}).items():  # back after we gave it up: end what it still runs
            net = self.nets.get(str(gid).split(".")[0])
            g = net.groups.get(gid) if net else None
            if g is None or g["pid"] != pid or g["worker"] != wid:
                self._send_worker(wid, {"k": wire.KILL, "gid": gid, "pid": pid})

    def worker_beat(self, wid, h):
        """Its own and its groups' CPU and memory, kept for the dashboard."""
        self.workers[wid]["usage"] = h.get("usage")
        for gid, use in dict(h.get("groups") or {}).items():
            net = self.nets.get(str(gid).split(".")[0])
            g = net.groups.get(gid) if net else None
            if g is not None and g["worker"] == wid:
                g["usage"] = use

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
        if net.error is not None:
            return
        if net.snapshot is None or not self.workers:
            return self.break_net(net, why if self.workers else f"{why}; no worker is left to restart it")
        from .recovery import Recover
        interrupted = sorted((j for j in net.jobs if not isinstance(j, Recover)), key=lambda j: j.serial)
        if net.recovering is not None:  # a failure during recovery: start it over
            interrupted = net.recovering.interrupted
            net.recovering._end()
        for job in interrupted:
            net.jobs.discard(job)  # out of the way of the recovery's events; back when restarted
        Recover(self, net, why, interrupted)

    def abandon_step(self, net, why):
        """A step id was handed out and its backward will never be sent whole: groups
        wait for it, and some may hold half of it. Rebuild the network's state from
        the snapshot and the log, which holds whole steps only (recovery.py)."""
        if net.error is None and self.nets.get(net.id) is net:
            self.group_lost(net, [], why)

    def respawn(self, net, gid):
        """Start group gid again: on its worker if that lives, else on the least loaded one."""
        g = net.groups[gid]
        if g["worker"] not in self.workers:
            wid = min(self.workers, key=lambda w: len(self.workers[w]["groups"]) / self.workers[w]["slots"])
            w = self.workers[wid]
            g.update(worker=wid, worker_name=w["name"], host=w["host"], key=w["key"])
        self.workers[g["worker"]]["groups"].add(gid)
        g.update(pid=None, endpoints={})
        old = net.push.pop(gid, None)
        if old is not None:
            old.close()
        self.spawn_group(net, gid)

    def spawn_group(self, net, gid):
        """Ask group gid's worker to start its process."""
        g = net.groups[gid]
        config = {"net": net.id, "gid": gid, "layer": g["layer"], "lo": g["lo"], "hi": g["hi"],
                  "dtype": net.spec.dtype, "token": net.token}
        self._send_worker(g["worker"], {"k": wire.SPAWN, "config": config})

    def run_deferred(self, net):
        """Requests that waited while the network was recovering or being snapshotted."""
        while net.deferred and net.recovering is None and not net.paused:
            op, client, h, arrays = net.deferred.popleft()
            self.dispatch(op, client, h, arrays)

    def break_net(self, net, why):
        """A group is gone: the network cannot answer until it is rebuilt."""
        if net.error is None:
            net.error = why
        for job in list(net.jobs):
            job.fail(f"network {net.id} failed: {why}")

    # -- the data path -----------------------------------------------------
    def submit(self, net, p):
        if p.after is None:
            p.after = net.step
        net.passes[p.seq] = p
        net.queue.append(p)
        self.pump(net)

    def pump(self, net):
        """Send queued passes, within the window. A pass goes only once the step it
        follows has been sent: its forward then waits in the groups for the update,
        never ahead of a predict that step still needs."""
        while net.queue and net.in_flight < net.window:
            p = net.queue.pop_ready(lambda p: p.after <= net.sent.done)
            if p is None:
                break
            p.in_flight = True
            net.in_flight += 1
            net.entered += 1
            p.entered = net.entered
            X = p.X.astype(net.spec.dtype, copy=False)
            if X.shape[1] < net.layer1_width:  # encoded before layer 1 grew: the new columns are zero
                X = np.concatenate([X, np.zeros((len(X), net.layer1_width - X.shape[1]), X.dtype)], axis=1)
            header = {"k": wire.FWD, "seq": p.seq, "src": 0, "keep": p.keep, "gen": net.gen, "after": p.after}
            if p.drop:
                header["drop"] = p.drop
            if p.head:
                header["head"] = True
                self.send_targets(net, p)
            for gid in net.first():
                self.to_group(net, gid, header, [X])

    def send_targets(self, net, p):
        """A training pass's targets to the output groups, which then compute its loss themselves."""
        header = {"k": wire.TARGET, "seq": p.seq, "gen": net.gen, "step": p.step, "of": p.of, "lr": float(p.lr),
                  "ack": p.ack, "rows": p.batch_rows, "output": net.spec.output, "loss": net.spec.loss}
        for gid in net.last():
            g = net.groups[gid]
            self.to_group(net, gid, header, [p.T[:, g["lo"]:g["hi"]]])

    def finish_pass(self, net, p, forget):
        if p.in_flight:
            p.in_flight = False
            net.in_flight -= 1
            self.pump(net)
        if forget:
            net.passes.pop(p.seq, None)

    def send_backward(self, net, p, dz, step, of, lr, ack=True):
        """Hand the output groups their slices of dL/dz for pass p. With ack, layer 1
        reports DONE and p's job hears it; without, p leaves the window now (the
        groups order what follows it, see group.py)."""
        header = {"k": wire.BWD, "seq": p.seq, "src": 0, "step": step, "of": of, "lr": float(lr), "gen": net.gen,
                  "ack": ack}
        p.dones = 0
        for gid in net.last():
            g = net.groups[gid]
            self.to_group(net, gid, header, [dz[:, g["lo"]:g["hi"]]])
        if not ack:
            self.finish_pass(net, p, forget=True)

    def out(self, net, h, arrays):
        p = net.passes.get(h["seq"])
        if p is None:
            return
        p.parts[h["src"]] = arrays[0]
        if "loss" in h:
            p.loss += float(h["loss"])
        if len(p.parts) == len(net.last()):
            p.z = net.gather(p.parts)
            p.parts = {}
            p.job.on_output(p)

    def done(self, net, h, arrays):
        p = net.passes.get(h["seq"])
        if p is None:
            return
        p.dones += 1
        if p.dones == len(net.first()):
            p.job.on_done(p)

    def fault(self, net, h, arrays):
        seq = h.get("seq")
        p = net.passes.get(seq)
        if seq is not None and p is None:
            if isinstance(h.get("step"), int) and h["step"] > 0:  # the client was answered; the step is half done
                self.abandon_step(net, f"step {h['step']} failed: {h.get('error')}")
            else:
                log.info("fault for a pass no longer here: %s", h.get("error"))
            return
        jobs_hit = [p.job] if p is not None else list(net.jobs)
        for job in jobs_hit:
            if job is not None:
                job.fail(h["error"])
        if p is not None and getattr(p, "step", None) is not None:  # a group may hold half a step
            self.abandon_step(net, f"step {p.step} failed: {h['error']}")

    def hello(self, net, h, arrays):
        g = net.groups[h["gid"]]
        if g["pid"] is not None and g["pid"] != h["pid"] and g["alive"]:
            return  # not the process we started for this group
        g["pid"], g["endpoints"], g["alive"], g["heard"] = h["pid"], h["endpoints"], True, time.monotonic()
        old = net.push.pop(h["gid"], None)
        if old is not None:
            old.close()
        net.push[h["gid"]] = sockets.make(self.ctx, zmq.PUSH, connect=self.endpoint(g, h["endpoints"]), keys=self.keys,
                                          dial=g["key"])
        for job in list(net.jobs):
            job.on_hello(h["gid"])

    def endpoint(self, g, endpoints):
        """Where to reach a group: its unix socket when it runs on this host, else tcp."""
        ipc = endpoints.get("ipc")
        if g["host"] == self.host and sockets.ipc_listening(ipc):
            return ipc
        return endpoints["tcp"]

    def group_beat(self, net, h, arrays):
        g = net.groups[h["gid"]]
        if g["pid"] == h.get("pid"):
            g["heard"] = time.monotonic()
            g["msgs"], g["applied"] = h.get("msgs"), h.get("applied")  # for the dashboard

    def ready(self, net, h, arrays):
        for job in list(net.jobs):
            job.on_ready(h["gid"])

    def state(self, net, h, arrays):
        for job in list(net.jobs):
            job.on_state(h["gid"], h, arrays)

    # -- building networks -------------------------------------------------
    def build(self, client, req, spec, timeout, layers=None, optimizer=None, encoder=None, pins=None):
        """Place a network's groups on the workers, spawn them, and start the Create job."""
        workers = sorted(self.workers.items(), key=lambda kv: int(kv[1]["name"][1:]))
        if not workers:
            raise RuntimeError("no workers have joined the broker; start one with `mesh worker --broker ADDR`")
        groups = spec.groups()
        where = place_pinned(groups, [(wid, w["slots"], w["host"], w["name"]) for wid, w in workers], pins or {})
        net = Network(next(self.net_ids), spec, encoder)
        for (layer, lo, hi), wid in zip(groups, where):
            index = len(net.layers[layer])
            gid = f"{net.id}.{layer + 1}.{index}"
            net.layers[layer].append(gid)
            w = self.workers[wid]
            net.groups[gid] = {"gid": gid, "layer": layer, "index": index, "lo": lo, "hi": hi, "worker": wid,
                               "worker_name": w["name"], "host": w["host"], "key": w["key"], "pid": None,
                               "endpoints": {}, "alive": False, "heard": 0.0}
            w["groups"].add(gid)
        self.nets[net.id] = net
        jobs.Create(self, net, client, req, timeout, layers, optimizer)
        for gid in net.groups:
            self.spawn_group(net, gid)
        return net

    def wire_up(self, net, layers=None, optimizer=None, restore=False):
        """Every group has said hello: send each its weights and its neighbours
        (and, when restoring, its optimizer state, step count included)."""
        spec = net.spec
        net.all_steps_done()
        setups = wiring([[net.groups[g] for g in gids] for gids in net.layers])
        for layer, gids in enumerate(net.layers):
            if layers is not None:
                W, b = layers[layer]
            elif layer == 0:
                W, b = np.zeros((spec.sizes[0], 0), spec.dtype), np.zeros(spec.sizes[0], spec.dtype)
            else:
                W, b = initial_layer(spec, layer, spec.sizes[layer - 1])
            meta, slots = optimizer[layer] if optimizer else ({}, [])
            for gid in gids:
                self.heartbeat_workers()
                g = net.groups[gid]
                header = {"k": wire.SETUP, "function": spec.hidden_function(layer), "gen": net.gen,
                          "applied": net.step, **setups[gid]}
                arrays = [W[g["lo"]:g["hi"]], b[g["lo"]:g["hi"]]]
                self.to_group(net, gid, header, arrays)
                if meta.get("has_slots") or (restore and meta):
                    sl = [s[g["lo"]:g["hi"]] for s in slots]
                    self.to_group(net, gid, {"k": wire.SET, "optimizer": meta}, arrays + sl)

    def encode(self, net, h, arrays, grow=True):
        """Rows of a request -> the input matrix, growing layer 1 for new columns first."""
        X, S, strings = table.to_table(h, arrays)
        before = net.inputs
        M, added = net.encoder.encode(X, S, strings, grow=grow, dtype=net.spec.dtype)
        if added:
            if before == 0:
                W, _ = initial_layer(net.spec, 0, net.inputs)
            else:
                W = np.zeros((net.spec.sizes[0], added), net.spec.dtype)
            net.log.append(("grow", W[:, -added:]))
            net.layer1_width += added
            for gid in net.first():
                g = net.groups[gid]
                self.to_group(net, gid, {"k": wire.GROW}, [W[g["lo"]:g["hi"], -added:]])
        return M

    def stop_net(self, net):
        self.nets.pop(net.id, None)  # first: the jobs failed below must not try to recover it
        for gid in net.groups:
            if gid in net.push:
                self.to_group(net, gid, {"k": wire.STOP})
        for job in list(net.jobs):
            job.fail(f"network {net.id} was dropped")
        for sock in net.push.values():
            sock.close()
        for g in net.groups.values():
            if g["worker"] in self.workers:
                self.workers[g["worker"]]["groups"].discard(g["gid"])
        self.nets.pop(net.id, None)

    def checkpoint_file(self, name):
        """Where a client's checkpoint goes: a plain file name, inside this broker's checkpoint folder only."""
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):  # no folders, no ..
            raise ValueError(f"checkpoint name {name!r}: use letters, digits, '.', '_' or '-' "
                             f"(it is written inside the broker's folder {self.checkpoint_dir})")
        os.makedirs(self.checkpoint_dir, mode=0o700, exist_ok=True)
        return os.path.join(self.checkpoint_dir, name)

    # -- client requests ---------------------------------------------------
    def _net(self, h, ready=True):
        net = self.nets.get(h.get("net"))
        if net is None:
            raise ValueError(f"unknown network {h.get('net')!r}; known: {', '.join(self.nets) or 'none'}")
        if net.error:
            raise RuntimeError(f"network {net.id} failed: {net.error}")
        if ready and not net.created:
            raise RuntimeError(f"network {net.id} is still starting")
        return net

    def _timeout(self, h):
        t = float(h.get("timeout") or DEFAULT_TIMEOUT)
        if not t > 0:
            raise ValueError(f"timeout must be positive, got {t}")
        return t

    def create(self, client, h, arrays):
        spec = Spec(**h["spec"])
        pins = h.get("placement") or {}
        if not isinstance(pins, dict) or not all(str(k).isdigit() and 1 <= int(k) <= len(spec.sizes) for k in pins):
            raise ValueError(f"placement must map layer numbers 1..{len(spec.sizes)} to hosts, got {pins!r}")
        self.build(client, h.get("id"), spec, self._timeout(h), pins={str(k): str(v) for k, v in pins.items()})

    def predict(self, client, h, arrays):
        net = self._net(h)
        chunk = int(h.get("chunk") or 256)
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 row, got {chunk}")
        X = self.encode(net, h, arrays)
        if len(X) == 0:
            raise ValueError("no rows to predict")
        jobs.Predict(self, net, client, h.get("id"), self._timeout(h), X, bool(h.get("keep", True)), chunk)

    def backprop(self, client, h, arrays):
        net = self._net(h)
        if net.trainer is not None:
            raise RuntimeError(f"network {net.id} is training; backprop after it ends")
        lr = float(h["learning_rate"])
        if not np.isfinite(lr) or lr < 0:
            raise ValueError(f"invalid learning rate: {h['learning_rate']}")
        if len(arrays) != 1:
            raise ValueError("backprop needs one array of targets")
        jobs.Backprop(self, net, client, h.get("id"), self._timeout(h), arrays[0], lr)

    def train(self, client, h, arrays):
        from .training import Train
        net = self._net(h)
        if net.trainer is not None:
            raise RuntimeError(f"network {net.id} is already training")
        X = self.encode(net, h, arrays[:-1])
        net.trainer = Train(self, net, client, h.get("id"), self._timeout(h), X, arrays[-1], h.get("options", {}))

    def weights(self, client, h, arrays):
        net = self._net(h)

        def then(job, layers, optim):
            job.reply([a for W, b in layers for a in (W, b)], layers=len(layers), steps=job.steps)
        jobs.Collect(self, net, client, h.get("id"), self._timeout(h), then)

    def set_weights(self, client, h, arrays):
        net = self._net(h)
        if net.trainer is not None:
            raise RuntimeError(f"network {net.id} is training; set weights after it ends")
        n = len(net.spec.sizes)
        if len(arrays) != 2 * n:
            raise ValueError(f"need W and b for each of {n} layers, got {len(arrays)} arrays")
        layers = fitting_layers(net.spec, net.inputs, arrays, finite=True)
        jobs.SetWeights(self, net, client, h.get("id"), self._timeout(h), layers)

    def save(self, client, h, arrays):
        net = self._net(h)

        def then(job, layers, optim):
            meta, arrays = pack_state(net, layers, optim)
            job.reply(arrays, **meta)
        jobs.Collect(self, net, client, h.get("id"), self._timeout(h), then)

    def load(self, client, h, arrays):
        from .encoder import Encoder
        spec = Spec(**h["spec"])
        n = len(spec.sizes)
        if len(arrays) < 2 * n:
            raise ValueError(f"a saved network of {n} layers needs {2 * n} arrays, got {len(arrays)}")
        encoder = Encoder.from_dict(h["encoder"])
        layers = fitting_layers(spec, len(encoder.keys), arrays)
        optimizer, at = [], 2 * n
        for meta in h.get("optimizer", []):
            k = int(meta["slots"])
            optimizer.append((meta, arrays[at:at + k]))
            at += k
        self.build(client, h.get("id"), spec, self._timeout(h), layers, optimizer or None, encoder)

    def processes(self, client, h, arrays):
        net = self._net(h, ready=False)
        self.reply(client, h.get("id"), ok=True, processes=net.records())

    def status(self, client, h, arrays):
        workers = [{"name": w["name"], "host": w["host"], "hostname": w["hostname"], "slots": w["slots"],
                    "pid": w["pid"], "groups": len(w["groups"])} for w in self.workers.values()]
        nets = [{"net": n.id, "sizes": n.spec.sizes, "inputs": n.inputs, "group_size": n.spec.group_size,
                 "groups": len(n.groups), "links": dict(zip(("total", "cross_host"), cross_host_links(
                     [[n.groups[g] for g in gids] for gids in n.layers]))), "state": "failed: " + n.error if n.error else
                 "training" if n.trainer else "ready" if n.created else "starting",
                 "restarts": n.restarts, "last_failure": n.last_failure,
                 "queued": len(n.queue), "in_flight": n.in_flight, "entered": n.entered,
                 "processes": n.records()} for n in self.nets.values()]
        self.reply(client, h.get("id"), ok=True, broker={"address": self.address, "pid": os.getpid()},
                   workers=workers, networks=nets)

    def drop(self, client, h, arrays):
        net = self.nets.get(h.get("net"))
        if net is None:
            raise ValueError(f"unknown network {h.get('net')!r}")
        self.stop_net(net)
        self.reply(client, h.get("id"), ok=True)


def fitting_layers(spec, inputs, arrays, finite=False):
    """[(W, b)] per layer from the first arrays, each checked against the spec (and, if asked, finite)."""
    widths = [inputs] + spec.sizes[:-1]
    layers = [(arrays[2 * i], arrays[2 * i + 1]) for i in range(len(spec.sizes))]
    for i, ((W, b), size, fan_in) in enumerate(zip(layers, spec.sizes, widths)):
        bad_values = finite and not (np.isfinite(W).all() and np.isfinite(b).all())
        if W.shape != (size, fan_in) or b.shape != (size,) or bad_values:
            raise ValueError(f"layer {i + 1}: weights {list(W.shape)} and bias {list(b.shape)} do not fit a layer "
                             f"of {size} neurons with {fan_in} inputs" + (" (or are not finite)" if finite else ""))
    return layers


class BindError(RuntimeError):
    """The broker's address cannot be bound (in use, or not this host's)."""


def main(bind, keys=None, checkpoint_dir=None, dashboard=None):
    """dashboard: where to serve it (a dashboard.Listen), or None for none."""
    try:
        broker = Broker(bind, keys=keys, checkpoint_dir=checkpoint_dir)
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
    try:
        with profiled("broker"):
            broker.run()
    except KeyboardInterrupt:
        pass
    finally:
        broker.close()
