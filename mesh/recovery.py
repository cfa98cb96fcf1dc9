"""Surviving dead processes: snapshots, the step log, and the recovery job.

The broker keeps, per network, a snapshot of every group's weights and
optimizer state, read after a known step, and a log of what changed them
since: input growth, optimizer changes, and every step whose backward was
sent, with its micro-batches, targets and rate. When a group or a whole worker dies, the
Recover job respawns the dead groups (on their worker if it lives, else on
another), rewires every group under a new generation number (so messages
still in flight from before are dropped), restores the snapshot, replays the
log step by step with the same micro-batches, and then restarts the requests
that were interrupted. The replayed maths is the same, in the same order, so
exact training ends with the weights of a run without faults."""
import time

from . import wire
from .head import loss_and_grad
from .jobs import Collect, Job
from .network import Pass

SNAPSHOT_EVERY = 64  # steps between snapshots: bounds the log and the replay


class Snapshot(Collect):
    """Collect every group's state for the network's own keeping; a failure unpauses it."""

    def fail(self, error):
        if not self.finished:
            super().fail(error)
            self.net.paused = False
            self.broker.run_deferred(self.net)


def take_snapshot(broker, net, then):
    """Pause the network's requests, collect every group's state, keep it, resume.
    Groups answer once they have applied every step sent before the request
    (job.after), so the log keeps only the steps after it."""
    net.paused = True

    def keep(job, layers, optim):
        if {(h.get("applied"), h.get("ahead")) for h, _ in job.states.values()} != {(job.after, 0)}:
            return job.restart()  # a group applied a later step before it read its state: ask again
        net.snapshot = {"layers": layers, "optim": optim, "inputs": net.layer1_width}
        net.log = [e for e in net.log if e[0] == "step" and e[1] > job.after]
        net.paused = False
        job._end()
        then()
        broker.run_deferred(net)
    Snapshot(broker, net, None, None, 600.0, keep)


def snapshot_due(broker, net):
    """Take a snapshot if the log has grown long enough (only between steps)."""
    if len(net.log) >= SNAPSHOT_EVERY and not net.paused and net.recovering is None:
        take_snapshot(broker, net, lambda: None)


def log_step(net, step, micros, batch_rows, lr):
    """A step whose backward is on its way, kept until the next snapshot: its
    micro-batches [(X, T)], enough to redo it exactly. Logged when sent, not when
    done: the groups keep its order, and a recovery redoes it if it never finished."""
    net.log.append(("step", step, list(micros), batch_rows, lr))
    net.sent.mark(step)


def submit_step(broker, net, job, micros, batch_rows, lr, wait=True, head=False, ack=True):
    """Passes of one step through the mesh; `job` hears their outputs (and dones, with ack).
    wait: its forwards see every step before it (exact); else whatever is applied (async).
    head: the output groups compute the loss and start the backward (Network.local_head)."""
    step = net.next_step()
    passes = []
    for X, T in micros:
        p = Pass(net.next_seq(), job, X, keep=True)
        p.after = step - 1 if wait else 0
        p.head, p.ack = head, ack
        p.T, p.batch_rows, p.step, p.of, p.lr = T, batch_rows, step, len(micros), lr
        passes.append(p)
    for p in passes:
        broker.submit(net, p)
    return passes


def send_step_backward(broker, net, p, ack=True):
    """The output gradient of a training pass; returns its summed loss."""
    loss, dz = loss_and_grad(net.spec.output, net.spec.loss, p.z, p.T, p.batch_rows)
    p.z = None
    broker.send_backward(net, p, dz, p.step, p.of, p.lr, ack)
    return loss


def resubmit(broker, net, p, after=None):
    """Send a pass again, under a new sequence number (after: as in Pass; None, the latest step)."""
    net.passes.pop(p.seq, None)
    p.seq, p.parts, p.z, p.dones, p.in_flight, p.after, p.loss = net.next_seq(), {}, None, 0, False, after, 0.0
    p.done_first = False
    broker.submit(net, p)


class Recover(Job):
    def __init__(self, broker, net, why, interrupted):
        super().__init__(broker, net, None, None, 120.0)
        self.why, self.interrupted = why, interrupted
        net.recovering = self
        net.gen += 1
        net.restarts += 1
        net.last_failure = why
        net.passes.clear()
        net.queue.clear()
        net.in_flight = 0
        self.missing = {gid for gid, g in net.groups.items() if not g["alive"]}
        self.stage = "respawn"
        self.cursor = 0  # replay position in the log
        net.layer1_width = net.snapshot["inputs"]  # what the groups will hold once restored
        self.started = time.monotonic()
        for gid in sorted(self.missing):
            broker.respawn(net, gid)
        if not self.missing:
            self.on_hello(None)

    def waiting_for(self):
        return f"recovery ({self.stage}) of network {self.net.id}; waiting for {sorted(self.missing)[:3]}"

    def expire(self):
        self.fail(f"did not finish: {self.waiting_for()}")

    def fail(self, error):
        """Recovery itself failed: the network is broken, and says why."""
        if self.finished:
            return
        self._end()
        self.net.recovering = None
        self.net.jobs.update(self.interrupted)  # so that they fail with the network
        self.broker.break_net(self.net, f"recovery after '{self.why}' failed: {error}")

    def on_hello(self, gid):
        self.missing.discard(gid)
        if self.stage != "respawn" or self.missing:
            return
        self.progress()
        self.stage = "rewire"
        self.missing = set(self.net.groups)
        snap = self.net.snapshot
        self.broker.wire_up(self.net, snap["layers"], snap["optim"], restore=True)

    def on_ready(self, gid):
        if self.stage in ("rewire", "optim"):
            self.missing.discard(gid)
            self.progress()
            if not self.missing:
                self.next_event()

    def next_event(self):
        net = self.net
        while self.cursor < len(net.log):
            event = net.log[self.cursor]
            self.cursor += 1
            if event[0] == "grow":
                for gid in net.first():
                    g = net.groups[gid]
                    self.broker.to_group(net, gid, {"k": wire.GROW}, [event[1][g["lo"]:g["hi"]]])
                net.layer1_width += event[1].shape[1]
                continue  # the grow travels ahead of what follows on the same pipe
            if event[0] == "optim":
                self.stage, self.missing = "optim", set(net.groups)
                for gid in net.groups:
                    self.broker.to_group(net, gid, {"k": wire.OPTIM, "settings": event[1]})
                return
            _, _, micros, batch_rows, lr = event
            self.stage = "replay"
            self.left = len(micros)
            submit_step(self.broker, net, self, micros, batch_rows, lr)  # the pump widens X to layer 1
            return
        self.reforward_held()

    def on_output(self, p):
        if self.stage == "replay":
            send_step_backward(self.broker, self.net, p)
        else:  # a held pass forwarded again, so that a backprop can still come
            self.broker.finish_pass(self.net, p, forget=False)
            self.left -= 1
            if self.left == 0:
                self.resume()

    def on_done(self, p):
        self.progress()
        self.left -= 1
        if self.left == 0:
            self.net.sent.mark(p.step)  # replayed whole, before the next one is submitted
        self.broker.finish_pass(self.net, p, forget=True)
        if self.left == 0:
            self.next_event()

    def reforward_held(self):
        """Answered passes kept for a backprop: groups must hold them again. (Unanswered ones
        belong to an interrupted predict, which sends them again itself.)"""
        held = [p for passes in self.net.held.values() for p in passes if p.z is not None]
        self.stage, self.left = "held", len(held)
        for p in held:
            p.job = self
            resubmit(self.broker, self.net, p)
        if not held:
            self.resume()

    def resume(self):
        net = self.net
        self._end()
        net.recovering = None
        for passes in net.held.values():  # they answer to no one now; a backprop picks them up
            for p in passes:
                if p.job is self:
                    p.job = None
        for job in self.interrupted:
            if not job.finished:
                net.jobs.add(job)
                job.progress()
                job.restart()
        self.broker.run_deferred(net)
