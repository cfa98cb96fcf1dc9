"""The broker's side of the data path: passes into layer 1, targets and
output gradients to the last layer, and the outputs and dones coming back.

No sockets here: `send(net, gid, header, arrays)` delivers one message to a
group (loop.py gives the real one, tests a recorder), so the bookkeeping of
the window, the fair queue and the order of steps is plain code."""
import logging


from .. import wire
from ..encoder import widened
from ..head import whole

log = logging.getLogger("mesh.broker")
ORDERED = {wire.GROW, wire.GET, wire.SET, wire.OPTIM, wire.SNAP}  # they see every step sent before them (groupstate.py)
CONTROL = {wire.SETUP, wire.SNAP, wire.KEEP, wire.FETCH, wire.REPLICA, wire.GOT}  # a refusal of one concerns few jobs


class Flow:
    def __init__(self, send, abandon_step):
        self.send = send                   # (net, gid, header, arrays)
        self.abandon_step = abandon_step   # (net, why): a step will never be sent whole

    def to_group(self, net, gid, header, arrays=()):
        header = dict(header, net=net.id, tok=net.token)
        if header["k"] in ORDERED:
            header["after"] = net.sent.done
        self.send(net, gid, header, arrays)

    # -- out -------------------------------------------------------------
    def submit(self, net, p, first=False):
        if p.after is None:
            p.after = net.step
        net.passes[p.seq] = p
        net.queue.append(p, first)
        self.pump(net)

    def pump(self, net):
        """Send queued passes, within the window. A pass goes only once the step it
        follows has been sent, or has entered whole with the output groups starting
        its backward (Network.entered_step): its forward then waits in the groups for
        the update, never ahead of a predict that step still needs."""
        while net.queue and net.in_flight < net.window:
            p = net.queue.pop_ready(lambda p: p.after <= net.released.done)
            if p is None:
                break
            p.in_flight = True
            net.in_flight += 1
            net.entered += 1
            p.entered = net.entered
            X = p.X.astype(net.spec.dtype, copy=False)
            X = widened(X, net.layer1_width)
            header = wire.forward(p.seq, net.gen, p.after, p.keep, p.drop, p.head)
            if p.head:
                self.send_targets(net, p)
            for gid, src in net.row_readers():  # src: the rows' part of that group's input
                self.to_group(net, gid, dict(header, src=src), [X])
            net.entered_step(p)

    def send_targets(self, net, p):
        """A training pass's targets to the output groups, which then compute its loss themselves."""
        header = wire.target(p.seq, net.gen, p.step, p.of, p.lr, p.ack, p.batch_rows, net.spec.output, net.spec.loss)
        for gid in net.last():
            g = net.groups[gid]
            self.to_group(net, gid, header, [p.T[:, g.lo:g.hi]])

    def send_backward(self, net, p, dz, step, of, lr, ack=True):
        """Hand the output groups their slices of dL/dz for pass p. With ack, layer 1
        reports DONE and p's job hears it; without, p leaves the window now (the
        groups order what follows it, see groupstate.py)."""
        header = wire.backward(p.seq, 0, net.gen, step, of, lr, ack)
        p.dones = 0
        for gid in net.last():
            g = net.groups[gid]
            self.to_group(net, gid, header, [dz[:, g.lo:g.hi]])
        if not ack:
            self.finish_pass(net, p, forget=True)

    def finish_pass(self, net, p, forget):
        if p.in_flight:
            p.in_flight = False
            net.in_flight -= 1
            self.pump(net)
        if forget:
            net.passes.pop(p.seq, None)

    # -- back ------------------------------------------------------------
    def out(self, net, h, arrays):
        p = net.passes.get(h["seq"])
        if p is None:
            return
        src, (z,) = h["src"], arrays
        last = net.last()
        if type(src) is not int or not 0 <= src < len(last) or src in p.parts:
            raise ValueError(f"an output of pass {p.seq} from group index {src!r}")
        g = net.groups[last[src]]
        if z.shape != (p.rows, g.hi - g.lo):  # what the broker holds of a pass is its own size
            raise ValueError(f"an output of shape {list(z.shape)} for pass {p.seq} from {g.gid}")
        p.parts[src] = z
        if "loss" in h:
            p.loss += float(h["loss"])
        if len(p.parts) == len(net.last()):
            p.z = whole(p.parts)
            p.parts = {}
            p.job.on_output(p)

    def done(self, net, h, arrays):
        p = net.passes.get(h["seq"])
        if p is None:
            return
        p.dones += 1
        if p.dones == len(net.roots()):
            p.job.on_done(p)

    def fault(self, net, h, arrays):
        """A group refused a message. The job of its pass fails; a step it may hold
        half of is abandoned, so the network is rebuilt from whole steps."""
        seq = h.get("seq")
        p = net.passes.get(seq)
        if seq is not None and p is None:
            if isinstance(h.get("step"), int) and h["step"] > 0:  # the client was answered; the step is half done
                self.abandon_step(net, f"step {h['step']} failed: {h.get('error')}")
            else:
                log.info("fault for a pass no longer here: %s", h.get("error"))
            return
        if p is not None:
            hit = [p.job]
        elif h.get("kind") in CONTROL:  # wiring, snapshots, replicas: the jobs that build or keep state
            hit = [j for j in net.jobs if getattr(j, "hears_control_faults", False)]
        else:
            hit = list(net.jobs)
        for job in hit:
            if job is not None:
                job.fail(h["error"])
        if p is not None and p.step is not None:  # a group may hold half a step
            self.abandon_step(net, f"step {p.step} failed: {h['error']}")
