"""The broker's record of one network: its spec, encoder, groups, its
state (states.py) and the passes in flight (passes.py)."""
import secrets
import time
from collections import deque

import numpy as np

from .. import memory
from ..encoder import Encoder
from ..spec import Spec
from ..steps import Watermark
from .passes import FairQueue
from .records import GroupRecord, SnapshotRecord
from .states import Lifecycle, State

WATCHED = 4096  # events kept for a watcher between two of its reads (it reads a few times a second)
# what a standby needs of a network as it is (besides its spec, encoder, state and groups): to_dict
SHIPPED = ("token", "plan_for", "window", "optimizer_settings", "gen", "step", "seq", "steps_applied",
           "snapshots_taken", "layer1_width", "restarts", "last_failure", "progress", "layers", "online_runs",
           "cancelled_runs")


WINDOW_BYTES = 16 << 20  # a wide layer's inputs of the passes in flight, at most (memory.PASS_ROWS rows each)


def window_for(sizes, dtype="float64"):
    """Passes in flight at most: enough to keep every layer busy, and more; for wide layers
    counted in bytes: as many PASS_ROWS-row inputs of the widest layer as WINDOW_BYTES holds,
    and never fewer than a layer and one (a micro-batch for every stage)."""
    per_pass = memory.PASS_ROWS * max(sizes) * np.dtype(dtype).itemsize
    return max(len(sizes) + 1, min(4 * len(sizes) + 4, WINDOW_BYTES // per_pass))


class Network:
    def __init__(self, nid, spec, encoder=None, window=None, plan_for="adam"):
        self.id, self.spec = nid, spec
        self.token = secrets.token_hex(16)  # carried by every message of this network's data path
        self.encoder = encoder or Encoder()
        self.groups = {}          # gid -> GroupRecord (records.py)
        self.layers = [[] for _ in spec.sizes]   # gids per layer, in neuron order
        self.push = {}            # gid -> the broker's PUSH socket to that group
        self.seq = 0
        self.step = 0             # the last step id handed out
        self.sent = Watermark()   # steps whose backward has been sent (and logged)
        self.steps_applied = 0    # steps logged: each is applied by every group (or replayed there after a
                                  # recovery); ids a recovery skips are not among them
        self.released = Watermark()  # steps later passes may follow: sent, or entered whole (entered_step)
        self.entering = {}        # step id -> its passes entered so far, while the output groups start its backward
        self.passes = {}          # seq -> Pass, in flight or held for a backprop
        self.queue = FairQueue()  # passes waiting for a slot in the window
        self.in_flight = 0
        self.entered = 0          # passes sent into the mesh so far (fairness is measured against it)
        self.window = window or window_for(spec.sizes, spec.dtype)
        self.plan_for = plan_for  # the optimizer its memory is planned for (budgets.py)
        self.remembered = {}      # client identity -> [Pass] of its last predict, kept for a backprop
        self.awaiting = {}        # step id -> [Pass] a backprop waits to train on (its predict is in flight)
        self.life = Lifecycle(nid)
        self.trainer = None       # the Train job, while the state is TRAINING (or RECOVERING from it)
        self.recovering = None    # the Recover job, while the state is RECOVERING
        self.progress = {}        # of the current or last training run: epoch, step, loss, rate (for status)
        self.optimizer_settings = {"name": "sgd", "momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
        self.jobs = set()
        self.online_runs = {}     # run id -> steps taken, of online runs since the last cancel
        self.cancelled_runs = {}  # online runs a cancel stopped (oldest first): their next backprops are refused
        # survival: see recovery.py
        self.gen = 0              # bumped by every recovery; data of an older generation is dropped
        self.snapshot = None      # the last whole snapshot (records.SnapshotRecord), once there is one
        self.snapshots_taken = 0
        self.broker_replica = {}  # snapshot id -> (header, arrays): only for a network of one group
        self.log = []             # what changed them since: ("grow", GROW header) ("optim", settings) ("step", ...)
        self.restarts = 0
        self.last_failure = None
        self.snapshotting = False  # a snapshot is being taken: requests wait a moment
        self.layer1_width = len(self.encoder.keys)  # input columns layer 1 holds now (older rows may be narrower)
        self.deferred = deque()   # client requests that arrived while recovering or snapshotting
        self.events = deque(maxlen=WATCHED)  # what happened, for the dashboard (note); the oldest go unread

    @property
    def state(self):
        return self.life.state

    @property
    def failed(self):
        return self.life.state is State.FAILED

    def waits(self):
        """Requests that need the whole network wait while it is rebuilt or read."""
        return self.life.state is State.RECOVERING or self.snapshotting

    def held(self):
        """Every pass kept for a backprop, remembered or awaited."""
        return [p for passes in (*self.remembered.values(), *self.awaiting.values()) for p in passes]

    def note(self, kind, **fields):
        """Tell watchers what happened: "train" (a training run starts), "loss" (one of its steps),
        "lost" (groups died, or the state is rebuilt), each with the training step it came at."""
        if "step" not in fields:
            fields["step"] = self.trainer.steps_done if self.trainer is not None else None
        self.events.append(dict(fields, kind=kind, time=time.time()))

    @property
    def inputs(self):
        """Current input width of layer 1 (0 until the first rows arrive)."""
        return len(self.encoder.keys)

    def next_seq(self):
        self.seq += 1
        return self.seq

    def next_step(self):
        self.step += 1
        return self.step

    def all_steps_done(self):
        """After a recovery rebuilt every group: ids handed out so far count as done
        (what is unfinished gets new ids when its job restarts)."""
        self.sent = Watermark(self.step)
        self.released = Watermark(self.step)
        self.entering = {}

    def step_sent(self, step):
        """Its backward is on its way (and it is logged)."""
        self.sent.mark(step)
        self.released.mark(step)

    def entered_step(self, p):
        """Pass p of a training step entered the mesh. When the output groups start the
        backward themselves (p.head), a step whose passes have all entered needs nothing
        more from the broker, so passes that follow it may enter too: they wait in the
        groups until it is applied (groupstate.py). Otherwise they wait for it to be sent."""
        if not p.head or p.step is None:
            return
        n = self.entering.get(p.step, 0) + 1
        if n < p.of:
            self.entering[p.step] = n
            return
        self.entering.pop(p.step, None)
        self.released.mark(p.step)

    def first(self):
        return self.layers[0]

    def row_readers(self):
        """[(gid, index of the rows' part of its input)]: every group of every layer that
        reads the rows (layer 1's, and others' in a graph), in network order."""
        out = []
        for layer in self.spec.row_readers():
            src = self.spec.sources(layer)
            part = sum(len(self.layers[s - 1]) for s in src[:src.index(0)])  # the groups' parts before it
            out += [(gid, part) for gid in self.layers[layer]]
        return out

    def roots(self):
        """The groups with no group upstream (their layer reads the rows alone): the DONE
        of each ends a pass's backward."""
        return [gid for layer, gids in enumerate(self.layers) if self.spec.sources(layer) == [0] for gid in gids]

    @property
    def local_head(self):
        """Output groups can compute the loss of their own slice: the output is
        elementwise, or one group holds the whole last layer (softmax needs all of it)."""
        return self.spec.output != "softmax" or len(self.last()) == 1

    def last(self):
        return self.layers[-1]

    def to_dict(self):
        """Its record, as a standby holds it (replication.py); the step log and a training run travel apart."""
        return {"id": self.id, "spec": self.spec.to_dict(), "encoder": self.encoder.to_dict(),
                "state": self.state.value, "failure": self.life.failure, **{k: getattr(self, k) for k in SHIPPED},
                "snapshot": self.snapshot.to_dict() if self.snapshot is not None else None,
                "groups": {gid: g.to_dict() for gid, g in self.groups.items()}}

    @classmethod
    def from_dict(cls, d):
        """The network of a record (takeover.py): its groups not heard from yet, nothing in flight."""
        net = cls(d["id"], Spec(**d["spec"]), Encoder.from_dict(d["encoder"]), window=d["window"])
        d = {"steps_applied": d["step"], **d}  # a record from before steps_applied was kept: the step ids
        for k in SHIPPED:
            setattr(net, k, d[k])
        net.life.state, net.life.failure = State(d["state"]), d["failure"]
        net.snapshot = SnapshotRecord.from_dict(d["snapshot"]) if d["snapshot"] is not None else None
        net.groups = {gid: GroupRecord.from_dict(g) for gid, g in d["groups"].items()}
        return net

    def describe(self, gid):
        g = self.groups[gid]
        return f"group {gid} (layer {g.layer + 1}, neurons {g.lo}..{g.hi - 1}, pid {g.pid} on {g.host})"
