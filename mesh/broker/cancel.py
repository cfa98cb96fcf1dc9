"""Cancel: stop a network's training run at a step boundary, and its online runs."""
from .jobs import Job


class Cancel(Job):
    """Stop the network's training run at a step boundary and its online runs at their
    next backprop; answer once the training run has ended (at once if none runs)."""

    def run(self):
        net = self.net
        self.online = list(net.online_runs)
        net.cancelled_runs.update(dict.fromkeys(self.online))
        net.online_runs.clear()
        if net.trainer is None:
            self.reply(cancelled=["online"] * bool(self.online), state=net.state.value)
        else:
            net.trainer.cancel(self)

    def train_ended(self, train):
        self.reply(cancelled=["train"] + ["online"] * bool(self.online), epochs=train.epoch, steps=train.steps_done,
                   state=self.net.state.value)

    def waiting_for(self):
        return f"the training run of network {self.net.id} to reach a step boundary"
