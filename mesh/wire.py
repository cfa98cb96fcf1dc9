"""The wire contract. A message is one of two shapes:

  control: a multipart zmq message
    frame 0      header: a UTF-8 JSON object, at most MAX_HEADER bytes
    frame 1..n   raw array buffers, C order, described by header["a"]
  data (FWD, BWD, TARGET, OUT, DONE): one frame
    DATA         a fixed little-endian header (the table below), starting with DATA_MAGIC
    the array    one 2-d array's bytes, C order, as the header's dtype and shape say
    drop         FWD only: `ndrop` int64 seqs the groups may forget

header["k"] names the kind of message (table below); header["a"] is a list of
[dtype, shape] pairs, one per array frame. Nothing is ever pickled: a peer can
only send us JSON, a fixed binary header, and bytes of a declared dtype and shape.
A data message's header is read by struct, with no JSON and no dict, and its
array straight out of the frame: it is what a mesh sends per pass per link.
Elsewhere than in a group's inbox, sockets.recv gives a data message as the dict
data_header() makes of it, with the same field names as the builders below.

On a ROUTER socket the peer identity frame comes first and is not part of this.
"""
import collections
import hashlib
import json
import re
import struct

import numpy as np

MAX_HEADER = 64 * 1024  # bytes; a header is metadata, arrays travel in their own frames
MAX_DEPTH = 16  # nesting of a header's lists and objects; ours reach 4, and a deep one costs every reader a recursion
MAX_DIM = 1 << 31  # no dimension of a real array comes near it; bigger ones are lies
DTYPES = {"<f4": np.dtype(np.float32), "<f8": np.dtype(np.float64), "<i8": np.dtype(np.int64),
          "|u1": np.dtype(np.uint8)}  # bytes: a standby's records carry their JSON body as one (replication.py)

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

# broker <-> broker: the pair (broker/pairstate.py), each on the other's client socket, with a mesh key.
# Every message a broker sends a worker or a group carries its epoch "ep" once it is one of a pair.
PAIR = "pair"            # heartbeat: role, epoch, primary, whether it holds a replica
SHIP = "ship"            # active -> standby: one record of its state (broker/replication.py), numbered "seq"
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
GOT = "got"              # group -> group: part "part" of a replica's stream (KEEP or REPLICA, "way") is written
STOP = "stop"            # broker: exit cleanly
PURGE = "purge"          # broker: drop what waits for a step after "beyond" (it never handed one out)
RUN = "run"              # broker: a resident run's steps first..first+n-1 (their rows by index) (rundata.py)
CUT = "cut"              # broker: a resident run stops early (a cancel): drop the steps not started and say
                         #   how far you got (CUT back, "started"), or with "beyond": make none after it

# resident training data (broker/resident.py): the run's rows and targets, once per host
STAGE = "stage"          # broker -> worker: rows "at".. of the file "name" ("shape", "dtype"), one bounded part
STAGED = "staged"        # worker -> broker: the file "name" is whole
UNSTAGE = "unstage"      # broker -> worker: remove the files of run "name"

# broker inbox (PULL); groups PUSH here
HELLO = "hello"          # group started: its pid and inbox endpoints
READY = "ready"          # group wired
OUT = "out"              # last layer's activations for one pass
DONE = "done"            # layer-1 group finished the backward of one pass
STATE = "state"          # reply to GET
SNAPPED = "snapped"      # reply to SNAP: the step the snapshot is at
KEPT = "kept"            # a keeper holds the replica of "of" at "step"
FAULT = "fault"          # a group refused a message; says why
LOSSES = "losses"        # an output group's losses of a resident run, one per step from "step"

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


# -- data messages ------------------------------------------------------------
DATA_MAGIC = 0xD7  # a data message's first byte: never the first byte of a JSON header ("{")
DATA_FIELDS = [    # name, struct code: the layout of a data message's header, in order
    ("magic", "B"),
    ("kind", "B"),     # DATA_KINDS' index
    ("flags", "B"),    # F_KEEP | F_HEAD | F_ACK | F_LOSS | F_REPLY
    ("dtype", "B"),    # ARRAY_DTYPES' index: the array's dtype (0: no array)
    ("tok", "16s"),    # the network's token (or a lease's predict token), as token_bytes() gives it
    ("net", "I"),      # the network's number: "n12" -> 12
    ("layer", "H"),    # the sender's layer, from 1 (0: the broker, or a client)
    ("ndrop", "H"),    # FWD: how many seqs to forget follow the array
    ("ep", "I"),       # the epoch of the broker that sent it (0: alone, or not a broker)
    ("gen", "q"),      # the network's generation
    ("seq", "q"),      # the pass
    ("tag", "Q"),      # a client's random tag, its passes' seqs "tag-seq" (0: the broker's pass)
    ("after", "q"),    # FWD: the step it must follow (-1: none); a client's pass: its lease's step ("at")
    ("step", "q"),     # BWD, TARGET: the step it belongs to
    ("src", "I"),      # the sender's index in its layer (0: the broker)
    ("of", "I"),       # BWD, TARGET: passes in that step
    ("rows", "I"),     # TARGET: rows of the whole mini-batch (its loss is a mean over them)
    ("value", "d"),    # BWD, TARGET: the learning rate; OUT: the loss (with LOSS)
    ("head", "24s"),   # TARGET: "output:loss", the head's functions
    ("rpid", "I"),     # a client's pass (REPLY): its reply socket ipc://@neuromesh-reply-{rpid}-{rtag hex}
    ("rtag", "4s"),
    ("nrows", "I"),    # the array's shape
    ("ncols", "I"),
]
DATA = struct.Struct("<" + "".join(code for _, code in DATA_FIELDS))
Data = collections.namedtuple("Data", [name for name, _ in DATA_FIELDS])
DATA_KINDS = (None, FWD, BWD, TARGET, OUT, DONE)
DATA_CODE = {k: i for i, k in enumerate(DATA_KINDS) if k}
F_KEEP, F_HEAD, F_ACK, F_LOSS, F_REPLY = 1, 2, 4, 8, 16  # flags of a data message
ARRAY_DTYPES = (None, np.dtype("<f4"), np.dtype("<f8"), np.dtype("<i8"), np.dtype("|u1"))
ARRAY_CODE = {d.str: i for i, d in enumerate(ARRAY_DTYPES) if d is not None}
_CODE_OF = {d: i for i, d in enumerate(ARRAY_DTYPES) if d is not None}  # dtypes compare with their byte order
_DROP = np.dtype("<i8")


def token_bytes(token):
    """A token as a data header carries it: our tokens are 32 hex digits (16 bytes); anything
    else (a test's, a stranger's) maps to a digest of it, which no real token equals."""
    if isinstance(token, str) and len(token) == 32:
        try:
            return bytes.fromhex(token)
        except ValueError:
            pass
    return hashlib.sha256(f"not a token:{token!r}".encode()).digest()[:16]


def data(kind, flags, fields, array=None, drop=()):
    """The bytes of one data message: kind, flags, then Data's fields from "tok" to "rtag" in
    order; the dtype and shape come from the array."""
    if array is None:
        return DATA.pack(DATA_MAGIC, kind, flags, 0, *fields, 0, 0) + (
            np.asarray(drop, dtype=_DROP).tobytes() if drop else b"")
    code = _CODE_OF.get(array.dtype)  # by the dtype itself: its .str costs a microsecond to make
    if code is None or array.ndim != 2:
        raise WireError(f"a data message carries one 2-d array of {sorted(ARRAY_CODE)}, not {array.dtype} "
                        f"{list(array.shape)}")
    head = DATA.pack(DATA_MAGIC, kind, flags, code, *fields, *array.shape)
    if drop:
        return b"".join((head, array.tobytes(), np.asarray(drop, dtype=_DROP).tobytes()))
    return head + array.tobytes()  # tobytes: C order, whatever the array's layout


_new_data = tuple.__new__  # Data from struct's tuple without namedtuple's per-call checks: the hot path
_KINDS, _DTYPES = len(DATA_KINDS), len(ARRAY_DTYPES)


def unpack_data(buf):
    """(Data, the array or None, drop seqs) of a data message, the array read in place."""
    size = len(buf)
    if size < DATA.size:
        raise WireError(f"a data message of {size} bytes, shorter than its header")
    d = _new_data(Data, DATA.unpack_from(buf))
    if not 0 < d.kind < _KINDS or d.dtype >= _DTYPES:
        raise WireError(f"a data message of kind {d.kind}, dtype {d.dtype}")
    end = DATA.size
    array = None
    if d.dtype:
        dtype = ARRAY_DTYPES[d.dtype]
        end += d.nrows * d.ncols * dtype.itemsize
        if size != end + 8 * d.ndrop:
            raise WireError(f"a data message of {size} bytes declares {d.nrows} x {d.ncols} {dtype}")
        array = np.ndarray((d.nrows, d.ncols), dtype, buf, DATA.size)
    elif size != end + 8 * d.ndrop:
        raise WireError(f"a data message of {size} bytes with no array")
    drop = np.frombuffer(buf, _DROP, d.ndrop, end).tolist() if d.ndrop else ()
    return d, array, drop


def is_data(buf):
    return len(buf) > 0 and buf[0] == DATA_MAGIC


# The dict form, for the few places off the hot path (the broker's inbox, a client, tests):
# the same field names as the JSON builders below, so code reading either reads both.
# Where a group may answer a client: an abstract unix socket the client bound (reachable
# from this host's network namespace only), never an address a header makes up. A data
# header carries it as its pid and tag (rpid, rtag).
REPLY_ADDRESS = re.compile(r"ipc://@neuromesh-reply-([0-9]+)-([0-9a-f]{8})")


def reply_address(rpid, rtag):
    return f"ipc://@neuromesh-reply-{rpid}-{rtag.hex()}"


def pack_data(header, arrays=()):
    """A data message from its dict form; WireError when a field cannot be represented."""
    try:
        k = header["k"]
        loss = k == OUT and "loss" in header  # TARGET's "loss" names a function; OUT's is a value
        flags = (F_KEEP if header.get("keep") else 0) | (F_HEAD if header.get("head") else 0) | (
            F_ACK if header.get("ack", True) else 0) | (F_LOSS if loss else 0)
        seq, tag = header.get("seq", 0), 0
        if isinstance(seq, str):  # a client's pass: "tag-seq"
            tag, _, seq = seq.partition("-")
            tag = int(tag, 16)
        rpid, rtag = 0, b"\0" * 4
        if "reply" in header:
            flags |= F_REPLY
            m = REPLY_ADDRESS.fullmatch(header["reply"]) if isinstance(header["reply"], str) else None
            if m:  # an address that is not a client's reply socket is sent as none: no one to answer
                rpid, rtag = int(m.group(1)), bytes.fromhex(m.group(2))
        after = header.get("at" if "reply" in header else "after")
        net = header.get("net", "n0")
        fields = (token_bytes(header.get("tok")),
                  int(net[1:]) if isinstance(net, str) and net[1:].isdigit() else 0,
                  _layer_of(header), len(header.get("drop", ())), int(header.get("ep") or 0),
                  int(header.get("gen") or 0), int(seq), tag, -1 if after is None else int(after),
                  int(header.get("step") or 0), int(header.get("src") or _index_of(header)), int(header.get("of") or 0),
                  int(header.get("rows") or 0),
                  float(header["loss"] if loss else header.get("lr", 0.0)),
                  f"{header.get('output', '')}:{header.get('loss', '')}".encode() if k == TARGET else b"",
                  rpid, rtag)
        return data(DATA_CODE[k], flags, fields, arrays[0] if arrays else None, header.get("drop", ()))
    except (KeyError, TypeError, ValueError, OverflowError, struct.error) as e:
        raise WireError(f"a {header.get('k')} that a data message cannot carry: {e}") from None


def _gid_part(header, i):
    """A part of a sender's gid "n1.2.0": its layer (1) or its index in the layer (2); 0 if none."""
    gid = header.get("gid")
    parts = gid.split(".") if isinstance(gid, str) else ()
    return int(parts[i]) if len(parts) == 3 and parts[i].isdigit() else 0


def _layer_of(header):
    return _gid_part(header, 1)


def _index_of(header):
    return _gid_part(header, 2)


def data_header(d, drop=()):
    """The dict form of a data message's header."""
    h = {"k": DATA_KINDS[d.kind], "tok": d.tok.hex(), "net": f"n{d.net}", "gen": d.gen,
         "seq": f"{d.tag:016x}-{d.seq}" if d.tag else d.seq, "src": d.src}
    if d.layer:
        h["gid"] = f"n{d.net}.{d.layer}.{d.src}"
    if d.ep:
        h["ep"] = d.ep
    if d.kind == DATA_CODE[FWD]:
        h.update(keep=bool(d.flags & F_KEEP), head=bool(d.flags & F_HEAD))
        if drop:
            h["drop"] = list(drop)
    if d.flags & F_REPLY:
        h["at"] = d.after
        h["reply"] = reply_address(d.rpid, d.rtag) if d.rpid else ""
    elif d.after >= 0:
        h["after"] = d.after
    if d.kind in (DATA_CODE[BWD], DATA_CODE[TARGET]):
        h.update(step=d.step, of=d.of, lr=d.value, ack=bool(d.flags & F_ACK))
    if d.kind == DATA_CODE[TARGET]:
        output, _, loss = d.head.rstrip(b"\0").decode(errors="replace").partition(":")
        h.update(rows=d.rows, output=output, loss=loss)
    if d.flags & F_LOSS:
        h["loss"] = d.value
    return h


_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode
encode_header = _encode  # a header as it travels (a pair's HMAC covers these bytes: broker/pairstate.py)


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

