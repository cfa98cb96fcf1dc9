"""The broker's record of one network: its spec, encoder, groups and the
passes in flight. A pass is one batch of rows on its way through the mesh,
named by its sequence number."""
import secrets
import time
from collections import deque

import numpy as np

from .encoder import Encoder
from .steps import Watermark

WATCHED = 4096  # events kept for a watcher between two of its reads (it reads a few times a second)


class Pass:
    def __init__(self, seq, job, X, keep=False, drop=()):
        self.seq, self.job, self.X, self.keep, self.drop = seq, job, X, keep, list(drop)
        self.rows = len(X)
        self.parts = {}      # output group index -> z slice
        self.z = None
        self.dones = 0       # layer-1 groups finished with its backward
        self.in_flight = False
        self.entered = 0     # the network's count of passes sent into the mesh when this one went
        self.after = None    # the step whose weights it must see (groups keep the order); None: the latest
        self.head = False    # a training pass whose loss the output groups compute (they get its targets)
        self.ack = True      # layer 1 reports DONE for it
        self.loss = 0.0      # with head: the loss the output groups reported


class FairQueue:
    """Passes waiting to enter the mesh, one line per client, served in turn:
    a client that sends a flood of rows cannot starve the others."""

    def __init__(self):
        self.lines = {}  # client -> deque of passes; dicts keep the turn order

    def append(self, p):
        owner = p.job.client if p.job is not None else None
        self.lines.setdefault(owner, deque()).append(p)

    def pop_ready(self, ready):
        """The first pass, in turn order, that ready(pass) allows; None if every line waits."""
        for owner, line in self.lines.items():
            if ready(line[0]):
                break
        else:
            return None
        del self.lines[owner]
        p = line.popleft()
        if line:
            self.lines[owner] = line  # back of the turn order
        return p

    def clear(self):
        self.lines.clear()

    def __len__(self):
        return sum(len(line) for line in self.lines.values())

    def __bool__(self):
        return bool(self.lines)


class Network:
    def __init__(self, nid, spec, encoder=None, window=None):
        self.id, self.spec = nid, spec
        self.token = secrets.token_hex(16)  # carried by every message of this network's data path
        self.encoder = encoder or Encoder()
        self.groups = {}          # gid -> record: gid, layer, index, lo, hi, worker, host, pid, endpoints
        self.layers = [[] for _ in spec.sizes]   # gids per layer, in neuron order
        self.push = {}            # gid -> the broker's PUSH socket to that group
        self.seq = 0
        self.step = 0             # the last step id handed out
        self.sent = Watermark()   # steps whose backward has been sent (and logged)
        self.passes = {}          # seq -> Pass, in flight or held for a backprop
        self.queue = FairQueue()  # passes waiting for a slot in the window
        self.in_flight = 0
        self.entered = 0          # passes sent into the mesh so far (fairness is measured against it)
        self.window = window or 4 * len(spec.sizes) + 4
        self.held = {}            # client identity -> [Pass] of its last predict
        self.error = None         # why this network can no longer work
        self.trainer = None       # the training job, while one runs
        self.optimizer_settings = {"name": "sgd", "momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
        self.jobs = set()
        self.created = False
        # survival: see recovery.py
        self.gen = 0              # bumped by every recovery; data of an older generation is dropped
        self.snapshot = None      # every group's weights and optimizer state after a known step
        self.log = []             # what changed them since: ("grow", cols) ("optim", settings) ("step", ...)
        self.restarts = 0
        self.last_failure = None
        self.recovering = None    # the Recover job, while one runs
        self.paused = False       # a snapshot is being taken
        self.layer1_width = len(self.encoder.keys)  # input columns layer 1 holds now (older rows may be narrower)
        self.deferred = deque()   # client requests that arrived while recovering or paused
        self.events = deque(maxlen=WATCHED)  # what happened, for the dashboard (note); the oldest go unread

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

    def first(self):
        return self.layers[0]

    @property
    def local_head(self):
        """Output groups can compute the loss of their own slice: the output is
        elementwise, or one group holds the whole last layer (softmax needs all of it)."""
        return self.spec.output != "softmax" or len(self.last()) == 1

    def last(self):
        return self.layers[-1]

    def gather(self, parts):
        """The whole last layer from its groups' slices."""
        return parts[0] if len(parts) == 1 else np.concatenate([parts[i] for i in range(len(parts))], axis=1)

    def describe(self, gid):
        g = self.groups[gid]
        return f"group {gid} (layer {g['layer'] + 1}, neurons {g['lo']}..{g['hi'] - 1}, pid {g.get('pid')} on {g['host']})"

    def records(self):
        return [{"gid": g["gid"], "layer": g["layer"] + 1, "neurons": [g["lo"], g["hi"]], "pid": g.get("pid"),
                 "host": g["host"], "worker": g["worker_name"], "endpoints": g["endpoints"], "alive": g["alive"]}
                for g in self.groups.values()]
