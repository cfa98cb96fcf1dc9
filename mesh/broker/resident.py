"""Exact training with the data resident in the mesh: the broker's side (rundata.py is
the groups').

The run's rows (encoded, as layer 1 reads them) and targets go once to each host that
holds a group reading the rows or an output group (STAGE, in bounded parts; the worker
writes one file each, staging.py). Then the broker grants steps: one RUN per group with
the next steps' rows by index (the run's order, the same seeded shuffle as the
broker-fed run) and their step ids and sequence numbers, reserved here. The groups make
the steps themselves; the output groups report the losses in batches (LOSSES). A grant
ends where the broker needs the run whole: a snapshot (the log at SNAPSHOT_EVERY), a
checkpoint, the end of an epoch; so in steady state it sends one message per group per
grant, none per step.

Each step is logged as the broker-fed run logs it (its micro-batches, cut from the rows
by the same indices), counted when every output group's loss of it is in, and a
recovery replays it from the log as any other; the steps of a grant not logged are
granted again, under new ids, from where the log ends. A standby resumes at the mark
and stages the data again. A cancel, or a loss that is not a finite number, cuts the grant
short (CUT): the row readers drop the steps they have not started, and the grant ends at the
furthest one any of them started."""
import os
from dataclasses import dataclass, field

import numpy as np

from .. import wire
from ..encoder import widened
from ..steps import cut_count, micro_batches
from .steplog import SNAPSHOT_EVERY, log_step
from .training import ExactRun

PART_BYTES = 4 << 20  # bytes of one STAGE message: zmq holds a whole message in memory
GRANT_SECONDS = 0.25  # a grant lasts about this long (at the rate steps went so far): a cancel waits no longer
FIRST_GRANT = 8       # steps of the first grant, before the rate is known


@dataclass(eq=False)
class Grant:
    """Steps first.. granted to the groups, their rows by index; the ones logged so far."""
    first: int
    steps: list                    # each step's rows (indices into X)
    at: float = 0.0                # when it was granted
    seq: int = 0                   # the first step's first pass
    cutting: dict = None           # a cancel's cut: row reader -> the last step it started (None: not heard)
    logged: int = 0
    heard: dict = field(default_factory=dict)  # step id -> {output group index: its loss}


class ResidentRun(ExactRun, mode="resident"):
    resident = True

    def __init__(self, *args):
        super().__init__(*args)
        self.name = f"{self.net.id}-{os.urandom(4).hex()}"  # its files on the hosts
        self.staging = None   # (worker, part) not yet whole; None: not staged (or to stage again)
        self.hosts = set()    # workers that were sent its files
        self.staged_bytes = 0
        self.grant = None
        self.size = FIRST_GRANT  # steps the next grant may have, from the rate of the last

    # -- the data, once per host ------------------------------------------------------------
    def stage(self):
        net = self.net
        wids = {net.groups[gid].worker for gid, _ in net.row_readers()} | {net.groups[gid].worker for gid in net.last()}
        wids.discard(None)
        self.staging = {(w, part) for w in wids for part in "XY"}
        self.hosts |= wids
        X = widened(self.X, net.layer1_width)
        self.staged_bytes = X.nbytes + self.Y.nbytes  # on each of those hosts (budgets.resident_on)
        for part, A in (("X", X), ("Y", self.Y)):
            A = np.ascontiguousarray(A)
            rows = max(1, PART_BYTES // max(A.shape[1] * A.itemsize, 1))
            for at in range(0, len(A), rows):
                for w in wids:
                    self.ports.to_worker(w, {"k": wire.STAGE, "net": net.id, "name": self.name, "part": part,
                                             "shape": list(A.shape), "dtype": A.dtype.str, "at": at},
                                         [A[at:at + rows]])

    def on_staged(self, wid, name, part):
        if name != self.name or not self.staging or self.finished:
            return
        self.progress()
        self.staging.discard((wid, part))
        if not self.staging:
            self.send_more()

    def end(self):
        super().end()
        for w in self.hosts:
            self.ports.to_worker(w, {"k": wire.UNSTAGE, "name": self.name})
        self.hosts = set()

    # -- steps, granted -----------------------------------------------------------------------
    def send_more(self):
        if self.finished or self.stopping() or self.grant is not None or self.batch_at >= len(self.X):
            return
        if self.staging is None:
            return self.stage()
        if not self.staging:
            self.give()

    def give(self):
        """Grant the steps up to the next boundary (a snapshot, a checkpoint, the epoch's end), or
        about GRANT_SECONDS of them (the rate of the last grant says how many)."""
        net, o = self.net, self.options
        room = min(SNAPSHOT_EVERY - len(net.log), self.size)
        if o.checkpoint_every:
            room = min(room, o.checkpoint_every - self.steps_done % o.checkpoint_every)
        steps, at = [], self.batch_at
        while at < len(self.X) and len(steps) < max(room, 1):
            steps.append(self.order[at:at + o.batch_size])
            at += len(steps[-1])
        first, seq = net.step + 1, net.seq + 1
        net.step += len(steps)
        net.seq += sum(cut_count(len(rows), self.micro) for rows in steps)
        self.grant = Grant(first, steps, self.ports.clock(), seq)
        self.forwarding.add(self.grant)  # a step boundary only once it is all logged (cancel, fail)
        self.send_run([gid for gid, _ in net.row_readers()] + list(net.last()), first, seq, steps)

    def send_run(self, gids, first, seq, steps):
        net = self.net
        header = {"k": wire.RUN, "name": self.name, "gen": net.gen, "first": first, "seq": seq,
                  "batch": self.options.batch_size, "micro": self.micro, "lr": self.lr,
                  "head": f"{net.spec.output}:{net.spec.loss}"}
        idx = np.concatenate(steps).astype(np.int64)
        last = set(net.last())
        for gid in dict.fromkeys(gids):
            g = net.groups[gid]
            self.flow.to_group(net, gid, dict(header, lo=g.lo, hi=g.hi) if gid in last else header, [idx])

    # -- cancel: the grant cut short ------------------------------------------------------------
    def cancel(self, by):
        """A cancel stops within a few steps, not at the grant's end: the row readers drop the
        steps they have not started and say how far they got (on_cut); the grant then ends at
        the furthest step any of them started."""
        super().cancel(by)
        self.cut_short()

    def cut_short(self):
        """Cancelled or diverged: ask the row readers how far they got."""
        grant = self.grant
        if self.stopping() and not self.finished and grant is not None and grant.cutting is None:
            grant.cutting = dict.fromkeys(gid for gid, _ in self.net.row_readers())
            for gid in grant.cutting:
                self.flow.to_group(self.net, gid, {"k": wire.CUT, "gen": self.net.gen})

    def on_cut(self, g, h):
        grant = self.grant
        if grant is None or not grant.cutting or g.gid not in grant.cutting or grant.cutting[g.gid] is not None:
            return
        grant.cutting[g.gid] = int(h["started"])
        if any(v is None for v in grant.cutting.values()):
            return
        net, end = self.net, grant.first + len(grant.steps) - 1
        # the ids after the cut go back unused, unless another step took an id since (then all are made)
        cut = max(grant.first + grant.logged - 1, *grant.cutting.values()) if net.step == end else end
        cut = min(cut, end)
        seqs = np.cumsum([0] + [cut_count(len(rows), self.micro) for rows in grant.steps])
        for gid, started in grant.cutting.items():  # the steps they dropped that another started: again
            if started < cut:
                j = started + 1 - grant.first
                self.send_run([gid], started + 1, grant.seq + int(seqs[j]), grant.steps[j:cut + 1 - grant.first])
        for gid in net.last():
            self.flow.to_group(net, gid, {"k": wire.CUT, "gen": net.gen, "beyond": cut})
        del grant.steps[cut + 1 - grant.first:]
        net.step = min(net.step, cut)
        if grant.logged == len(grant.steps):
            self.grant_done(grant)

    def on_losses(self, g, h, arrays):
        """An output group's losses of steps granted: log and count the steps now whole."""
        grant, (losses,) = self.grant, arrays
        steps = h["steps"]
        if grant is None or self.finished or len(steps) != len(losses):
            return
        self.progress()
        outputs = len(self.net.last())
        for step, loss in zip(steps, losses.tolist()):
            if grant.first + grant.logged <= step < grant.first + len(grant.steps):
                grant.heard.setdefault(step, {})[g.index] = loss
        while grant.logged < len(grant.steps) and len(grant.heard.get(grant.first + grant.logged, ())) == outputs:
            step = grant.first + grant.logged
            parts = grant.heard.pop(step)
            loss = 0.0
            for i in sorted(parts):
                loss += parts[i]
            rows = grant.steps[grant.logged]
            micros = [(self.X[p], self.Y[p]) for p in micro_batches(rows, self.micro)]
            log_step(self.net, step, micros, len(rows), self.lr)  # a recovery replays it from here
            grant.logged += 1
            self.batch_at += len(rows)
            self.step_logged(len(rows), loss)
            if self.finished:
                return
            self.cut_short()  # diverged: stop within a few steps, as a cancel does
        if grant.logged == len(grant.steps) and not (grant.cutting and None in grant.cutting.values()):
            self.grant_done(grant)

    def grant_done(self, grant):
        """Every step granted is logged: a step boundary."""
        rate = len(grant.steps) / max(self.ports.clock() - grant.at, 1e-6)
        self.size = max(1, int(rate * GRANT_SECONDS))
        self.grant = None
        self.forwarding.discard(grant)
        if self.epoch_rows < len(self.X):
            self.between_batches(self.send_more)
        else:
            self.carry_on()

    def resend(self, waiting):
        """After a recovery (the logged steps replayed): grant again from where the log ends,
        staging the data again (groups may run on other hosts now)."""
        self.grant, self.staging = None, None
        self.send_more()

    def unlogged(self):
        return self.grant is not None
