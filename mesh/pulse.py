"""A group's heartbeat, sent by a thread of its own on a socket of its own, so
that a long computation does not silence it: numpy releases the GIL inside
its products, and Python hands the GIL round every few milliseconds besides.
What silences it is what should: the process stopped (SIGSTOP), or starved
of the CPU altogether, or gone."""
import logging
import threading

import zmq

from . import heartbeat, sockets

log = logging.getLogger("mesh.pulse")


class Pulse(threading.Thread):
    """Every INTERVAL, header() goes to the broker's inbox at address(); a new
    address (a failover) gets a new socket. header() reads the group's fields
    from this thread: a value caught mid-change is sent next time instead."""

    def __init__(self, ctx, header, address, keys=None):
        super().__init__(name="mesh pulse", daemon=True)
        self.ctx, self.header, self.address, self.keys = ctx, header, address, keys
        self.halt = threading.Event()

    def run(self):
        sock, to = None, None
        try:
            while not self.halt.is_set():
                try:
                    if self.address() != to:
                        if sock is not None:
                            sock.close(linger=0)
                        to = self.address()
                        sock = sockets.make(self.ctx, zmq.PUSH, connect=to, keys=self.keys,
                                            dial=self.keys and self.keys.broker_public)
                    sockets.send(sock, self.header(), flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # the broker is not reading: the next beat will do
                except zmq.ContextTerminated:
                    return
                except Exception as e:  # a field read mid-change: beat again next interval
                    log.debug("heartbeat skipped: %s: %s", type(e).__name__, e)
                self.halt.wait(heartbeat.INTERVAL)
        finally:
            if sock is not None:
                sock.close(linger=0)

    def stop(self):
        self.halt.set()
        self.join(2 * heartbeat.INTERVAL)
