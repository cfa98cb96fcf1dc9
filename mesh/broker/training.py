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

Train is the run both modes share (epochs, progress, cancel, checkpoints, the
report); ExactRun and AsyncRun send its steps, and Train(...) makes the one its
options' mode names.
"""
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .steplog import SNAPSHOT_EVERY, log_step, resubmit
from .trainopts import converged
from .trainrun import Train

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


class ExactRun(Train, mode="exact"):
    """One step per mini-batch, applied once all its micro-batches have passed: up to AHEAD
    on their way, logged in order; a standby resumes it at its mark."""

    def __init__(self, *args):
        self.batches = deque()  # mini-batches on their way, oldest first, not yet logged
        super().__init__(*args)

    def position(self):
        """Where the run is at a step boundary, every step before it logged: a standby that
        takes over resumes here (replication.py ships it with the log)."""
        new_epoch = self.epoch_rows >= len(self.X)
        batch_at = self.batch_at - sum(b.rows for b in self.batches)  # mini-batches ahead are not in it yet
        return {"epoch": self.epoch, "batch_at": 0 if new_epoch else batch_at,
                "loss_sum": 0.0 if new_epoch else self.loss_sum, "epoch_rows": 0 if new_epoch else self.epoch_rows,
                "rows_done": self.rows_done, "steps_done": self.steps_done, "history": list(self.history)}

    def resume(self):
        """Carry on from the mark (a broker failed over): the same order of rows, so the
        same steps as a run without the failover."""
        self.resuming = False  # resumed() set every counter from the mark
        o = self.options
        self.net.progress = {"epoch": min(self.epoch + 1, o.epochs), "epochs": o.epochs,
                             "step": self.steps_done, "loss": None, "rate": 0.0}
        if self.epoch >= o.epochs or (self.batch_at == 0 and converged(self.history, o.tol, o.n_iter_no_change)):
            self.finishing = True
            return self.finish_when_done()
        n = len(self.X)
        for _ in range(self.epoch if self.batch_at == 0 else self.epoch + 1):  # the permutations drawn so far
            self.order = self.rng.permutation(n) if self.rng is not None else np.arange(n)
        if self.batch_at == 0:
            self.start_epoch()
        else:
            self.send_more()

    def send_more(self):
        """Start mini-batches of this epoch until AHEAD are on their way (one, when the
        broker sends the backwards itself). None past a step where the run must stop
        whole: a cancel, a snapshot or a checkpoint (between_batches takes them once the
        steps before are logged)."""
        ahead = AHEAD if self.net.local_head else 1
        every = self.options.checkpoint_every
        while (not self.finished and not self.stopping() and self.batch_at < len(self.X)
               and len(self.batches) < ahead):
            on_way = len(self.batches)  # once they are logged, the log and the step count are this much longer
            if on_way and (len(self.net.log) + on_way >= SNAPSHOT_EVERY
                           or (every and (self.steps_done + on_way) % every == 0)):
                break
            self.start_batch()

    def start(self, micros, rows, last):
        batch = Batch(micros, rows, last)
        self.batches.append(batch)
        self.send_batch(batch)

    def send_batch(self, batch):
        passes = self.submit(batch.micros, batch.rows, wait=True, last=batch.last)
        batch.step, batch.waiting, batch.loss = passes[0].step, set(passes), 0.0
        self.send(passes)

    def resend(self, waiting):
        for batch in self.batches:  # not logged, so not replayed: again, under new ids, in order
            self.send_batch(batch)

    def logged(self, p, loss):
        batch = next(b for b in self.batches if p in b.waiting)
        batch.waiting.discard(p)
        batch.loss += loss
        logged = 0
        while self.batches and not self.batches[0].waiting:  # whole: its backward is on its way
            batch = self.batches.popleft()
            log_step(self.net, batch.step, batch.micros, batch.rows, self.lr)  # a recovery replays it now
            self.step_logged(batch.rows, batch.loss)
            logged += 1
        return logged > 0  # else not whole yet, or a step before it is not

    def next_batches(self):
        if self.batches:
            self.send_more()
        else:
            self.between_batches(self.send_more)

    def unlogged(self):
        return bool(self.batches)


class AsyncRun(Train, mode="async"):
    """Every micro-batch its own step, applied as soon as its backward passes, about a
    window of them on their way: stale gradients, not exact, not resumed by a standby."""

    def send_more(self):
        """Keep about a window of passes in flight. Each takes its step id when it is sent,
        so a cancel leaves no id handed out and never sent."""
        while (self.batch_at < len(self.X) and not self.stopping()
               and (not self.forwarding or len(self.forwarding) + self.micro <= self.net.window)):
            self.start_batch()

    def start(self, micros, rows, last):
        for m in micros:
            self.send(self.submit([m], rows, wait=False, last=last))

    def resend(self, waiting):
        for p in waiting:  # each its own step: a new id, since the recovery took the old ones as done
            p.step = self.net.next_step()
            resubmit(self.flow, self.net, p, after=0)
            self.send([p])

    def logged(self, p, loss):
        log_step(self.net, p.step, [(p.X, p.T)], p.batch_rows, self.lr)
        self.step_logged(p.rows, loss)
        return True

    def next_batches(self):
        self.send_more()
        self.stop_here()

