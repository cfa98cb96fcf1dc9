"""A group's data path: forward passes in, activations on; gradients in, gradients back.

Every message here is a data message (wire.py's fixed binary layout, one frame): its
header is read by struct into a Data tuple, its array is read in place, and each part of a
pass is filed straight into its place in a buffer the pass owns (its source's columns of
the input, or its sum of the downstream gradients), allocated when its first part comes.
Nothing here builds a dict per message; the control messages (groupstate.py) are JSON.
What it sends, it hands its group's state as records (outbox.py): no socket here.

Forward: once every upstream part of pass `seq` is in, the group computes its activations
and sends them, one message built once, to every downstream group (or, from the last
layer, to the broker; or to the client, for a pass under a lease). Backward: once every
downstream gradient of pass `seq` is in, it keeps its share of the gradient, sends each
upstream group its columns of dL/dx, and applies the step once it has seen every pass of
it. Layer 1 reports DONE instead. A training pass whose targets the broker sent along
(TARGET) gets its loss and dL/dz here, at the output group (head.py), and goes straight
into the backward."""
import logging

import numpy as np

from . import fastpath, sockets, wire
from .bounded import Bounded
from .head import loss_and_grad
from .outbox import BROKER, Answer, Onward
from .spec import LOSSES, OUTPUTS

log = logging.getLogger("mesh.group")
MAX_HELD = 10_000  # passes kept for a backward that may never come (predict then no backprop)
MAX_AHEAD = 1024  # steps a message may wait for beyond the last applied; the broker keeps far fewer on their way
# Clients that predict under a lease (direct.py): what they can make a group hold is bounded by these
# three, MAX_CLIENTS x CLIENT_HWM x MAX_ANSWER = 64 MiB of queued answers at most.
MAX_CLIENTS = 8   # sockets kept open to them (the least recent close)
CLIENT_HWM = 32   # answers queued for one client (4 of its windows): one that stops reading loses them, never blocks
MAX_ANSWER = 256 * 1024  # bytes of one answer; a bigger pass is refused (STALE) and goes through the broker
MAX_DIRECT = 256  # clients' passes filed while their other parts come (a client has 8 on their way)
FWD, BWD, TARGET, OUT, DONE = (wire.DATA_CODE[k] for k in (wire.FWD, wire.BWD, wire.TARGET, wire.OUT, wire.DONE))
NOBODY = b"\0" * 16  # the token of an answer to a client: it is not given the network's


class DataPath:
    def __init__(self, group):
        self.g = group
        self.tok = wire.token_bytes(group.token)  # every data message of this network carries it
        self.ptok = wire.token_bytes(wire.predict_token(group.token))  # ...or this, on a client's pass
        self.net = int(group.net[1:]) if group.net[1:].isdigit() else 0
        self.layer = group.layer + 1
        self.dcode = wire.ARRAY_CODE.get(group.dtype.str, 0)  # the dtype of every buffer its passes fill
        self._down, self._srcs, self._route = None, [], []  # g.down; its distinct reader indexes; (to, which)
        budget = sockets.store_bytes()
        self.fwd = Bounded(f"group {group.gid}: forward passes", MAX_HELD, budget)  # seq -> [x, seen, parts in]
        self.bwd = Bounded(f"group {group.gid}: backward passes", MAX_HELD, budget)  # seq -> [dA, seen, parts in]
        self.direct_parts = Bounded(f"group {group.gid}: clients' passes", MAX_DIRECT, budget)  # never the broker's
        self.held = Bounded(f"group {group.gid}: passes held", MAX_HELD, budget)  # seq -> (x, a) for the backward
        self.targets = Bounded(f"group {group.gid}: targets", MAX_HELD, budget)  # seq -> what came first of a
        self.outputs = Bounded(f"group {group.gid}: outputs", MAX_HELD, budget)  # training pass's targets, output
        self.step_counts = {}  # step id -> passes of that step seen

    def reset(self):
        """Everything in flight is forgotten (a setup: a recovery resends what it needs)."""
        for store in (self.fwd, self.bwd, self.direct_parts, self.held, self.targets, self.outputs):
            store.clear()
        self.step_counts = {}

    def grown(self, at, added):
        """The input widened by `added` columns at column `at` (the rows' part of a graph's
        later layer grew): passes in flight, filed at the old width, widen with it, since
        a part of theirs from an upstream group may have come before the broker's growth."""
        for store in (self.fwd, self.direct_parts):
            for entry in store.values():
                x = entry[0]
                entry[0] = np.concatenate([x[:, :at], np.zeros((x.shape[0], added), x.dtype), x[:, at:]], axis=1)
                entry[3] = memoryview(entry[0]).cast("B")

    # -- in ----------------------------------------------------------------
    def on_message(self, buf):
        """One data message from the inbox; a malformed one is dropped, a wrong one refused."""
        d, a, drop = wire.unpack_data(buf)
        g = self.g
        if d.tok != self.tok:
            if d.tok == self.ptok and d.kind == FWD and g.rows_src is not None:
                self.direct(d._replace(src=g.rows_src), a)  # a client's rows under a lease: nothing else
            return  # not from this network's broker or groups: no reply, no state
        try:
            if d.ep:  # only a broker's messages carry it
                if d.ep < g.epoch:
                    return  # from a broker that another has replaced: fenced, it acts on nothing
                g.epoch = d.ep
            if d.kind == FWD and d.flags & wire.F_REPLY:
                return self.direct(d, a)  # a client's pass, passed on by the layer before
            if d.gen != g.gen:
                return  # in flight before a recovery rewired the network: replayed, not wanted
            if d.kind == FWD:
                ready = d.after <= g.applied.done
                # a group's part of a pass that is ready goes on even past what waits: it reads the
                # weights only, and in a graph the rows of a later pass may wait for this pass's step
                if not (ready and d.src != g.rows_src) and (not ready or g.waiting) and d.after != -1 and \
                        g.must_wait(d.after, lambda: self.forward(d, a, drop), a, lambda: wire.data_header(d)):
                    return  # it must follow a step not applied yet (or behind what waits for one)
                self.forward(d, a, drop)
            elif d.kind == BWD:
                self.backward(d, a)
            elif d.kind == TARGET:
                self.target(d, a)
            else:
                raise ValueError(f"a {wire.DATA_KINDS[d.kind]} is not for a group")
        except Exception as e:
            g.refuse(wire.data_header(d), e)

    def _filed(self, store, key, src, a, count, columns):
        """File one part of a pass (from source `src` of `count`) at its columns of the
        pass's input; the whole input once every part is in, else None."""
        if a is None or a.ndim != 2:
            raise ValueError(f"part of pass {key} from source {src} is not a 2-d array")
        if count == 1:
            if src != 0 or a.shape[1] != self.g.neurons.W.shape[1]:
                raise ValueError(f"part of pass {key} from source {src} has shape {list(a.shape)}")
            return a
        if src >= count:
            raise ValueError(f"part of pass {key} from source {src} of {count}")
        lo, hi = columns[src]
        entry = store.get(key)
        if entry is None:
            x = np.empty((a.shape[0], self.g.neurons.W.shape[1]), self.g.dtype)
            entry = [x, bytearray(count), 0, memoryview(x).cast("B")]  # its bytes: where fastpath's lane files parts
            store.put(key, entry, x.nbytes)
        x, seen, n, _ = entry
        if seen[src] or a.shape != (x.shape[0], hi - lo):
            raise ValueError(f"part of pass {key} from source {src} has shape {list(a.shape)}")
        x[:, lo:hi] = a
        seen[src] = 1
        entry[2] = n + 1
        if n + 1 < count:
            return None
        store.pop(key)
        return x

    def _summed(self, d, a):
        """dL/da of pass d.seq: the sum of the parts from every downstream group, once all are
        in, added in the order of their sources (whatever order they came in: the same floats
        every run)."""
        g, count = self.g, self.g.fan_out
        rows = g.neurons.W.shape[0]
        if a is None or a.ndim != 2 or a.shape[1] != rows or d.src >= count:
            raise ValueError(f"gradient of pass {d.seq} from source {d.src} has shape "
                             f"{None if a is None else list(a.shape)}")
        if count == 1:
            return a.astype(g.dtype, copy=True)
        entry = self.bwd.get(d.seq)
        if entry is None:
            parts = np.empty((count, *a.shape), g.dtype)
            entry = [parts, bytearray(count), 0, memoryview(parts).cast("B")]  # as in _filed
            self.bwd.put(d.seq, entry, parts.nbytes)
        parts, seen, n, _ = entry
        if seen[d.src] or a.shape != parts.shape[1:]:
            raise ValueError(f"gradient of pass {d.seq} from source {d.src} has shape {list(a.shape)}")
        parts[d.src] = a
        seen[d.src] = 1
        entry[2] = n + 1
        if n + 1 < count:
            return None
        self.bwd.pop(d.seq)
        return np.add.reduce(parts, axis=0)  # parts[0] + parts[1] + ..., in that order

    # -- forward -------------------------------------------------------------
    def forward(self, d, a, drop=()):
        g = self.g
        g.faults.on_forward()
        x = self._filed(self.fwd, d.seq, d.src, a, g.fan_in, g.columns)
        if x is None:
            return
        x = x.astype(g.dtype, copy=False)
        out = g.neurons.forward(x)
        for old in drop:
            self.held.pop(old)
        if d.flags & wire.F_KEEP:
            self.held.put(d.seq, (x, out), x.nbytes + out.nbytes)
        if g.down:
            self.onward(d, out, drop)
        elif not d.flags & wire.F_HEAD:  # the last layer: the broker gathers the outputs
            self.to_broker(OUT, d.seq, out)
        elif d.seq in self.targets:
            self.head(d.seq, out, *self.targets.pop(d.seq))
        else:
            self.outputs.put(d.seq, out, out.nbytes)  # its targets have not come yet

    def onward(self, d, out, drop, lease=False):
        """The output of pass d to every group that reads it: one message per index in the
        readers' inputs, not per reader. lease: a client's pass (it never blocks a group)."""
        g = self.g
        if self._down is not g.down:  # rewired: which message each reader gets, in g.down's order
            self._down, srcs = g.down, []
            for _, _, _, src in g.down:
                if src not in srcs:
                    srcs.append(src)
            self._srcs, self._route = srcs, [(to, srcs.index(src)) for to, _, _, src in g.down]
        msgs = [fastpath.data(FWD, d.flags, (self.tok, self.net, self.layer, len(drop), 0, d.gen, d.seq, d.tag, d.after,
                                             0, src, 0, 0, 0.0, b"", d.rpid, d.rtag), out, drop) for src in self._srcs]
        sends = [(to, msgs[which]) for to, which in self._route]
        self.g.emit(Onward(sends, d, lease))

    def to_broker(self, kind, seq, array=None, loss=None):
        g = self.g
        msg = fastpath.data(kind, 0 if loss is None else wire.F_LOSS, (self.tok, self.net, self.layer, 0, 0, g.gen, seq,
                                                                       0, -1, 0, g.index, 0, 0, loss or 0.0, b"", 0,
                                                                       b""), array)
        g.emit(Onward([(BROKER, msg)]))

    # -- a client's pass -----------------------------------------------------
    def direct(self, d, a):
        """A client's predict pass under a lease (direct.py): it sees the weights of step
        d.after of generation d.gen in every group, or the client hears STALE and asks the
        broker instead. Its parts wait in their own store, and its output goes to the
        client, never to the broker: a lease holder cannot touch another client's pass or a
        training pass."""
        if not d.flags & wire.F_REPLY or not d.rpid or not d.tag:
            return  # not a pass this group may answer
        g = self.g
        try:
            if g.neurons is None or g.custody.restoring is not None or d.gen != g.gen:
                raise ValueError(f"group {g.gid} was rebuilt (generation {g.gen})")
            if d.after != g.applied.done:
                raise ValueError(f"group {g.gid} is at step {g.applied.done}, the lease at {d.after}")
            g.faults.on_forward()
            x = self._filed(self.direct_parts, (d.tag, d.seq), d.src, a, g.fan_in, g.columns)
            if x is None:
                return
            out = g.neurons.forward(x.astype(g.dtype, copy=False))
            if g.down:
                return self.onward(d, out, (), lease=True)  # a next group that takes nothing: STALE (group.py)
            if out.nbytes > MAX_ANSWER:  # what waits in a client's socket is bounded
                raise ValueError(f"an answer of {out.nbytes} bytes; at most {MAX_ANSWER} go direct")
            g.emit(Answer(wire.reply_address(d.rpid, d.rtag),
                          [wire.data(OUT, 0, (NOBODY, self.net, self.layer, 0, 0, d.gen, d.seq, d.tag, -1, 0, g.index,
                                              0, 0, 0.0, b"", 0, b""), out)]))
        except Exception as e:
            g.emit(stale(d, f"{type(e).__name__}: {str(e)[:500]}"))

    # -- backward ------------------------------------------------------------
    def target(self, d, T):
        if T is None or T.ndim != 2 or T.shape[1] != self.g.neurons.W.shape[0]:
            raise ValueError(f"targets of pass {d.seq} have shape {None if T is None else list(T.shape)}")
        if d.seq in self.outputs:
            self.head(d.seq, self.outputs.pop(d.seq), d, T)
        else:
            self.targets.put(d.seq, (d, T), T.nbytes)  # its output has not come yet

    def head(self, seq, z, d, T):
        """The loss of this output slice, reported; its gradient, straight into the backward."""
        output, _, loss = d.head.rstrip(b"\0").decode(errors="replace").partition(":")
        if T.shape[0] != z.shape[0] or d.rows < z.shape[0]:
            raise ValueError(f"pass {seq} has {z.shape[0]} rows, {T.shape[0]} targets, batch of {d.rows}")
        if output not in OUTPUTS or loss not in LOSSES:
            raise ValueError(f"pass {seq}: unknown output {output!r} or loss {loss!r}")
        value, dz = loss_and_grad(output, loss, z, T.astype(z.dtype, copy=False), d.rows)
        self.backward(d._replace(kind=BWD, src=0), dz, report=(z, value))

    def backward(self, d, a, report=None):
        """dL/dx upstream first: the next step waits on it. Then `report`, (outputs, loss)
        of an output group's pass for the broker (it is not on the step's chain), then the
        update."""
        g = self.g
        dA = self._summed(d, a)
        if dA is None:
            return
        seq, step, of, lr = d.seq, d.step, d.of, d.value
        if of < 1 or not np.isfinite(lr):
            raise ValueError(f"pass {seq}: bad step fields of={of} lr={lr}")
        if seq not in self.held:
            raise ValueError(f"pass {seq} is not held here (no forward kept it, or it was already used)")
        x, out = self.held.pop(seq)
        dX = g.neurons.backward(x, out, dA, need_dx=bool(g.feeders))
        ack = d.flags & wire.F_ACK
        if g.feeders:  # at: its index among that group's readers
            g.emit(Onward([(to, fastpath.data(BWD, ack, (self.tok, self.net, self.layer, 0, 0, d.gen, seq, 0, -1, step,
                                                         at, of, 0, lr, b"", 0, b""), dX[:, lo:hi]))
                           for to, lo, hi, at in g.feeders], d))
            g.flush()  # the step's chain goes on upstream while this group updates
        if report is not None and not g.rundata.took(seq, report[1]):  # a resident run's: in a batch
            self.to_broker(OUT, seq, report[0], loss=report[1])
        seen = self.step_counts.get(step, 0) + 1
        if seen == of:
            self.step_counts.pop(step, None)
            g.neurons.apply(lr)
            g.applied.mark(step)
            g.faults.after_step(step)
        else:
            self.step_counts[step] = seen
        if not g.feeders and ack:  # no group upstream: the broker counts these
            self.to_broker(DONE, seq)
        if seen == of:
            g.release()


def stale(d, why):
    """To the client of pass d under a lease: the lease holds no more, ask the broker."""
    return Answer(wire.reply_address(d.rpid, d.rtag),
                  wire.pack({"k": wire.STALE, "seq": f"{d.tag:016x}-{d.seq}", "error": why}))
