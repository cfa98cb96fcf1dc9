"""A resident run's steps as a group makes them (broker/resident.py is the broker's side).

The run's rows and targets are files on this host (staging.py), mapped read-only. RUN
grants steps first..first+n-1 and carries their rows by index (the run's order, cut into
mini-batches of `batch`): a group that reads the rows makes each step's forward passes
from the mapped rows, split into micro-batches as the broker would (steps.micro_batches),
under sequence numbers from `seq` on; an output group takes each pass's targets from the
mapped targets by the same indices. Both go through the data path as the broker's FWD
and TARGET would (the same checks, the same order: each step's forwards wait until the
step before is applied here), so the arithmetic is the broker-fed run's, bit for bit.

An output group reports the loss of each step (its passes' losses summed in micro-batch
order) in batches: LOSSES every REPORT_STEPS steps, every REPORT_SECONDS, and at the
grant's last step. Nothing goes to or comes from the broker per step."""
import time

import numpy as np

from . import staging, wire
from .steps import micro_batches

REPORT_STEPS = 16      # steps' losses per LOSSES message, at most
REPORT_SECONDS = 0.05  # ...or as often as this, when steps are slow
FWD, TARGET = wire.DATA_CODE[wire.FWD], wire.DATA_CODE[wire.TARGET]


class RunData:
    def __init__(self, group):
        self.g = group
        self.clear()

    def clear(self):
        """Forget the steps granted (a setup: the broker grants them again)."""
        self.seqs = {}     # seq -> (step, its micro-batch, of) of this group's output passes
        self.fed = {}      # seq -> step of the forwards made here (a cut drops those not started)
        self.losses = {}   # step -> its passes' losses, by micro-batch
        self.done = []     # [(step, loss)] of steps whose losses are all in, not yet reported
        self.last = 0      # the grant's last step
        self.sent_at = time.monotonic()

    def run(self, h, arrays):
        """RUN: make the steps granted."""
        g = self.g
        if h.get("gen") != g.gen or g.neurons is None:
            return  # for a generation a recovery replaced: it grants them again
        (idx,) = arrays
        batch, micro, first, seq, lr = (int(h["batch"]), int(h["micro"]), int(h["first"]), int(h["seq"]),
                                        float(h["lr"]))
        if idx.ndim != 1 or idx.dtype.kind != "i" or batch < 1 or micro < 1 or not np.isfinite(lr):
            raise ValueError(f"a run of {idx.dtype} {list(idx.shape)}, batch {batch}, micro {micro}")
        reader, output = g.rows_src is not None, not g.down
        # mapped for this grant only: its rows are copied into its messages, and a run's files,
        # removed when it ends, then hold no memory here
        X = staging.mapped(g.cfg["state_dir"], h["name"], "X") if reader else None
        Y = staging.mapped(g.cfg["state_dir"], h["name"], "Y") if output else None
        if len(idx) and (idx.min() < 0 or idx.max() >= len(X if reader else Y)):
            raise ValueError("a run's rows beyond its data")
        lo, hi = int(h.get("lo", 0)), int(h.get("hi", 0))
        head = str(h.get("head", "")).encode()
        tok, net = self.g.data.tok, self.g.data.net
        self.fed = {s: step for s, step in self.fed.items() if step > g.applied.done}  # those done go
        steps = [idx[i:i + batch] for i in range(0, len(idx), batch)]
        self.last = first + len(steps) - 1
        for j, rows in enumerate(steps):
            step = first + j
            pieces = micro_batches(rows, micro)
            for m, piece in enumerate(pieces):
                if output:  # its targets first: a group that is both finds them when its output is made
                    self.seqs[seq] = (step, m, len(pieces))
                    g.data.on_message(wire.data(TARGET, 0, (tok, net, 0, 0, 0, g.gen, seq, 0, -1, step, 0, len(pieces),
                                                            len(rows), lr, head, 0, b""),
                                                np.ascontiguousarray(Y[piece][:, lo:hi])))
                if reader:
                    x = X[piece]
                    if x.shape[1] < g.columns[g.rows_src][1] - g.columns[g.rows_src][0]:  # layer 1 grew since
                        x = np.pad(x, ((0, 0), (0, g.columns[g.rows_src][1] - g.columns[g.rows_src][0] - x.shape[1])))
                    self.fed[seq] = step
                    g.data.on_message(wire.data(FWD, wire.F_KEEP | wire.F_HEAD,
                                                (tok, net, 0, 0, 0, g.gen, seq, 0, step - 1, 0, g.rows_src, 0, 0, 0.0,
                                                 b"", 0, b""), x))
                seq += 1

    def cut(self, h, arrays):
        """CUT: a cancel. Without "beyond": drop the forwards made here that wait (their step
        is not started), say the last step started. With it: no step after it is made, and
        the losses up to it are reported now."""
        g = self.g
        if h.get("gen") != g.gen:
            return
        beyond = h.get("beyond")
        if beyond is None:
            dropped = {s for s, step in self.fed.items() if step > g.applied.done + 1}
            g.waiting.remove_if(lambda item: (h := item[2]()).get("k") == wire.FWD and h.get("seq") in dropped)
            for s in dropped:
                del self.fed[s]
            g.tell_broker({"k": wire.CUT, "started": max(self.fed.values(), default=g.applied.done)})
            return
        if type(beyond) is not int:
            raise ValueError(f"a cut beyond step {beyond!r}")
        for s in [s for s, (step, _, _) in self.seqs.items() if step > beyond]:
            del self.seqs[s]
            g.data.targets.pop(s)
        self.last = min(self.last, beyond)
        if self.done and self.done[-1][0] >= self.last:
            self.report(time.monotonic())

    def took(self, seq, loss):
        """An output pass's loss, if the pass is a resident run's (else the broker hears it in OUT)."""
        at = self.seqs.pop(seq, None)
        if at is None:
            return False
        step, m, of = at
        losses = self.losses.setdefault(step, [None] * of)
        losses[m] = loss
        if all(v is not None for v in losses):
            total = 0.0
            for v in self.losses.pop(step):  # in micro-batch order, as the broker adds them
                total += v
            self.done.append((step, total))
        now = time.monotonic()
        if self.done and (len(self.done) >= REPORT_STEPS or now - self.sent_at >= REPORT_SECONDS
                          or self.done[-1][0] >= self.last):
            self.report(now)
        return True

    def report(self, now):
        self.done.sort()
        self.g.tell_broker({"k": wire.LOSSES, "step": self.done[0][0], "src": self.g.index,
                            "steps": [s for s, _ in self.done]}, [np.array([v for _, v in self.done])])
        self.done, self.sent_at = [], now
