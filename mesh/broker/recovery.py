"""Surviving dead processes: the Recover job.

Every group keeps a snapshot of its own weights and optimizer state, read
after a known step, and a replica of another's (snapshots.py, keeper.py); the
broker keeps a log of what changed them since: input growth, optimizer changes, and every step whose
backward was sent (steplog.py). When a group or a whole worker dies, Recover
respawns the dead groups (on their worker if it lives, else on another),
rewires every group under a new generation number (so messages still in
flight from before are dropped), has each restore the snapshot (a new process
fetches the replica from its keeper), replays the log step by step with the
same micro-batches, forwards again the passes kept for a backprop, takes a
fresh snapshot (the replicas the lost processes kept are gone), and then
restarts the requests that were interrupted. The replayed
maths is the same, in the same order, so exact training ends with the
weights of a run without faults."""
from .. import wire
from .jobs import Job
from .snapshots import StateLost
from .states import Event
from .steplog import resubmit, send_step_backward, submit_step

RECOVERY_TIMEOUT = 120.0


class Recover(Job):
    hears_control_faults = True  # a group that cannot restore its state fails the recovery
    def __init__(self, ports, net, why, interrupted):
        super().__init__(ports, net, None, None, RECOVERY_TIMEOUT)
        self.why, self.interrupted = why, interrupted

    def run(self):
        net = self.net
        net.life.fire(Event.GROUP_LOST)
        net.recovering = self
        net.gen += 1
        net.restarts += 1
        net.last_failure = self.why
        net.passes.clear()
        net.queue.clear()
        net.in_flight = 0
        dead = {gid for gid, g in net.groups.items() if not g.alive}
        # live groups that still report to a broker that failed over: told where we are, not respawned
        reattach = {gid for gid, g in net.groups.items() if g.alive and not g.attached}
        self.missing = dead | reattach
        self.stage = "respawn"
        self.cursor = 0  # replay position in the log
        net.layer1_width = net.snapshot.inputs  # what the groups will hold once restored
        for gid in sorted(self.missing):
            if gid in dead:
                self.ports.respawn(net, gid)
            else:
                self.ports.rebroker(net, gid)
        if not self.missing:
            self.on_hello(None)

    def waiting_for(self):
        return f"recovery ({self.stage}) of network {self.net.id}; waiting for {sorted(self.missing)[:3]}"

    def expire(self):
        self.fail(f"did not finish: {self.waiting_for()}")

    def fail(self, error, **fields):
        """Recovery itself failed: the network is broken, and says why."""
        if self.finished:
            return
        self.end()
        self.net.recovering = None
        self.net.jobs.update(self.interrupted)  # so that they fail with the network
        self.ports.break_net(self.net, f"recovery after '{self.why}' failed: {error}")

    def on_hello(self, gid):
        self.missing.discard(gid)
        if self.stage != "respawn" or self.missing:
            return
        self.progress()
        self.stage = "rewire"
        self.missing = set(self.net.groups)
        try:
            self.ports.wire_up(self.net, restore=True)
        except StateLost as e:
            self.fail(str(e))

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
                for gid, _ in net.row_readers():
                    self.flow.to_group(net, gid, event[1])
                net.layer1_width += event[1]["cols"]
                continue  # the grow travels ahead of what follows on the same pipe
            if event[0] == "optim":
                self.stage, self.missing = "optim", set(net.groups)
                for gid in net.groups:
                    self.flow.to_group(net, gid, {"k": wire.OPTIM, "settings": event[1]})
                return
            _, _, micros, batch_rows, lr = event
            if self.stage != "replay":
                self.ports.fault("replay", net.restarts)
            self.stage = "replay"
            self.left = len(micros)
            submit_step(self.flow, net, self, micros, batch_rows, lr)  # the pump widens X to layer 1
            return
        self.reforward_held()

    def on_output(self, p):
        if self.stage == "replay":
            send_step_backward(self.flow, self.net, p)
        else:  # a held pass forwarded again, so that a backprop can still come
            self.flow.finish_pass(self.net, p, forget=False)
            self.left -= 1
            if self.left == 0:
                self.resume()

    def on_done(self, p):
        self.progress()
        self.left -= 1
        if self.left == 0:
            self.net.step_sent(p.step)  # replayed whole, before the next one is submitted
        self.flow.finish_pass(self.net, p, forget=True)
        if self.left == 0:
            self.next_event()

    def reforward_held(self):
        """Answered passes kept for a backprop: groups must hold them again. (Unanswered ones
        belong to an interrupted predict, which sends them again itself.)"""
        held = [p for p in self.net.held() if p.answered]
        self.stage, self.left = "held", len(held)
        for p in held:
            p.job = self
            resubmit(self.flow, self.net, p)
        if not held:
            self.resume()

    def resume(self):
        net = self.net
        self.end()
        net.recovering = None
        for p in net.held():  # they answer to no one now; a backprop picks them up
            if p.job is self:
                p.job = None
        net.life.fire(Event.RECOVERED_TRAINING if net.trainer is not None else Event.RECOVERED)
        # a fresh snapshot first: the replicas the lost processes kept for others are gone
        self.ports.take_snapshot(net, self.restart_interrupted)

    def restart_interrupted(self):
        for job in self.interrupted:
            if not job.finished:
                self.net.jobs.add(job)
                job.progress()
                job.restart()
