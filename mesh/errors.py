"""What a client raises: a broker's refusal, with the broker's message, and silence,
naming what did not answer."""


class RemoteError(RuntimeError):
    """The broker refused a request; the message says why."""


class MeshTimeout(TimeoutError):
    """Nothing answered in time."""


class BrokerExited(MeshTimeout):
    """The broker's process, started by this program (mesh.local), has ended: nothing will answer."""


class Cancelled(RemoteError):
    """A training or online run was cancelled (Network.cancel, from this client or
    another, or Ctrl-C). epochs and steps say how far it got; every step it took
    was applied everywhere."""

    def __init__(self, message, epochs=0, steps=0, history=()):
        super().__init__(message)
        self.epochs, self.steps, self.history = epochs, steps, list(history)
