"""One group process's Group, run in the test's own process: it handles one message at a
time when the test says, so what it did with each is an event the test sees."""
import numpy as np
import zmq

from mesh import sockets, wire
from mesh.group import Group


class Rig:
    """A group process's Group, in this process: `feed` pushes into its inbox, `sink` is its
    broker's inbox, `downs` stand in for the groups of the next layer."""

    def __init__(self, ctx, layer=0, fan_in=1, downs=0, rows=2, cols=2, token="tok"):
        self.ctx = ctx
        self.sink = sockets.make(ctx, zmq.PULL)
        port = self.sink.bind_to_random_port("tcp://127.0.0.1")
        self.g = Group(ctx, {"net": "n1", "gid": f"n1.{layer + 1}.0", "layer": layer, "lo": 0, "hi": rows,
                             "dtype": "float64", "token": token, "listen": "127.0.0.1", "advertise": "127.0.0.1",
                             "broker_inbox": f"tcp://127.0.0.1:{port}", "ipc_dir": None})
        self.downs = [sockets.make(ctx, zmq.PULL) for _ in range(downs)]
        down = [[f"tcp://127.0.0.1:{d.bind_to_random_port('tcp://127.0.0.1')}", 0, 1, None, 0] for d in self.downs]
        up = ([[f"tcp://127.0.0.1:9", i, i + 1, None, 0] for i in range(fan_in)] if layer  # never dialled back
              else [[None, 0, cols, None, None]])  # layer 1: the rows, from the broker
        self.W = np.arange(rows * cols, dtype=float).reshape(rows, cols) / 10
        self.g.setup({"function": "tanh", "index": 0, "fan_in": fan_in, "fan_out": 1, "down": down,
                      "up": up}, [self.W, np.zeros(rows)])
        self.feed = sockets.make(ctx, zmq.PUSH, connect=self.g.endpoints["tcp"])
        self.heard()  # its READY

    def send(self, header, arrays=(), raw=None):
        """One message in, handled: what its handling sent is there to read after this."""
        if raw is not None:
            self.feed.send_multipart(raw)
        else:
            sockets.send(self.feed, header, arrays)
        assert self.g.inbox.poll(10_000), "the message never reached the group"
        self.g.handle_one()

    def heard(self, timeout=10_000):
        """The next message the group sent its broker."""
        assert self.sink.poll(timeout), "the group said nothing to its broker"
        return sockets.recv(self.sink)[1:]

    def quiet(self):
        """Nothing is waiting from the group now (it sends before handle_one returns; a
        zero-timeout poll after a round trip through a socket of its own proves it)."""
        self.send({"k": wire.GET, "tok": self.g.state.token, "net": "n1", "slots": False})
        h, _ = self.heard()
        return h["k"] == wire.STATE

    def alive_and_right(self):
        x = np.array([[0.3, -0.7]])
        parts = [x] if self.g.state.fan_in == 1 else [x[:, i:i + 1] for i in range(self.g.state.fan_in)]  # one column a source
        for src, part in enumerate(parts):
            self.send({"k": wire.FWD, "tok": self.g.state.token, "net": "n1", "gen": self.g.state.gen, "seq": 10 ** 6,
                       "src": src, "after": 0}, [part])
        h, (a,) = (sockets.recv(self.downs[0])[1:] if self.downs else self.heard())
        np.testing.assert_allclose(a, np.tanh(x @ self.W.T))
        return self.g.state.running
