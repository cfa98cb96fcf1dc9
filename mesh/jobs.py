"""The broker's work, one class per client request that takes more than one
message to answer. A job is driven by events (group replies, outputs, dones)
and either replies once or fails with a message that says what went wrong.
Every job has a deadline, pushed back by progress, so no client waits forever."""
import itertools
import time

import numpy as np

from . import wire
from .head import loss_and_grad, output
from .network import Pass


class Job:
    serials = itertools.count()  # creation order: interrupted jobs restart in it

    def __init__(self, broker, net, client, req, timeout):
        self.broker, self.net, self.client, self.req = broker, net, client, req
        self.serial = next(Job.serials)
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.finished = False
        if net is not None:
            net.jobs.add(self)
        broker.jobs.add(self)

    def progress(self):
        self.deadline = time.monotonic() + self.timeout

    def reply(self, arrays=(), **fields):
        if not self.finished:
            self._end()
            if self.client is not None:
                self.broker.reply(self.client, self.req, arrays, ok=True, **fields)

    def fail(self, error):
        if not self.finished:
            self._end()
            if self.client is not None:
                self.broker.reply(self.client, self.req, ok=False, error=error)

    def restart(self):
        """Carry on after a recovery rewired the network; by default, give up."""
        self.fail(f"network {self.net.id} was interrupted ({self.net.last_failure}) and this request cannot resume")

    def _end(self):
        self.finished = True
        self.broker.jobs.discard(self)
        if self.net is not None:
            self.net.jobs.discard(self)
            if self.net.trainer is self:
                self.net.trainer = None

    def waiting_for(self):
        return "the mesh"

    def expire(self):
        self.fail(f"{self.waiting_for()} did not answer within {self.timeout:g}s")

    # events; a job overrides those it waits for
    def on_hello(self, gid): pass
    def on_ready(self, gid): pass
    def on_state(self, gid, header, arrays): pass
    def on_output(self, p): pass
    def on_done(self, p): pass


class Create(Job):
    """Spawn every group, wait for each to say hello, wire them, wait until each is ready."""

    def __init__(self, broker, net, client, req, timeout, layers=None, optimizer=None):
        super().__init__(broker, net, client, req, timeout)
        self.layers = layers          # (W, b) per layer when loading; else drawn from the seed
        self.optimizer = optimizer    # per layer (meta, slot arrays) when loading
        self.missing = set(net.groups)
        self.stage = "start"

    def waiting_for(self):
        names = ", ".join(self.net.describe(g) for g in sorted(self.missing)[:3])
        more = f" and {len(self.missing) - 3} more" if len(self.missing) > 3 else ""
        return f"while {self.stage}: {names}{more}"

    def on_hello(self, gid):
        self.missing.discard(gid)
        self.progress()
        if not self.missing:
            self.stage = "wiring"
            self.missing = set(self.net.groups)
            self.broker.wire_up(self.net, self.layers, self.optimizer)

    def on_ready(self, gid):
        if self.stage != "wiring":
            return
        self.missing.discard(gid)
        self.progress()
        if not self.missing:
            self.stage = "snapshot"
            from .recovery import take_snapshot  # the state a recovery restores, until the next one
            take_snapshot(self.broker, self.net, self.created)

    def created(self):
        self.net.created = True
        self.reply(net=self.net.id, groups=len(self.net.groups), inputs=self.net.inputs)


class Predict(Job):
    """Cut the rows into passes that stream through the mesh; answer with all outputs."""

    def __init__(self, broker, net, client, req, timeout, X, keep, chunk):
        super().__init__(broker, net, client, req, timeout)
        self.passes = []
        self.followers = []  # backprops waiting for these outputs
        old = net.held.pop(client, []) if keep else []
        drop = [p.seq for p in old]  # the groups forget their copies (this predict's first pass says so)
        for p in old:
            if p.z is not None and not p.in_flight:
                net.passes.pop(p.seq, None)
            else:  # still on its way (a pipelining client): answered as usual, then forgotten
                p.keep = False
        for lo in range(0, len(X), chunk):
            p = Pass(net.next_seq(), self, X[lo:lo + chunk], keep=keep, drop=drop)
            drop = []
            self.passes.append(p)
        if keep:
            net.held[client] = self.passes
        self.left = len(self.passes)
        for p in self.passes:
            broker.submit(net, p)

    def waiting_for(self):
        gids = self.net.last()
        return f"output of pass {self.passes[-1].seq} from {self.net.describe(gids[0])}" + (
            f" (or one of {len(gids) - 1} more output groups)" if len(gids) > 1 else "")

    def restart(self):
        """Send again the passes not yet answered (answered ones a recovery re-forwards, if held)."""
        from .recovery import resubmit
        waiting = [p for p in self.passes if p.z is None]
        self.left = len(waiting)
        for p in waiting:
            p.job = self
            resubmit(self.broker, self.net, p)
        if not waiting:
            self.on_output(None)

    def on_output(self, p):
        if p is not None:
            self.broker.finish_pass(self.net, p, forget=not p.keep)
            self.left -= 1
        self.progress()
        if self.left <= 0:
            z = np.concatenate([q.z for q in self.passes]) if len(self.passes) > 1 else self.passes[0].z
            self.reply([output(self.net.spec.output, z)], entered=max(q.entered for q in self.passes))
            for backprop in self.followers:
                backprop.start()

    def fail(self, error):
        super().fail(error)
        for backprop in self.followers:
            backprop.fail(f"the predict it trains on failed: {error}")


class Backprop(Job):
    """One optimizer step on the client's last predicted pass. Its step id is
    taken when the request comes, so every later forward waits for it in the
    groups; if that predict is still in flight (a pipelining client), the
    backward goes when its outputs are in. The client is answered (with the
    loss) as soon as the backward is sent and logged: a recovery redoes it from
    the log if it never completes."""

    def __init__(self, broker, net, client, req, timeout, T, lr):
        passes = net.held.get(client)  # checked before anything is registered or taken
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
        super().__init__(broker, net, client, req, timeout)
        self.passes = net.held.pop(client)
        self.T, self.rows, self.lr = T, rows, lr
        self.step = net.next_step()
        self.sent = False
        self.predict = next((p.job for p in self.passes if p.z is None), None)  # its predict, if not answered
        if self.predict is None:
            self.start()
        elif isinstance(self.predict, Predict) and not self.predict.finished:
            net.held[("backprop", self.step)] = self.passes  # a recovery forwards them again, as any held pass
            self.predict.followers.append(self)
        else:
            self.fail("nothing to backprop: the predict it follows did not complete")

    def start(self):
        if self.finished:  # failed or expired while it waited: its step was abandoned
            return
        net = self.net
        net.held.pop(("backprop", self.step), None)
        loss, lo = 0.0, 0
        for p in self.passes:
            p.T, p.batch_rows, p.step, p.of, p.lr = (self.T[lo:lo + p.rows].astype(p.z.dtype), self.rows, self.step,
                                                     len(self.passes), self.lr)
            lo += p.rows
            part, dz = loss_and_grad(net.spec.output, net.spec.loss, p.z, p.T, self.rows)
            loss += part / self.rows
            p.job = self
            self.broker.send_backward(net, p, dz, self.step, len(self.passes), self.lr, ack=False)
        from .recovery import log_step, snapshot_due
        log_step(net, self.step, [(p.X, p.T) for p in self.passes], self.rows, self.lr)
        self.sent = True
        self.reply(loss=loss)
        self.broker.pump(net)  # passes that waited for this step to be sent
        snapshot_due(self.broker, net)

    def restart(self):
        """Interrupted while its predict was in flight: that predict restarts and calls start().
        The recovery took every step id handed out so far as done, so this one takes a new id
        (jobs restart in the order they came, so later forwards wait for it)."""
        held = self.net.held.pop(("backprop", self.step), None)
        self.step = self.net.next_step()
        if held is not None:
            self.net.held[("backprop", self.step)] = held

    def fail(self, error):
        if not self.finished and not self.sent:
            super().fail(error)
            self.net.held.pop(("backprop", self.step), None)
            if self.predict is not None and self in getattr(self.predict, "followers", ()):
                self.predict.followers.remove(self)
            self.broker.abandon_step(self.net, f"backprop step {self.step} could not be sent: {error}")

    def waiting_for(self):
        return f"the predict that backprop step {self.step} trains on"


class Collect(Job):
    """Ask every group for its weights and optimizer state; answer per layer."""

    def __init__(self, broker, net, client, req, timeout, then):
        super().__init__(broker, net, client, req, timeout)
        self.then = then              # callable(job, layers, optimizer) -> reply
        self.restart()

    def restart(self):
        self.states, self.steps = {}, {}
        self.missing = set(self.net.groups)
        self.after = self.net.sent.done  # what to_group puts in each GET: the groups answer after those steps
        for gid in self.net.groups:
            self.broker.to_group(self.net, gid, {"k": wire.GET, "req": self.req})

    def waiting_for(self):
        return ", ".join(self.net.describe(g) for g in sorted(self.missing)[:3])

    def on_state(self, gid, header, arrays):
        self.states[gid] = (header, arrays)
        self.steps[gid] = header["optimizer"]["t"]
        self.missing.discard(gid)
        self.progress()
        if not self.missing:
            layers, optim = [], []
            for gids in self.net.layers:
                parts = [self.states[g] for g in gids]
                W = np.concatenate([a[0] for _, a in parts])
                b = np.concatenate([a[1] for _, a in parts])
                layers.append((W, b))
                meta = parts[0][0]["optimizer"]
                slots = [np.concatenate([a[2 + i] for _, a in parts]) for i in range(len(parts[0][1]) - 2)]
                optim.append((meta, slots))
            self.then(self, layers, optim)


class SetWeights(Job):
    """Replace every group's weights (optimizer state starts afresh), then snapshot."""

    def __init__(self, broker, net, client, req, timeout, layers):
        super().__init__(broker, net, client, req, timeout)
        self.missing = set(net.groups)
        fresh = {"t": 0, "has_slots": False, **net.optimizer_settings}
        for l, gids in enumerate(net.layers):
            W, b = layers[l]
            for gid in gids:
                g = net.groups[gid]
                broker.to_group(net, gid, {"k": wire.SET, "optimizer": fresh}, [W[g["lo"]:g["hi"]], b[g["lo"]:g["hi"]]])

    def waiting_for(self):
        return ", ".join(self.net.describe(g) for g in sorted(self.missing)[:3])

    def on_ready(self, gid):
        self.missing.discard(gid)
        if not self.missing:
            from .recovery import take_snapshot  # the log before this no longer applies
            take_snapshot(self.broker, self.net, lambda: self.reply())
