"""A neuron group's state, and what it does with each message: no sockets.

GroupState takes one message (a control message's header and arrays, or a data message's
bytes) and returns what to send, as plain records (outbox.py); the process around it (group.py)
reads its inbox, hands each message here, and sends what comes back. So its logic (step
ordering, the data path, custody of snapshots, a client's pass under a lease) is tested
one message at a time without a socket (tests/test_groupstate.py). Its data messages go to
its data path (datapath.py); its snapshots and the replicas it keeps, to its custody
(custody.py, whose files are the one thing here that touches the outside).

Ordering: a message from the broker that must see the weights after step s
(a forward, or a read or change of state) carries "after": s. It waits here,
in arrival order, until this group has applied every step up to s. So the
broker can send the next step's rows, or answer a backprop, without waiting
for the last group to finish the step before: the order is kept where the
weights are. Every step id the broker hands out is applied everywhere, or
the broker rebuilds the network's state (recovery.py).

In a graph (mesh/graph.py) the parts of its input come from the groups of each layer it
reads (the rows from the broker), and its output goes to every group of every layer that
reads it."""
import logging
import os

import numpy as np

from . import sockets, wire
from .bounded import Bounded
from .custody import Custody
from .datapath import MAX_AHEAD, MAX_HELD, DataPath
from .faults import Faults
from .lograte import Sometimes
from .neurons import Neurons
from .outbox import Rebroker, Rewire, ToBroker
from .rundata import RunData
from .optim import Optimizer
from .spec import Spec, initial_rows
from .steps import Watermark

log = logging.getLogger("mesh.group")


class GroupState:
    """One group's state. on_data (a data message) and handle (a control message) each
    return what the message sends, as outbox records, in the order they must go."""

    def __init__(self, config):
        self.cfg = config
        self.net, self.gid, self.layer = config["net"], config["gid"], config["layer"]
        self.token = config["token"]  # every message of this network carries it; others are dropped unread
        self.dtype = np.dtype(config["dtype"])
        self.endpoints = {}           # where its inbox listens (the loop binds it): its HELLO says so
        self.neurons = None
        # where forward and backward go: down [(endpoint, lo, hi, src)], up [(endpoint, lo, hi, at)] (placement.wiring)
        self.down, self.up, self.feeders = [], [], []  # feeders: the up entries with a group (not the rows)
        self.rows_src = None          # the index of the rows' part of its input, if it reads them
        self.columns = []             # [(lo, hi)]: each part's columns of this group's input
        self.fan_in = self.fan_out = 1
        self.index = 0
        # What peers' messages fill, each within a count and a byte budget (bounded.py):
        self.waiting = Bounded(f"group {self.gid}: waiting", MAX_HELD, sockets.store_bytes())  # n -> (after, run,
        self.received = 0             # header): what must follow a step not yet applied, numbered as it came
        self.applied = Watermark()    # steps applied here
        self.handlers = {wire.SETUP: self.setup, wire.PURGE: self.purge, wire.GROW: self.grow, wire.GET: self.get,
                         wire.SET: self.set, wire.OPTIM: self.optim, wire.STOP: self.stop,
                         wire.REBROKER: self.rebroker}
        # its own snapshots and the replicas it keeps for others, in files under its worker's state folder
        self.custody = Custody(self, config.get("state_dir") and os.path.join(config["state_dir"],
                                                                              f"{self.gid}-{os.getpid()}"))
        self.handlers.update(self.custody.handlers)
        self.running = True
        self.gen = 0  # the broker's generation of this network; data from an older one is stale
        self.epoch = 0  # the highest broker epoch heard (a pair's): a replaced broker's messages are dropped
        self.faults = Faults(self.gid)  # injected by tests only (faults.py)
        self.data = DataPath(self)
        self.rundata = RunData(self)  # a resident run's steps, made here (rundata.py)
        self.handlers.update({wire.RUN: self.rundata.run, wire.CUT: self.rundata.cut})
        self.sometimes = Sometimes(log)  # what peers' bad messages log
        self.out = []  # what the message being handled sends, in order
        self.sender = None  # set by a process that sends (group.py): flush sends through it at once

    # -- in: one message, and what it sends ------------------------------------------------
    def on_data(self, buf):
        """A data message (wire.py's binary layout): its sends."""
        self.data.on_message(buf)
        return self.take()

    def handle(self, header, arrays):
        """A control message from a peer: its sends."""
        try:
            self.admit(header, arrays)
        except Exception as e:
            self.refuse(header, e)
        return self.take()

    def apply(self, header, arrays):
        """A control message of this process's own (a test's, the bench's), handled now, as the
        broker's would be: its sends."""
        self.dispatch(header, arrays)
        return self.take()

    def take(self):
        if not self.out:
            return ()
        out, self.out = self.out, []
        return out

    def emit(self, instruction):
        self.out.append(instruction)

    def flush(self):
        """Send what was emitted so far now, when a process sends: what the next step waits on
        (a pass's dL/dx upstream) goes before the work that does not hold it up (the update).
        Without a sender (a test of the state alone) the records wait for take(), in order."""
        if self.sender is not None and self.out:
            out, self.out = self.out, []
            self.sender(out)

    def tell_broker(self, header, arrays=()):
        self.emit(ToBroker(dict(header, net=self.net, gid=self.gid, tok=self.token, gen=self.gen), arrays))

    def hello(self):
        self.tell_broker({"k": wire.HELLO, "pid": os.getpid(), "endpoints": self.endpoints})

    def beat(self):
        """A heartbeat's fields: alive, and the last step applied (read on the pulse's thread
        too: pulse.py)."""
        return {"k": wire.HEARTBEAT, "net": self.net, "gid": self.gid, "tok": self.token, "gen": self.gen,
                "pid": os.getpid(), "applied": self.applied.done, "waits": self.waits()}

    def waits(self):
        """The step the oldest waiting message waits for, or None: the broker purges what
        waits for a step it never handed out (purge), so nothing holds the queue forever."""
        first = self.waiting.first()
        return None if first is None else first[0]

    def admit(self, header, arrays):
        """Handle a message of this network now, or once the step it follows is applied."""
        if header.get("tok") != self.token:
            return  # not from this network's broker or groups: no reply, no state
        ep = header.get("ep")  # only a broker's messages carry it
        if ep is not None:
            if ep < self.epoch:
                return  # from a broker that another has replaced: fenced, it acts on nothing
            self.epoch = ep
        if header["k"] == wire.PURGE and header.get("gen") != self.gen:
            return  # of a generation a recovery has replaced
        after = header.get("after")
        if after is not None:
            if type(after) is not int:
                raise ValueError(f"a {header['k']} to follow step {after!r}")
            if self.must_wait(after, lambda: self.dispatch(header, arrays), *arrays, lambda: header):
                return
        self.dispatch(header, arrays)

    def must_wait(self, after, run, *rest):
        """Whether a message that must follow step `after` waits (run() once it may go, in the
        order messages came); refused when `after` is absurdly far ahead. rest: its arrays,
        then a function of its header (for a fault, should it fail later)."""
        *arrays, header = rest
        if not 0 <= after <= self.applied.done + MAX_AHEAD:
            raise ValueError(f"a {header()['k']} to follow step {after}, and this group is at step "
                             f"{self.applied.done}")
        if not self.waiting and after <= self.applied.done:
            return False
        self.received += 1
        self.waiting.put(self.received, (after, run, header), sum(a.nbytes for a in arrays if a is not None))
        return True

    def dispatch(self, header, arrays):
        handler = self.handlers.get(header["k"])
        if handler is None:
            raise ValueError(f"unknown message kind {header['k']!r}")
        handler(header, arrays)

    def refuse(self, header, e):
        """A peer's mistake: say so and go on; the mesh keeps running."""
        self.sometimes.warning(type(e).__name__, "group %s refused a message: %s: %s", self.gid, type(e).__name__,
                               str(e)[:500])
        h = header if isinstance(header, dict) else {}
        step = h.get("step") if h.get("k") in (wire.BWD, wire.TARGET) else None
        self.tell_broker({"k": wire.FAULT, "seq": h.get("seq"), "step": step, "kind": h.get("k"),
                          "error": f"group {self.gid}: {type(e).__name__}: {str(e)[:500]}"})

    def release(self):
        """Messages that waited for the step just applied, in the order they came."""
        while self.waiting and self.waiting.first()[0] <= self.applied.done:
            _, (_, run, header) = self.waiting.popleft()
            try:
                run()
            except Exception as e:
                self.refuse(header(), e)

    def purge(self, h, arrays):
        """From the broker: no step after `beyond` was handed out, so what waits for one came
        from no broker (or a replaced one) and goes; what waited behind it is released."""
        beyond = h["beyond"]
        if type(beyond) is not int:
            raise ValueError(f"purge beyond step {beyond!r}")
        gone = self.waiting.remove_if(lambda item: item[0] > beyond)
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
        self.data.reset()
        self.rundata.clear()
        self.waiting.clear()
        self.index, self.fan_in, self.fan_out = h["index"], h["fan_in"], h["fan_out"]
        self.down = [(ep, lo, hi, src) for ep, lo, hi, key, src in h["down"]]
        self.up = [(ep or None, lo, hi, at) for ep, lo, hi, key, at in h["up"]]  # the rows: no endpoint
        peers = {ep: key for ep, _, _, key, _ in [*h["down"], *h["up"]] if ep}
        self.parts_changed()
        peers.update(self.custody.wire(h))
        self.emit(Rewire(peers))  # before anything this setup sends its peers
        restore = h.get("restore")
        if restore is None:
            if h.get("init"):  # a new network: this group's rows, drawn from the seed
                W, b = initial_rows(Spec(**h["init"]["spec"]), self.layer, int(h["init"]["fan_in"]), self.cfg["lo"],
                                    self.cfg["hi"])
            else:
                W, b = (np.array(a, dtype=self.dtype) for a in arrays[:2])
            self.neurons = Neurons(W, b, h["function"], Optimizer(**h.get("optimizer", {})))
        elif not self.custody.restore(restore, h["function"]):
            return  # ready once the replica is here
        self.tell_broker({"k": wire.READY, "restored": restore and restore["snap"]})
        self.custody.ready()

    def parts_changed(self):
        self.feeders = [u for u in self.up if u[0] is not None]
        self.rows_src = next((i for i, u in enumerate(self.up) if u[0] is None), None)
        self.columns = [(lo, hi) for _, lo, hi, _ in self.up]

    def grow(self, h, arrays):
        """Input columns added just after the rows' part of its input: zero, or, for the first
        inputs a network sees, with the whole W drawn from its seed for the fan-in it has now."""
        added, rows, cols = h["cols"], *self.neurons.W.shape
        if type(added) is not int or added < 1 or self.rows_src is None:
            raise ValueError(f"grow by {added!r} columns" + ("" if self.rows_src is not None else
                                                              ", and this group does not read the rows"))
        need = 4 * rows * (cols + added) * self.dtype.itemsize  # W, its gradient, two optimizer slots
        if need > sockets.memory_bound():
            raise ValueError(f"growing to {cols + added} inputs needs {need} bytes, more than this group's "
                             f"{sockets.memory_bound()}")
        end = self.up[self.rows_src][2]
        self.neurons.grow(added, tail=cols - end)
        self.data.grown(end, added)
        r = self.rows_src  # the rows' part widens, the parts after it move right
        self.up = [(ep, lo + added * (i > r), hi + added * (i >= r), at)
                   for i, (ep, lo, hi, at) in enumerate(self.up)]
        self.parts_changed()
        if h.get("init"):
            W, _ = initial_rows(Spec(**h["init"]), self.layer, self.neurons.W.shape[1], self.cfg["lo"], self.cfg["hi"])
            self.neurons.W[:] = W

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
        A bad address is refused, and the old inbox stays."""
        tcp, ipc = h["tcp"], h.get("ipc")
        if not (isinstance(tcp, str) and tcp.startswith("tcp://") and (ipc is None or isinstance(ipc, str))):
            raise ValueError(f"rebroker to {tcp!r} / {ipc!r}")
        self.emit(Rebroker(tcp, ipc, h.get("host") == self.cfg["advertise"]))
        self.hello()

    def stop(self, h, arrays):
        self.running = False
