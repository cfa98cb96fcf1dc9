"""The one place that makes zmq sockets, so every option is set the same way.

LINGER 0: a process that stops never waits on peers that may be gone.
HWM: flow control is done by the broker's bounded window of passes in flight,
so the high-water mark only has to be high enough never to block or drop
inside that window. MAXMSGSIZE: a peer cannot make us buffer an unbounded
message. CURVE keys, when configured, are set here too.

Under a memory budget (`mesh worker --memory`), limit_to() sizes both for the
worker and the groups it forks: what a peer could make a socket buffer must
fit the budget, not the default's 10,000 messages of up to 1 GiB.
"""
import os
import socket
from urllib.parse import urlparse

import zmq
import zmq.utils.monitor

from . import settings, wire

HWM = 10_000
SEND_TIMEOUT = 10_000  # ms: a send with no peer to take it (handshake refused, peer gone) fails, never hangs
MAX_MESSAGE = settings.max_message()  # bytes (MESH_MAX_MESSAGE); a client's request carries whole data sets
BUDGET_HWM = 256  # messages per peer under a budget: above any network's window of passes in flight (4 per layer + 4)
STORE_BYTES = 512 << 20  # what one store of a group that peers fill may hold (bounded.py), with no budget
_limits = {"hwm": HWM, "max_message": MAX_MESSAGE, "store": STORE_BYTES, "memory": None}  # make() uses these


def limit_to(budget):
    """Sockets made from now on, here and in processes forked from here, buffer within
    `budget` bytes: BUDGET_HWM messages per peer, none larger than half the budget (the
    largest a group legitimately receives is a replica of a neighbour's state, and it
    keeps two of those within its budget)."""
    _limits.update(hwm=BUDGET_HWM, max_message=min(MAX_MESSAGE, budget // 2), store=min(STORE_BYTES, budget // 4),
                   memory=budget)


def store_bytes():
    """The byte budget of each store a group fills on its peers' word (bounded.py)."""
    return _limits["store"]


def memory_bound():
    """The most one process may ever allocate on a peer's word: the budget, else the host's memory."""
    return _limits["memory"] or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def make(ctx, kind, *, bind=None, connect=None, max_message=None, hwm=None, keys=None, serve=None, dial=None):
    """A socket with our options. With keys (security.Keys): serve=DOMAIN makes it a
    CurveZMQ server admitting that domain's keys; dial=PUBLIC_KEY a client of that server."""
    hwm, max_message = hwm or _limits["hwm"], max_message or _limits["max_message"]
    sock = ctx.socket(kind)
    if keys is not None:
        if serve:
            keys.serve(sock, serve)
        else:
            assert dial, "a socket that dials with keys needs the server's public key"
            keys.dial(sock, dial)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    for addr in _list(bind):
        sock.bind(addr)
    for addr in _list(connect):
        sock.connect(addr)
    return sock


def _list(x):
    return [] if x is None else [x] if isinstance(x, str) else list(x)


ZERO_COPY = 64 * 1024  # bytes: below this, copying a frame costs less than lending zmq the buffer


SNDMORE = int(zmq.SNDMORE)


def send(sock, header, arrays=(), identity=None, flags=0):
    """One message. Its frames go by plain send calls, not send_multipart, whose flag
    arithmetic costs more than the send itself on the hop of a small pass."""
    if header["k"] in wire.DATA_CODE and identity is None:  # the data path's own layout: one frame
        msg = wire.pack_data(header, arrays)
        sock.send(msg, int(flags), copy=len(msg) < ZERO_COPY)
        return
    frames = wire.pack(header, arrays)
    if identity is not None:
        frames.insert(0, identity)
    big = any(a.nbytes >= ZERO_COPY for a in frames[1 + (identity is not None):])
    flags, last = int(flags), len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, flags | SNDMORE if i < last else flags, copy=not big)


def frames_of(sock):
    """Every frame of the next message, in place (the caller has polled: one is there)."""
    frames = [sock.recv(copy=False)]
    while frames[-1].more:
        frames.append(sock.recv(copy=False))
    return frames


def recv(sock, routed=False, max_header=wire.MAX_HEADER):
    """(identity or None, header, arrays). WireError carries the identity for a reply.
    Arrays are read in place from the received frames (no copy)."""
    frames = frames_of(sock)
    identity = frames.pop(0).bytes if routed else None
    return _unpacked(identity, frames, max_header)


def recv_with_key(sock, max_header=wire.MAX_HEADER, keyed=True):
    """(identity, the sender's CURVE public key in z85 or None, header, arrays) from a ROUTER.
    keyed=False: the socket has no CURVE, so there is no key to look up."""
    frames = frames_of(sock)
    identity = frames.pop(0).bytes
    key = None
    if frames and keyed:
        try:
            key = frames[0].get("User-Id")  # set by the ZAP handler once it admitted the key
        except zmq.ZMQError:
            key = None
    identity, header, arrays = _unpacked(identity, frames, max_header)
    return identity, key, header, arrays


def _unpacked(identity, frames, max_header):
    try:
        if len(frames) == 1 and wire.is_data(frames[0].buffer):
            d, array, drop = wire.unpack_data(frames[0].buffer)
            return identity, wire.data_header(d, drop), [] if array is None else [array]
        header, arrays = wire.unpack(frames, max_header)
    except wire.WireError as e:
        e.identity = identity
        raise
    return identity, header, arrays


def abstract_ipc(role):
    """A fresh unix socket name in Linux's abstract namespace: no file is ever
    made, so a process killed without warning leaves nothing behind in /tmp.
    Like loopback, it is reachable only from this host's network namespace."""
    return f"ipc://@neuromesh-{role}-{os.getpid()}-{os.urandom(4).hex()}"


def ipc_listening(endpoint):
    """True when an abstract ipc endpoint is bound and listening in this network namespace
    (a zmq connect to one that is not would wait silently forever). One connect of a plain
    unix socket, dropped at once: the kernel finds the name in a hash, where a search of
    /proc/net/unix would read every unix socket of the host (hundreds of thousands in a
    big per-neuron mesh) for each endpoint dialled."""
    if not (isinstance(endpoint, str) and endpoint.startswith("ipc://@")):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect("\0" + endpoint[len("ipc://@"):])
        return True
    except BlockingIOError:  # its backlog is full: listening all the same
        return True
    except OSError:  # ECONNREFUSED: no such name here
        return False
    finally:
        probe.close()


def host_of(address):
    """The host of a tcp:// address (names, IPv4 and [IPv6] alike)."""
    return urlparse(address.replace("tcp://", "http://")).hostname


def nearest(tcp, ipc, same_host):
    """Where to dial a peer that listens on both: its unix socket when it is on this host
    (~20 us a hop faster than tcp) and that socket is bound, else tcp."""
    return ipc if same_host and ipc_listening(ipc) else tcp


def monitor_events(monitor):
    """The events a socket monitor has queued (zmq.EVENT_*), read without waiting."""
    events = []
    while monitor.poll(0):
        events.append(zmq.utils.monitor.parse_monitor_message(monitor.recv_multipart())["event"])
    return events


def bound_endpoint(sock):
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()
