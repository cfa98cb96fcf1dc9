"""A neuron group process: one slice of one layer, a thin socket loop round its state.

It binds one PULL inbox (ipc for neighbours on this host, tcp for the rest) and holds one
PUSH socket per neighbour. Each message it reads goes to its state (groupstate.py), which
decides everything (step ordering, the data path, custody of snapshots, a client's pass
under a lease) and returns what to send, as records (outbox.py); this loop sends them.
Heartbeats go from a thread of their own (pulse.py)."""
import logging
import os

import zmq

from . import fastpath, heartbeat, settings, sockets, wire
from .datapath import CLIENT_HWM, MAX_CLIENTS, stale
from .groupstate import GroupState
from .lifecycle import profiled
from .outbox import BROKER, Answer, Onward, Rebroker, Rewire, Send, ToBroker
from .pulse import Pulse
from .security import Keys

log = logging.getLogger("mesh.group")


class Group:
    def __init__(self, ctx, config):
        self.ctx = ctx
        self.state = state = GroupState(config)
        self.keys = keys = Keys.from_config(config)  # a group speaks with its worker's keys
        if keys is not None:
            keys.start_authenticator(ctx)
        self.inbox = sockets.make(ctx, zmq.PULL, keys=keys, serve="mesh")
        if config.get("ipc_dir"):
            addr = f"ipc://{config['ipc_dir']}/{state.gid}-{os.getpid()}"  # abstract: unique per process
            self.inbox.bind(addr)
            state.endpoints["ipc"] = addr
        port = self.inbox.bind_to_random_port(f"tcp://{config['listen']}")
        state.endpoints["tcp"] = f"tcp://{config['advertise']}:{port}"
        self.endpoints = state.endpoints
        self.broker_inbox = config["broker_inbox"]  # its heartbeats go there too (pulse.py)
        self.broker = self._dial_broker(self.broker_inbox)
        self.peers = {}    # endpoint -> PUSH socket, of the groups its setup names
        self.clients = {}  # reply address -> PUSH socket, of clients that predict under a lease
        self.sent = 0      # messages sent, heartbeats aside: the dashboard shows their rate
        state.sender = self.execute
        self.sends = {Send: self._send, ToBroker: self._to_broker, Onward: self._onward, Answer: self._answer,
                      Rewire: self._rewire, Rebroker: self._rebroker}

    def run(self):
        self.state.hello()
        self.execute(self.state.take())
        # alive, even inside a long product: a stopped or starved group goes quiet and is replaced
        pulse = Pulse(self.ctx, self.beat_header, lambda: self.broker_inbox, self.keys)
        pulse.start()
        # one blocking receive per message, bounded by half a heartbeat: no poll between them
        self.inbox.setsockopt(zmq.RCVTIMEO, int(heartbeat.INTERVAL * 1000 / 2))
        try:
            self.serve()
        finally:
            pulse.stop()

    def serve(self, once=False):
        """The inbox until the state stops (once: one message, waiting for it): the middle
        parts of a pass filed in the state's data path by the loop itself (fastpath.py),
        every other message through handle."""
        fastpath.serve(self.state.data, self.inbox, self.handle, once)

    def handle_one(self):
        """Read one inbox message, waiting for it, and handle it."""
        self.serve(once=True)

    def handle(self, buf):
        """Handle one inbox message, its first frame `buf` (bytes) just read. Nothing a peer
        sends is fatal: a malformed message, or one not of this network, is dropped unread;
        one that fails, whatever it raises (MemoryError and RecursionError too), is answered
        with a FAULT."""
        header = {}
        try:
            if wire.is_data(buf):
                out = self.state.on_data(buf)  # the data path: no JSON, no dict
            else:
                header, arrays = wire.unpack(fastpath.control_frames(self.inbox, buf))
                out = self.state.handle(header, arrays)
        except wire.WireError:
            return  # malformed: cannot even tell whom to answer
        except Exception as e:  # the state refuses what it can; what escapes it is refused alike
            self.state.refuse(header, e)
            out = self.state.take()
        if out:
            self.execute(out)

    def setup(self, h, arrays):
        """Set up from this process (a test's, the bench's), as by the broker's SETUP."""
        self.execute(self.state.apply(dict(h, k=wire.SETUP), arrays))

    def beat(self):
        """One heartbeat now, from this thread (the pulse's thread sends them in a run)."""
        sockets.send(self.broker, self.beat_header())

    def beat_header(self):
        """Alive, with what watchers want to see: messages sent and the last step applied
        (built on the pulse's thread too: pulse.py)."""
        return dict(self.state.beat(), msgs=self.sent)

    # -- sending what the state says -------------------------------------------------------
    def execute(self, out):
        """Send what the state says, in order. One that fails (a peer full for SEND_TIMEOUT, a
        bad address) ends what its message sends, as a handler that raised would, and is
        refused in the name of what it carried."""
        sends = self.sends
        for instruction in out:
            try:
                sends[type(instruction)](instruction)
            except Exception as e:
                self.state.refuse(about(instruction), e)
                try:
                    for fault in self.state.take():
                        sends[type(fault)](fault)
                except Exception as again:  # the broker's socket is being replaced, or full: the log has it
                    log.warning("group %s could not report it: %s", self.state.gid, again)
                return

    def _send(self, s):
        sockets.send(self.peers[s.to], s.header, s.arrays)
        self.sent += 1

    def _to_broker(self, s):
        sockets.send(self.broker, s.header, s.arrays)
        self.sent += 1

    def _onward(self, s):
        flags = zmq.NOBLOCK if s.lease else 0  # a client's pass never blocks a group
        send, peers = fastpath.send, self.peers  # pyzmq's compiled send (copied under ZERO_COPY bytes)
        for to, msg in s.sends:
            try:
                send(self.broker if to is BROKER else peers[to], msg, flags)
            except zmq.Again:
                if not s.lease:
                    raise
                return self._answer(stale(s.d, f"group {self.state.gid} could not pass it on"))
            self.sent += 1

    def _answer(self, s):
        """To a client's reply socket (an abstract unix socket of the client form, never an
        address a peer makes up); never blocks: a client that stopped reading loses it."""
        sock = self.clients.pop(s.to, None) or sockets.make(self.ctx, zmq.PUSH, connect=s.to, hwm=CLIENT_HWM)
        self.clients[s.to] = sock  # the most recent last
        if len(self.clients) > MAX_CLIENTS:
            self.clients.pop(next(iter(self.clients))).close()
        try:
            sock.send_multipart(s.frames, zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            pass

    def _rewire(self, s):
        for sock in self.peers.values():
            sock.close()
        self.peers = {ep: sockets.make(self.ctx, zmq.PUSH, connect=ep, keys=self.keys, dial=key)
                      for ep, key in s.peers.items()}

    def _rebroker(self, s):
        """The new socket is made before the old one closes: a bad address leaves the old in place."""
        inbox = sockets.nearest(s.tcp, s.ipc, s.same_host)
        new = self._dial_broker(inbox)
        self.broker.close(linger=0)  # what waits for the old broker is for no one now
        self.broker, self.broker_inbox = new, inbox

    def _dial_broker(self, inbox):
        return sockets.make(self.ctx, zmq.PUSH, connect=inbox, keys=self.keys,
                            dial=self.keys and self.keys.broker_public)


def about(instruction):
    """The header a FAULT names for an instruction that failed: the pass it carried, or the
    message."""
    if isinstance(instruction, Onward):
        return {} if instruction.d is None else wire.data_header(instruction.d)
    if isinstance(instruction, (Send, ToBroker)):
        return instruction.header
    return {"k": wire.REBROKER if isinstance(instruction, Rebroker) else wire.SETUP}


def main(config):
    """Entry point of a forked group process."""
    logging.basicConfig(level=settings.log_level(),
                        format=f"%(asctime)s group {config['gid']} %(levelname)s %(message)s")
    ctx = zmq.Context()
    group = Group(ctx, config)
    try:
        with profiled(config["gid"]):
            group.run()
    except KeyboardInterrupt:
        pass
    finally:
        group.state.custody.keeper.close()  # its snapshot files go with it
        if group.keys is not None:
            group.keys.stop()
        ctx.destroy(linger=0)
