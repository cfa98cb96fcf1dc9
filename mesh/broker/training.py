"""Training, run by the broker as one job: epochs of mini-batches, each cut
into micro-batches that stream through the mesh back to back.

exact: groups accumulate the gradients of a mini-batch's micro-batches and
    apply them when the last one has passed. Same maths as in-process
    mini-batch SGD. Up to AHEAD mini-batches are on their way at once: each
    one's forwards wait in each group until the step before is applied there
    (group.py), so neither the broker nor a round trip to it sits between
    steps: a step travels layer to layer and back while the next one's rows
    already wait in layer 1. (When the broker must send the backward itself,
    softmax over several output groups, one mini-batch goes at a time.)
async: every micro-batch is applied as soon as its backward passes; the next
    ones are already in flight, so they see weights a few steps old (stale
    gradients). Faster, not exact.

A step is logged, in order, when its whole output is back (its backward is
then on its way), and only then counted (loss, rows, steps, the mark a
standby resumes from); the job ends when every pass is done. A recovery
replays the logged steps and sends the mini-batches not logged again, under
new step ids, in the same order.

Cancel (Train.cancel) stops at a step boundary: no new step is handed out,
every step already handed out is sent whole (so the groups apply it), and the
client hears `cancelled` with the epochs and steps completed. A loss that is
not a finite number (the run diverged) stops it the same way, with an error
naming the step.

The client hears progress every PROGRESS_EVERY seconds and at the end of each
epoch (with the epochs' losses so far): one request is the whole run.
"""
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .. import wire
from .checkpoints import WriteCheckpoint
from .jobs import Job
from .states import Event
from .steplog import SNAPSHOT_EVERY, log_step, resubmit, send_step_backward, submit_step
from .trainopts import converged, micro_count, options

PROGRESS_EVERY = 0.5  # seconds between progress reports to the client
AHEAD = 4  # exact mode: mini-batches on their way at once (when the output groups start each backward)


@dataclass(eq=False)
class Batch:
    """One mini-batch of exact training on its way: one step."""
    micros: list        # [(X, T)] of its micro-batches
    rows: int
    last: bool          # the last of the run: layer 1 reports its dones
    step: int = 0
    waiting: set = field(default_factory=set)  # its passes whose output is not back
    loss: float = 0.0   # summed over the outputs back so far


class Train(Job):
    def __init__(self, ports, net, client, req, timeout, X, Y, opts):
        n_out = net.spec.sizes[-1]
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1) if n_out == 1 or len(Y) == len(X) else Y.reshape(1, -1)
        if Y.shape != (len(X), n_out):
            raise ValueError(f"targets have shape {list(Y.shape)}, need {[len(X), n_out]} (rows x outputs)")
        if not np.all(np.isfinite(Y)):
            raise ValueError("targets must be finite numbers")
        self.o = options(opts, len(X))
        self.opts = opts  # as asked: what a standby rebuilds the run from
        if self.o["checkpoint_every"]:
            self.o["checkpoint_path"] = ports.checkpoint_file(self.o["checkpoint_path"])
        super().__init__(ports, net, client, req, timeout)  # only once the request is known to be sound
        self.X, self.Y = X.astype(net.spec.dtype), Y.astype(net.spec.dtype)
        self.rng = np.random.default_rng(self.o["seed"]) if self.o["shuffle"] else None
        self.epoch, self.history = 0, []
        self.micro = micro_count(self.o["batch_size"], [X.shape[1], *net.spec.sizes], self.o["micro_batches"])
        self.started = self.reported = ports.clock()
        self.rows_done, self.loss_sum, self.epoch_rows = 0, 0.0, 0
        self.lr = self.o["learning_rate"]
        self.steps_done, self.batch_at = 0, 0
        self.batches = deque()    # exact: mini-batches on their way, oldest first, not yet logged
        self.forwarding = set()   # passes sent whose outputs have not come back
        self.outstanding = set()  # passes sent and not yet done
        self.finishing = False    # every step is sent; the last dones are awaited
        self.cancelled = None     # who asked to cancel (a Cancel job), once someone did
        self.diverged = None      # (step, loss) of the first step whose loss was not a finite number
        self.resuming = False     # rebuilt by a standby broker that took over: restart() resumes at the mark
        self.mark = self.position() if self.o["mode"] == "exact" else None

    def position(self):
        """Where the run is at a step boundary, every step before it logged: a standby that
        takes over resumes here (exact mode only; journal.py ships it with the log)."""
        new_epoch = self.epoch_rows >= len(self.X)
        batch_at = self.batch_at - sum(b.rows for b in self.batches)  # mini-batches ahead are not in it yet
        return {"epoch": self.epoch, "batch_at": 0 if new_epoch else batch_at,
                "loss_sum": 0.0 if new_epoch else self.loss_sum, "epoch_rows": 0 if new_epoch else self.epoch_rows,
                "rows_done": self.rows_done, "steps_done": self.steps_done, "history": list(self.history)}

    @classmethod
    def resumed(cls, ports, net, client, req, timeout, X, Y, opts, mark):
        """The run as a standby rebuilds it from its record: it carries on from mark once the
        network is restored (restart)."""
        job = cls(ports, net, client, req, timeout, X, Y, opts)
        job.resuming, job.mark = True, mark
        job.configuring = set()  # the optimizer settings are in the log the recovery replays
        # how far it got, already: a cancel that comes before it resumes says so
        job.epoch, job.batch_at, job.loss_sum = mark["epoch"], mark["batch_at"], mark["loss_sum"]
        job.epoch_rows, job.rows_done, job.steps_done = mark["epoch_rows"], mark["rows_done"], mark["steps_done"]
        job.history = list(mark["history"])
        return job

    def run(self):
        self.net.trainer = self
        self.net.life.fire(Event.TRAIN_STARTED)
        self.net.progress = {"epoch": 1, "epochs": self.o["epochs"], "step": 0, "loss": None, "rate": 0.0}
        self.net.note("train", step=0, epochs=self.o["epochs"], rows=len(self.X), batch_size=self.o["batch_size"],
                      mode=self.o["mode"])
        self.configure()

    def configure(self):
        self.configuring = set(self.net.groups)
        self.net.optimizer_settings = self.o["optimizer"]
        self.net.log.append(("optim", self.o["optimizer"]))
        for gid in self.net.groups:
            self.flow.to_group(self.net, gid, {"k": wire.OPTIM, "settings": self.o["optimizer"], "req": self.req})

    def waiting_for(self):
        if self.configuring:
            return f"optimizer set-up at {self.net.describe(sorted(self.configuring)[0])}"
        return f"training pass at {self.net.describe(self.net.first()[0])} (or a group after it)"

    def on_ready(self, gid):
        if self.configuring:
            self.configuring.discard(gid)
            if not self.configuring:
                self.start_epoch()

    def start_epoch(self):
        if self.stop_here():
            return
        n = len(self.X)
        self.order = self.rng.permutation(n) if self.rng is not None else np.arange(n)
        self.batch_at, self.loss_sum, self.epoch_rows = 0, 0.0, 0
        if self.o["mode"] == "async":
            self.fill()
        else:
            self.run_ahead()

    def run_ahead(self):
        """Exact: start mini-batches of this epoch until AHEAD are on their way (one, when
        the broker sends the backwards itself). None past a step where the run must stop
        whole: a cancel, a snapshot or a checkpoint (between_batches takes them once the
        steps before are logged)."""
        ahead = AHEAD if self.net.local_head else 1
        every = self.o["checkpoint_every"]
        while (not self.finished and not self.stopping() and self.batch_at < len(self.X)
               and len(self.batches) < ahead):
            on_way = len(self.batches)  # once they are logged, the log and the step count are this much longer
            if on_way and (len(self.net.log) + on_way >= SNAPSHOT_EVERY
                           or (every and (self.steps_done + on_way) % every == 0)):
                break
            self.start_batch()

    def fill(self):
        """Async: keep about a window of passes in flight. Each takes its step id when it
        is sent, so a cancel leaves no id handed out and never sent."""
        while (self.batch_at < len(self.X) and not self.stopping()
               and (not self.forwarding or len(self.forwarding) + self.micro <= self.net.window)):
            self.start_batch()

    def start_batch(self):
        if self.finished:  # failed or timed out meanwhile: start nothing more
            return
        bs = self.o["batch_size"]
        idx = self.order[self.batch_at:self.batch_at + bs]
        self.batch_at += len(idx)
        micros = [(self.X[piece], self.Y[piece]) for piece in np.array_split(idx, min(self.micro, len(idx)))]
        last = self.epoch == self.o["epochs"] - 1 and self.batch_at >= len(self.X)
        if self.o["mode"] == "exact":  # one step per mini-batch
            batch = Batch(micros, len(idx), last)
            self.batches.append(batch)
            self.send_batch(batch)
        else:  # every micro-batch its own step, applied as soon as its backward is done
            for m in micros:
                self.send(self.submit([m], len(idx), wait=False, last=last))

    def send_batch(self, batch):
        passes = self.submit(batch.micros, batch.rows, wait=True, last=batch.last)
        batch.step, batch.waiting, batch.loss = passes[0].step, set(passes), 0.0
        self.send(passes)

    def submit(self, micros, rows, wait, last):
        """Exact mode hears dones of the last mini-batch only (the end of training); the
        groups order the others. Async mode hears every one: they pace its window."""
        return submit_step(self.flow, self.net, self, micros, rows, self.lr, wait=wait,
                           head=self.net.local_head, ack=not wait or last)

    def send(self, passes):
        self.forwarding.update(passes)
        self.outstanding.update(p for p in passes if p.ack)

    def restart(self):
        """After a recovery: the log (every step whose backward was sent) was
        replayed, so send again only what had not reached the output."""
        if self.resuming:
            return self.resume()
        if self.configuring:
            return self.configure()
        waiting, self.forwarding, self.outstanding = self.forwarding, set(), set()
        if self.o["mode"] == "exact":
            for batch in self.batches:  # not logged, so not replayed: again, under new ids, in order
                self.send_batch(batch)
        else:  # each its own step: a new id, since the recovery took the old ones as done
            for p in waiting:
                p.step = self.net.next_step()
                resubmit(self.flow, self.net, p, after=0)
                self.send([p])
        self.finish_when_done()
        self.stop_here()

    def resume(self):
        """Carry on from the mark (a broker failed over): the same order of rows, so the
        same steps as a run without the failover."""
        self.resuming = False  # resumed() set every counter from the mark
        self.net.progress = {"epoch": min(self.epoch + 1, self.o["epochs"]), "epochs": self.o["epochs"],
                             "step": self.steps_done, "loss": None, "rate": 0.0}
        if self.epoch >= self.o["epochs"] or (self.batch_at == 0 and converged(self.history, self.o["tol"],
                                                                               self.o["n_iter_no_change"])):
            self.finishing = True
            return self.finish_when_done()
        n = len(self.X)
        for _ in range(self.epoch if self.batch_at == 0 else self.epoch + 1):  # the permutations drawn so far
            self.order = self.rng.permutation(n) if self.rng is not None else np.arange(n)
        if self.batch_at == 0:
            self.start_epoch()
        else:
            self.run_ahead()

    def cancel(self, by):
        """Stop at the next step boundary (now, if between steps)."""
        if self.finished or self.cancelled:
            return
        self.cancelled = by
        self.net.progress["cancelling"] = True  # status says so: a canceller can tell its cancel arrived
        if not self.configuring and not self.forwarding and not self.finishing:
            self.stop_here()

    def stopping(self):
        """Cancelled, or diverged: no new step is handed out."""
        return bool(self.cancelled) or self.diverged is not None

    def stop_here(self):
        """At a step boundary: end the run if it was cancelled or diverged. True if it ended."""
        if not self.stopping() or self.finished or self.forwarding:
            return False
        steps = self.steps_done
        if self.diverged is not None:
            step, loss = self.diverged
            self.fail(f"training of network {self.net.id} stopped: the loss of step {step} (epoch {self.epoch + 1}) "
                      f"is {loss}, not a finite number (the run diverged; try a smaller learning rate); the "
                      f"{steps} steps taken are applied", epochs=self.epoch, steps=steps, history=self.history)
            return True
        self.fail(f"training of network {self.net.id} was cancelled after {self.epoch} epochs and {steps} steps",
                  cancelled=True, epochs=self.epoch, steps=steps, history=self.history)
        return True

    def expire(self):
        """While the network is rebuilt or snapshotted the run waits; it is not late."""
        if self.net.waits():
            return self.progress()
        super().expire()

    def end(self):
        super().end()
        if self.net.trainer is self:
            self.net.trainer = None
            if self.net.life.can(Event.TRAIN_ENDED):  # not once the network is dropped
                self.net.life.fire(Event.TRAIN_ENDED)
        if self.cancelled:
            self.cancelled.train_ended(self)

    def fail(self, error, **fields):
        if not self.finished:
            unsent = bool(self.forwarding)  # step ids handed out whose backward was not all sent
            super().fail(error, **fields)
            if unsent:
                self.ports.abandon_step(self.net, f"training stopped mid-step: {error}")

    def on_output(self, p):
        if self.finished:
            return
        self.progress()
        self.forwarding.discard(p)
        if p.head:  # the output groups computed its loss and started its backward
            loss = p.loss
            p.z = None
            if not p.ack:
                self.flow.finish_pass(self.net, p, forget=True)
            elif p.done_first:
                self.on_done(p)
        else:
            loss = send_step_backward(self.flow, self.net, p, p.ack)
        if self.o["mode"] == "async":
            log_step(self.net, p.step, [(p.X, p.T)], p.batch_rows, self.lr)
            self.step_logged(p.rows, loss)
        else:
            batch = next(b for b in self.batches if p in b.waiting)
            batch.waiting.discard(p)
            batch.loss += loss
            logged = 0
            while self.batches and not self.batches[0].waiting:  # whole: its backward is on its way
                batch = self.batches.popleft()
                log_step(self.net, batch.step, batch.micros, batch.rows, self.lr)  # a recovery replays it now
                self.step_logged(batch.rows, batch.loss)
                logged += 1
            if not logged:
                return  # not whole yet, or a step before it is not
        if self.finished:
            return
        if self.epoch_rows < len(self.X):
            if self.o["mode"] == "async":
                self.fill()
                self.stop_here()
            elif self.batches:
                self.run_ahead()
            else:
                self.between_batches(self.run_ahead)
            return
        if self.batches or self.finishing:
            return
        if self.epoch < self.o["epochs"] and not converged(self.history, self.o["tol"], self.o["n_iter_no_change"]):
            self.between_batches(self.start_epoch)
        else:  # the last epoch, or the loss stopped improving (every step of it is sent)
            self.finishing = True
            self.finish_when_done()

    def step_logged(self, rows, loss):
        """Count a step once it is logged: its rows and loss, the epoch it ends, the mark."""
        self.flow.pump(self.net)  # others' passes that waited for this step to be sent
        self.loss_sum += loss
        self.rows_done += rows
        self.epoch_rows += rows
        self.steps_done += 1
        self.net.note("loss", step=self.steps_done, epoch=self.epoch + 1, loss=loss / rows, rows=rows)
        if not np.isfinite(loss) and self.diverged is None:
            self.diverged = (self.steps_done, float(loss) / rows)
        ended = self.epoch_rows >= len(self.X)
        if ended:
            self.history.append(self.loss_sum / len(self.X))
            self.epoch += 1
        self.report(force=ended)
        if self.o["mode"] == "exact":
            self.mark = self.position()
        self.ports.fault("step", self.steps_done)

    def on_done(self, p):
        if p in self.forwarding and not self.finished:
            p.done_first = True  # its DONE overtook its OUT (another socket): finish it at the output
            return
        self.flow.finish_pass(self.net, p, forget=True)
        if self.finished:
            return
        self.outstanding.discard(p)
        self.finish_when_done()

    def finish_when_done(self):
        if not self.finishing or self.outstanding or self.finished:
            return
        if self.diverged is not None:
            self.stop_here()
            return
        if self.o["checkpoint_every"]:  # the last state too
            self.write_checkpoint(self.done)
        else:
            self.done()

    def done(self):
        self.reply(history=self.history, seconds=self.ports.clock() - self.started, rows=self.rows_done,
                   checkpoint=self.o["checkpoint_path"] if self.o["checkpoint_every"] else None)

    def between_batches(self, then):
        """Between steps: stop if cancelled; else take a snapshot first if the log has
        grown long, or a checkpoint is due."""
        every = self.o["checkpoint_every"]
        if self.stop_here():
            return
        if self.net.snapshotting:  # a snapshot is on its way already
            then()
        elif every and self.steps_done % every == 0:
            self.write_checkpoint(then)
        elif len(self.net.log) >= SNAPSHOT_EVERY:
            self.ports.take_snapshot(self.net, then)
        else:
            then()

    def write_checkpoint(self, then):
        """The network's state now, to disk: `mesh.Client.load` resumes from it, even after a broker restart."""
        WriteCheckpoint(self.ports, self.net, self.o["checkpoint_path"], {"steps": self.steps_done}, then,
                        self.fail).begin()

    def report(self, force=False):
        """Status's progress record now; the client's at most every PROGRESS_EVERY, and at the end
        of each epoch (force), with every epoch's loss so far: the client prints a line per epoch."""
        now = self.ports.clock()
        n, epochs = len(self.X), self.o["epochs"]
        ended = self.epoch_rows >= n  # self.epoch counts it already
        rows = (n if self.epoch >= epochs else 0) if ended else self.epoch_rows
        loss = self.loss_sum / max(self.epoch_rows, 1)
        rate = self.rows_done / max(now - self.started, 1e-9)
        self.net.progress = {"epoch": min(self.epoch + 1, epochs), "epochs": epochs, "step": self.steps_done,
                             "loss": loss, "rate": rate, "cancelling": bool(self.cancelled)}
        if now - self.reported < PROGRESS_EVERY and not force:
            return
        self.reported = now
        self.ports.reply(self.client, self.req, k=wire.PROGRESS, epoch=self.net.progress["epoch"], epochs=epochs,
                         rows=rows, total=n, loss=loss, rate=rate, step=self.steps_done, history=self.history)
