"""The broker's work, one class per client request that takes more than one
message to answer. A job is driven by events (group replies, outputs, dones)
and either replies once or fails with a message that says what went wrong.
Every job has a deadline, pushed back by progress, so no client waits forever.

A job talks to the broker only through its Ports (ports.py). It is made,
then begun: begin() registers it and sends its first messages."""
import itertools

import numpy as np

from .. import hostmem, memory, wire
from ..head import loss_and_grad, output
from .passes import Pass
from .states import Event
from .steplog import log_step, resubmit


class Job:
    serials = itertools.count()  # creation order: interrupted jobs restart in it

    def __init__(self, ports, net, client, req, timeout):
        self.ports, self.net, self.client, self.req = ports, net, client, req
        self.serial = next(Job.serials)
        self.timeout = timeout
        self.deadline = ports.clock() + timeout
        self.finished = False

    @property
    def flow(self):
        return self.ports.flow

    def begin(self):
        self.ports.jobs.add(self)
        if self.net is not None:
            self.net.jobs.add(self)
        self.run()
        return self

    def run(self):
        """The job's first messages."""

    def progress(self):
        self.deadline = self.ports.clock() + self.timeout

    def reply(self, arrays=(), **fields):
        if not self.finished:
            self.end()
            if self.client is not None:
                self.ports.reply(self.client, self.req, arrays, ok=True, **fields)

    def fail(self, error, **fields):
        if not self.finished:
            self.end()
            if self.client is not None:
                self.ports.reply(self.client, self.req, ok=False, error=error, **fields)

    def restart(self):
        """Carry on after a recovery rewired the network; by default, give up."""
        self.fail(f"network {self.net.id} was interrupted ({self.net.last_failure}) and this request cannot resume")

    def end(self):
        """Hear no more events; no reply (reply() and fail() call it)."""
        self.finished = True
        self.ports.jobs.discard(self)
        if self.net is not None:
            self.net.jobs.discard(self)

    def waiting_for(self):
        return "the mesh"

    def expire(self):
        self.fail(f"{self.waiting_for()} did not answer within {self.timeout:g}s")

    # events; a job overrides those it waits for
    def on_hello(self, gid): pass
    def on_ready(self, gid): pass
    def on_state(self, gid, header, arrays): pass
    def on_snapped(self, gid, header): pass
    def on_kept(self, of, header): pass
    def on_output(self, p): pass
    def on_done(self, p): pass


class Create(Job):
    """Spawn every group, wait for each to say hello, wire them, wait until each is ready."""
    hears_control_faults = True

    def __init__(self, ports, net, client, req, timeout, layers=None, optimizer=None):
        super().__init__(ports, net, client, req, timeout)
        self.layers = layers          # (W, b) per layer when loading; else drawn from the seed
        self.optimizer = optimizer    # per layer (meta, slot arrays) when loading
        self.missing = set(net.groups)
        self.stage = "start"

    def run(self):
        self.ports.in_slices(self.spawns())  # hundreds of spawns never hold the broker's loop

    def spawns(self):
        """Each group's process asked of its worker, one a step; none once the create has ended
        (failed, or its network dropped); one that cannot be asked fails the create."""
        for gid in list(self.net.groups):
            if self.finished:
                return
            try:
                self.ports.respawn(self.net, gid)
            except Exception as e:  # no worker left to ask, say
                return self.fail(f"could not start {self.net.describe(gid)}: {type(e).__name__}: {e}")
            yield

    def waiting_for(self):
        names = ", ".join(self.net.describe(g) for g in sorted(self.missing)[:3])
        more = f" and {len(self.missing) - 3} more" if len(self.missing) > 3 else ""
        return f"while {self.stage}: {names}{more}"

    def on_hello(self, gid):
        self.missing.discard(gid)
        self.progress()
        if not self.missing and self.stage == "start":
            self.stage = "wiring"
            self.missing = set(self.net.groups)
            self.ports.wire_up(self.net, self.layers, self.optimizer)

    def on_ready(self, gid):
        if self.stage != "wiring":
            return
        self.missing.discard(gid)
        self.progress()
        if not self.missing:
            self.stage = "snapshot"  # the state a recovery restores, until the next one
            self.ports.take_snapshot(self.net, self.created)

    def created(self):
        self.net.life.fire(Event.CREATED)
        self.reply(net=self.net.id, groups=len(self.net.groups), inputs=self.net.inputs)

    def fail(self, error, **fields):
        if not self.finished:
            super().fail(error, **fields)
            self.ports.break_net(self.net, f"it did not start: {error}")
            self.ports.end_net(self.net)  # nothing it started stays behind, holding memory


class Predict(Job):
    """Cut the rows into passes that stream through the mesh; answer with all outputs."""

    def __init__(self, ports, net, client, req, timeout, X, keep, chunk, rows=None):
        super().__init__(ports, net, client, req, timeout)
        self.X, self.keep, self.chunk = X, keep, chunk
        self.rows = rows  # the rows as they came, when kept: a backprop may train on values left out
        self.passes = []
        self.followers = []  # backprops waiting for these outputs

    def run(self):
        net, X = self.net, self.X
        old = net.remembered.pop(self.client, []) if self.keep else []
        drop = [p.seq for p in old]  # the groups forget their copies (this predict's first pass says so)
        for p in old:
            if p.z is not None and not p.in_flight:
                net.passes.pop(p.seq, None)
            else:  # still on its way (a pipelining client): answered as usual, then forgotten
                p.keep = False
        for lo in range(0, len(X), self.chunk):
            rows_from = (self.rows, lo, min(lo + self.chunk, len(X))) if self.rows is not None else None
            self.passes.append(Pass(net.next_seq(), self, X[lo:lo + self.chunk], keep=self.keep, drop=drop,
                                    rows_from=rows_from))
            drop = []
        if self.keep:
            net.remembered[self.client] = self.passes
        self.left = len(self.passes)
        for p in self.passes:
            self.flow.submit(net, p)

    def waiting_for(self):
        gids = self.net.last()
        return f"output of pass {self.passes[-1].seq} from {self.net.describe(gids[0])}" + (
            f" (or one of {len(gids) - 1} more output groups)" if len(gids) > 1 else "")

    def restart(self):
        """Send again the passes not yet answered (answered ones a recovery re-forwards, if held)."""
        waiting = [p for p in self.passes if not p.answered]
        self.left = len(waiting)
        for p in waiting:
            p.job = self
            resubmit(self.flow, self.net, p)
        if not waiting:
            self.on_output(None)

    def on_output(self, p):
        if p is not None:
            p.answered = True
            self.flow.finish_pass(self.net, p, forget=not p.keep)
            self.left -= 1
        self.progress()
        if self.left <= 0:
            z = np.concatenate([q.z for q in self.passes]) if len(self.passes) > 1 else self.passes[0].z
            self.reply([output(self.net.spec.output, z)], entered=max(q.entered for q in self.passes))
            for backprop in self.followers:
                backprop.send()

    def fail(self, error, **fields):
        super().fail(error, **fields)
        for backprop in self.followers:
            backprop.fail(f"the predict it trains on failed: {error}")


class Backprop(Job):
    """One optimizer step on the client's last predicted pass. Its step id is
    taken when the request comes, so every later forward waits for it in the
    groups; if that predict is still in flight (a pipelining client), the
    backward goes when its outputs are in. The client is answered (with the
    loss) as soon as the backward is sent and logged: a recovery redoes it from
    the log if it never completes."""

    def __init__(self, ports, net, client, req, timeout, T, lr):
        passes = net.remembered.get(client)  # checked before anything is taken
        if not passes:
            raise ValueError("nothing to backprop: call predict first (each prediction can be backpropagated once)")
        rows = sum(p.rows for p in passes)
        n_out = net.spec.sizes[-1]
        if T.ndim == 1:
            T = T.reshape(1, -1) if rows == 1 else T.reshape(-1, 1)
        if T.shape != (rows, n_out):
            raise ValueError(f"targets have shape {list(T.shape)}, the last predict needs {[rows, n_out]}")
        if not np.all(np.isfinite(T)):
            raise ValueError("targets must be finite numbers")
        super().__init__(ports, net, client, req, timeout)
        self.T, self.rows, self.lr = T, rows, lr
        self.sent = False
        self.grown = False         # layer 1 grew for values its predict left out
        self.reforwarding = set()  # passes forwarded again after that

    def run(self):
        net = self.net
        self.passes = net.remembered.pop(self.client)
        self.step = net.next_step()
        self.predict = next((p.job for p in self.passes if not p.answered), None)  # its predict, if not answered
        if self.predict is None:
            self.send()
        elif isinstance(self.predict, Predict) and not self.predict.finished:
            net.awaiting[self.step] = self.passes  # a recovery forwards them again, as any held pass
            self.predict.followers.append(self)
        else:
            self.fail("nothing to backprop: the predict it follows did not complete")

    def send(self):
        if self.finished:  # failed or expired while it waited: its step was abandoned
            return
        if self.grow():
            return  # on_output sends it once the passes are back
        net = self.net
        net.awaiting.pop(self.step, None)
        loss, lo = 0.0, 0
        for p in self.passes:
            p.train(self.T[lo:lo + p.rows].astype(p.z.dtype), self.step, len(self.passes), self.lr, self.rows)
            lo += p.rows
            part, dz = loss_and_grad(net.spec.output, net.spec.loss, p.z, p.T, self.rows)
            loss += part / self.rows
            p.job = self
            self.flow.send_backward(net, p, dz, self.step, len(self.passes), self.lr, ack=False)
        log_step(net, self.step, [(p.X, p.T) for p in self.passes], self.rows, self.lr)
        self.sent = True
        self.reply(loss=loss)
        self.ports.fault("backprop", self.step)
        self.flow.pump(net)  # passes that waited for this step to be sent
        self.ports.snapshot_due(net)

    def grow(self):
        """Its predict left out values never trained on (predict adds no inputs); this step
        trains on them. Grow layer 1 for them (new columns start at zero, so outputs do not
        change) and forward those passes again, so the groups hold inputs with the new
        columns for the backward. True while they are on their way."""
        if self.grown:
            return False
        self.grown = True
        encoded = {}  # id of a predict's rows -> the matrix they make now, if layer 1 grew for them
        for p in self.passes:
            if p.rows_from is not None and id(p.rows_from[0]) not in encoded:
                M, added = self.ports.encode_again(self.net, p.rows_from[0])
                encoded[id(p.rows_from[0])] = M if added else None
        for p in self.passes:
            M = encoded.get(id(p.rows_from[0])) if p.rows_from is not None else None
            if M is not None:
                _, lo, hi = p.rows_from
                p.X, p.job, p.drop, p.keep = M[lo:hi], self, [p.seq], True
                self.reforwarding.add(p)
        self.forward_again()
        return bool(self.reforwarding)

    def forward_again(self):
        for p in self.reforwarding:
            # the same weights as its predict saw; ahead of the client's later passes, which wait for this step
            resubmit(self.flow, self.net, p, after=p.after, first=True)
        if self.reforwarding:
            self.net.awaiting[self.step] = self.passes

    def on_output(self, p):
        if p in self.reforwarding:
            self.flow.finish_pass(self.net, p, forget=False)
            self.reforwarding.discard(p)
            if not self.reforwarding:
                self.progress()
                self.send()

    def restart(self):
        """Interrupted while its predict (or its passes forwarded again) was in flight: that
        predict restarts and calls send(), or the passes go again. The recovery took every step
        id handed out so far as done, so this one takes a new id (jobs restart in the order
        they came, so later forwards wait for it)."""
        held = self.net.awaiting.pop(self.step, None)
        self.step = self.net.next_step()
        if held is not None:
            self.net.awaiting[self.step] = held
        for p in self.reforwarding:
            p.job = self
        self.forward_again()

    def fail(self, error, **fields):
        if not self.finished and not self.sent:
            super().fail(error, **fields)
            self.net.awaiting.pop(self.step, None)
            if isinstance(self.predict, Predict) and self in self.predict.followers:
                self.predict.followers.remove(self)
            self.ports.abandon_step(self.net, f"backprop step {self.step} could not be sent: {error}")

    def waiting_for(self):
        return f"the predict that backprop step {self.step} trains on"


class Collect(Job):
    """Ask groups (every group, or one layer's) for their weights and optimizer
    state; hand then() the layers they make up."""

    def __init__(self, ports, net, client, req, timeout, then, layer=None, slots=True):
        super().__init__(ports, net, client, req, timeout)
        self.then = then              # callable(job, layers, optimizer) -> reply
        self.layer = layer            # None: all of them
        self.slots = slots            # the optimizer's state too
        self.gids = net.layers[layer] if layer is not None else list(net.groups)

    def run(self):
        need, (room, source, _) = self.read_bytes(), hostmem.default_budget()
        if need > room:  # refused, rather than the broker's host running out of memory
            what = "its weights" if self.layer is None else f"layer {self.layer + 1}"
            return self.fail(f"reading {what} of network {self.net.id} holds {need / 2**20:.0f} MiB at the broker "
                             f"(the groups' arrays and the layers joined from them), more than its "
                             f"{room / 2**20:.0f} MiB ({source})" + ("; read it a layer at a time (Network.layer)"
                                                                       if self.layer is None else ""))
        self.states, self.steps = {}, {}
        self.missing = set(self.gids)
        self.after = self.net.sent.done  # what to_group puts in each GET: the groups answer after those steps
        for gid in self.gids:
            self.flow.to_group(self.net, gid, {"k": wire.GET, "req": self.req, "slots": self.slots})

    restart = run

    def read_bytes(self):
        """What the read holds at its peak: every group's state as it came, and the layers joined from it."""
        spec, net = self.net.spec, self.net
        optimizer = net.optimizer_settings["name"] if self.slots else "sgd"  # sgd: no slots
        layers = range(len(net.layers)) if self.layer is None else [self.layer]
        itemsize = np.dtype(spec.dtype).itemsize
        return 2 * sum(memory.state_bytes(spec.sizes[l], spec.fan_in(l, net.layer1_width), itemsize, optimizer)
                       for l in layers)

    def waiting_for(self):
        return ", ".join(self.net.describe(g) for g in sorted(self.missing)[:3])

    def on_state(self, gid, header, arrays):
        if gid not in self.missing:
            return
        self.states[gid] = (header, arrays)
        self.steps[gid] = header["optimizer"]["t"]
        self.missing.discard(gid)
        self.progress()
        if not self.missing:
            layers, optim = [], []
            for gids in (self.net.layers if self.layer is None else [self.gids]):
                parts = [self.states[g] for g in gids]
                W = np.concatenate([a[0] for _, a in parts])
                b = np.concatenate([a[1] for _, a in parts])
                layers.append((W, b))
                meta = parts[0][0]["optimizer"]
                slots = [np.concatenate([a[2 + i] for _, a in parts]) for i in range(len(parts[0][1]) - 2)]
                optim.append((meta, slots))
            self.states = {}  # let go of the arrays before the reply is built
            self.then(self, layers, optim)


class SetWeights(Job):
    """Replace every group's weights (optimizer state starts afresh), then snapshot."""

    def __init__(self, ports, net, client, req, timeout, layers):
        super().__init__(ports, net, client, req, timeout)
        self.layers = layers

    def run(self):
        net = self.net
        self.missing = set(net.groups)
        fresh = {"t": 0, "has_slots": False, **net.optimizer_settings}
        for l, gids in enumerate(net.layers):
            W, b = self.layers[l]
            for gid in gids:
                g = net.groups[gid]
                self.flow.to_group(net, gid, {"k": wire.SET, "optimizer": fresh},
                                   [W[g.lo:g.hi], b[g.lo:g.hi]])

    def waiting_for(self):
        return ", ".join(self.net.describe(g) for g in sorted(self.missing)[:3])

    def on_ready(self, gid):
        self.missing.discard(gid)
        if not self.missing:
            self.ports.take_snapshot(self.net, lambda: self.reply())  # the log before this no longer applies
