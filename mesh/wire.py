"""The wire contract: every message in the mesh is one multipart zmq message

    frame 0      header: a UTF-8 JSON object, at most MAX_HEADER bytes
    frame 1..n   raw array buffers, C order, described by header["a"]

header["k"] names the kind of message (table below); header["a"] is a list of
[dtype, shape] pairs, one per array frame. Data messages also carry "net" (the
network id) and "seq" (the pass they belong to). Nothing is ever pickled: a
peer can only send us JSON and bytes of a declared dtype and shape.

On a ROUTER socket the peer identity frame comes first and is not part of this.
"""
import hashlib
import json
import re

import numpy as np

MAX_HEADER = 64 * 1024  # bytes; a header is metadata, arrays travel in their own frames
MAX_DEPTH = 16  # nesting of a header's lists and objects; ours reach 4, and a deep one costs every reader a recursion
MAX_DIM = 1 << 31  # no dimension of a real array comes near it; bigger ones are lies
DTYPES = {"<f4": np.dtype(np.float32), "<f8": np.dtype(np.float64), "<i8": np.dtype(np.int64),
          "|u1": np.dtype(np.uint8)}  # bytes: a standby's records carry their JSON body as one (journal.py)

# Kinds of message, by socket.
# client -> broker (DEALER -> ROUTER); every reply echoes the request's "id"
CREATE = "create"        # spec -> network id
PREDICT = "predict"      # rows (table.py), keep, strict -> outputs
BACKPROP = "backprop"    # targets of the last predict -> one optimizer step
TRAIN = "train"          # X, Y, options, learn (encoder.py) -> per-epoch loss; streams PROGRESS first
WEIGHTS = "weights"      # -> every layer's W and b
SET_WEIGHTS = "set_weights"  # every layer's W and b -> the groups (fresh optimizer state)
PROCESSES = "processes"  # -> one record per group process
STATUS = "status"        # -> workers, networks (with their outputs' meaning: target), groups
CANCEL = "cancel"        # stop a network's training or online runs at a step boundary
DROP = "drop"            # end a network's group processes
SAVE = "save"            # -> spec, encoder and arrays, for the client to write
LOAD = "load"            # spec, encoder and arrays -> a new network
REPLY = "reply"          # broker -> client: {"ok": true, ...} or {"ok": false, "error": ...}
PROGRESS = "progress"    # broker -> client during long work
PING = "ping"            # client -> broker: still there? (a client of a pair asks when it hears nothing)
ROUTE = "route"          # client -> broker: a lease for predicts that skip the broker (direct.py)

# broker <-> broker: the pair (broker/pair.py), each on the other's client socket, with a mesh key.
# Every message a broker sends a worker or a group carries its epoch "ep" once it is one of a pair.
PAIR = "pair"            # heartbeat: role, epoch, primary, whether it holds a replica
SHIP = "ship"            # active -> standby: one record of its state (broker/journal.py), numbered "seq"
SHIPPED = "shipped"      # standby -> active: every record up to "seq" is applied
REBROKER = "rebroker"    # new active broker -> group: its inbox endpoints; the group says HELLO there

# worker <-> broker (DEALER -> the same ROUTER)
REGISTER = "register"    # worker: host, slots, pid
WELCOME = "welcome"      # broker: the address of its inbox
HEARTBEAT = "hb"         # both ways, every heartbeat interval; groups send theirs to the broker inbox
                         #   (with msgs sent and the step applied), workers theirs with their own and each
                         #   group's usage: [cores busy, proportional resident bytes, /proc state]
SPAWN = "spawn"          # broker: start a group process with this config
SPAWNED = "spawned"      # worker: group gid runs as pid
EXITED = "exited"        # worker: group gid's process ended, with its exit code
KILL = "kill"            # broker: end group gid
STANDBY = "standby"      # a standby broker of a pair: not this one ("peer_alive": go to the other)

# group inbox (PULL); broker and neighbours PUSH here
SETUP = "setup"          # broker: weights, neighbours, fan-in
FWD = "fwd"              # activations of one upstream group (or the input rows)
BWD = "bwd"              # dL/da for this group from one downstream group (or the broker)
TARGET = "target"        # broker -> output group: targets of a training pass; it computes the loss itself
GROW = "grow"            # broker: append input columns (layer 1 only)
GET = "get"              # broker: send back weights and optimizer state
SET = "set"              # broker: replace weights and optimizer state
OPTIM = "optim"          # broker: train with these optimizer settings (fresh state if they differ)
SNAP = "snap"            # broker: copy your state as the snapshot after step `after`; replica to your keeper
KEEP = "keep"            # group -> its keeper (or the broker): a replica of its snapshot ("of", "snap", "whole")
FETCH = "fetch"          # group -> keeper: send me ("of") my replica "snap" (to my endpoint, as wired)
REPLICA = "replica"      # keeper (or broker) -> group: the replica it asked for
STOP = "stop"            # broker: exit cleanly
PURGE = "purge"          # broker: drop what waits for a step after "beyond" (it never handed one out)

# broker inbox (PULL); groups PUSH here
HELLO = "hello"          # group started: its pid and inbox endpoints
READY = "ready"          # group wired
OUT = "out"              # last layer's activations for one pass
DONE = "done"            # layer-1 group finished the backward of one pass
STATE = "state"          # reply to GET
SNAPPED = "snapped"      # reply to SNAP: the step the snapshot is at
KEPT = "kept"            # a keeper holds the replica of "of" at "step"
FAULT = "fault"          # a group refused a message; says why

# group -> client, for a pass the client sent under a lease (direct.py): OUT with the outputs of
# its slice, or STALE (the lease no longer holds: a step, a recovery, a new input column).
STALE = "stale"


# Builders of the data-path messages that more than one place sends. The
# fields of each kind, written once: the broker and the groups call these.
def forward(seq, gen, after, keep, drop=(), head=False, src=0):
    """FWD: seq, src (upstream group index; 0 = the broker), gen, after (the step it must
    follow), keep (groups keep (x, a) for a backward), drop (seqs they may forget), head
    (a training pass whose loss the output groups compute)."""
    h = {"k": FWD, "seq": seq, "src": src, "keep": keep, "gen": gen, "after": after}
    if drop:
        h["drop"] = list(drop)
    if head:
        h["head"] = True
    return h


def backward(seq, src, gen, step, of, lr, ack):
    """BWD: dL/da for pass seq from downstream group src; step (its id), of (passes in
    that step), lr, ack (layer 1 reports DONE)."""
    return {"k": BWD, "seq": seq, "src": src, "gen": gen, "step": step, "of": of, "lr": float(lr), "ack": ack}


def target(seq, gen, step, of, lr, ack, rows, output, loss):
    """TARGET: a training pass's targets; rows (of the whole mini-batch: the loss is a
    mean over them), output and loss (the head's functions), and the step fields of BWD."""
    return {"k": TARGET, "seq": seq, "gen": gen, "step": step, "of": of, "lr": float(lr), "ack": ack, "rows": rows,
            "output": output, "loss": loss}


def reply(req, **fields):
    """REPLY: the answer to request `req`; ok, and error when not."""
    return {"k": REPLY, "id": req, **fields}


class WireError(ValueError):
    """A message that does not follow the contract above."""


_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode
encode_header = _encode  # a header as it travels (a pair's HMAC covers these bytes: broker/pair.py)


def pack(header, arrays=()):
    """Frames for one message: the JSON header, then each array (its buffer travels as is).
    This runs for every hop of every pass, so it does as little as it can."""
    frames, specs = [None], []
    for a in arrays:
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        if a.dtype.str not in DTYPES:
            raise WireError(f"dtype {a.dtype} cannot travel; use one of {sorted(DTYPES)}")
        specs.append((a.dtype.str, a.shape))
        frames.append(a)
    header = dict(header, a=specs)
    frames[0] = _encode(header).encode()
    return frames


def unpack(frames, max_header=MAX_HEADER):
    """(header, arrays) from received frames (bytes or zmq.Frame); WireError on anything malformed."""
    if not frames:
        raise WireError("empty message")
    raw = frames[0]
    raw = raw if isinstance(raw, bytes) else raw.bytes
    if len(raw) > max_header:
        raise WireError(f"header of {len(raw)} bytes exceeds the limit of {max_header}")
    try:
        header = _decode(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # "[" * 30000 is under the size limit
        raise WireError(f"header is not JSON: {type(e).__name__}") from None
    if type(header) is not dict or type(header.get("k")) is not str:
        raise WireError("header must be a JSON object with a string 'k'")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(header) > MAX_DEPTH:
        raise WireError(f"header nests deeper than {MAX_DEPTH} levels")
    specs = header.pop("a", ())
    if type(specs) is not list or len(specs) != len(frames) - 1:
        raise WireError(f"header declares {len(specs) if isinstance(specs, list) else '?'} arrays, message has {len(frames) - 1}")
    return header, [_array(spec, frame) for spec, frame in zip(specs, frames[1:])]


def _depth(value):
    """How deep lists and objects nest in a decoded header (iterative: no recursion to exhaust)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            break
        todo.extend((x, d + 1) for x in v)
    return deepest


def _array(spec, frame):
    """The array a frame holds, as its spec says; numpy itself checks that the bytes fit the shape."""
    try:
        name, shape = spec
        dtype = DTYPES[name]
        if type(shape) is not list or len(shape) > 4 or any(type(n) is not int or n < 0 or n > MAX_DIM for n in shape):
            raise ValueError
        buf = frame if isinstance(frame, bytes) else frame.buffer
        return np.frombuffer(buf, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, KeyError):
        raise WireError(f"bad array: {spec!r} does not describe a frame of {len(frame)} bytes") from None


# A lease's predict token: it admits a client's forward passes into a network's groups (and
# nothing else), and cannot be turned back into the network token that admits everything.
def predict_token(token):
    return hashlib.sha256(f"predict:{token}".encode()).hexdigest()[:32]


# Where a group may answer a client: an abstract unix socket the client bound (reachable
# from this host's network namespace only), never an address a header makes up.
REPLY_ADDRESS = re.compile(r"ipc://@neuromesh-reply-[0-9]+-[0-9a-f]{8}")
