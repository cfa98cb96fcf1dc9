"""A training run, whichever its mode (training.py): its options, epochs, progress reports,
cancel, divergence, checkpoints and snapshots between steps, the recovery and the standby's
resume; the mode sends its steps and says when they are logged."""
import numpy as np

from .. import wire
from ..steps import micro_batches
from .checkpoints import WriteCheckpoint
from .jobs import Job
from .states import Event
from .steplog import SNAPSHOT_EVERY, send_step_backward, submit_step
from .trainopts import RESIDENT, converged, micro_count, options

PROGRESS_EVERY = 0.5  # seconds between progress reports to the client


class Train(Job):
    """A training run; Train(...) is the run of the mode its options name."""
    runs = {}  # mode -> the class of its runs (training.py)
    resident = False  # the data on the hosts, each step made there (resident.py)

    def __init_subclass__(cls, mode, **kwargs):
        super().__init_subclass__(**kwargs)
        Train.runs[mode] = cls

    def __new__(cls, ports, net, client, req, timeout, X, Y, opts):
        return super().__new__(chosen(net, opts) if cls is Train else cls)

    def __init__(self, ports, net, client, req, timeout, X, Y, opts):
        Y = targets(Y, len(X), net.spec.sizes[-1])
        self.options = o = options(opts, len(X))
        # the file in the broker's folder (the options keep the name asked: a standby puts it there again)
        self.checkpoint_path = ports.checkpoint_file(o.checkpoint_path) if o.checkpoint_every else None
        super().__init__(ports, net, client, req, timeout)  # only once the request is known to be sound
        self.X, self.Y = X.astype(net.spec.dtype), Y.astype(net.spec.dtype)
        self.rng = np.random.default_rng(o.seed) if o.shuffle else None
        self.epoch, self.history = 0, []
        self.micro = micro_count(o.batch_size, [X.shape[1], *net.spec.sizes], o.micro_batches)
        self.started = self.reported = ports.clock()
        self.rows_done, self.loss_sum, self.epoch_rows = 0, 0.0, 0
        self.lr = o.learning_rate
        self.steps_done, self.batch_at = 0, 0
        self.forwarding = set()   # passes sent whose outputs have not come back
        self.outstanding = set()  # passes sent and not yet done
        self.finishing = False    # every step is sent; the last dones are awaited
        self.cancelled = None     # who asked to cancel (a Cancel job), once someone did
        self.diverged = None      # (step, loss, epoch) of the first step whose loss was not a finite number
        self.resuming = False     # rebuilt by a standby broker that took over: restart() resumes at the mark
        self.mark = self.position()

    @property
    def opts(self):
        """The options as a dict: what a standby rebuilds the run from (replication.py)."""
        return self.options.to_dict()

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

    # -- what each mode does -------------------------------------------------------------
    def position(self):
        """Where the run is at a step boundary, for a standby to resume from; None: it cannot."""
        return None

    def send_more(self):
        """Start the steps the run may have on their way now."""
        raise NotImplementedError

    def start(self, micros, rows, last):
        """Send the steps of one mini-batch (last: the last of the run)."""
        raise NotImplementedError

    def resend(self, waiting):
        """After a recovery: send again what had not reached the output (waiting: those passes)."""
        raise NotImplementedError

    def logged(self, p, loss):
        """Pass p's output is back, with its loss: log and count the steps now whole (False: none)."""
        raise NotImplementedError

    def unlogged(self):
        """Whether steps are on their way, not yet logged."""
        return False

    # -- the run ---------------------------------------------------------------------------
    def run(self):
        o = self.options
        self.net.trainer = self
        self.net.life.fire(Event.TRAIN_STARTED)
        self.net.progress = {"epoch": 1, "epochs": o.epochs, "step": 0, "loss": None, "rate": 0.0}
        self.net.note("train", step=0, epochs=o.epochs, rows=len(self.X), batch_size=o.batch_size, mode=o.mode)
        self.configure()

    def configure(self):
        self.configuring = set(self.net.groups)
        self.net.optimizer_settings = self.options.optimizer
        self.net.log.append(("optim", self.options.optimizer))
        for gid in self.net.groups:
            self.flow.to_group(self.net, gid, {"k": wire.OPTIM, "settings": self.options.optimizer, "req": self.req})

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
        self.send_more()

    def start_batch(self):
        if self.finished:  # failed or timed out meanwhile: start nothing more
            return
        bs = self.options.batch_size
        idx = self.order[self.batch_at:self.batch_at + bs]
        self.batch_at += len(idx)
        micros = [(self.X[piece], self.Y[piece]) for piece in micro_batches(idx, self.micro)]
        self.start(micros, len(idx), self.epoch == self.options.epochs - 1 and self.batch_at >= len(self.X))

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
            return self.resume()  # ExactRun's: only an exact run has a mark to resume from
        if self.configuring:
            return self.configure()
        waiting, self.forwarding, self.outstanding = self.forwarding, set(), set()
        self.resend(waiting)
        self.finish_when_done()
        self.stop_here()

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
            step, loss, epoch = self.diverged
            self.fail(f"training of network {self.net.id} stopped: the loss of step {step} (epoch {epoch}) "
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
        if not self.logged(p, loss) or self.finished:
            return
        self.carry_on()

    def carry_on(self):
        """Steps were logged: hand out more, start the next epoch, or finish."""
        o = self.options
        if self.epoch_rows < len(self.X):
            self.next_batches()
        elif self.unlogged() or self.finishing:
            return
        elif self.epoch < o.epochs and not converged(self.history, o.tol, o.n_iter_no_change):
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
            self.diverged = (self.steps_done, float(loss) / rows, self.epoch + 1)  # the steps after it may end it
        ended = self.epoch_rows >= len(self.X)
        if ended:
            self.history.append(self.loss_sum / len(self.X))
            self.epoch += 1
        report(self, force=ended)
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
        if self.checkpoint_path:  # the last state too
            self.write_checkpoint(self.done)
        else:
            self.done()

    def done(self):
        self.reply(history=self.history, seconds=self.ports.clock() - self.started, rows=self.rows_done,
                   checkpoint=self.checkpoint_path, resident=self.resident)

    def between_batches(self, then):
        """Between steps: stop if cancelled; else take a snapshot first if the log has
        grown long, or a checkpoint is due."""
        every = self.options.checkpoint_every
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
        WriteCheckpoint(self.ports, self.net, self.checkpoint_path, {"steps": self.steps_done}, then,
                        self.fail).begin()

def report(run, force=False):
    """A run's progress (Train.step_logged): status's progress record now; the client's at most every PROGRESS_EVERY, and at the end
    of each epoch (force), with every epoch's loss so far: the client prints a line per epoch."""
    now = run.ports.clock()
    n, epochs = len(run.X), run.options.epochs
    ended = run.epoch_rows >= n  # run.epoch counts it already
    rows = (n if run.epoch >= epochs else 0) if ended else run.epoch_rows
    loss = run.loss_sum / max(run.epoch_rows, 1)
    rate = run.rows_done / max(now - run.started, 1e-9)
    run.net.progress = {"epoch": min(run.epoch + 1, epochs), "epochs": epochs, "step": run.steps_done,
                        "loss": loss, "rate": rate, "cancelling": bool(run.cancelled)}
    if now - run.reported < PROGRESS_EVERY and not force:
        return
    run.reported = now
    run.ports.reply(run.client, run.req, k=wire.PROGRESS, epoch=run.net.progress["epoch"], epochs=epochs,
                    rows=rows, total=n, loss=loss, rate=rate, step=run.steps_done, history=run.history)


def chosen(net, opts):
    """The class of the run its options ask for. An unknown mode is the exact run's to refuse
    (options() names it). An exact run's data stays on the hosts (resident.py) when asked (or
    by default), the output groups compute the loss themselves (not softmax over several), and
    the network has two layers or more: a layer-1 output group would run a whole grant in one
    go, with no message between its steps to let a cancel in."""
    mode = opts.get("mode", "exact") if isinstance(opts, dict) else None
    if mode == "exact" and "resident" in Train.runs and bool(opts.get("resident", RESIDENT)) and net.local_head \
            and len(net.layers) > 1:
        mode = "resident"
    return Train.runs.get(mode, Train.runs["exact"])


def targets(Y, rows, n_out):
    """The targets as rows x outputs (a vector is one column, or one row); ValueError says what is wrong."""
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1) if n_out == 1 or len(Y) == rows else Y.reshape(1, -1)
    if Y.shape != (rows, n_out):
        raise ValueError(f"targets have shape {list(Y.shape)}, need {[rows, n_out]} (rows x outputs)")
    if not np.all(np.isfinite(Y)):
        raise ValueError("targets must be finite numbers")
    return Y
