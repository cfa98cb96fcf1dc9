"""Steps: handed out, sent, logged. Every normal training step and every
replay of one after a recovery goes through these few functions.

A step is logged when its backward is sent, not when it is done: the groups
keep the order of steps, and a recovery redoes from the log any step that
never finished. The log holds whole steps only, so the state a recovery
rebuilds is always one the groups could have reached."""
from ..head import loss_and_grad
from .passes import Pass

SNAPSHOT_EVERY = 64  # steps between snapshots: bounds the log and the replay


def log_step(net, step, micros, batch_rows, lr):
    """A step whose backward is on its way, kept until the next snapshot: its
    micro-batches [(X, T)], enough to redo it exactly."""
    net.log.append(("step", step, list(micros), batch_rows, lr))
    net.steps_applied += 1
    net.step_sent(step)


def submit_step(flow, net, job, micros, batch_rows, lr, wait=True, head=False, ack=True):
    """Passes of one new step through the mesh; `job` hears their outputs (and dones, with ack).
    wait: its forwards see every step before it (exact); else whatever is applied (async).
    head: the output groups compute the loss and start the backward (Network.local_head)."""
    step = net.next_step()
    passes = []
    for X, T in micros:
        p = Pass(net.next_seq(), job, X, keep=True, after=step - 1 if wait else 0, head=head, ack=ack)
        p.train(T, step, len(micros), lr, batch_rows)
        passes.append(p)
    for p in passes:
        flow.submit(net, p)
    return passes


def send_step_backward(flow, net, p, ack=True):
    """The output gradient of a training pass; returns its summed loss."""
    loss, dz = loss_and_grad(net.spec.output, net.spec.loss, p.z, p.T, p.batch_rows)
    p.z = None
    flow.send_backward(net, p, dz, p.step, p.of, p.lr, ack)
    return loss


def resubmit(flow, net, p, after=None, first=False):
    """Send a pass again, under a new sequence number (after: as in Pass; None, the latest step;
    first: ahead of its client's waiting passes)."""
    net.passes.pop(p.seq, None)
    p.reset(net.next_seq(), after)
    flow.submit(net, p, first)
