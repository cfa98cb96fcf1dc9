"""A neuron group process: one slice of one layer.

It binds one PULL inbox (ipc for neighbours on this host, tcp for the rest)
and holds one PUSH socket per neighbour. Forward: it waits for its part of
pass `seq` from every upstream group (the fan-in), computes its activations
and pushes them to every downstream group. Backward: it sums the dL/da slices
from every downstream group, accumulates its gradient, pushes each upstream
group its slice of dL/dx, and applies the step once it has seen every pass of
that step. Layer 1 reports DONE to the broker instead of pushing further.

Training passes whose targets the broker sends along (TARGET) do not go back
to the broker for their loss: the output group computes the loss and dL/dz of
its slice (head.py, the broker's own maths), reports the loss, and starts the
backward at once.

Ordering: a message from the broker that must see the weights after step s
(a forward, or a read or change of state) carries "after": s. It waits here,
in arrival order, until this group has applied every step up to s. So the
broker can send the next step's rows, or answer a backprop, without waiting
for the last group to finish the step before: the order is kept where the
weights are. Every step id the broker hands out is applied everywhere, or
the broker rebuilds the network's state (recovery.py).
"""
import logging
import os

import numpy as np
import zmq

from . import heartbeat, sockets, wire
from .bounded import Bounded
from .faults import Faults
from .head import loss_and_grad
from .keeper import Keeper
from .lifecycle import profiled
from .neurons import Neurons
from .optim import Optimizer
from .pulse import Pulse
from .security import Keys
from .spec import LOSSES, OUTPUTS, Spec, initial_rows
from .steps import Watermark

log = logging.getLogger("mesh.group")
MAX_HELD = 10_000  # passes kept for a backward that may never come (predict then no backprop)
MAX_AHEAD = 1024  # steps a message may wait for beyond the last applied; the broker keeps far fewer on their way
MAX_FETCHES = 64  # fetches kept until this group's own setup of their generation comes
# Clients that predict under a lease (direct.py): what they can make a group hold is bounded by these
# three, MAX_CLIENTS x CLIENT_HWM x MAX_ANSWER = 64 MiB of queued answers at most.
MAX_CLIENTS = 8   # sockets kept open to them (the least recent close)
CLIENT_HWM = 32   # answers queued for one client (4 of its windows): one that stops reading loses them, never blocks
MAX_ANSWER = 256 * 1024  # bytes of one answer; a bigger pass is refused (STALE) and goes through the broker
MAX_DIRECT = 256  # parts of clients' passes kept while their other parts come (a client has 8 on their way)


class Group:
    def __init__(self, ctx, config):
        self.cfg = config
        self.net, self.gid, self.layer = config["net"], config["gid"], config["layer"]
        self.token = config["token"]  # every message of this network carries it; others are dropped unread
        self.ptok = wire.predict_token(self.token)  # ...or this one, on a client's forward pass (direct)
        self.dtype = np.dtype(config["dtype"])
        self.keys = keys = Keys.from_env("worker")  # a group speaks with its worker's keys
        if keys is not None:
            keys.start_authenticator(ctx)
        self.inbox = sockets.make(ctx, zmq.PULL, keys=keys, serve="mesh")
        self.endpoints = {}
        if config.get("ipc_dir"):
            addr = f"ipc://{config['ipc_dir']}/{self.gid}-{os.getpid()}"  # abstract: unique per process
            self.inbox.bind(addr)
            self.endpoints["ipc"] = addr
        port = self.inbox.bind_to_random_port(f"tcp://{config['listen']}")
        self.endpoints["tcp"] = f"tcp://{config['advertise']}:{port}"
        self.broker_inbox = config["broker_inbox"]  # its heartbeats go there too (pulse.py)
        self.broker = sockets.make(ctx, zmq.PUSH, connect=self.broker_inbox, keys=keys,
                                   dial=keys and keys.broker_public)
        self.ctx = ctx
        self.neurons = None
        self.down, self.up = [], []   # [(socket, lo, hi)]: where forward and backward go
        # What peers' messages fill, each within a count and a byte budget (bounded.py):
        budget = sockets.store_bytes()
        self.fwd_parts = Bounded(f"group {self.gid}: forward parts", MAX_HELD, budget)  # seq -> {src: part}
        self.bwd_parts = Bounded(f"group {self.gid}: backward parts", MAX_HELD, budget)
        self.direct_parts = Bounded(f"group {self.gid}: clients' parts", MAX_DIRECT, budget)  # never the broker's
        self.held = Bounded(f"group {self.gid}: passes held", MAX_HELD, budget)  # seq -> (x, a) for the backward
        self.targets = Bounded(f"group {self.gid}: targets", MAX_HELD, budget)  # seq -> what came first of a
        self.outputs = Bounded(f"group {self.gid}: outputs", MAX_HELD, budget)  # training pass's targets, output
        self.waiting = Bounded(f"group {self.gid}: waiting", MAX_HELD, budget)  # n -> (header, arrays) after a step
        self.fetches = Bounded(f"group {self.gid}: fetches", MAX_FETCHES, MAX_FETCHES * 1024)
        self.received = 0             # messages read: numbers the waiting ones, in the order they came
        self.step_counts = {}         # step id -> passes of that step seen
        self.applied = Watermark()    # steps applied here
        self.handlers = {wire.SETUP: self.setup, wire.FWD: self.forward, wire.BWD: self.backward, wire.PURGE: self.purge,
                         wire.TARGET: self.target, wire.GROW: self.grow, wire.GET: self.get, wire.SET: self.set,
                         wire.OPTIM: self.optim, wire.SNAP: self.snap, wire.KEEP: self.keep, wire.FETCH: self.fetch,
                         wire.REPLICA: self.replica, wire.STOP: self.stop, wire.REBROKER: self.rebroker}
        # its own snapshots and the replicas it keeps for others, in files under its worker's state folder
        self.keeper = Keeper(config.get("state_dir") and os.path.join(config["state_dir"], f"{self.gid}-{os.getpid()}"))
        self.keeper_sock = None       # where its replica goes (custody)
        self.to_broker_keeper = False  # the broker keeps it instead (a network of one group)
        self.ward_socks = {}          # gid -> PUSH socket, of the groups whose replicas it keeps
        self.ward_rows = {}           # gid -> its neurons: the rows of a replica it may keep
        self.restoring = None         # (snapshot id, function) while it waits for its replica
        self.running = True
        self.gen = 0  # the broker's generation of this network; data from an older one is stale
        self.epoch = 0  # the highest broker epoch heard (a pair's): a replaced broker's messages are dropped
        self.faults = Faults(self.gid)  # injected by tests only (faults.py)
        self.sent = 0  # messages sent, heartbeats aside: the dashboard shows their rate
        self.clients = {}  # reply address -> PUSH socket, of clients that predict under a lease

    def send(self, sock, header, arrays=(), flags=0):
        sockets.send(sock, header, arrays, flags=flags)
        self.sent += 1

    def tell_broker(self, header, arrays=()):
        self.send(self.broker, dict(header, net=self.net, gid=self.gid, tok=self.token, gen=self.gen), arrays)

    def beat(self):
        """One heartbeat now, from this thread (the pulse's thread sends them in a run)."""
        sockets.send(self.broker, self.beat_header())

    def beat_header(self):
        """Alive, with what watchers want to see: messages sent and the last step applied
        (built on the pulse's thread too: pulse.py)."""
        return {"k": wire.HEARTBEAT, "net": self.net, "gid": self.gid, "tok": self.token, "gen": self.gen,
                "pid": os.getpid(), "msgs": self.sent, "applied": self.applied.done, "waits": self.waits()}

    def waits(self):
        """The step the oldest waiting message waits for, or None: the broker purges what
        waits for a step it never handed out (Group.purge), so nothing holds the queue forever."""
        first = self.waiting.first()
        return None if first is None else first[0]["after"]

    def run(self):
        self.tell_broker({"k": wire.HELLO, "pid": os.getpid(), "endpoints": self.endpoints})
        # alive, even inside a long product: a stopped or starved group goes quiet and is replaced
        pulse = Pulse(self.ctx, self.beat_header, lambda: self.broker_inbox, self.keys)
        pulse.start()
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        try:
            while self.running:
                if poller.poll(heartbeat.INTERVAL * 1000 / 2):
                    while self.running and self.inbox.get(zmq.EVENTS) & zmq.POLLIN:  # drain: no poll per message
                        self.handle_one()
        finally:
            pulse.stop()

    def handle_one(self):
        """Read and handle one inbox message. Nothing a peer sends is fatal: a malformed
        message, or one not of this network, is dropped unread; one that fails, whatever it
        raises (MemoryError and RecursionError too), is answered with a FAULT."""
        header = {}
        try:
            _, header, arrays = sockets.recv(self.inbox)
            self.admit(header, arrays)
        except wire.WireError:
            pass  # malformed: cannot even tell whom to answer
        except Exception as e:
            self.refuse(header, e)

    def admit(self, header, arrays):
        """Handle a message of this network now, or once the step it follows is applied."""
        tok = header.get("tok")
        if tok != self.token:
            if tok == self.ptok and header.get("k") == wire.FWD and self.layer == 0:
                self.direct(header, arrays)  # a client's pass under a lease: layer 1's forward, nothing else
            return  # not from this network's broker or groups: no reply, no state
        ep = header.get("ep")  # only a broker's messages carry it
        if ep is not None:
            if ep < self.epoch:
                return  # from a broker that another has replaced: fenced, it acts on nothing
            self.epoch = ep
        k = header["k"]
        if k == wire.FWD and "reply" in header:
            return self.direct(header, arrays)  # a client's pass, passed on by the layer before
        if k in (wire.FWD, wire.BWD, wire.TARGET, wire.PURGE) and header.get("gen") != self.gen:
            return  # in flight before a recovery rewired the network: replayed, not wanted
        after = header.get("after")
        if after is not None:
            if type(after) is not int or not 0 <= after <= self.applied.done + MAX_AHEAD:
                raise ValueError(f"a {k} to follow step {after!r}, and this group is at step {self.applied.done}")
            if self.waiting or after > self.applied.done:
                self.received += 1
                self.waiting.put(self.received, (header, arrays), sum(a.nbytes for a in arrays))
                return
        self.handle(header, arrays)

    def handle(self, header, arrays):
        handler = self.handlers.get(header["k"])
        if handler is None:
            raise ValueError(f"unknown message kind {header['k']!r}")
        handler(header, arrays)

    def refuse(self, header, e):
        """A peer's mistake: say so and go on; the mesh keeps running."""
        log.warning("group %s refused a message: %s: %s", self.gid, type(e).__name__, str(e)[:500])
        h = header if isinstance(header, dict) else {}
        step = h.get("step") if h.get("k") in (wire.BWD, wire.TARGET) else None
        try:
            self.tell_broker({"k": wire.FAULT, "seq": h.get("seq"), "step": step, "kind": h.get("k"),
                              "error": f"group {self.gid}: {type(e).__name__}: {str(e)[:500]}"})
        except Exception as again:  # the broker's socket is being replaced, or full: the log has it
            log.warning("group %s could not report it: %s", self.gid, again)

    def release(self):
        """Messages that waited for the step just applied, in the order they came."""
        while self.waiting and self.waiting.first()[0]["after"] <= self.applied.done:
            _, (header, arrays) = self.waiting.popleft()
            try:
                self.handle(header, arrays)
            except Exception as e:
                self.refuse(header, e)

    def purge(self, h, arrays):
        """From the broker: no step after `beyond` was handed out, so what waits for one came
        from no broker (or a replaced one) and goes; what waited behind it is released."""
        beyond = h["beyond"]
        if type(beyond) is not int:
            raise ValueError(f"purge beyond step {beyond!r}")
        gone = self.waiting.remove_if(lambda item: item[0]["after"] > beyond)
        if gone:
            log.warning("group %s dropped %d messages waiting for steps after %d, never handed out",
                        self.gid, gone, beyond)
        self.release()

    # -- control ---------------------------------------------------------
    def setup(self, h, arrays):
        """Neighbours, and weights: given, drawn from the seed, or restored from a snapshot
        (its own copy, or the replica its keeper or the broker sends); everything in flight
        is forgotten (a recovery resends it)."""
        self.faults.on_setup()
        self.gen, self.applied = h.get("gen", 0), Watermark(int(h.get("applied", 0)))
        for store in (self.fwd_parts, self.bwd_parts, self.held, self.direct_parts, self.targets, self.outputs,
                      self.waiting):
            store.clear()
        self.step_counts = {}
        self.restoring = None
        self.index, self.fan_in, self.fan_out = h["index"], h["fan_in"], h["fan_out"]
        for sock, _, _ in self.down + self.up:
            sock.close()
        self.down = [(self._dial(ep, key), lo, hi) for ep, lo, hi, key in h["down"]]
        self.up = [(self._dial(ep, key), lo, hi) for ep, lo, hi, key in h["up"]]
        self.custody(h)
        restore = h.get("restore")
        if restore is None:
            if h.get("init"):  # a new network: this group's rows, drawn from the seed
                W, b = initial_rows(Spec(**h["init"]["spec"]), self.layer, int(h["init"]["fan_in"]), self.cfg["lo"],
                                    self.cfg["hi"])
            else:
                W, b = (np.array(a, dtype=self.dtype) for a in arrays[:2])
            self.neurons = Neurons(W, b, h["function"], Optimizer(**h.get("optimizer", {})))
        elif restore.get("from") is None:
            self.neurons = self.keeper.restore_own(int(restore["snap"]), h["function"])
        else:  # this process is new: its state comes from its keeper (or the broker)
            self.restoring = (int(restore["snap"]), h["function"])
            if restore["from"] != "broker":
                sockets.send(self.keeper_sock, {"k": wire.FETCH, "net": self.net, "tok": self.token, "gen": self.gen,
                                                "of": self.gid, "snap": self.restoring[0]})
            return  # ready once the replica is here
        self.tell_broker({"k": wire.READY, "restored": restore and restore["snap"]})
        early = self.fetches.values()  # wards that asked before this setup told of them
        self.fetches.clear()
        for fetch in early:
            try:
                self.fetch(fetch, ())
            except Exception as e:
                self.refuse(fetch, e)

    def custody(self, h):
        """Where this group's replica goes (its keeper), and whose replicas it keeps (its
        wards): it sends replicas back to its wards' endpoints only, and forgets others'."""
        for sock in [self.keeper_sock, *self.ward_socks.values()]:
            if sock is not None:
                sock.close()
        keeper = h.get("keeper")
        self.keeper_sock = self._dial(*keeper) if keeper else None
        self.to_broker_keeper = keeper is None and bool(h.get("broker_keeps"))
        wards = h.get("wards", ())
        self.ward_socks = {w[0]: self._dial(w[1], w[2]) for w in wards}
        self.ward_rows = {w[0]: w[3] for w in wards}  # [gid, endpoint, key, neurons]
        self.keeper.forget_all_but(self.ward_socks)

    def snap(self, h, arrays):
        """Keep a copy of this state; send a replica to the keeper (or the broker, for a
        network of one group)."""
        whole = h.get("whole")
        snap = self.keeper.keep_own(self.neurons, int(h["snap"]), self.applied.done, whole)
        keep = {"k": wire.KEEP, "net": self.net, "tok": self.token, "of": self.gid, "whole": whole, **snap.header()}
        if self.keeper_sock is not None:
            sockets.send(self.keeper_sock, keep, snap.arrays())
        elif self.to_broker_keeper:
            self.tell_broker(keep, snap.arrays())
        self.tell_broker({"k": wire.SNAPPED, "snap": snap.id, "whole": whole, "step": snap.step,
                          "ahead": len(self.applied.ahead), "bytes": self.keeper.nbytes()})

    def keep(self, h, arrays):
        """A replica of a ward's snapshot, to hand back if that ward is rebuilt."""
        of = str(h["of"])
        if of not in self.ward_socks:
            raise ValueError(f"a replica of {of}, which this group does not keep for")
        self.keeper.keep_message(of, h, arrays, self.dtype, self.ward_rows[of], h.get("whole"))
        self.tell_broker({"k": wire.KEPT, "of": of, "snap": int(h["snap"]), "whole": h.get("whole")})

    def fetch(self, h, arrays):
        """A ward rebuilt in a new process asks for its replica: sent to its endpoint, as
        this group's own setup names it (a fetch ahead of that setup waits for it)."""
        gen = h.get("gen", 0)
        if type(gen) is not int:
            raise ValueError(f"a fetch of generation {gen!r}")
        if gen > self.gen:  # kept small: the fields it needs, not whatever else came with it
            early = {"k": wire.FETCH, "of": str(h["of"])[:200], "snap": int(h["snap"]), "gen": gen}
            self.fetches.put((early["of"], early["snap"], gen), early, len(early["of"]) + 64)
            return
        of = str(h["of"])
        if of not in self.ward_socks:
            raise ValueError(f"{of} asks for a replica this group does not keep")
        snap = self.keeper.replica(of, int(h["snap"]))
        sockets.send(self.ward_socks[of], {"k": wire.REPLICA, "net": self.net, "tok": self.token, "of": of,
                                           **snap.header()}, snap.arrays())

    def replica(self, h, arrays):
        if self.restoring is None and int(h["snap"]) in self.keeper.own:
            return  # the same replica twice (a fetch repeated by a second recovery)
        if self.restoring is None or (h["of"], int(h["snap"])) != (self.gid, self.restoring[0]):
            raise ValueError(f"a replica of {h.get('of')} number {h.get('snap')} that nobody asked for")
        # its own copy again, should it be needed before the next snapshot
        snap = self.keeper.adopt_message(h, arrays, self.dtype, self.cfg["hi"] - self.cfg["lo"])
        self.neurons = snap.neurons(self.restoring[1])
        self.tell_broker({"k": wire.READY, "restored": self.restoring[0]})
        self.restoring = None

    def _dial(self, endpoint, key):
        return sockets.make(self.ctx, zmq.PUSH, connect=endpoint, keys=self.keys, dial=key)

    def grow(self, h, arrays):
        """Input columns appended: zero, or, for the first inputs a network sees, drawn from its seed."""
        added, rows, cols = h["cols"], *self.neurons.W.shape
        if type(added) is not int or added < 1:
            raise ValueError(f"grow by {added!r} columns")
        need = 4 * rows * (cols + added) * self.dtype.itemsize  # W, its gradient, two optimizer slots
        if need > sockets.memory_bound():
            raise ValueError(f"growing to {cols + added} inputs needs {need} bytes, more than this group's "
                             f"{sockets.memory_bound()}")
        self.neurons.grow(added)
        if h.get("init"):
            W, _ = initial_rows(Spec(**h["init"]), self.layer, self.neurons.W.shape[1], self.cfg["lo"], self.cfg["hi"])
            self.neurons.W[:, -added:] = W[:, -added:]

    def get(self, h, arrays):
        """Its weights, and its optimizer state unless "slots" is false (weights() needs none)."""
        n = self.neurons
        meta, opt_arrays = n.optimizer.state()
        if h.get("slots") is False:
            opt_arrays = []
        self.tell_broker({"k": wire.STATE, "req": h.get("req"), "optimizer": meta, "applied": self.applied.done,
                          "ahead": len(self.applied.ahead)}, [n.W, n.b, *opt_arrays])

    def set(self, h, arrays):
        W, b = (np.array(a, dtype=self.dtype) for a in arrays[:2])
        self.neurons = Neurons(W, b, self.neurons.function, Optimizer.restore(h["optimizer"], arrays[2:], 2))
        self.tell_broker({"k": wire.READY, "req": h.get("req")})

    def optim(self, h, arrays):
        if h["settings"] != self.neurons.optimizer.settings():
            self.neurons.optimizer = Optimizer(**h["settings"])
        self.tell_broker({"k": wire.READY, "req": h.get("req")})

    def rebroker(self, h, arrays):
        """A new active broker (a failover): report to its inbox from now on, and say hello there.
        The new socket is made before the old one closes: a bad address leaves the old in place."""
        tcp, ipc = h["tcp"], h.get("ipc")
        if not (isinstance(tcp, str) and tcp.startswith("tcp://") and (ipc is None or isinstance(ipc, str))):
            raise ValueError(f"rebroker to {tcp!r} / {ipc!r}")
        inbox = sockets.nearest(tcp, ipc, h.get("host") == self.cfg["advertise"])
        new = sockets.make(self.ctx, zmq.PUSH, connect=inbox, keys=self.keys,
                           dial=self.keys and self.keys.broker_public)
        self.broker.close(linger=0)  # what waits for the old broker is for no one now
        self.broker = new
        self.broker_inbox = inbox
        self.tell_broker({"k": wire.HELLO, "pid": os.getpid(), "endpoints": self.endpoints})

    def stop(self, h, arrays):
        self.running = False

    # -- data path -------------------------------------------------------
    def direct(self, h, arrays):
        """A client's predict pass under a lease (direct.py): it sees the weights of step
        h["at"] of generation h["gen"] in every group, or the client hears STALE and asks
        the broker instead. Only its own fields go on, its parts wait in their own store,
        and its output goes to the client, never to the broker: a lease holder cannot
        touch another client's pass or a training pass."""
        seq, to = h.get("seq"), h.get("reply")
        if not (isinstance(seq, str) and isinstance(to, str) and wire.REPLY_ADDRESS.fullmatch(to)):
            return  # not a pass this group may answer
        try:
            if self.neurons is None or self.restoring is not None or h.get("gen") != self.gen:
                raise ValueError(f"group {self.gid} was rebuilt (generation {self.gen})")
            if h.get("at") != self.applied.done:
                raise ValueError(f"group {self.gid} is at step {self.applied.done}, the lease at {h.get('at')!r}")
            # on past layer 1 with the network's token: a lease's token opens nothing else
            self.forward({"k": wire.FWD, "seq": seq, "src": h.get("src"), "gen": self.gen, "at": self.applied.done,
                          "net": self.net, "tok": self.token, "reply": to}, arrays, direct=True)
        except zmq.Again:  # the next group takes nothing now: the client asks the broker
            self.answer(to, {"k": wire.STALE, "seq": seq, "error": f"group {self.gid} could not pass it on"})
        except Exception as e:
            self.answer(to, {"k": wire.STALE, "seq": seq, "error": f"{type(e).__name__}: {str(e)[:500]}"})

    def answer(self, to, header, arrays=()):
        """To a client's reply socket, an address direct() checked; never blocks (a client that
        stopped reading loses it)."""
        sock = self.clients.pop(to, None) or sockets.make(self.ctx, zmq.PUSH, connect=to, hwm=CLIENT_HWM)
        self.clients[to] = sock  # the most recent last
        if len(self.clients) > MAX_CLIENTS:
            self.clients.pop(next(iter(self.clients))).close()
        try:
            self.send(sock, header, arrays, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    @staticmethod
    def _part(store, h, arrays, count, width):
        """File one part of pass seq (from source src of `count`); its parts once all are in.
        A pass whose other parts never come is displaced by newer ones (bounded.py)."""
        seq, src = h["seq"], h["src"]
        x, = arrays
        if not (type(src) is int and 0 <= src < count) or x.ndim != 2 or x.shape[1] != width(src):
            raise ValueError(f"part of pass {seq} from source {src!r} has shape {list(x.shape)}")
        if count == 1:
            return {0: x}
        parts = store.get(seq) or {}
        parts[src] = x
        if len(parts) == count:
            store.pop(seq)
            return parts
        store.put(seq, parts, sum(p.nbytes for p in parts.values()))
        return None

    def forward(self, h, arrays, direct=False):
        """direct: a client's pass (Group.direct), answered to the client."""
        self.faults.on_forward()
        seq = h["seq"]
        up_width = (lambda i: self.up[i][2] - self.up[i][1]) if self.up else (lambda i: self.neurons.W.shape[1])
        parts = self._part(self.direct_parts if direct else self.fwd_parts, h, arrays, self.fan_in, up_width)
        if parts is None:
            return
        x = parts[0] if self.fan_in == 1 else np.concatenate([parts[i] for i in range(self.fan_in)], axis=1)
        x = x.astype(self.dtype, copy=False)
        if x.shape[1] != self.neurons.W.shape[1]:
            raise ValueError(f"pass {seq} has {x.shape[1]} inputs, weights expect {self.neurons.W.shape[1]}")
        a = self.neurons.forward(x)
        for old in h.get("drop", ()):
            self.held.pop(old, None)
        if h.get("keep"):
            self.held.put(seq, (x, a), x.nbytes + a.nbytes)
        if not self.down:  # the last layer: the broker gathers the outputs (the client, for a direct pass)
            if direct:
                if a.nbytes > MAX_ANSWER:  # what waits in a client's socket is bounded
                    raise ValueError(f"an answer of {a.nbytes} bytes; at most {MAX_ANSWER} go direct")
                self.answer(h["reply"], {"k": wire.OUT, "seq": seq, "src": self.index}, [a])
            elif not h.get("head"):
                self.tell_broker({"k": wire.OUT, "seq": seq, "src": self.index}, [a])
            elif seq in self.targets:
                self.head(seq, a, *self.targets.pop(seq))
            else:
                self.outputs.put(seq, a, a.nbytes)  # its targets have not come yet
            return
        out = dict(h, src=self.index)
        for sock, _, _ in self.down:
            self.send(sock, out, [a], flags=zmq.NOBLOCK if direct else 0)  # a client's pass never blocks a group

    def target(self, h, arrays):
        T, = arrays
        if T.ndim != 2 or T.shape[1] != self.neurons.W.shape[0]:
            raise ValueError(f"targets of pass {h['seq']} have shape {list(T.shape)}")
        if h["seq"] in self.outputs:
            self.head(h["seq"], self.outputs.pop(h["seq"]), h, T)
        else:
            self.targets.put(h["seq"], (h, T), T.nbytes)  # its output has not come yet

    def head(self, seq, z, h, T):
        """The loss of this output slice, reported; its gradient, straight into the backward."""
        if T.shape[0] != z.shape[0] or not (isinstance(h["rows"], int) and h["rows"] >= z.shape[0]):
            raise ValueError(f"pass {seq} has {z.shape[0]} rows, {T.shape[0]} targets, batch of {h['rows']!r}")
        if h["output"] not in OUTPUTS or h["loss"] not in LOSSES:
            raise ValueError(f"pass {seq}: unknown output {h['output']!r} or loss {h['loss']!r}")
        loss, dz = loss_and_grad(h["output"], h["loss"], z, T.astype(z.dtype, copy=False), h["rows"])
        out = ({"k": wire.OUT, "seq": seq, "src": self.index, "loss": loss}, [z])
        self.backward(wire.backward(seq, 0, self.gen, h["step"], h["of"], h["lr"], h["ack"]), [dz], report=out)

    def backward(self, h, arrays, report=None):
        """dL/dx upstream first: the next step waits on it. Then `report`, (header, arrays)
        for the broker (an output group's OUT: the broker is not on the step's chain), then
        the update."""
        seq = h["seq"]
        parts = self._part(self.bwd_parts, h, arrays, self.fan_out, lambda i: self.neurons.W.shape[0])
        if parts is None:
            return
        step, of, lr = h["step"], h["of"], float(h["lr"])
        if not (isinstance(step, int) and isinstance(of, int) and of >= 1 and np.isfinite(lr)):
            raise ValueError(f"pass {seq}: bad step fields of={of!r} lr={h['lr']!r}")
        dA = parts[0].astype(self.dtype, copy=True)
        for i in range(1, self.fan_out):
            dA += parts[i]
        if seq not in self.held:
            raise ValueError(f"pass {seq} is not held here (no forward kept it, or it was already used)")
        x, a = self.held.pop(seq)
        dX = self.neurons.backward(x, a, dA, need_dx=bool(self.up))
        for sock, lo, hi in self.up:
            self.send(sock, dict(wire.backward(seq, self.index, self.gen, step, of, lr, h.get("ack", True)),
                                 net=self.net, tok=self.token), [dX[:, lo:hi]])
        if report is not None:
            self.tell_broker(*report)
        seen = self.step_counts.get(step, 0) + 1
        if seen == of:
            self.step_counts.pop(step, None)
            self.neurons.apply(lr)
            self.applied.mark(step)
            self.faults.after_step(step)
        else:
            self.step_counts[step] = seen
        if not self.up and h.get("ack", True):
            self.tell_broker({"k": wire.DONE, "seq": seq})
        if seen == of:
            self.release()


def main(config):
    """Entry point of a forked group process."""
    logging.basicConfig(level=os.environ.get("MESH_LOG_LEVEL", "WARNING"),
                        format=f"%(asctime)s group {config['gid']} %(levelname)s %(message)s")
    ctx = zmq.Context()
    group = Group(ctx, config)
    try:
        with profiled(config["gid"]):
            group.run()
    except KeyboardInterrupt:
        pass
    finally:
        group.keeper.close()  # its snapshot files go with it
        if group.keys is not None:
            group.keys.stop()
        ctx.destroy(linger=0)
