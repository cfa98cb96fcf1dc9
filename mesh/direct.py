"""Predicts that skip the broker: client -> layer 1 -> ... -> last layer -> client.

Four hops instead of six (client -> broker -> layers -> broker -> client), and
none of the broker's Python on the way. The broker governs by lease
(broker/leases.py): a network's generation and step, the unix sockets of its groups that read
the rows (layer 1's, and later layers' in a graph), a predict token that admits forward passes only, and its encoder,
so that the client encodes rows exactly as the broker would. The client binds
one unix socket (abstract namespace) where the last layer's groups answer.

Only for predict(remember=False): a remembered predict is kept by the broker
for the backprop that follows. Only when every broker address is on this host.
A predict sees the weights of the step its lease names: the client drops its
lease when it asks for a step itself (backprop, train, set_weights), so its
later predicts see its own steps, as through the broker; another client's step
it sees once a group has applied it (STALE). A predict goes through the broker as before, with the same answer, whenever
the lease does not hold any more (a group says STALE: a step was applied, the
network was rebuilt), no answer comes in time, or the rows do not
encode here (the broker then says what is wrong with them)."""
import os
import re
import time

import numpy as np
import zmq

from . import sockets, table, wire
from .encoder import Encoder, widened
from .head import output, whole

PATIENCE = 5.0     # seconds without an answer before a predict goes through the broker (at most the client's timeout)
UNREACHABLE_FOR = 60.0  # seconds before asking again for a lease whose sockets this client cannot reach
SILENT_FOR = 10.0  # ...for one whose groups went silent (no answer, no STALE): something is wrong there
WINDOW = 8        # passes of one predict on their way at once (a long predict does not flood the groups)
CONNECT_WITHIN = 2.0  # seconds for the unix sockets of layer 1 to accept a connection
LOCAL = re.compile(r"(ipc://|tcp://(127\.|localhost[:/]|\[::1\]))")


def usable(addresses):
    """Whether predicts may skip brokers at these addresses: all on this host."""
    return all(LOCAL.match(a) for a in addresses)


class Lease:
    def __init__(self, ctx, fields):
        self.gen, self.at, self.ptok = fields["gen"], fields["at"], fields["ptok"]
        self.width, self.last, self.output = int(fields["width"]), int(fields["last"]), fields["output"]
        self.dtype = np.dtype(fields["dtype"])
        self.encoder = Encoder.from_dict(fields["encoder"])
        self.first = [self._dial(ctx, ep) for ep in fields["first"]]  # every group that reads the rows
        self.srcs = fields.get("srcs") or [0] * len(self.first)  # the rows' part index in each
        # on this host, in this network namespace; and connected (a send then fails at once, not
        # silently later, when a group's process is gone)
        self.reachable = all(sockets.ipc_listening(ep) for ep in fields["first"]) and all(
            sock.poll(CONNECT_WITHIN * 1000, zmq.POLLOUT) for sock in self.first)

    @staticmethod
    def _dial(ctx, endpoint):
        sock = sockets.make(ctx, zmq.PUSH)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only to a live connection
        sock.connect(endpoint)
        return sock

    def encode(self, rows, strict):
        fields, arrays = table.from_rows(rows)
        X, S, strings = table.to_table(fields, arrays)
        M, _ = self.encoder.encode(X, S, strings, grow=False, strict=strict, dtype=self.dtype)
        return widened(M, self.width)

    def close(self):
        for sock in self.first:
            sock.close()


class Direct:
    """A client's predicts under leases, one lease per network."""

    def __init__(self, ctx, ask, patience=PATIENCE):
        self.ctx, self.patience = ctx, patience
        self.ask = ask      # network id -> the broker's answer to ROUTE (None: an error)
        self.leases = {}    # network id -> Lease
        self.retry = {}     # network id -> when to ask for a lease again, after a refusal
        self.reply = self.address = None  # the socket the last layer answers on, bound on first use
        self.seq = 0
        self.tag = os.urandom(8).hex()  # in every seq: groups gather a pass's parts by seq, across clients
        self.counts = {"direct": 0, "broker": 0}  # predicts answered each way (tests and benches read them)

    def predict(self, net, rows, strict=True, chunk=256):
        """Outputs (rows x outputs), or None: ask the broker."""
        lease = self._lease(net)
        if lease is None:
            self.counts["broker"] += 1
            return None
        try:
            M = lease.encode(rows, strict)
        except ValueError:  # the broker refuses them too, and says why
            M = None
        out = None if M is None or len(M) == 0 else self._run(net, lease, M, chunk)
        self.counts["direct" if out is not None else "broker"] += 1
        return out

    def forget(self, net):
        lease = self.leases.pop(net, None)
        if lease is not None:
            lease.close()

    def _lease(self, net):
        if net in self.leases:
            return self.leases[net]
        if time.monotonic() < self.retry.get(net, 0.0):
            return None
        fields = self.ask(net)
        if fields is None or not fields.get("lease"):  # the broker says why, and when to ask again
            self.retry[net] = time.monotonic() + float(fields.get("retry", 1.0) if fields else 1.0)
            return None
        lease = Lease(self.ctx, fields)
        if not lease.reachable:
            lease.close()
            self.retry[net] = time.monotonic() + UNREACHABLE_FOR
            return None
        if self.reply is None:
            self.address = sockets.abstract_ipc("reply")
            self.reply = sockets.make(self.ctx, zmq.PULL, bind=self.address)
        self.leases[net] = lease
        return lease

    def _run(self, net, lease, M, chunk):
        """Send the rows to layer 1, a chunk a pass, up to WINDOW passes on their way; gather
        the last layer's slices of each."""
        chunk = int(chunk)  # at least 1: Network.predict sends a smaller one to the broker, which refuses it
        starts = list(range(0, len(M), chunk))
        parts, sent = {}, 0  # seq -> {src: slice of z}, in the order of the rows
        deadline = time.monotonic() + self.patience
        done = 0
        while done < len(starts):
            while sent < len(starts) and sent - done < WINDOW:
                self.seq += 1
                seq = f"{self.tag}-{self.seq}"
                parts[seq] = {}
                header = {"k": wire.FWD, "seq": seq, "src": 0, "keep": False, "gen": lease.gen, "at": lease.at,
                          "net": net, "tok": lease.ptok, "reply": self.address}
                try:
                    for sock, src in zip(lease.first, lease.srcs):
                        sockets.send(sock, dict(header, src=src), [M[starts[sent]:starts[sent] + chunk]],
                                     flags=zmq.NOBLOCK)
                except zmq.Again:  # a group that takes nothing: its process is gone
                    return self._lapsed(net)
                sent += 1
            if not self.reply.poll(max(0.0, deadline - time.monotonic()) * 1000):
                self.retry[net] = time.monotonic() + SILENT_FOR
                return self._lapsed(net)
            _, h, arrays = sockets.recv(self.reply)
            seq = h.get("seq")
            if seq not in parts:
                continue  # a late answer to a predict that went through the broker since
            if h.get("k") != wire.OUT or len(arrays) != 1 or h.get("src") in parts[seq]:
                return self._lapsed(net)  # STALE: the lease holds no more
            parts[seq][h["src"]] = arrays[0]
            if len(parts[seq]) == lease.last:
                done += 1
                deadline = time.monotonic() + self.patience  # silence, not a long answer, is what gives up
        z = [whole(p) for p in parts.values()]
        return output(lease.output, z[0] if len(z) == 1 else np.concatenate(z))

    def _lapsed(self, net):
        self.forget(net)
        return None
